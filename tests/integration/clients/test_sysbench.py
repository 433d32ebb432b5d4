"""sysbench oltp_read_write (server-side prepared statements) prepare/run/cleanup, zero errors."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pymysql
import pytest

from tests.integration.clients._support import connect, drop_schema, require_tool, run, unique

if TYPE_CHECKING:
    from tests.support.endpoints import Endpoint


@pytest.fixture
def schema(proxy_endpoint: Endpoint) -> Iterator[str]:
    name = unique("sbtest")
    conn = connect(proxy_endpoint)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
    finally:
        conn.close()
    yield name
    drop_schema(proxy_endpoint, name)


def _stat(output: str, label: str) -> int:
    match = re.search(rf"^\s*{re.escape(label)}:\s+(\d+)", output, re.MULTILINE)
    assert match, f"no '{label}:' line in sysbench output:\n{output}"
    return int(match.group(1))


def _wait_until_replicas_have(ep: Endpoint, schema: str, table: str, rows: int) -> None:
    """sysbench's run threads are new sessions whose reads go to replicas: let replication
    deliver what `prepare` wrote first (read-your-writes is per session)."""
    deadline = time.monotonic() + 30
    streak = 0
    while streak < 6:  # consecutive reads, spread over every replica by the balancer
        conn = connect(dataclasses.replace(ep, database=schema))
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT COUNT(*) FROM {table}")
                streak = streak + 1 if cur.fetchone() == (rows,) else 0
        except pymysql.MySQLError:
            streak = 0
        finally:
            conn.close()
        assert time.monotonic() < deadline, "replicas did not get sysbench's tables in 30 s"


def test_oltp_read_write_without_errors(proxy_endpoint: Endpoint, schema: str) -> None:
    ep = proxy_endpoint
    # --db-driver=mysql is sysbench's MySQL-protocol driver (built on libmariadb here). The
    # default --db-ps-mode=auto runs every OLTP query as a server-side prepared statement.
    # --rand-type=uniform: the default "special" distribution sends 75% of the accesses to 1%
    # of the rows, and on 2 x 1,000 rows with 4 threads InnoDB itself then reports a few dozen
    # deadlocks (1213, which sysbench counts as "ignored errors") per 10 s -- even straight
    # against the server. Spread uniformly over 4 x 10,000 rows, deadlocks become rare enough
    # (one in several runs on 1,000 rows, straight against the server too) that any error
    # left is one the path to the server caused.
    base = [
        require_tool("sysbench"),
        "oltp_read_write",
        "--db-driver=mysql",
        f"--mysql-host={ep.host}",
        f"--mysql-port={ep.port}",
        f"--mysql-user={ep.user}",
        f"--mysql-password={ep.password}",
        f"--mysql-db={schema}",
        "--tables=4",
        "--table-size=10000",
        "--rand-type=uniform",
    ]
    run([*base, "prepare"], timeout=60)
    _wait_until_replicas_have(ep, schema, "sbtest4", 10_000)
    # No error is ignored: the first one ends the run and shows its code and message.
    out = run(
        [*base, "--threads=4", "--time=10", "--mysql-ignore-errors=none", "run"], timeout=60
    ).stdout
    run([*base, "cleanup"], timeout=60)

    assert _stat(out, "ignored errors") == 0, out
    assert _stat(out, "reconnects") == 0, out
    transactions = _stat(out, "transactions")
    assert transactions > 0
    assert _stat(out, "total number of events") == transactions
    read, write, other = (_stat(out, k) for k in ("read", "write", "other"))
    assert read > 0
    assert write > 0
    assert _stat(out, "total") == read + write + other == _stat(out, "queries")
    # Per transaction: 14 SELECTs, then 4 writes plus BEGIN and COMMIT (sysbench files a write
    # that changed no row under "other", so only the sum of those two is fixed).
    assert read == 14 * transactions
    assert write + other == 6 * transactions
    conn = connect(dataclasses.replace(ep, database=schema))  # cleanup dropped both tables
    try:
        with conn.cursor() as cur:
            # A new session reads from a replica unless told otherwise; the DROPs of another
            # session are surely visible on the writer.
            cur.execute("/* pyproxy:writer */ SHOW TABLES")
            assert cur.fetchall() == ()
    finally:
        conn.close()
