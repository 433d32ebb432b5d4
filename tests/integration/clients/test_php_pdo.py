"""PHP PDO MySQL with real server-side prepares: params, NULL, LOB, transactions, errorInfo."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tests.integration.clients._support import HERE, client_env, require_tool, run, run_json

if TYPE_CHECKING:
    from tests.support.endpoints import Endpoint


def test_pdo_mysql_client(proxy_endpoint: Endpoint, new_table: Callable[[], str]) -> None:
    php = require_tool("php")
    modules = run([php, "-m"], timeout=30).stdout.split()
    assert "pdo_mysql" in modules, "PHP's pdo_mysql extension is not installed"
    t = new_table()
    out = run_json([php, str(HERE / "client.php"), t], timeout=60, env=client_env(proxy_endpoint))

    assert out["emulate_prepares"] is False
    ids = out["ids"]
    assert len(set(ids)) == 4
    assert ids == sorted(ids)
    assert out["insert_row_count"] == 1
    # With real prepares, integers come back typed from the binary protocol.
    assert out["rows"] == [[ids[0], "one", 1], [ids[1], "two 🐬", None], [ids[2], "three", 3]]
    assert out["lob"]["received"] == out["lob"]["sent"]
    assert out["lob"]["length"] == 512 * 1024
    assert out["update_row_count"] == 2
    assert out["in_tx"] is True
    assert out["after_tx"] == 3
    assert out["error"]["code"] == "42S02"
    sqlstate, errno, message = out["error"]["errorInfo"]
    assert (sqlstate, errno) == ("42S02", 1146)
    assert f"{t}_missing" in message
    assert out["after_error"] == 2
