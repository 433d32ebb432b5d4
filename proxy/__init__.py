"""pyproxy: a MySQL read/write-splitting proxy."""

# First: decides whether the hot modules load compiled or from source (PYPROXY_PURE, stale builds).
from proxy import compiled as _compiled  # noqa: F401
