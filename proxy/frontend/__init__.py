"""Client-facing side: we are the MySQL server."""
