"""Writes that do not start with INSERT/UPDATE/... (SET STATEMENT ... FOR, BEGIN NOT ATOMIC, a
stored function in SELECT/DO, EXECUTE, RETURNING) are seen by the next read: the same
session's (read_your_writes) and another session's (causal), text and prepared, through the
real pyproxy process with both replicas delayed."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import mysql.connector
import pymysql
import pytest

from proxy.lab.lab import Lab
from tests.support.proxyproc import LabProxy, lab_proxy
from tests.support.servers import delayed_replicas

DELAY_S = 2  # both replicas apply everything this late: a read routed there is stale
ROUNDS = 3
REPLICAS = ("replica1", "replica2")

# Each writes the tag %s into table wr_c, in one client request.
TEXT_WRITES: dict[str, str] = {
    "insert": "INSERT INTO wr_c (tag) VALUES (%s)",
    "insert_returning": "INSERT INTO wr_c (tag) VALUES (%s) RETURNING id",
    "replace_returning": "REPLACE INTO wr_c (tag) VALUES (%s) RETURNING id",
    "set_statement": "SET STATEMENT max_statement_time=10 FOR INSERT INTO wr_c (tag) VALUES (%s)",
    "not_atomic": "BEGIN NOT ATOMIC INSERT INTO wr_c (tag) VALUES (%s); END",
    "select_function": "SELECT wr_ins(%s)",
    "do_function": "DO wr_ins(%s)",
    "execute_immediate": "EXECUTE IMMEDIATE 'INSERT INTO wr_c (tag) VALUES (?)' USING %s",
    "call": "CALL wr_proc(%s)",
}
PREPARED_WRITES = {
    k: TEXT_WRITES[k]
    for k in ("insert", "insert_returning", "set_statement", "select_function", "do_function")
}


def _writer(lab: Lab) -> tuple[str, int]:
    """The writable master's node name and server_id."""
    row = next(r for r in lab.status() if r["read_only"] == "OFF")
    return str(row["node"]), int(row["server_id"])


@pytest.fixture(scope="module")
def proxy(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProxy]:
    root = lab.connect_root(_writer(lab)[0])
    with root.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS demo_db.wr_c "
            "(id INT AUTO_INCREMENT PRIMARY KEY, tag VARCHAR(64))"
        )
        cur.execute(
            "CREATE OR REPLACE FUNCTION demo_db.wr_ins(t VARCHAR(64)) RETURNS INT DETERMINISTIC "
            "MODIFIES SQL DATA BEGIN INSERT INTO demo_db.wr_c (tag) VALUES (t); RETURN 1; END"
        )
        cur.execute(
            "CREATE OR REPLACE PROCEDURE demo_db.wr_proc(t VARCHAR(64)) "
            "INSERT INTO demo_db.wr_c (tag) VALUES (t)"
        )
    root.close()
    lab.wait_replicated()
    # Lag below the shunning limit: the replicas stay in the read pool.
    health = {"max_replication_lag_s": 60}
    with (
        delayed_replicas(lab, REPLICAS, DELAY_S),
        lab_proxy(lab, tmp_path_factory.mktemp("wr"), health=health) as running,
    ):
        yield running


Execute = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]


def _text(proxy: LabProxy) -> Execute:
    conn = pymysql.connect(
        host="127.0.0.1", port=proxy.port, user=proxy.user, password=proxy.password,
        database="demo_db", autocommit=True, read_timeout=30,
    )  # fmt: skip

    def execute(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    return execute


def _prepared(proxy: LabProxy) -> Execute:
    conn = mysql.connector.connect(
        host="127.0.0.1", port=proxy.port, user=proxy.user, password=proxy.password,
        database="demo_db", autocommit=True,
    )  # fmt: skip
    cursors: dict[str, Any] = {}  # one prepared cursor per statement (and conn kept alive)

    def execute(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        cur = cursors.get(sql) or cursors.setdefault(sql, conn.cursor(prepared=True))
        cur.execute(sql, args)
        return list(cur.fetchall()) if cur.with_rows else []

    return execute


def _stale(write: Execute, read: Execute, sql: str, consistency: str) -> int:
    """Write a new tag, read it at once (consistency as a hint): the reads that missed it."""
    stale = 0
    for _ in range(ROUNDS):
        tag = uuid.uuid4().hex
        write(sql, (tag,))
        got = read(
            f"SELECT /* pyproxy:consistency={consistency} */ COUNT(*) FROM wr_c WHERE tag = %s",
            (tag,),
        )
        stale += got != [(1,)]
    return stale


@pytest.mark.parametrize("form", list(TEXT_WRITES))
def test_text_write_then_read(proxy: LabProxy, form: str) -> None:
    a, b = _text(proxy), _text(proxy)
    assert _stale(a, a, TEXT_WRITES[form], "read_your_writes") == 0
    assert _stale(a, b, TEXT_WRITES[form], "causal") == 0


@pytest.mark.parametrize("form", list(PREPARED_WRITES))
def test_prepared_write_then_read(proxy: LabProxy, form: str) -> None:
    a, b = _prepared(proxy), _prepared(proxy)
    assert _stale(a, a, PREPARED_WRITES[form], "read_your_writes") == 0
    assert _stale(a, b, PREPARED_WRITES[form], "causal") == 0


def test_sql_prepare_execute_then_read(proxy: LabProxy) -> None:
    a, b = _text(proxy), _text(proxy)
    a("PREPARE wr_p FROM 'INSERT INTO wr_c (tag) VALUES (?)'", ())
    stale = 0
    for _ in range(ROUNDS):
        tag = uuid.uuid4().hex
        a("SET @wr_t = %s", (tag,))
        a("EXECUTE wr_p USING @wr_t", ())
        sql = "SELECT /* pyproxy:consistency=causal */ COUNT(*) FROM wr_c WHERE tag = %s"
        stale += b(sql, (tag,)) != [(1,)]
    assert stale == 0


def test_plain_reads_still_go_to_replicas(proxy: LabProxy, lab: Lab) -> None:
    """A session that only reads (no stored function) is served by the replicas."""
    read = _text(proxy)
    served = {read("SELECT @@server_id", ())[0][0] for _ in range(6)}
    assert _writer(lab)[1] not in served
