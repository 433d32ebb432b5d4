"""Careless and hostile clients vs the query rules, the digests and hinted writes (issue 13)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import mysql.connector
import pymysql
import pytest
from pymysql.constants import CLIENT

from proxy.lab.lab import Lab
from proxy.routing.rules import UNCHECKABLE
from proxy.testing import ProxyThread
from tests.support.endpoints import Endpoint, proxy_config

NODES = ("master1", "master2", "replica1", "replica2")
BLOCKED = "DROP is not allowed through pyproxy"


@pytest.fixture(scope="module")
def guarded(lab: Lab) -> Iterator[ProxyThread]:
    """The README's rules, and a long failover hold (a wrongly held write would show)."""
    data = proxy_config(lab).model_dump()
    data["health"]["failover_hold_ms"] = 20_000
    data["query_rules"] = [
        {
            "name": "no-drop-for-app",
            "match_digest": r"\bdrop\s+(temporary\s+)?(table|schema|database)\b",
            "username": "app",
            "block": BLOCKED,
        },
        {"name": "to-replica1", "match_digest": r"\bh2_routed\b", "route": "replica1"},
    ]
    root = lab.connect_root("master1")
    with root.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS demo_db.h2_keep (id INT PRIMARY KEY)")
        cur.execute("CREATE TABLE IF NOT EXISTS demo_db.h2_routed (id INT PRIMARY KEY)")
        cur.execute("CREATE DATABASE IF NOT EXISTS h2_keep_db")
    root.close()
    thread = ProxyThread(proxy_config(lab).model_validate(data)).start()
    try:
        yield thread
    finally:
        thread.stop()


def _app(proxy: ProxyThread, **kwargs: object) -> pymysql.Connection:
    return Endpoint.app(proxy.port).connect(client_flag=CLIENT.MULTI_STATEMENTS, **kwargs)


def _drops(lab: Lab) -> dict[str, int]:
    """DROP TABLE + DROP DATABASE statements each server has run, once every server has
    applied what the writer had (a DROP of another test still replicating would count)."""
    writer = lab.connect_root("master1")
    with writer.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
        row = cur.fetchone()
    writer.close()
    position = next(iter(row.values())) if isinstance(row, dict) else row[0]
    out = {}
    for name in NODES:
        conn = lab.connect_root(name)
        with conn.cursor() as cur:
            if name != "master1":
                cur.execute("SELECT MASTER_GTID_WAIT(%s, 30)", (position,))
            cur.execute(
                "SELECT SUM(VARIABLE_VALUE) FROM information_schema.GLOBAL_STATUS "
                "WHERE VARIABLE_NAME IN ('COM_DROP_TABLE', 'COM_DROP_DB')"
            )
            row = cur.fetchone()
        conn.close()
        out[name] = int(next(iter(row.values())) if isinstance(row, dict) else row[0])
    return out


def _still_there(lab: Lab) -> bool:
    conn = lab.connect_root("master1")
    with conn.cursor() as cur:
        cur.execute("SHOW TABLES FROM demo_db LIKE 'h2_keep'")
        table = cur.fetchall()
        cur.execute("SHOW DATABASES LIKE 'h2_keep_db'")
        db = cur.fetchall()
    conn.close()
    return bool(table) and bool(db)


@pytest.mark.parametrize(
    ("statements", "message"),
    [
        (["DROP TABLE h2_keep"], BLOCKED),
        (["DROP SCHEMA h2_keep_db"], BLOCKED),
        (["DROP DATABASE h2_keep_db"], BLOCKED),
        (["SELECT 1; DROP TABLE h2_keep"], BLOCKED),
        (["PREPARE s FROM 'DROP TABLE h2_keep'", "EXECUTE s"], BLOCKED),
        (["EXECUTE IMMEDIATE 'DROP TABLE h2_keep'"], BLOCKED),
        (["SET @q = 'DROP TABLE h2_keep'", "PREPARE s FROM @q", "EXECUTE s"], UNCHECKABLE),
        (["EXECUTE IMMEDIATE CONCAT('DROP TABLE ', 'h2_keep')"], UNCHECKABLE),
        (
            [
                "SET sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')",
                "SELECT 'a\\'; DROP TABLE h2_keep; -- '",
            ],
            BLOCKED,
        ),
    ],
)
def test_block_rule_holds(
    guarded: ProxyThread, lab: Lab, statements: list[str], message: str
) -> None:
    before = _drops(lab)
    conn = _app(guarded)
    with pytest.raises(pymysql.err.MySQLError) as err, conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)
            while cur.nextset():
                pass
    conn.close()
    assert err.value.args == (1148, message)
    assert _still_there(lab)
    assert _drops(lab) == before


def test_block_rule_holds_for_binary_prepare(guarded: ProxyThread, lab: Lab) -> None:
    before = _drops(lab)
    conn = Endpoint.app(guarded.port).connector()
    with pytest.raises(mysql.connector.Error) as err:
        conn.cursor(prepared=True).execute("DROP TABLE h2_keep")
    conn.close()
    assert err.value.errno == 1148 and err.value.msg == BLOCKED
    assert _still_there(lab)
    assert _drops(lab) == before


def test_harmless_statements_still_run(guarded: ProxyThread) -> None:
    conn = _app(guarded)
    with conn.cursor() as cur:
        cur.execute("SELECT 1; SELECT 2")
        assert cur.fetchall() == ((1,),)
        cur.execute("PREPARE s FROM 'SELECT COUNT(*) FROM h2_keep'")
        cur.execute("EXECUTE s")
        assert cur.fetchall() == ((0,),)
        cur.execute("EXECUTE IMMEDIATE 'SELECT ''drop table h2_keep'''")
        assert cur.fetchall() == (("drop table h2_keep",),)
    conn.close()


def _digest_texts(proxy: ProxyThread) -> list[str]:
    port = proxy.server.http.port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/digests", timeout=5) as resp:
        return [d["digest_text"] for d in json.loads(resp.read())]


def test_digests_never_show_a_literal(guarded: ProxyThread) -> None:
    sql = "SELECT 'C:\\', 'hunter2-secret'"
    unknown = _app(guarded)  # sql_mode set to an expression: pyproxy can't tell
    with unknown.cursor() as cur:
        cur.execute("SET sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
        cur.execute(sql)
        assert cur.fetchall() == (("C:\\", "hunter2-secret"),)
    unknown.close()
    known = _app(guarded)
    with known.cursor() as cur:
        cur.execute("SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
        cur.execute(sql)
        assert cur.fetchall() == (("C:\\", "hunter2-secret"),)
    known.close()
    texts = _digest_texts(guarded)
    assert not [t for t in texts if "hunter2" in t], texts
    assert "select ?, ?" in texts  # the session that said NO_BACKSLASH_ESCAPES plainly
    assert "select ?..." in texts  # unknown: only what both readings agree on


@pytest.mark.parametrize(
    "sql",
    [
        "/* pyproxy:server=replica1 */ INSERT INTO h2_keep VALUES (1)",
        "INSERT INTO h2_routed VALUES (1)",  # routed to replica1 by a rule
    ],
)
def test_write_sent_to_a_replica_gets_its_read_only_error_at_once(
    guarded: ProxyThread, sql: str
) -> None:
    conn = _app(guarded)
    started = time.monotonic()
    with pytest.raises(pymysql.err.MySQLError) as err, conn.cursor() as cur:
        cur.execute(sql)
    # Generous: the old behaviour held the write for failover_hold_ms (20 s) first.
    assert time.monotonic() - started < 10
    assert err.value.args[0] == 1290 and "read-only" in err.value.args[1]
    with conn.cursor() as cur:  # the writer was not given up: writes still work
        cur.execute("REPLACE INTO h2_keep VALUES (7)")
        cur.execute("DELETE FROM h2_keep WHERE id = 7")
    conn.close()
    assert guarded.server.cluster.writer == "master1"
