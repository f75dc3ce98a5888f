"""mmagents.graphs."""
