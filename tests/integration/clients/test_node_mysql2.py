"""Node's mysql2 driver: query/execute (prepared), multi-row insert, BLOB, errors, transactions."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tests.integration.clients._support import (
    HERE,
    client_env,
    require_path,
    require_tool,
    run_json,
)

if TYPE_CHECKING:
    from tests.support.endpoints import Endpoint

NODE_DIR = HERE / "node"


def test_mysql2_client(proxy_endpoint: Endpoint, new_table: Callable[[], str]) -> None:
    node = require_tool("node")
    require_path(NODE_DIR / "node_modules" / "mysql2", "mysql2 (run `npm ci` in clients/node)")
    t = new_table()
    out = run_json(
        [node, str(NODE_DIR / "client.js"), t], timeout=60, env=client_env(proxy_endpoint)
    )

    assert out["multi_insert"]["affected"] == 3
    first_id = out["multi_insert"]["first_id"]
    assert out["query_rows"][0] == [first_id, "a", 1]
    assert [r[1:] for r in out["query_rows"]] == [["a", 1], ["b", 2], ["c 🐬", 3]]
    assert out["execute_insert"]["affected"] == 1
    assert out["execute_insert"]["id"] > out["query_rows"][-1][0]
    assert out["execute_rows"] == [["b", 2], ["c 🐬", 3]]
    assert out["blob"]["received"] == out["blob"]["sent"]
    assert out["blob"]["length"] == 256 * 1024
    error = {"errno": 1146, "code": "ER_NO_SUCH_TABLE", "sqlState": "42S02"}
    assert out["errors"] == [error, error]
    assert out["tx_names"] == ["committed"]
    assert out["big"]["query"] == {"count": 10_000, "sum": 10_000 * 10_001 // 2}
    assert out["big"]["execute"] == {"count": 10_000, "last": "row-10000"}
