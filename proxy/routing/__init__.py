"""Statement classification and routing, pure and I/O-free."""
