"""pyproxy: a MySQL read/write-splitting proxy."""
