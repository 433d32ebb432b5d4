"""Causal reads across connections: B reads what A wrote at once, with reads split, on
a lab whose replica2 applies everything late; also across two real pyproxy processes."""

from __future__ import annotations

import os
import queue
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest

from proxy.lab.lab import Lab
from proxy.testing import ProxyThread
from tests.support.endpoints import Endpoint, proxy_config
from tests.support.proxyproc import lab_proxy
from tests.support.servers import set_delay

# CI runs fewer; the figure is 1,000 (CAUSAL_ITERATIONS=1000).
ITERATIONS = int(os.environ.get("CAUSAL_ITERATIONS", "200"))
DELAY_S = 1  # replica2 applies everything this late (MASTER_DELAY)
REPLICA_IDS = (101, 102)
LAG = {"max_replication_lag_s": 30}  # replica2 stays in the read pool

Row = tuple[Any, ...]
Execute = Callable[[str, tuple[Any, ...]], list[Row]]


@pytest.fixture(scope="module")
def delayed(lab: Lab) -> Iterator[Lab]:
    set_delay(lab, "replica2", DELAY_S)
    try:
        yield lab
    finally:
        set_delay(lab, "replica2", 0)


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


CLIENTS: dict[str, Callable[[Endpoint], Execute]] = {
    "PyMySQL": _pymysql,
    "mysql-connector": _connector,
}


def _read(b: Execute, sql: str, args: tuple[Any, ...] = ()) -> list[Row] | None:
    try:
        return b(sql, args)
    except (pymysql.err.ProgrammingError, mysql.connector.Error):
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


def _pool_loop(ep: Endpoint, iterations: int) -> int:
    """8 threads share a pool of 8 connections: each write on one taken from the pool, the
    read on whichever the pool gives next (as a web application's requests do)."""
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
        try:
            for i in range(iterations // 8):
                key = index * 1_000_000 + i
                conn = pool.get()
                conn(f"INSERT INTO {table} (id, v) VALUES (%s, %s)", (key, i))
                pool.put(conn)
                time.sleep(rng.uniform(0, 0.001))  # give the pool a chance to reorder
                conn = pool.get()
                got = _read(conn, f"SELECT v FROM {table} WHERE id = %s", (key,))
                pool.put(conn)
                stale["insert"] += got != [(i,)]
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
    return sum(stale.values())


def test_pool_of_8_shared_by_8_threads(causal: ProxyThread) -> None:
    stale = _pool_loop(_ep(causal), ITERATIONS * 4)
    print(f"\ncausal, pool of 8 / 8 threads: {ITERATIONS * 4} pairs, stale {stale}")
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
        f"pool of 8: {ITERATIONS * 4} pairs, stale {pooled}"
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
