"""Real MySQL/MariaDB client programs and drivers, each driven through the proxy endpoint."""
