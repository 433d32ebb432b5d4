"""Perl DBI with DBD::MariaDB and server-side prepares: placeholders, insert ids, rollback, err."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tests.integration.clients._support import HERE, client_env, require_tool, run, run_json

if TYPE_CHECKING:
    from tests.support.endpoints import Endpoint


def test_dbd_mariadb_client(proxy_endpoint: Endpoint, new_table: Callable[[], str]) -> None:
    perl = require_tool("perl")
    run([perl, "-MDBD::MariaDB", "-MJSON::PP", "-e", "1"], timeout=30)  # fails if not installed
    t = new_table()
    out = run_json([perl, str(HERE / "client.pl"), t], timeout=60, env=client_env(proxy_endpoint))

    assert out["server_prepare"] is True
    ids = out["ids"]
    assert len(set(ids)) == 3
    assert ids == sorted(ids)
    assert out["sth_insertid"] == ids[-1]
    assert out["last_insert_id"] == ids[-1]
    assert out["rows"] == [[ids[1], "two", None], [ids[2], "three", 3]]
    assert out["first"] == [ids[0], "one", 1]
    assert out["affected"] == 2
    assert out["count_in_tx"] == 3
    assert out["count_after_rollback"] == 3
    assert out["error"]["err"] == 1146
    assert out["error"]["state"] == "42S02"
    assert f"{t}_missing" in out["error"]["errstr"]
    assert out["after_error"] == 2
