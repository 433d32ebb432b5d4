"""Admin queries and a traffic mix for the stats and observability tests."""

from __future__ import annotations

from typing import Any

import pymysql
import pymysql.cursors

from proxy.lab.servers import free_port
from tests.support.proxyproc import LabProxy

TABLE = "stats_probe"
ERRNO_NO_SUCH_TABLE = 1146


def admin_rows(proxy: LabProxy, sql: str) -> list[dict[str, Any]]:
    """One query on the proxy's admin port: its rows, integers as int."""
    return [{k: _number(v) for k, v in row.items()} for row in proxy.admin_rows(sql)]


def _number(value: Any) -> Any:
    """The admin answers in text, as ProxySQL's does: integers back to int."""
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def run_traffic(proxy: LabProxy, reads: int, writes: int, errors: int) -> None:
    """Reads, writes and statements that fail with ER_NO_SUCH_TABLE (1146), through the proxy."""
    conn = proxy.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (id INT PRIMARY KEY AUTO_INCREMENT, v INT)"
            )
            for i in range(writes):
                cur.execute(f"INSERT INTO {TABLE} (v) VALUES (%s)", (i,))
            for i in range(reads):
                cur.execute("SELECT %s + 1", (i,))
                cur.fetchall()
            for _ in range(errors):
                try:
                    cur.execute("SELECT * FROM no_such_table_for_stats")
                except pymysql.err.ProgrammingError as exc:
                    assert exc.args[0] == ERRNO_NO_SUCH_TABLE, exc.args
                else:
                    raise AssertionError("a missing table did not fail")
    finally:
        conn.close()


def with_dead_replica(proxy_servers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lab's servers plus a replica on a port where nothing listens (a server down)."""
    dead = {"name": "ghost", "host": "127.0.0.1", "port": free_port(), "role": "replica"}
    return [*proxy_servers, dead]
