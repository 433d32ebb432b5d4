"""Admin interface."""
