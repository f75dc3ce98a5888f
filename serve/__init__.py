"""mmagents.serve."""
