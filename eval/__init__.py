"""mmagents.eval."""
