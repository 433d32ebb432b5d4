"""MySQL wire protocol, sans-IO: bytes in, events out."""
