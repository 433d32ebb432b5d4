"""Health checking and writer election."""
