"""Read/write splitting checked by asking the servers themselves (@@server_id, status counters)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from proxy.frontend.prepared import MAX_BACKEND_STMTS
from proxy.lab.lab import Lab
from proxy.protocol.constants import Command
from proxy.protocol.packets import build_command
from proxy.routing.stats import DigestStats
from proxy.testing import ProxyThread
from tests.support.endpoints import Endpoint, proxy_config
from tests.support.proxyproc import RawClient
from tests.support.servers import global_status

WRITER, REPLICA1, REPLICA2 = 1, 101, 102


@pytest.fixture(scope="module")
def split(lab: Lab) -> Iterator[ProxyThread]:
    """A proxy with replica weights 1:3, a block rule and a rewrite rule."""
    config = proxy_config(lab)
    data = config.model_dump()
    for server in data["servers"]:
        if server["name"] == "replica2":
            server["weight"] = 3
    data["query_rules"] = [
        {
            "name": "no-drop",
            "match_digest": r"^drop table",
            "username": "app",
            "block": "DROP TABLE is not allowed through pyproxy",
        },
        {"name": "old-name", "match_pattern": r"\blegacy_products\b", "rewrite": "products"},
    ]
    thread = ProxyThread(config.model_validate(data)).start()
    try:
        yield thread
    finally:
        thread.stop()


def _conn(proxy: ProxyThread, **kwargs: object) -> pymysql.Connection:
    return Endpoint.app(proxy.port).connect(**kwargs)


def _connector(proxy: ProxyThread) -> Any:
    """mysql-connector (pure Python) through the proxy: for its server-side prepared cursor."""
    return Endpoint.app(proxy.port).connector()


def _one(conn: pymysql.Connection, sql: str) -> tuple[object, ...]:
    with conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
    assert row is not None
    return tuple(row)


def test_reads_spread_over_replicas_by_weight(split: ProxyThread) -> None:
    conn = _conn(split)
    seen = Counter(_one(conn, "SELECT @@server_id")[0] for _ in range(1000))
    conn.close()
    assert set(seen) == {REPLICA1, REPLICA2}, seen
    assert 230 <= seen[REPLICA1] <= 270 and 730 <= seen[REPLICA2] <= 770, seen


def test_transactions_and_locking_reads_stay_on_the_writer(split: ProxyThread) -> None:
    conn = _conn(split)
    conn.begin()
    assert {_one(conn, "SELECT @@server_id")[0] for _ in range(20)} == {WRITER}
    conn.commit()
    # COUNT(*): one row whatever the table holds.
    assert _one(conn, "SELECT @@server_id, COUNT(*) FROM products FOR UPDATE")[0] == WRITER
    assert _one(conn, "SELECT @@server_id FROM DUAL LOCK IN SHARE MODE")[0] == WRITER
    # With autocommit off every statement goes to the writer.
    with conn.cursor() as cur:
        cur.execute("SET autocommit = 0")
    assert _one(conn, "SELECT @@server_id")[0] == WRITER
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute("SET autocommit = 1")
    # A read-only transaction may run on one replica for its whole length.
    with conn.cursor() as cur:
        cur.execute("START TRANSACTION READ ONLY")
    ids = {_one(conn, "SELECT @@server_id")[0] for _ in range(20)}
    conn.commit()
    assert len(ids) == 1 and ids <= {REPLICA1, REPLICA2}
    conn.close()


def test_writes_and_ddl_land_on_the_writer_and_replicate(split: ProxyThread, lab: Lab) -> None:
    db = f"routing_{uuid.uuid4().hex[:8]}"
    conn = _conn(split)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(f"CREATE TABLE {db}.t (id INT AUTO_INCREMENT PRIMARY KEY, sid INT)")
        for _ in range(10):
            cur.execute(f"INSERT INTO {db}.t (sid) VALUES (@@server_id)")
        cur.execute(f"SELECT DISTINCT sid FROM {db}.t")
        assert cur.fetchall() == ((WRITER,),)  # where each INSERT ran
        cur.execute(f"UPDATE {db}.t SET sid = @@server_id + 1000 ORDER BY id LIMIT 5")
        cur.execute(f"DELETE FROM {db}.t WHERE sid = @@server_id")
        cur.execute(f"SELECT DISTINCT sid FROM {db}.t")
        assert cur.fetchall() == ((WRITER + 1000,),)  # where the UPDATE and DELETE ran
    conn.close()
    # The new database and table reached every node by replication.
    deadline = time.monotonic() + 10
    for node in ("master1", "master2", "replica1", "replica2"):
        while True:
            root = lab.connect_root(node)
            with root.cursor() as cur:
                cur.execute(
                    "SELECT COUNT(*) AS n FROM information_schema.tables "
                    "WHERE table_schema = %s AND table_name = 't'",
                    (db,),
                )
                found = cur.fetchone()["n"]
            root.close()
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert found == 1, node
    root = lab.connect_root("master1")
    with root.cursor() as cur:
        cur.execute(f"DROP DATABASE {db}")
    root.close()


def test_session_state_follows_reads_to_replicas(split: ProxyThread) -> None:
    conn = _conn(split)
    with conn.cursor() as cur:
        cur.execute("USE mysql")
        cur.execute("SET NAMES latin1")
        cur.execute("SET time_zone = '+03:00'")
    for _ in range(4):  # both replicas get the session's state before serving it
        sid, db, charset, tz = _one(
            conn, "SELECT @@server_id, DATABASE(), @@character_set_client, @@time_zone"
        )
        assert sid in (REPLICA1, REPLICA2)
        assert (db, charset, tz) == ("mysql", "latin1", "+03:00")
    conn.close()


def test_prepared_read_on_replica_and_prepared_write_on_writer(
    split: ProxyThread, lab: Lab
) -> None:
    table = f"ps_route_{uuid.uuid4().hex[:8]}"
    setup = _conn(split)
    with setup.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, sid INT)")
    setup.close()
    conn = _connector(split)
    cur = conn.cursor(prepared=True)
    cur.execute("SELECT @@server_id, ? + 1", (41,))
    sid, answer = cur.fetchone()
    assert sid in (REPLICA1, REPLICA2) and answer == 42
    cur.execute(f"INSERT INTO {table} (sid) VALUES (@@server_id + ?)", (0,))
    conn.close()
    check = _conn(split)
    assert _one(check, f"SELECT /* pyproxy:writer */ sid FROM {table}")[0] == WRITER
    check.close()
    root = lab.connect_root("master1")
    with root.cursor() as c:
        c.execute(f"DROP TABLE IF EXISTS demo_db.{table}")
    root.close()


def test_hints_override_the_classification(split: ProxyThread) -> None:
    conn = _conn(split)
    assert _one(conn, "SELECT /* pyproxy:writer */ @@server_id")[0] == WRITER
    assert _one(conn, "/* pyproxy:server=replica2 */ SELECT @@server_id")[0] == REPLICA2
    assert _one(conn, "/* pyproxy:server=master2 */ SELECT @@server_id")[0] == 2
    conn.close()


def test_block_rule_never_reaches_a_backend(split: ProxyThread, lab: Lab) -> None:
    conn = _conn(split)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS keep_me (id INT)")
        with pytest.raises(pymysql.err.OperationalError) as err:
            cur.execute("DROP TABLE keep_me")
        assert err.value.args == (1148, "DROP TABLE is not allowed through pyproxy")
        cur.execute(
            "SELECT /* pyproxy:writer */ COUNT(*) FROM information_schema.tables "
            "WHERE table_schema = 'demo_db' AND table_name = 'keep_me'"
        )
        assert cur.fetchone() == (1,)
        # The rewrite rule: an old table name still works.
        cur.execute("SELECT COUNT(*) >= 0 FROM legacy_products")
        assert cur.fetchone() == (1,)
    conn.close()
    hits = split.server.listener.router.rules.hits
    assert hits[0] >= 1 and hits[1] >= 1


def test_digest_statistics(split: ProxyThread) -> None:
    conn = _conn(split)
    for i in range(5):
        _one(conn, f"SELECT {i} + 1 AS digest_probe")
    conn.close()

    def probes() -> list[DigestStats]:
        return [
            e
            for e in list(split.server.digests.entries.values())
            if e.digest_text.startswith("select ? + ? as digest_probe")
        ]

    # Statistics are recorded right after the response has gone out: allow a moment.
    deadline = time.monotonic() + 2
    while sum(e.count_star for e in probes()) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    entries = probes()
    assert sum(e.count_star for e in entries) == 5
    assert all(e.hostgroup == 1 and e.username == "app" for e in entries)
    assert all(e.min_time_us <= e.max_time_us for e in entries)


def test_digest_statistics_count_prepared_executions(split: ProxyThread) -> None:
    """COM_STMT_EXECUTE is counted under the prepared SQL's digest, as ProxySQL does."""
    conn = _connector(split)
    cur = conn.cursor(prepared=True)
    for i in range(4):
        cur.execute("SELECT ? * 2 AS prepared_probe", (i,))
        assert cur.fetchone() == (i * 2,)
    conn.close()

    def probes() -> list[DigestStats]:
        return [
            e
            for e in list(split.server.digests.entries.values())
            if e.digest_text == "select ? * ? as prepared_probe"
        ]

    deadline = time.monotonic() + 2
    while sum(e.count_star for e in probes()) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    entries = probes()
    assert sum(e.count_star for e in entries) == 4
    assert all(e.hostgroup == 1 and e.schemaname == "demo_db" for e in entries)
    assert sum(e.sum_rows_sent for e in entries) == 4


def test_prepared_reads_take_turns_on_equal_replicas(proxy_endpoint: Endpoint) -> None:
    """One client's prepared read, executed again and again, goes to both replicas of equal
    weight in turn: an execute routed where the statement is not prepared yet is prepared
    there, not routed a second time (which would take the other replica's turn, every
    time, and leave the first never used)."""
    conn = proxy_endpoint.connector()
    cur = conn.cursor(prepared=True)
    seen: Counter[int] = Counter()
    for _ in range(40):
        cur.execute("SELECT @@server_id")
        seen[int(cur.fetchall()[0][0])] += 1
    conn.close()
    assert set(seen) == {REPLICA1, REPLICA2} and min(seen.values()) >= 15, seen


def test_a_prepared_statement_in_use_stays_prepared_on_its_backend(
    split: ProxyThread, lab: Lab
) -> None:
    """A backend connection keeps its MAX_BACKEND_STMTS most recently used prepared
    statements: one the client executes between more new ones than that is never evicted, so
    never prepared again."""
    new = MAX_BACKEND_STMTS + 44
    hint = "/* pyproxy:server=replica1 */"
    raw = RawClient(split.port)
    try:
        raw.login("app", "app-pass", "demo_db")
        before = int(global_status(lab, "replica1", "Com_stmt_prepare"))
        used = raw.prepare(f"SELECT {hint} 1")
        execute = used.to_bytes(4, "little") + b"\x00\x01\x00\x00\x00"
        for n in range(new):
            raw.prepare(f"SELECT {hint} {n} + 1")
            answer = raw.request(Command.COM_STMT_EXECUTE, execute)
            assert answer.error is None, answer.error
        assert int(global_status(lab, "replica1", "Com_stmt_prepare")) - before == new + 1
    finally:
        raw.close()


def test_statement_ids_only_grow_and_each_runs_its_own_statement(lab: Lab) -> None:
    """pyproxy hands a new statement the backend's own id where it can (an execute then goes
    as the client framed it); the client still sees what a server shows it: ids that only
    grow, a closed one never handed out again, each id running its own statement wherever
    it was prepared. A new proxy: its backend connections number their statements from 1
    each, so replica2's and the writer's first ids are ids replica1's statements had; unless
    the server gave a connection a cached thread, whose THD keeps counting from the last
    connection's ids (THD::reset_for_reuse does not reset statement_id_counter)."""
    proxy = ProxyThread(proxy_config(lab)).start()
    raw = RawClient(proxy.port)
    try:
        raw.login("app", "app-pass", "demo_db")
        columns: dict[int, int] = {}  # statement id -> the columns of its statement
        handed: list[int] = []
        for n, where in enumerate(["server=replica1"] * 5 + ["server=replica2", "writer"] * 3):
            if n == 5:  # close the first two: ids 1 and 2 must not come back
                for closed in handed[:2]:
                    raw.send(build_command(Command.COM_STMT_CLOSE, closed.to_bytes(4, "little")))
                    del columns[closed]
            cells = ", ".join(str(c) for c in range(n + 1))
            stmt_id = raw.prepare(f"SELECT /* pyproxy:{where} */ {cells}")
            handed.append(stmt_id)
            columns[stmt_id] = n + 1
        first = handed[0]  # replica1's own ids: 1.. on a new server thread
        assert handed[:5] == list(range(first, first + 5)), handed
        assert handed == sorted(set(handed)), handed
        for stmt_id, n in columns.items():
            execute = stmt_id.to_bytes(4, "little") + b"\x00\x01\x00\x00\x00"
            answer = raw.request(Command.COM_STMT_EXECUTE, execute)
            assert answer.error is None and answer.columns == n, (stmt_id, answer.error)
    finally:
        raw.close()
        proxy.stop()
