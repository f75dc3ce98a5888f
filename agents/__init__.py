"""mmagents.agents."""
