"""PHP mysqli with a server-side read-only cursor: a cursor EXECUTE, then COM_STMT_FETCH."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.integration.clients._support import HERE, client_env, require_tool, run, run_json

if TYPE_CHECKING:
    from tests.support.endpoints import Endpoint


def test_mysqli_cursor_fetch(proxy_endpoint: Endpoint) -> None:
    php = require_tool("php")
    assert "mysqli" in run([php, "-m"], timeout=30).stdout.split(), "PHP mysqli is missing"
    out = run_json([php, str(HERE / "cursor.php")], timeout=60, env=client_env(proxy_endpoint))
    assert out["runs"] == [
        {"count": 5000, "sum": 5000 * 5001 // 2, "last": "row5000"},
        {"count": 10, "sum": sum(range(4991, 5001)), "last": "row5000"},
    ]
    assert out["after"] in ("7", 7)
