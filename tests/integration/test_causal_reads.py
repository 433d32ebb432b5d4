"""Causal reads across connections: B reads what A wrote at once, with reads split, on
a lab whose replica2 applies everything late; also across two real pyproxy processes."""

from __future__ import annotations

import asyncio
import os
import queue
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncmy
import asyncmy.errors
import mysql.connector
import pymysql
import pytest

from proxy.lab.lab import Lab
from proxy.protocol.constants import Command
from proxy.testing import ProxyThread
from tests.integration.clients._support import (
    HERE,
    client_env,
    drop_tables,
    require_path,
    require_tool,
    run_json,
)
from tests.support.endpoints import Endpoint, proxy_config
from tests.support.proxyproc import LabProxy, PoliteClients, RawClient, lab_proxy
from tests.support.servers import delayed_replicas, global_status, root_rows

# CI runs fewer; the figure is 1,000 (CAUSAL_ITERATIONS=1000).
ITERATIONS = int(os.environ.get("CAUSAL_ITERATIONS", "200"))
DELAY_S = 1  # replica2 applies everything this late (MASTER_DELAY)
REPLICA_IDS = (101, 102)
LAG = {"max_replication_lag_s": 30}  # replica2 stays in the read pool

Row = tuple[Any, ...]
Execute = Callable[[str, tuple[Any, ...]], list[Row]]


@pytest.fixture(scope="module")
def delayed(lab: Lab) -> Iterator[Lab]:
    with delayed_replicas(lab, ("replica2",), DELAY_S):
        yield lab


def _proxy(lab: Lab, consistency: str) -> ProxyThread:
    return ProxyThread(proxy_config(lab, routing={"consistency": consistency}, health=LAG)).start()


@pytest.fixture(scope="module")
def causal(delayed: Lab) -> Iterator[ProxyThread]:
    thread = _proxy(delayed, "causal")
    try:
        yield thread
    finally:
        thread.stop()


def _ep(thread: ProxyThread) -> Endpoint:
    return Endpoint.app(thread.port)


def _pymysql(ep: Endpoint) -> Execute:
    conn = ep.connect()

    def execute(sql: str, args: tuple[Any, ...]) -> list[Row]:
        with conn.cursor() as cur:
            cur.execute(sql, args or None)
            return [tuple(r) for r in cur.fetchall()]

    return execute


def _connector(ep: Endpoint) -> Execute:
    conn = ep.connector()
    cur = conn.cursor()

    def execute(sql: str, args: tuple[Any, ...]) -> list[Row]:
        assert conn.is_connected()  # (also keeps the connection referenced: cursors don't)
        cur.execute(sql, args or ())
        return [tuple(r) for r in cur.fetchall()] if cur.with_rows else []

    return execute


def _connector_prepared(ep: Endpoint) -> Execute:
    """mysql-connector's prepared cursor (COM_STMT_PREPARE/EXECUTE); BEGIN and COMMIT as text."""
    conn = ep.connector()
    prepared, text = conn.cursor(prepared=True), conn.cursor()

    def execute(sql: str, args: tuple[Any, ...]) -> list[Row]:
        assert conn.is_connected()  # (also keeps the connection referenced: cursors don't)
        cur = text if sql in ("BEGIN", "COMMIT") else prepared
        cur.execute(sql.replace("%s", "?") if cur is prepared else sql, args or ())
        return [tuple(r) for r in cur.fetchall()] if cur.with_rows else []

    return execute


def _asyncmy(ep: Endpoint) -> Execute:
    """asyncmy, on an event loop of this connection's own."""
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncmy.connect(**ep.params()))

    async def run(sql: str, args: tuple[Any, ...]) -> list[Row]:
        async with conn.cursor() as cur:
            await cur.execute(sql, args or None)
            return [tuple(r) for r in await cur.fetchall()]

    def execute(sql: str, args: tuple[Any, ...]) -> list[Row]:
        return loop.run_until_complete(run(sql, args))

    return execute


CLIENTS: dict[str, Callable[[Endpoint], Execute]] = {
    "PyMySQL": _pymysql,
    "mysql-connector": _connector,
    "mysql-connector (prepared)": _connector_prepared,
    "asyncmy": _asyncmy,
}


def _read(b: Execute, sql: str, args: tuple[Any, ...] = ()) -> list[Row] | None:
    try:
        return b(sql, args)
    except (pymysql.err.ProgrammingError, mysql.connector.Error, asyncmy.errors.ProgrammingError):
        return None  # e.g. 1146 "table doesn't exist" on a replica that is behind: stale


def _ab_loop(a: Execute, b: Execute, iterations: int) -> int:
    """A writes (INSERT, UPDATE, DELETE, CREATE TABLE, a transaction), B reads it at once;
    the stale reads B saw."""
    table = f"causal_{uuid.uuid4().hex[:8]}"
    a(f"CREATE TABLE {table} (id INT PRIMARY KEY, v INT NOT NULL)", ())
    stale = 0
    try:
        for i in range(iterations):
            a(f"INSERT INTO {table} (id, v) VALUES (%s, 0)", (i,))
            stale += _read(b, f"SELECT v FROM {table} WHERE id = %s", (i,)) != [(0,)]
            a(f"UPDATE {table} SET v = %s WHERE id = %s", (i + 1, i))
            stale += _read(b, f"SELECT v FROM {table} WHERE id = %s", (i,)) != [(i + 1,)]
            if i % 2:
                a(f"DELETE FROM {table} WHERE id = %s", (i,))
                stale += _read(b, f"SELECT v FROM {table} WHERE id = %s", (i,)) != []
            if i % 10 == 0:
                a("BEGIN", ())
                a(f"INSERT INTO {table} (id, v) VALUES (%s, 7)", (-i - 1,))
                a(f"UPDATE {table} SET v = 8 WHERE id = %s", (-i - 1,))
                a("COMMIT", ())
                stale += _read(b, f"SELECT v FROM {table} WHERE id = %s", (-i - 1,)) != [(8,)]
            if i % 50 == 0:
                a(f"CREATE TABLE {table}_{i} (id INT)", ())
                stale += _read(b, f"SELECT COUNT(*) FROM {table}_{i}") != [(0,)]
                a(f"DROP TABLE {table}_{i}", ())
    finally:
        a(f"DROP TABLE IF EXISTS {table}", ())
    return stale


def _outcomes(thread: ProxyThread) -> dict[str, int]:
    return dict(thread.server.metrics.causal_reads)


@pytest.mark.parametrize("client", list(CLIENTS))
def test_b_reads_what_a_wrote(causal: ProxyThread, client: str) -> None:
    connect = CLIENTS[client]
    stale = _ab_loop(connect(_ep(causal)), connect(_ep(causal)), ITERATIONS)
    print(f"\ncausal, {client}: {ITERATIONS} iterations, stale {stale}; {_outcomes(causal)}")
    assert stale == 0


# The other client libraries the tests drive, each running the same A/B loop in its own
# language (tests/integration/clients/): (command before the arguments, arguments after).
CONNECTOR_J = Path("/usr/share/java/mariadb-java-client.jar")
SCRIPTS = {
    "Node mysql2 (query)": (["node", str(HERE / "node" / "causal.js")], ["query"]),
    "Node mysql2 (execute)": (["node", str(HERE / "node" / "causal.js")], ["execute"]),
    "PHP PDO": (["php", str(HERE / "causal.php")], ["pdo"]),
    "PHP PDO (server prepares)": (["php", str(HERE / "causal.php")], ["pdo-server"]),
    "PHP mysqli (prepared)": (["php", str(HERE / "causal.php")], ["mysqli"]),
    "Perl DBD::MariaDB": (["perl", str(HERE / "causal.pl")], []),
    "Perl DBD::MariaDB (server prepares)": (["perl", str(HERE / "causal.pl")], ["server"]),
    "JDBC Connector/J": (["java", "-cp", str(CONNECTOR_J), str(HERE / "Causal.java")], []),
    "JDBC Connector/J (server prepares)": (
        ["java", "-cp", str(CONNECTOR_J), str(HERE / "Causal.java")],
        ["server"],
    ),
}
NODES = ("master1", "master2", "replica1", "replica2")


def _stmt_executes(lab: Lab) -> int:
    """COM_STMT_EXECUTEs the lab's servers ran (pyproxy's own queries are all text)."""
    return sum(int(global_status(lab, node, "Com_stmt_execute")) for node in NODES)


@pytest.mark.parametrize("client", list(SCRIPTS))
def test_b_reads_what_a_wrote_script_clients(
    causal: ProxyThread, delayed: Lab, client: str
) -> None:
    """Each library in its own language; those that can, in text mode and with server-side
    prepared statements (which the servers' Com_stmt_execute counts prove)."""
    prefix, extra = SCRIPTS[client]
    tool = require_tool(prefix[0])
    if client.startswith("JDBC"):
        require_path(CONNECTOR_J, "MariaDB Connector/J (libmariadb-java)")
    if client.startswith("Node"):
        require_path(HERE / "node" / "node_modules" / "mysql2", "mysql2 (make node-deps)")
    ep = _ep(causal)
    table = f"causal_{uuid.uuid4().hex[:8]}"
    executes = _stmt_executes(delayed)
    try:
        out = run_json(
            [tool, *prefix[1:], table, str(ITERATIONS), *extra], timeout=600, env=client_env(ep)
        )
    finally:
        drop_tables(ep, [table])
    executes = _stmt_executes(delayed) - executes
    print(f"\ncausal, {client}: {out}; {executes} COM_STMT_EXECUTE; {_outcomes(causal)}")
    assert out == {"iterations": ITERATIONS, "stale": 0}
    if "server prepares" in client:
        assert executes >= 2 * ITERATIONS  # B's reads at least, as prepared statements


def _pool_loop(ep: Endpoint, iterations: int) -> int:
    """8 threads share a pool of 8 connections: each write (INSERT, UPDATE, DELETE, a
    transaction, CREATE TABLE) on one taken from the pool, the read on whichever the pool
    gives next (as a web application's requests do); the stale reads."""
    pool: queue.Queue[Execute] = queue.Queue()
    for _ in range(8):
        pool.put(_pymysql(ep))
    table = f"causal_pool_{uuid.uuid4().hex[:8]}"
    setup = pool.get()
    setup(f"CREATE TABLE {table} (id INT PRIMARY KEY, v INT NOT NULL)", ())
    pool.put(setup)
    stale = Counter[str]()
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        rng = random.Random(index)

        def write(*sqls: tuple[str, tuple[Any, ...]]) -> None:
            conn = pool.get()
            for sql, args in sqls:  # several: one transaction on one connection
                conn(sql, args)
            pool.put(conn)
            time.sleep(rng.uniform(0, 0.001))  # give the pool a chance to reorder

        def check(kind: str, sql: str, args: tuple[Any, ...], want: list[Row]) -> None:
            conn = pool.get()
            got = _read(conn, sql, args)
            pool.put(conn)
            stale[kind] += got != want

        select = f"SELECT v FROM {table} WHERE id = %s"
        try:
            for i in range(iterations // 8):
                key = index * 1_000_000 + i
                write((f"INSERT INTO {table} (id, v) VALUES (%s, %s)", (key, i)))
                check("insert", select, (key,), [(i,)])
                if i % 2:
                    write((f"UPDATE {table} SET v = v + 1 WHERE id = %s", (key,)))
                    check("update", select, (key,), [(i + 1,)])
                    write((f"DELETE FROM {table} WHERE id = %s", (key,)))
                    check("delete", select, (key,), [])
                if i % 10 == 0:
                    write(
                        ("BEGIN", ()),
                        (f"INSERT INTO {table} (id, v) VALUES (%s, 7)", (-key - 1,)),
                        (f"UPDATE {table} SET v = 8 WHERE id = %s", (-key - 1,)),
                        ("COMMIT", ()),
                    )
                    check("transaction", select, (-key - 1,), [(8,)])
                if i % 50 == 0:
                    other = f"{table}_{index}_{i}"
                    write((f"CREATE TABLE {other} (id INT)", ()))
                    check("create table", f"SELECT COUNT(*) FROM {other}", (), [(0,)])
                    write((f"DROP TABLE {other}", ()))
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    setup = pool.get()
    setup(f"DROP TABLE {table}", ())
    assert not errors, errors
    print(f" stale by write: {dict(stale)}")
    return sum(stale.values())


def test_pool_of_8_shared_by_8_threads(causal: ProxyThread) -> None:
    stale = _pool_loop(_ep(causal), ITERATIONS * 4)
    print(f"\ncausal, pool of 8 / 8 threads: {ITERATIONS * 4} iterations, stale {stale}")
    assert stale == 0


def test_causal_chain(causal: ProxyThread) -> None:
    """A inserts row 1, B inserts row 2 referring to it, C reads row 2 then row 1."""
    ep = _ep(causal)
    a, b, c = _pymysql(ep), _pymysql(ep), _pymysql(ep)
    table = f"causal_chain_{uuid.uuid4().hex[:8]}"
    a(f"CREATE TABLE {table} (id INT PRIMARY KEY, parent INT NULL)", ())
    misses = 0
    try:
        for i in range(ITERATIONS):
            a(f"INSERT INTO {table} (id, parent) VALUES (%s, NULL)", (2 * i,))
            b(f"INSERT INTO {table} (id, parent) VALUES (%s, %s)", (2 * i + 1, 2 * i))
            child = _read(c, f"SELECT parent FROM {table} WHERE id = %s", (2 * i + 1,))
            parent = _read(c, f"SELECT id FROM {table} WHERE id = %s", (2 * i,))
            misses += child != [(2 * i,)]
            misses += parent != [(2 * i,)]
    finally:
        a(f"DROP TABLE {table}", ())
    print(f"\ncausal chain A->B->C: {ITERATIONS} iterations, misses {misses}")
    assert misses == 0


def test_read_your_writes_is_not_enough_across_connections(delayed: Lab) -> None:
    """Informational: the same A/B loop under read_your_writes (the stale reads it shows are
    reported; on a quiet machine it may see none)."""
    thread = _proxy(delayed, "read_your_writes")
    try:
        ep = _ep(thread)
        stale = _ab_loop(_pymysql(ep), _pymysql(ep), ITERATIONS)
        pooled = _pool_loop(ep, ITERATIONS * 4)
    finally:
        thread.stop()
    print(
        f"\nread_your_writes: A/B {ITERATIONS} iterations, stale {stale}; "
        f"pool of 8: {ITERATIONS * 4} iterations, stale {pooled}"
    )


def _replica_share(ep: Endpoint, reads: int, stop: threading.Event | None = None) -> float:
    """The share of reads that replicas answered: each read returns the server's id."""
    b = _pymysql(ep)
    seen = Counter(b("SELECT @@server_id, COUNT(*) FROM mysql.db", ())[0][0] for _ in range(reads))
    if stop is not None:
        stop.set()
    print(f" servers: {dict(seen)}")
    return sum(seen[i] for i in REPLICA_IDS) / reads


def test_reads_stay_on_replicas(causal: ProxyThread) -> None:
    """No writes: >= 95 % of reads on replicas. A steady write stream: the share reported."""
    time.sleep(DELAY_S + 1.5)  # the delayed replica applies the earlier tests' writes
    quiet = _replica_share(_ep(causal), 500)
    print(f"\ncausal, no writes: {quiet:.1%} of 500 reads on replicas")
    assert quiet >= 0.95

    stop = threading.Event()
    table = f"causal_stream_{uuid.uuid4().hex[:8]}"
    writer = _pymysql(_ep(causal))
    writer(f"CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, v INT)", ())

    def stream() -> None:
        w = _pymysql(_ep(causal))
        while not stop.is_set():
            w(f"INSERT INTO {table} (v) VALUES (1)", ())

    threads = [threading.Thread(target=stream) for _ in range(4)]
    before = _outcomes(causal)
    for t in threads:
        t.start()
    try:
        busy = _replica_share(_ep(causal), 500, stop)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        writer(f"DROP TABLE {table}", ())
    after = _outcomes(causal)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    print(f"causal, 4 writers streaming: {busy:.1%} of 500 reads on replicas; outcomes {delta}")


def test_two_pyproxy_processes_causal_global(delayed: Lab, tmp_path: Path) -> None:
    """A write through one pyproxy process, the read at once through another: causal_global
    asks the writer's position, so nothing acknowledged by the first is missed."""
    sections: dict[str, Any] = {"routing": {"consistency": "causal_global"}, "health": LAG}
    with (
        lab_proxy(delayed, tmp_path / "one", **sections) as one,
        lab_proxy(delayed, tmp_path / "two", **sections) as two,
    ):
        stale = _ab_loop(_pymysql(one.endpoint()), _pymysql(two.endpoint()), ITERATIONS)
        metrics = two.metrics_text()
        assert one.answers() and two.answers()
    outcomes = [
        line for line in metrics.splitlines() if line.startswith("pyproxy_causal_reads_total")
    ]
    print(f"\ncausal_global, two processes: {ITERATIONS} iterations, stale {stale}; {outcomes}")
    assert stale == 0


def test_a_and_b_in_two_worker_processes(delayed: Lab, tmp_path: Path) -> None:
    """One pyproxy with two worker processes: A's session in one worker, B's in the other
    (found by session id in stats_mysql_processlist): the high-water mark is shared, so B
    reads what A wrote, 0 stale with causal."""
    with lab_proxy(
        delayed, tmp_path, workers=2, routing={"consistency": "causal"}, health=LAG
    ) as proxy:
        conns = [proxy.endpoint().connect() for _ in range(16)]
        rows = proxy.admin_rows("SELECT SessionID, ThreadID FROM stats_mysql_processlist")
        worker = {int(r["SessionID"]): int(r["ThreadID"]) for r in rows}
        by_worker: dict[int, pymysql.Connection] = {}
        for conn in conns:
            by_worker.setdefault(worker[conn.thread_id()], conn)
        assert len(by_worker) == 2, worker  # 16 connections landed on both workers
        a, b = (_on(by_worker[w]) for w in sorted(by_worker))
        stale = _ab_loop(a, b, ITERATIONS)
        assert proxy.answers()
        for conn in conns:
            conn.close()
    print(f"\ncausal, A and B in two worker processes: {ITERATIONS} iterations, stale {stale}")
    assert stale == 0


BIG_ROWS = 10_000  # about 2 MB per read: the dropped answer spans many chunks


def _metric(proxy: LabProxy, line_start: str) -> float:
    for line in proxy.metrics_text().splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _fallbacks_and_waits(proxy: LabProxy) -> tuple[float, float]:
    fallback = 'pyproxy_causal_reads_total{outcome="writer_fallback"}'
    return _metric(proxy, fallback), _metric(proxy, "pyproxy_causal_wait_seconds_count")


def _big_table(proxy: LabProxy, lab: Lab) -> str:
    """A table of BIG_ROWS rows, created through the proxy and applied by replica1."""
    table = f"causal_big_{uuid.uuid4().hex[:8]}"
    a = _pymysql(proxy.endpoint())
    a(f"CREATE TABLE {table} (id INT PRIMARY KEY, v INT NOT NULL, pad CHAR(200))", ())
    a(f"INSERT INTO {table} SELECT seq, 0, REPEAT('p', 200) FROM seq_1_to_{BIG_ROWS}", ())
    deadline = time.monotonic() + 30
    while root_rows(lab, "replica1", f"SELECT COUNT(*) FROM demo_db.{table}") != [(BIG_ROWS,)]:
        assert time.monotonic() < deadline, "replica1 did not apply the table"
        time.sleep(0.1)
    return table


class _RowLock:
    """A row of a replica locked by root: replication stops applying changes to it."""

    def __init__(self, lab: Lab, table: str, node: str = "replica1") -> None:
        self.root = lab.connect_root(node)
        with self.root.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(f"SELECT v FROM demo_db.{table} WHERE id = 1 FOR UPDATE")

    def release(self) -> None:
        self.root.rollback()
        self.root.close()


def test_timed_out_wait_drops_the_stale_answer(delayed: Lab, tmp_path: Path) -> None:
    """The GTID wait goes with the read in one round trip; when it times out (replica1 cannot
    apply the update, replica2 applies it a second late), the replica's answer to the read
    (2 MB, stale) is scanned and dropped and the writer answers instead: text queries and
    prepared statements (COM_STMT_EXECUTE, prepared again on the writer). Polite clients
    beside see nothing."""
    routing = {"consistency": "causal", "causal_wait_ms": 100}
    with lab_proxy(delayed, tmp_path, routing=routing, health=LAG) as proxy:
        table = _big_table(proxy, delayed)
        a, b = _pymysql(proxy.endpoint()), _pymysql(proxy.endpoint())
        raw = RawClient(proxy.port)  # keeps its prepared statement, as most drivers do
        raw.login(proxy.user, proxy.password, "demo_db")
        stmt_id = raw.prepare(f"SELECT id, pad FROM {table} WHERE v > 0")
        execute = stmt_id.to_bytes(4, "little") + b"\0\x01\0\0\0"  # no cursor, 1 iteration
        fallbacks, waits = _fallbacks_and_waits(proxy)
        lock = _RowLock(delayed, table)
        try:
            with PoliteClients(proxy, 2) as polite:
                for i in range(1, 6):
                    a(f"UPDATE {table} SET v = %s WHERE id = 1", (-i,))
                    rows = b(f"SELECT id, v, pad FROM {table} ORDER BY id", ())
                    assert len(rows) == BIG_ROWS
                    assert rows[0][:2] == (1, -i)  # the writer's answer, never the replica's
                    assert b(f"SELECT v FROM {table} WHERE id = 1", ()) == [(-i,)]
                    a(f"UPDATE {table} SET v = 1 WHERE id <= %s", (i * 1000,))
                    got = raw.request(Command.COM_STMT_EXECUTE, execute)
                    assert got.error is None and got.rows == i * 1000  # the writer's count
        finally:
            lock.release()
        fallbacks_after, waits_after = _fallbacks_and_waits(proxy)
        a(f"DROP TABLE {table}", ())
        assert not polite.errors, polite.errors
        assert proxy.answers()
    print(
        f"\nwaits timed out: {fallbacks_after - fallbacks:.0f} reads to the writer, "
        f"{waits_after - waits:.0f} waits"
    )
    assert fallbacks_after - fallbacks >= 20
    assert waits_after > waits  # at least one wait went ahead of its read, and timed out


def _ryw_counts(proxy: LabProxy) -> tuple[float, float, float]:
    """read_your_writes: waits caught up, waits timed out, reads sent to the writer."""
    return (
        _metric(proxy, 'pyproxy_gtid_waits_total{outcome="caught_up"}'),
        _metric(proxy, 'pyproxy_gtid_waits_total{outcome="timed_out"}'),
        _metric(proxy, "pyproxy_consistency_reads_to_writer_total"),
    )


def test_read_your_writes_waits_with_the_read(delayed: Lab, tmp_path: Path) -> None:
    """read_your_writes sends its GTID wait and the read in one write too: a read right after
    the session's write, on a replica that has it but not yet the monitor's word of it, is
    answered by the replica after the wait; when the wait times out (replica1 cannot apply
    the update, replica2 applies it a second late) the replica's answer (2 MB, stale) is
    dropped and the writer answers: text queries and prepared statements."""
    routing = {"consistency": "read_your_writes", "read_your_writes_wait_ms": 100}
    with lab_proxy(delayed, tmp_path, routing=routing, health=LAG) as proxy:
        table = _big_table(proxy, delayed)
        _wait_applied(delayed, proxy, table)  # a replica known to lag is not waited for
        a = _pymysql(proxy.endpoint())
        caught, timed_out, to_writer = _ryw_counts(proxy)
        served = Counter[int]()
        for i in range(1, 41):
            a(f"UPDATE {table} SET v = %s WHERE id = 2", (i,))
            (server_id, v), *_ = a(f"SELECT @@server_id, v FROM {table} WHERE id = 2", ())
            assert v == i
            served[server_id] += 1
        caught_after = _ryw_counts(proxy)[0]
        raw = RawClient(proxy.port)
        raw.login(proxy.user, proxy.password, "demo_db")
        # A write of its own first: read_your_writes does not cover a's CREATE TABLE, which
        # replica2 applies a second late (the prepare might go there).
        touch = f"UPDATE {table} SET v = -5 WHERE id = {BIG_ROWS}"
        assert raw.request(Command.COM_QUERY, touch.encode()).error is None
        stmt_id = raw.prepare(f"SELECT id, pad FROM {table} WHERE v > 0")
        execute = stmt_id.to_bytes(4, "little") + b"\0\x01\0\0\0"  # no cursor, 1 iteration
        lock = _RowLock(delayed, table)
        try:
            with PoliteClients(proxy, 2) as polite:
                for i in range(1, 6):
                    a(f"UPDATE {table} SET v = %s WHERE id = 1", (-i,))
                    rows = a(f"SELECT id, v, pad FROM {table} ORDER BY id", ())
                    assert len(rows) == BIG_ROWS
                    assert rows[0][:2] == (1, -i)  # the writer's answer, never the replica's
                    update = f"UPDATE {table} SET v = 1 WHERE id <= {i * 1000}"
                    assert raw.request(Command.COM_QUERY, update.encode()).error is None
                    got = raw.request(Command.COM_STMT_EXECUTE, execute)
                    assert got.error is None and got.rows == i * 1000  # the writer's count
        finally:
            lock.release()
        _, timed_out_after, to_writer_after = _ryw_counts(proxy)
        a(f"DROP TABLE {table}", ())
        assert not polite.errors, polite.errors
        assert proxy.answers()
    on_replicas = sum(served[i] for i in REPLICA_IDS)
    print(
        f"\nread_your_writes: 40 reads after the session's write: {dict(served)} by server id, "
        f"{caught_after - caught:.0f} waits caught up; with the replica held back "
        f"{timed_out_after - timed_out:.0f} waits timed out, "
        f"{to_writer_after - to_writer:.0f} reads to the writer"
    )
    assert on_replicas > 0 and caught_after > caught  # replicas answered after a wait
    assert to_writer_after - to_writer >= 10
    assert timed_out_after > timed_out  # a wait went ahead of its read, and timed out


def test_replica_connection_killed_during_the_wait(delayed: Lab, tmp_path: Path) -> None:
    """The replica's connection is killed while the GTID wait sent ahead of a read runs: the
    read runs again elsewhere and its client gets the right answer, never an error or a stale
    row; polite clients beside see nothing."""
    routing = {"consistency": "causal", "causal_wait_ms": 5000}
    with lab_proxy(delayed, tmp_path, routing=routing, health=LAG) as proxy:
        table = _big_table(proxy, delayed)
        a, b = _pymysql(proxy.endpoint()), _pymysql(proxy.endpoint())
        lock = _RowLock(delayed, table)
        killed: list[tuple[str, object]] = []

        def kill_the_wait() -> None:
            deadline = time.monotonic() + 10
            while not killed and time.monotonic() < deadline:
                for node in ("replica1", "replica2"):
                    for (thread_id,) in root_rows(
                        delayed,
                        node,
                        "SELECT ID FROM information_schema.PROCESSLIST "
                        "WHERE INFO LIKE 'SELECT MASTER_GTID_WAIT%'",
                    ):
                        root_rows(delayed, node, f"KILL {thread_id}")
                        killed.append((node, thread_id))
                time.sleep(0.02)

        try:
            with PoliteClients(proxy, 2) as polite:
                a(f"UPDATE {table} SET v = 7 WHERE id = 1", ())
                killer = threading.Thread(target=kill_the_wait)
                killer.start()
                assert b(f"SELECT v FROM {table} WHERE id = 1", ()) == [(7,)]
                killer.join(30)
        finally:
            lock.release()
        a(f"DROP TABLE {table}", ())
        assert not polite.errors, polite.errors
        assert proxy.answers()
    print(f"\nkilled during the wait: {killed}")
    assert killed


# The levels whose wait goes with the read in one round trip, and their wait's setting.
GATED = {"causal": "causal_wait_ms", "read_your_writes": "read_your_writes_wait_ms"}


@pytest.mark.parametrize("level", list(GATED))
def test_kill_and_timeout_during_the_wait_are_errors(
    delayed: Lab, tmp_path: Path, level: str
) -> None:
    """A read waiting for its replica to catch up is KILLed (routing.query_timeout_ms, or a
    KILL QUERY from another connection): its client gets ERROR 1317, as from the server, and
    the read does not run again on the writer. causal: A wrote, B reads; read_your_writes:
    B reads its own write."""
    routing = {"consistency": level, GATED[level]: 8000, "query_timeout_ms": 1200}
    with lab_proxy(delayed, tmp_path, routing=routing, health=LAG) as proxy:
        table = _big_table(proxy, delayed)
        b = proxy.endpoint().connect()
        a = _pymysql(proxy.endpoint()) if level == "causal" else _on(b)
        killer = proxy.endpoint().connect()
        outcomes: list[str] = []
        for how in ("query_timeout_ms", "KILL QUERY"):
            # Both replicas caught up and known so (a replica known to lag is not waited
            # for), then both kept from applying the next change.
            _wait_applied(delayed, proxy, table)
            locks = [_RowLock(delayed, table, node) for node in ("replica1", "replica2")]
            try:
                a(f"UPDATE {table} SET v = v + 1 WHERE id = 1", ())
                kill = threading.Thread(target=_kill_query_soon, args=(killer, b.thread_id()))
                if how == "KILL QUERY":
                    # Alone: a query timeout's KILL as well could land late, on whatever the
                    # backend connection runs next (KILL QUERY by thread id races so).
                    proxy.admin_rows("SET mysql-default_query_timeout='36000000'")
                    proxy.admin_rows("LOAD MYSQL VARIABLES TO RUNTIME")
                    kill.start()
                with pytest.raises(pymysql.err.OperationalError) as err, b.cursor() as cur:
                    cur.execute(f"SELECT v FROM {table} WHERE id = 1")
                if how == "KILL QUERY":
                    kill.join()
            finally:
                for lock in locks:
                    lock.release()
            assert err.value.args[0] == 1317, err.value
            outcomes.append(f"{how}: {err.value.args[0]}")
            with b.cursor() as cur:  # the session goes on
                cur.execute("SELECT 1")
                assert cur.fetchone() == (1,)
        a(f"DROP TABLE {table}", ())
        b.close()
        killer.close()
        assert proxy.answers()
    print(f"\n{level}, killed while waiting: {outcomes}")


def _on(conn: pymysql.Connection) -> Execute:
    """Statements on an existing PyMySQL connection, as _pymysql's."""

    def execute(sql: str, args: tuple[Any, ...]) -> list[Row]:
        with conn.cursor() as cur:
            cur.execute(sql, args or None)
            return [tuple(r) for r in cur.fetchall()]

    return execute


def _wait_applied(lab: Lab, proxy: LabProxy, table: str) -> None:
    """Both replicas have table and its last change, and the proxy saw them with no lag."""
    writer = root_rows(lab, "master1", f"SELECT SUM(v) FROM demo_db.{table}")
    deadline = time.monotonic() + 30
    while True:
        try:
            done = all(
                root_rows(lab, node, f"SELECT SUM(v) FROM demo_db.{table}") == writer
                for node in ("replica1", "replica2")
            )
        except pymysql.err.ProgrammingError:  # not created there yet
            done = False
        lags = re.findall(
            r"^pyproxy_replication_lag_seconds\{.*\} (\S+)$", proxy.metrics_text(), re.M
        )
        if done and lags and all(float(v) == 0 for v in lags):
            return
        assert time.monotonic() < deadline, "the replicas did not catch up"
        time.sleep(0.2)


def _kill_query_soon(killer: pymysql.Connection, target: int) -> None:
    time.sleep(0.3)
    with killer.cursor() as cur:
        cur.execute(f"KILL QUERY {target}")


def test_a_dropped_answer_has_a_deadline(delayed: Lab, tmp_path: Path) -> None:
    """A wait that timed out leaves the replica running the read, whose answer is dropped:
    a slow one is not waited for beyond DROP_TIMEOUT_S (its connection is aborted), and the
    writer's answer comes."""
    routing = {"consistency": "causal", "causal_wait_ms": 100}
    with lab_proxy(delayed, tmp_path, routing=routing, health=LAG) as proxy:
        table = _big_table(proxy, delayed)
        a, b = _pymysql(proxy.endpoint()), _pymysql(proxy.endpoint())
        lock = _RowLock(delayed, table)
        try:
            for i in range(1, 4):
                a(f"UPDATE {table} SET v = %s WHERE id = 1", (-i,))
                assert b(f"SELECT SLEEP(2), v FROM {table} WHERE id = 1", ()) == [(0, -i)]
        finally:
            lock.release()
        a(f"DROP TABLE {table}", ())
        log = proxy.log_text()
    dropped = log.count("a response to drop still running after 1s")
    print(f"\nslow stale answers abandoned: {dropped}")
    assert dropped >= 1, log[-3000:]
