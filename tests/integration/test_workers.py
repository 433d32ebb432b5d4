"""Worker processes beside the topology process: the real `pyproxy` with `workers: N`.

Connections spread evenly over the workers (one listening socket, the least busy takes); admin and
/metrics sum every worker; KILL reaches a session in another worker; SIGHUP reaches every
worker; a worker killed with SIGKILL takes only its own clients and comes back; a failover
under a write stream loses no acknowledged row and every worker writes to the new master;
SIGTERM leaves no process behind; and a long load neither fails over nor changes the writer.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pymysql
import pytest
import yaml

from proxy.lab.lab import Lab
from tests.support.proxyproc import LabProxy, RawClient, lab_proxy

LOST = (1927, 2013, 2006)  # ER_CONNECTION_KILLED, CR_SERVER_LOST, CR_SERVER_GONE_ERROR
LOAD_SECONDS = float(os.environ.get("PYPROXY_LOAD_SECONDS", "20"))
BIG_RESULT = "SELECT seq, REPEAT('z', 200) FROM seq_1_to_200000"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A lab of this module's own (semi-sync: an acknowledged write is on both masters): the
    writer killed here must not make the proxies of other tests fail over."""
    own = Lab(tmp_path_factory.mktemp("workers") / "lab")
    own.up(masters=2, replicas=2, semisync=True)
    try:
        yield own
    finally:
        own.destroy()


@pytest.fixture(scope="module")
def two(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProxy]:
    with lab_proxy(lab, tmp_path_factory.mktemp("two"), workers=2) as proc:
        yield proc


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def worker_of(proxy: LabProxy, session_ids: list[int]) -> dict[int, int]:
    """session id -> the worker serving it (stats_mysql_processlist's ThreadID)."""
    rows = proxy.admin_rows("SELECT SessionID, ThreadID FROM stats_mysql_processlist")
    found = {int(r["SessionID"]): int(r["ThreadID"]) for r in rows}
    return {sid: found[sid] for sid in session_ids if sid in found}


def metric(proxy: LabProxy, name: str) -> float:
    """The sum of a metric's samples (every label set)."""
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(proxy.metrics_text()))


def spread(proxy: LabProxy, count: int = 24) -> tuple[list[pymysql.Connection], dict[int, int]]:
    """count connections and the worker of each (by session id)."""
    conns = [proxy.connect() for _ in range(count)]
    workers = worker_of(proxy, [c.thread_id() for c in conns])
    return conns, workers


def test_connections_land_on_every_worker(two: LabProxy) -> None:
    workers = two.worker_pids()
    assert len(workers) == 2, workers
    # One listening socket: the topology process opened it and holds it for restarted
    # workers; the workers take the connections.
    assert two.listening_pids() == {two.pid, *workers}
    conns, where = spread(two)
    try:
        assert set(where.values()) == {0, 1}, where
    finally:
        for c in conns:
            c.close()


def test_connections_are_served_evenly(two: LabProxy) -> None:
    """Each new connection goes to the worker holding fewer: after every one, the workers'
    counts differ by at most one (a worker slow for BALANCE_WAIT_S may cost one more);
    with the kernel spreading them at random, 24 in a row would drift further."""
    conns: list[pymysql.Connection] = []
    drift: list[int] = []
    try:
        for _ in range(24):
            conns.append(two.connect())
            where = worker_of(two, [c.thread_id() for c in conns])
            counts = [list(where.values()).count(w) for w in (0, 1)]
            drift.append(abs(counts[0] - counts[1]))
        assert max(drift) <= 2 and drift[-1] == 0, drift
    finally:
        for c in conns:
            c.close()


def test_a_stopped_worker_is_not_waited_for(two: LabProxy) -> None:
    """Worker 0 stopped (SIGSTOP): soon holding fewer clients than worker 1, it is left
    new ones, but only for BALANCE_WAIT_S each time; worker 1 serves them all, none fails."""
    held = [two.connect() for _ in range(6)]
    stopped = two.worker_pids()[0]
    fresh: list[pymysql.Connection] = []
    os.kill(stopped, signal.SIGSTOP)
    try:
        for _ in range(10):
            conn = two.connect(connect_timeout=5)
            with conn.cursor() as cur:
                cur.execute("SELECT 42")
                assert cur.fetchone() == (42,)
            fresh.append(conn)
    finally:
        os.kill(stopped, signal.SIGCONT)
    where = worker_of(two, [c.thread_id() for c in fresh])
    try:
        assert set(where.values()) == {1}, where
    finally:
        for c in held + fresh:
            c.close()


def test_admin_and_metrics_sum_over_workers(two: LabProxy) -> None:
    conns, where = spread(two, 16)
    before = metric(two, "pyproxy_queries_total")  # after the connections' own set-up
    sent = 0
    try:
        assert set(where.values()) == {0, 1}, where
        for i in range(25):
            for c in conns:
                with c.cursor() as cur:
                    cur.execute("SELECT %s AS workers_total_probe", (i,))
                    assert cur.fetchone() == (i,)
                sent += 1
        rows = two.admin_rows(
            "SELECT SUM(count_star) AS n FROM stats_mysql_query_digest "
            "WHERE digest_text LIKE '%workers_total_probe%'"
        )
        assert int(rows[0]["n"]) == sent
        assert metric(two, "pyproxy_queries_total") - before == sent
        assert metric(two, "pyproxy_client_connections") >= len(conns)
        listed = two.admin_rows("SELECT DISTINCT ThreadID FROM stats_mysql_processlist")
        assert {int(r["ThreadID"]) for r in listed} == {0, 1}
        pools = two.admin_rows("SELECT SUM(ConnOK) AS ok FROM stats_mysql_connection_pool")
        assert int(pools[0]["ok"]) >= 2  # each worker opened its own backend connections
    finally:
        for c in conns:
            c.close()


def test_kill_reaches_a_session_in_another_worker(two: LabProxy) -> None:
    conns, where = spread(two)
    try:
        asker = next(c for c in conns if where[c.thread_id()] == 0)
        victim = next(c for c in conns if where[c.thread_id()] == 1)
        errors: list[int] = []

        def sleeper() -> None:
            try:
                with victim.cursor() as cur:
                    cur.execute("SELECT SLEEP(30)")
                    errors.append(0 if cur.fetchone() == (1,) else -1)  # KILL QUERY: SLEEP -> 1
            except pymysql.MySQLError as exc:
                errors.append(int(exc.args[0]))

        thread = threading.Thread(target=sleeper)
        started = time.monotonic()
        thread.start()
        time.sleep(1.0)
        with asker.cursor() as cur:
            cur.execute(f"KILL QUERY {victim.thread_id()}")
        thread.join(20)
        assert time.monotonic() - started < 20 and errors in ([0], [1317]), errors
        with asker.cursor() as cur:
            cur.execute(f"KILL {victim.thread_id()}")
        with pytest.raises(pymysql.MySQLError) as lost, victim.cursor() as cur:
            cur.execute("SELECT 1")
        assert lost.value.args[0] in LOST
        with asker.cursor() as cur, pytest.raises(pymysql.MySQLError) as unknown:
            cur.execute("KILL 1999999999")
        assert unknown.value.args[0] == 1094  # ER_NO_SUCH_THREAD
        # The admin's KILL reaches any worker's session, whoever its user.
        for target in (c for c in conns if c not in (asker, victim)):
            two.admin_rows(f"KILL {target.thread_id()}")
            with pytest.raises(pymysql.MySQLError) as gone, target.cursor() as cur:
                cur.execute("SELECT 1")
            assert gone.value.args[0] in LOST
    finally:
        for c in conns:
            with contextlib.suppress(pymysql.MySQLError):
                c.close()


def test_sighup_reaches_every_worker(two: LabProxy) -> None:
    data = yaml.safe_load(two.config.read_text())
    original = two.config.read_text()
    data["query_rules"] = [{"match_digest": "workers_reload_probe", "block": "blocked by reload"}]
    two.config.write_text(yaml.safe_dump(data, sort_keys=False))
    conns, where = spread(two)
    try:
        assert set(where.values()) == {0, 1}, where
        os.kill(two.pid, signal.SIGHUP)

        def all_blocked() -> bool:
            for c in conns:
                with c.cursor() as cur:
                    try:
                        cur.execute("SELECT 1 AS workers_reload_probe")
                    except pymysql.MySQLError as exc:
                        if "blocked by reload" in str(exc):
                            continue
                        raise
                    return False
            return True

        assert wait_until(all_blocked, 10)
    finally:
        two.config.write_text(original)
        os.kill(two.pid, signal.SIGHUP)
        for c in conns:
            c.close()
    assert wait_until(lambda: "reloaded" in two.log_text())


class Writers:
    """Clients in threads inserting rows (autocommit); each row records the server it was
    written on. Acknowledged rows and errors are kept per client."""

    def __init__(self, proxy: LabProxy, count: int, table: str) -> None:
        self.proxy = proxy
        self.table = table
        self.acked: dict[int, list[tuple[int, float]]] = {}  # client -> (seq, sent at)
        self.errors: dict[int, list[int]] = {}
        self.sessions: dict[int, int] = {}  # client -> session id
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(count)]

    def __enter__(self) -> Writers:
        for t in self._threads:
            t.start()
        assert wait_until(lambda: len(self.sessions) == len(self._threads))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _reconnect(self) -> pymysql.Connection:
        for _ in range(50):
            try:
                return self.proxy.connect(read_timeout=20)
            except pymysql.MySQLError:
                time.sleep(0.1)
        return self.proxy.connect(read_timeout=20)

    def _run(self, client: int) -> None:
        conn = self.proxy.connect(read_timeout=20)
        with self._lock:
            self.sessions[client] = conn.thread_id()
            self.acked[client] = []
            self.errors[client] = []
        seq = 0
        try:
            while not self._stop.is_set():
                seq += 1
                sent_at = time.monotonic()
                try:
                    with conn.cursor() as cur:
                        cur.execute(
                            f"INSERT INTO {self.table} (client, seq, server_id) "
                            "VALUES (%s, %s, @@server_id)",
                            (client, seq),
                        )
                    with self._lock:
                        self.acked[client].append((seq, sent_at))
                except pymysql.MySQLError as exc:
                    with self._lock:
                        self.errors[client].append(int(exc.args[0]))
                    if exc.args[0] in LOST:
                        with contextlib.suppress(pymysql.MySQLError):
                            conn.close()
                        conn = self._reconnect()
                    else:
                        time.sleep(0.05)
                self._stop.wait(0.01)
        finally:
            with contextlib.suppress(pymysql.MySQLError):
                conn.close()


def _server_id(lab: Lab, node: str) -> int:
    conn = lab.connect_root(node)
    try:
        with conn.cursor(pymysql.cursors.Cursor) as cur:
            cur.execute("SELECT @@server_id")
            row = cur.fetchone()
            assert row is not None
            return int(row[0])
    finally:
        conn.close()


def _rows(lab: Lab, node: str, table: str) -> dict[tuple[int, int], int]:
    conn = lab.connect_root(node)
    try:
        with conn.cursor(pymysql.cursors.Cursor) as cur:
            cur.execute(f"SELECT client, seq, server_id FROM {table}")
            return {(int(c), int(s)): int(sid) for c, s, sid in cur.fetchall()}
    finally:
        conn.close()


def test_sigkill_of_a_worker_takes_only_its_clients(two: LabProxy) -> None:
    table = "demo_db.worker_kill_rows"
    setup = two.connect()
    with setup.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(
            f"CREATE TABLE {table} (client INT, seq INT, server_id INT, PRIMARY KEY (client, seq))"
        )
    setup.close()
    before = two.worker_pids()
    with Writers(two, 12, table) as writers:
        where = worker_of(two, list(writers.sessions.values()))
        assert set(where.values()) == {0, 1}, where
        time.sleep(1.0)
        pid0 = before[0]
        os.kill(pid0, signal.SIGKILL)  # the first worker started (index 0)
        assert wait_until(lambda: len(two.worker_pids()) == 2 and pid0 not in two.worker_pids())
        time.sleep(2.0)
    for client, session in writers.sessions.items():
        errors = writers.errors[client]
        if where.get(session) == 1:
            assert errors == [], (client, errors)  # the other worker's clients saw nothing
        else:
            assert errors and set(errors) <= set(LOST), (client, errors)
    # It serves again: new connections land on both workers.
    conns, again = spread(two)
    for c in conns:
        c.close()
    assert set(again.values()) == {0, 1}, again
    assert "worker 0 restarted" in two.log_text()


def test_failover_under_writes_every_worker_follows(lab: Lab, tmp_path: Path) -> None:
    table = "demo_db.worker_failover_rows"
    setup = lab.connect_root("master1")
    with setup.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(
            f"CREATE TABLE {table} (client INT, seq INT, server_id INT, PRIMARY KEY (client, seq))"
        )
    setup.close()
    lab.wait_replicated()
    old_id, new_id = _server_id(lab, "master1"), _server_id(lab, "master2")
    try:
        with lab_proxy(lab, tmp_path, workers=2) as proxy:
            with Writers(proxy, 16, table) as writers:
                where = worker_of(proxy, list(writers.sessions.values()))
                assert set(where.values()) == {0, 1}, where
                failovers = metric(proxy, "pyproxy_failovers_total")
                time.sleep(1.5)
                assert lab.kill("master1") is not None
                killed_at = time.monotonic()  # master1 is gone: nothing sent now can reach it
                assert wait_until(lambda: metric(proxy, "pyproxy_failovers_total") > failovers, 60)
                time.sleep(3.0)  # writes continue on the new writer
            rows = _rows(lab, "master2", table)
            servers = proxy.admin_rows("SELECT name, role FROM runtime_mysql_servers")
    finally:
        lab.up(masters=2, replicas=2, semisync=True)  # master1 back, for the next tests
    lost = [
        (client, seq)
        for client, acked in writers.acked.items()
        for seq, _ in acked
        if (client, seq) not in rows
    ]
    assert lost == [], lost[:10]
    for client, acked in writers.acked.items():
        after = [seq for seq, sent in acked if sent > killed_at]
        assert after, f"client {client} wrote nothing after the kill"
        # The first write sent after the kill, in whichever worker, is on master2.
        assert rows[(client, after[0])] == new_id, (client, after[0])
        assert all(rows[(client, s)] == new_id for s in after)
    assert {rows[(c, s)] for c, a in writers.acked.items() for s, _ in a} <= {old_id, new_id}
    assert {r["name"]: r["role"] for r in servers}["master2"] == "writer"


def test_silent_topology_process_stops_writes_not_reads(lab: Lab, tmp_path: Path) -> None:
    """A worker that hears nothing from the topology process (frozen here) sends no write
    until it hears again; reads go on."""
    with lab_proxy(
        lab, tmp_path, workers=2, topology_silence_ms=500, health={"failover_hold_ms": 10_000}
    ) as proxy:
        writer_conn = proxy.connect()
        with writer_conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS demo_db.silence_rows (id INT PRIMARY KEY)")
            cur.execute("DELETE FROM demo_db.silence_rows")
        done: list[float] = []

        def write() -> None:
            with writer_conn.cursor() as cur:
                cur.execute("INSERT INTO demo_db.silence_rows VALUES (1)")
            done.append(time.monotonic())

        os.kill(proxy.pid, signal.SIGSTOP)
        try:
            time.sleep(1.5)
            for _ in range(6):  # fresh clients, on either worker: reads are served
                reader = proxy.connect()
                with reader.cursor() as cur:
                    cur.execute("SELECT 42")
                    assert cur.fetchone() == (42,)
                reader.close()
            thread = threading.Thread(target=write)
            thread.start()
            time.sleep(2.0)
            assert done == []  # the write waits: no writer while silent
            resumed = time.monotonic()
        finally:
            os.kill(proxy.pid, signal.SIGCONT)
        thread.join(20)
        assert done and done[0] > resumed
        writer_conn.close()
        text = proxy.log_text()
        assert "no word from the topology process" in text
        assert "the topology process is heard again" in text


def test_sigterm_leaves_no_process(lab: Lab, tmp_path: Path) -> None:
    with lab_proxy(lab, tmp_path, workers=2) as proxy:
        workers = proxy.worker_pids()
        assert len(workers) == 2
        conn = proxy.connect()
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.close()
        proxy.stop_clean()
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists(), pid


def test_topology_process_killed_workers_exit(lab: Lab, tmp_path: Path) -> None:
    """Chosen behaviour: without the topology process the workers drain and exit (no
    orphan keeps the port with a topology nobody updates)."""
    with lab_proxy(lab, tmp_path, workers=2) as proxy:
        workers = proxy.worker_pids()
        assert proxy.proc is not None
        os.kill(proxy.pid, signal.SIGKILL)
        proxy.proc.wait(10)
        assert wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in workers), 20)
        proxy.stop()


def _rude_mid_result(port: int, user: str, password: str) -> None:
    rude = RawClient(port)
    try:
        rude.login(user, password)
        rude.query(BIG_RESULT)
        got = 0
        while got < 64 * 1024:
            data = rude.sock.recv(65536)
            if not data:
                break
            got += len(data)
    finally:
        rude.close()


@pytest.mark.parametrize("workers", [2, 1])
def test_load_no_false_failover(lab: Lab, tmp_path: Path, workers: int) -> None:
    busy_count, rude_count = 200, 50
    # Sessions keep a connection to each replica they used: room for all of them (this probe
    # is about health checks and elections, not pool limits).
    servers = [{**s, "max_connections": 600} for s in lab.proxy_config()["servers"]]
    with lab_proxy(lab, tmp_path, workers=workers, servers=servers) as proxy:
        assert len(proxy.worker_pids()) == workers
        writer = proxy.admin_rows("SELECT name FROM runtime_mysql_servers WHERE role='writer'")
        failovers = metric(proxy, "pyproxy_failovers_total")
        changes = writer_changes(proxy)
        errors: list[str] = []
        stop = threading.Event()
        done = [0]
        lock = threading.Lock()

        def busy(index: int) -> None:
            try:
                conn = proxy.connect()
            except pymysql.MySQLError as exc:
                errors.append(f"busy {index} connect: {exc}")
                return
            try:
                with conn.cursor() as cur:
                    while not stop.is_set():
                        cur.execute("SELECT %s", (index,))
                        if cur.fetchone() != (index,):
                            errors.append(f"busy {index}: wrong answer")
                        with lock:
                            done[0] += 1
                        stop.wait(0.01)
            except pymysql.MySQLError as exc:
                errors.append(f"busy {index}: {exc}")
            finally:
                conn.close()

        def rude(index: int) -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError, ConnectionError):
                    _rude_mid_result(proxy.port, proxy.user, proxy.password)

        threads = [threading.Thread(target=busy, args=(i,)) for i in range(busy_count)]
        threads += [threading.Thread(target=rude, args=(i,)) for i in range(rude_count)]
        for t in threads:
            t.start()
        time.sleep(LOAD_SECONDS)
        stop.set()
        for t in threads:
            t.join(60)
        assert errors == [], errors[:5]
        assert metric(proxy, "pyproxy_failovers_total") == failovers
        after = proxy.admin_rows("SELECT name FROM runtime_mysql_servers WHERE role='writer'")
        assert after == writer
        # Not even for a moment, in the topology process or a worker (silent: no writer).
        assert writer_changes(proxy) == changes
        checks = proxy.admin_rows(
            "SELECT server, Latency_us FROM stats_mysql_connection_pool ORDER BY server"
        )
        failed = metric_by_label(proxy, "pyproxy_health_checks_total", "result", "failed")
        print(
            f"\nworkers={workers}: {done[0]} statements in {LOAD_SECONDS:.0f}s from "
            f"{busy_count} busy + {rude_count} rude clients; health checks failed: {failed}; "
            "last check latency: "
            + ", ".join(f"{r['server']} {int(r['Latency_us']) / 1000:.1f} ms" for r in checks)
        )
        assert proxy.answers()


def writer_changes(proxy: LabProxy) -> int:
    """Writer changes logged so far by any pyproxy process (the topology's 'writer: a -> b')."""
    return len(re.findall(r"proxy\.topology: writer: ", proxy.log_text()))


def metric_by_label(proxy: LabProxy, name: str, label: str, value: str) -> float:
    pattern = re.compile(
        rf'^{re.escape(name)}\{{[^}}]*{label}="{value}"[^}}]*\}} ([0-9.e+-]+)$', re.MULTILINE
    )
    return sum(float(v) for v in pattern.findall(proxy.metrics_text()))
