"""Backend faults under every kind of session state: carried over only when nothing was lost.

The fault battery runs the real `pyproxy` process. For each state a session can be in and each
way its backend connection can die, the client either goes on correctly (only when nothing
was lost) or gets a lost-connection error (1927 / 2013), never an OK for something that did
not happen; and afterwards the rows on the writer are exactly those the client was told were
committed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pymysql
import pytest

from proxy.lab.lab import Lab
from proxy.protocol.constants import ServerStatus
from tests.support.proxyproc import LabProxy, RawClient, lab_proxy
from tests.support.servers import root_rows

LOST = (1927, 2013, 2006)  # ER_CONNECTION_KILLED, CR_SERVER_LOST, CR_SERVER_GONE_ERROR
TABLE = "demo_db.fault_rows"
RESULTS: list[str] = []


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A lab of this module's own: the faults here (servers killed, restarted, frozen) must
    not make the proxies of other tests fail over."""
    own = Lab(tmp_path_factory.mktemp("faults") / "lab")
    own.up(masters=2, replicas=2)
    try:
        yield own
    finally:
        own.destroy()


@pytest.fixture(scope="module")
def fault_proxy(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProxy]:
    """pyproxy as users run it; the health checker tolerates the short restarts of the
    battery (no failover: the battery is about sessions, not elections)."""
    lab.up(masters=2, replicas=2)
    with lab_proxy(
        lab, tmp_path_factory.mktemp("faults"), health={"failure_threshold": 1000}
    ) as proc:
        conn = proc.connect()
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id INT PRIMARY KEY)")
            cur.execute(f"DELETE FROM {TABLE}")
        conn.close()
        yield proc
        print("\nfault battery (state x fault -> outcome):\n" + "\n".join(RESULTS))
        RESULTS.clear()


def _report(line: str) -> None:
    RESULTS.append(line)
    print(line)


def _writer(lab: Lab) -> str:
    """The writable master (earlier tests may have failed the lab over to master2)."""
    writable = [
        r["node"]
        for r in lab.status()
        if r["role"].startswith("master") and r["read_only"] == "OFF"
    ]
    assert len(writable) == 1, writable
    return str(writable[0])


def _kill_app_connections(lab: Lab, node: str) -> int:
    ids = root_rows(lab, node, "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app'")
    for (thread_id,) in ids:
        with contextlib.suppress(pymysql.err.OperationalError):  # already gone
            root_rows(lab, node, f"KILL CONNECTION {thread_id}")
    return len(ids)


@dataclass
class Case:
    """One session state: statements that build it, and statements that depend on it."""

    name: str
    setup: list[str]
    probe: list[str]
    expect: object  # the probe's last result when the session rightly goes on
    holds_state: bool  # something would be lost with the backend connection
    autocommit: bool = True
    writes: dict[str, int] = field(default_factory=dict)  # statement -> row id it inserts


def _cases() -> list[Case]:
    return [
        Case("idle (autocommit)", ["INSERT INTO {t} VALUES ({b}1)"], ["SELECT 1"], 1, False),
        Case(
            "session settings only",
            ["SET time_zone = '+03:00'", "SET sql_mode = 'ANSI_QUOTES'"],
            ["SELECT CONCAT(@@time_zone, ' ', @@sql_mode)"],
            "+03:00 ANSI_QUOTES",
            False,
        ),
        Case(
            "explicit transaction",
            ["BEGIN", "INSERT INTO {t} VALUES ({b}1)"],
            ["INSERT INTO {t} VALUES ({b}2)", "COMMIT"],
            None,
            True,
        ),
        Case(
            "autocommit=0 after a statement",
            ["INSERT INTO {t} VALUES ({b}1)"],
            ["INSERT INTO {t} VALUES ({b}2)", "COMMIT"],
            None,
            True,
            autocommit=False,
        ),
        Case("user variable", ["SET @x = 42"], ["SELECT @x"], 42, True),
        Case(
            "temporary table",
            ["CREATE TEMPORARY TABLE tmp_fault (a INT)", "INSERT INTO tmp_fault VALUES (1)"],
            ["SELECT COUNT(*) FROM tmp_fault"],
            1,
            True,
        ),
        Case(
            "GET_LOCK",
            ["SELECT GET_LOCK('fault_lock', 5)"],
            ["SELECT IS_USED_LOCK('fault_lock') IS NOT NULL"],
            1,
            True,
        ),
        Case("SQL PREPARE", ["PREPARE s FROM 'SELECT 7'"], ["EXECUTE s"], 7, True),
    ]


def _fault_kill(lab: Lab) -> None:
    _kill_app_connections(lab, _writer(lab))


def _fault_restart(lab: Lab) -> None:
    assert lab.kill(_writer(lab)) is not None
    lab.up(masters=2, replicas=2)


FAULTS: dict[str, Callable[[Lab], None]] = {
    "backend connection killed": _fault_kill,
    "writer SIGKILLed and restarted": _fault_restart,
    "backend wait_timeout expired": lambda lab: time.sleep(3.5),
}

CASES = _cases()


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault_battery(lab: Lab, fault_proxy: LabProxy, case: Case, fault: str) -> None:
    # Row ids of this case: {b}1, {b}2 (b unique per case)
    prefix = (CASES.index(case) + 1) * 10 + list(FAULTS).index(fault)
    base = prefix * 10
    sub = {"t": TABLE, "b": prefix}
    writer = _writer(lab)
    wait_timeout = fault == "backend wait_timeout expired"
    if wait_timeout:
        # Backend connections opened from now on expire after 2 idle seconds; the pool's
        # older ones are closed so that the session gets a new one.
        root_rows(lab, writer, "SET GLOBAL wait_timeout = 2")
        _kill_app_connections(lab, writer)
        time.sleep(0.5)
    committed: set[int] = set()
    uncommitted: set[int] = set()
    conn = fault_proxy.connect(autocommit=case.autocommit)
    try:
        with conn.cursor() as cur:
            for sql in case.setup:
                cur.execute(sql.format(**sub))
                _track(sql.format(**sub), case, committed, uncommitted)
    finally:
        if wait_timeout:
            root_rows(lab, writer, "SET GLOBAL wait_timeout = 28800")
    FAULTS[fault](lab)
    time.sleep(0.5)  # the proxy sees the closed socket
    outcome, result = _run_probe(conn, case, sub, committed, uncommitted)
    conn.close()
    stored = {
        int(r[0])
        for r in root_rows(
            lab, writer, f"SELECT id FROM {TABLE} WHERE id BETWEEN {base} AND {base + 9}"
        )
    }
    _report(f"  {case.name:32} x {fault:32} -> {outcome}")
    assert committed <= stored, (
        f"rows the client was told were committed are missing: {committed - stored}"
    )
    assert not (uncommitted & stored), (
        f"rows the client was told failed are stored: {uncommitted & stored}"
    )
    if case.holds_state:
        assert outcome.startswith("lost-connection error"), f"silent loss: {outcome} {result}"
    else:
        assert outcome == "continued", outcome
        assert result == case.expect, f"continued with a wrong result: {result!r}"
    assert fault_proxy.alive()


def _track(sql: str, case: Case, committed: set[int], uncommitted: set[int]) -> None:
    """Which row ids the client has been told are committed (or not yet)."""
    words = sql.split()
    if words[0] == "INSERT" and words[2] == TABLE:
        row = int(words[-1].strip("()"))
        (committed if case.autocommit and "BEGIN" not in case.setup else uncommitted).add(row)
    elif words[0] == "COMMIT":
        committed.update(uncommitted)
        uncommitted.clear()


def _run_probe(
    conn: pymysql.Connection,
    case: Case,
    sub: dict[str, object],
    committed: set[int],
    uncommitted: set[int],
) -> tuple[str, object]:
    result: object = None
    try:
        with conn.cursor() as cur:
            for sql in case.probe:
                cur.execute(sql.format(**sub))
                _track(sql.format(**sub), case, committed, uncommitted)
                row = cur.fetchone()
                result = row[0] if row else None
    except pymysql.err.OperationalError as exc:
        failed = sql.format(**sub)
        if failed.startswith(f"INSERT INTO {TABLE}"):
            uncommitted.add(int(failed.split()[-1].strip("()")))  # told it failed
        code = exc.args[0]
        if code in LOST:
            return f"lost-connection error {code}", None
        return f"other error {code}: {exc.args[1]}", None
    if isinstance(result, bytes):
        result = result.decode()
    return "continued", result


def test_replica_killed_mid_result(lab: Lab, fault_proxy: LabProxy) -> None:
    """A read streaming from a replica that dies: the client gets an error, never a
    silently short result; the proxy keeps serving."""
    lab.up(masters=2, replicas=2)
    conn = fault_proxy.connect(read_timeout=60)
    outcome = "complete result"
    n = 0
    cur = conn.cursor(pymysql.cursors.SSCursor)
    cur.execute("SELECT @@server_id, seq, REPEAT('x', 200) FROM seq_1_to_2000000")
    first = cur.fetchone()
    assert first is not None
    replica = {101: "replica1", 102: "replica2"}[int(first[0])]
    killer = threading.Timer(0.2, lambda: lab.kill(replica))
    killer.start()
    try:
        for n, _ in enumerate(cur, 2):  # noqa: B007 - n counts the rows read
            pass
    except pymysql.err.OperationalError as exc:
        outcome = f"lost-connection error {exc.args[0]}"
    finally:
        killer.join()
    # The connection is gone: tell PyMySQL there is nothing left of the result to drain, or
    # it tries to when the cursor is garbage-collected (and warns, in some later test).
    if cur._result is not None:
        cur._result.unbuffered_active = False
    _report(
        f"  {'read streaming from a replica':32} x {'replica SIGKILLed mid-result':32} -> {outcome}"
    )
    assert outcome.startswith("lost-connection error"), f"a short result looked complete ({n} rows)"
    lab.up(masters=2, replicas=2)
    other = fault_proxy.connect()
    with other.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    other.close()


def test_frozen_replica_reads_move_on(lab: Lab, tmp_path: Path) -> None:
    """SIGSTOP a replica for 20 s under 20 reading clients: the reads stuck on it are retried
    elsewhere once it is marked DOWN; no read errors, none waits more than 2 s."""
    lab.up(masters=2, replicas=2)
    with lab_proxy(lab, tmp_path) as proc:
        _frozen_replica(lab, proc)


def _frozen_replica(lab: Lab, fault_proxy: LabProxy) -> None:
    stop = threading.Event()
    latencies: list[tuple[float, float]] = []  # (start, seconds)
    errors: list[str] = []

    def reader() -> None:
        conn = fault_proxy.connect(read_timeout=60)
        try:
            with conn.cursor() as cur:
                while not stop.is_set():
                    started = time.monotonic()
                    cur.execute("SELECT 1")
                    assert cur.fetchone() == (1,)
                    latencies.append((started, time.monotonic() - started))
        except pymysql.err.MySQLError as exc:
            errors.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=reader) for _ in range(20)]
    for t in threads:
        t.start()
    time.sleep(2)
    pid = lab.kill("replica2", signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        time.sleep(20)
    finally:
        assert pid is not None
        os.kill(pid, signal.SIGCONT)
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join(60)
    worst = max(s for _, s in latencies)
    before = sum(1 for t0, _ in latencies if frozen_at - 2 <= t0 < frozen_at) / 2
    during = [t0 for t0, _ in latencies if frozen_at <= t0 < frozen_at + 20]
    back = min((t0 for t0 in during if t0 > frozen_at + 0.1), default=frozen_at + 20)
    _report(
        f"  {'20 clients reading':32} x {'replica SIGSTOPped 20 s':32} -> "
        f"{len(errors)} errors, worst read {worst:.2f}s, {before:.0f} reads/s before, "
        f"{len(during) / 20:.0f}/s during"
    )
    assert not errors, errors[:3]
    assert worst < 2.0, f"a read waited {worst:.2f}s on the frozen replica"
    assert back - frozen_at < 2.0
    assert len(during) / 20 > before / 4, "read throughput did not come back during the freeze"
    lab.up(masters=2, replicas=2)


def test_open_cursor_connection_killed(lab: Lab, fault_proxy: LabProxy) -> None:
    """A COM_STMT_FETCH cursor whose backend connection dies between fetches: the client
    gets a lost-connection error, never a cursor that silently ends early. (PHP's mysqlnd
    ends such a cursor silently even on a direct connection, so a bare client is used.)"""
    lab.up(masters=2, replicas=2)
    client = RawClient(fault_proxy.port)
    client.login(fault_proxy.user, fault_proxy.password, "demo_db")
    try:
        stmt_id = client.prepare("SELECT seq FROM seq_1_to_5000")
        opened = client.execute_cursor(stmt_id)
        assert opened.error is None and opened.status is not None
        assert opened.status & ServerStatus.CURSOR_EXISTS
        first = client.fetch(stmt_id, 10)
        assert first.error is None and first.rows == 10
        for node in ("master1", "master2", "replica1", "replica2"):
            _kill_app_connections(lab, node)
        time.sleep(0.5)
        after = client.fetch(stmt_id, 10)
    finally:
        client.close()
    outcome = (
        f"lost-connection error {after.error.code}" if after.error else f"{after.rows} more rows"
    )
    _report(f"  {'open COM_STMT_FETCH cursor':32} x {'backend connection killed':32} -> {outcome}")
    assert after.error is not None and after.error.code in LOST, outcome


def test_query_timeout_kills_the_statement(lab: Lab, tmp_path: Path) -> None:
    """routing.query_timeout_ms: a statement running too long gets KILL QUERY on its server;
    the client gets the server's error and its connection goes on."""
    lab.up(masters=2, replicas=2)
    with lab_proxy(lab, tmp_path, routing={"query_timeout_ms": 1500}) as proc:
        conn = proc.connect()
        started = time.monotonic()
        with conn.cursor() as cur:
            with pytest.raises(pymysql.err.OperationalError) as err:
                cur.execute("SELECT SLEEP(30)")
            took = time.monotonic() - started
            assert err.value.args[0] == 1317  # ER_QUERY_INTERRUPTED, from the server
            cur.execute("SELECT 2")
            assert cur.fetchone() == (2,)
            with pytest.raises(pymysql.err.OperationalError) as err:
                cur.execute("SELECT /* pyproxy:writer */ SLEEP(30)")
            assert err.value.args[0] == 1317
        conn.close()
        metrics = proc.metrics_text()
    _report(
        f"  {'SELECT SLEEP(30)':32} x {'query_timeout_ms 1500':32} -> interrupted after {took:.1f}s"
    )
    assert took < 10
    assert "pyproxy_query_timeouts_total 2.0" in metrics


def test_a_late_kill_query_stops_nothing_else(lab: Lab, tmp_path: Path) -> None:
    """A KILL QUERY travels on another backend connection and may arrive after the statement
    it was for ended: the connection it aims at runs nothing more until it was answered, so
    it never stops the next statement (which may be another session's). The KILL's new
    connection is slowed by the writer's init_connect (a login under load)."""
    lab.up(masters=2, replicas=2)
    writer = _writer(lab)
    with lab_proxy(lab, tmp_path) as proc:
        target, killer = proc.connect(), proc.connect()
        results: list[object] = []

        def run_two() -> None:
            with target.cursor() as cur:
                for sql in ("SELECT SLEEP(0.4)", "SELECT SLEEP(1)"):
                    try:
                        cur.execute(sql)
                        results.append(cur.fetchone())
                    except pymysql.err.OperationalError as exc:
                        results.append(exc.args[0])

        with target.cursor() as cur:
            cur.execute("BEGIN")  # both statements on the writer's one connection
            cur.execute("SELECT CONNECTION_ID()")
            (target_id,) = cur.fetchone()
        root_rows(lab, writer, "SET GLOBAL init_connect = 'DO SLEEP(0.6)'")
        try:
            statements = threading.Thread(target=run_two)
            statements.start()
            time.sleep(0.15)  # into SLEEP(0.4); the KILL lands ~0.45 s after its statement
            with killer.cursor() as cur:
                cur.execute(f"KILL QUERY {target_id}")
            statements.join(20)
        finally:
            root_rows(lab, writer, "SET GLOBAL init_connect = ''")
        target.close()
        killer.close()
    _report(f"  {'late KILL QUERY':32} x {'the next statement':32} -> {results}")
    # The first statement ended on its own before the KILL came; the second ran whole.
    assert results == [(0,), (0,)], results
