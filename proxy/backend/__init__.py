"""Backend side: we are the MySQL client (connections, pools)."""
