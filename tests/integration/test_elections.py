"""Elections that do no harm, against the real `pyproxy` process on a lab of this module's own
(it freezes servers and flips read_only): the writer is elected from GTIDs at start, a reload
removing the writer switches over first, a frozen writer is demoted and fenced on wake-up, a
client's 1290 changes nothing by itself, and load cannot fool the health checker."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pymysql
import pytest
import yaml

from proxy.lab.lab import Lab
from proxy.testing import raise_nofile
from tests.support.proxyproc import LabProxy, PoliteClients, RawClient, lab_proxy
from tests.support.servers import root_rows

TABLE = "demo_db.elect_rows"
LOAD_SECONDS = float(os.environ.get("PYPROXY_LOAD_SECONDS", "20"))
READ_ONLY = 1290
BUSY, RUDE = 150, 50  # the probe: busy clients, clients hanging up mid-result


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Two masters with semisync (an acknowledged row is on both) and one replica."""
    own = Lab(tmp_path_factory.mktemp("elect") / "lab")
    own.up(masters=2, replicas=1, semisync=True)
    try:
        yield own
    finally:
        own.destroy()


def _read_only(lab: Lab, node: str) -> bool:
    return bool(root_rows(lab, node, "SELECT @@GLOBAL.read_only")[0][0])


def _set_read_only(lab: Lab, node: str, on: bool) -> None:
    root_rows(lab, node, f"SET GLOBAL read_only = {'ON' if on else 'OFF'}")


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _reset(lab: Lab) -> None:
    """master1 the writer, master2 fenced, replication running and converged."""
    lab.up(masters=2, replicas=1, semisync=True)
    for node in ("master1", "master2", "replica"):
        root_rows(lab, node, "START SLAVE")
    if not _read_only(lab, "master2"):
        _set_read_only(lab, "master2", True)
    _set_read_only(lab, "master1", False)
    lab.wait_replicated()


def _metric(proxy: LabProxy, name: str, **labels: str) -> float:
    text = proxy.metrics_text()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # as rendered
    m = re.search("^" + re.escape(f"{name}{{{want}}} ") + "([0-9.e+-]+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def _proxy_writer(proxy: LabProxy) -> str | None:
    found = re.findall(
        r'^pyproxy_server_state\{server="([^"]+)",state="writer"\} 1\.0$',
        proxy.metrics_text(),
        re.MULTILINE,
    )
    assert len(found) <= 1, found
    return found[0] if found else None


def _checks(proxy: LabProxy, server: str, result: str = "ok") -> int:
    return int(_metric(proxy, "pyproxy_health_checks_total", server=server, result=result))


def _down_servers(proxy: LabProxy) -> list[str]:
    return re.findall(
        r'^pyproxy_server_state\{server="([^"]+)",state="down"\} 1\.0$',
        proxy.metrics_text(),
        re.MULTILINE,
    )


def _make_table(proxy: LabProxy) -> None:
    conn = proxy.connect()
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(
            f"CREATE TABLE {TABLE} (seq INT PRIMARY KEY, sid INT NOT NULL, client INT NOT NULL)"
        )
    conn.close()


@dataclass
class Writes:
    """Autocommit INSERTs from several connections; each row records the server that ran it
    (@@server_id), and the client notes when it was acknowledged."""

    proxy: LabProxy
    clients: int
    acked: dict[int, tuple[float, int]] = field(default_factory=dict)  # seq -> (time, client)
    errors: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: int = 0
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Writes:
        for i in range(self.clients):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(60)

    def _next(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _run(self, client: int) -> None:
        conn: pymysql.Connection | None = None
        while not self.stop.is_set():
            seq = self._next()
            try:
                if conn is None:
                    conn = self.proxy.connect(read_timeout=30)
                with conn.cursor() as cur:
                    cur.execute(
                        f"INSERT INTO {TABLE} (seq, sid, client) VALUES (%s, @@server_id, %s)",
                        (seq, client),
                    )
                self.acked[seq] = (time.monotonic(), client)
            except pymysql.MySQLError as exc:
                self.errors.append((time.monotonic(), f"{exc.args[0]} {exc.args[1:]}"))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
            time.sleep(0.003)
        if conn is not None:
            conn.close()


def _rows(lab: Lab, node: str) -> dict[int, int]:
    return {
        int(str(seq)): int(str(sid))
        for seq, sid in root_rows(lab, node, f"SELECT seq, sid FROM {TABLE}")
    }


def test_restart_with_both_masters_writable_keeps_the_newest(lab: Lab, tmp_path: Path) -> None:
    """master2 holds GTIDs master1 lacks and both are writable when pyproxy starts: master2
    stays the writer and master1 is fenced, whatever the order in the config."""
    _reset(lab)
    for newer, older in (("master2", "master1"), ("master1", "master2")):
        root_rows(lab, older, "STOP SLAVE")  # it must not receive what the newer one takes
        _set_read_only(lab, newer, False)
        root_rows(lab, newer, "CREATE TABLE IF NOT EXISTS demo_db.elect_newer (id INT)")
        root_rows(lab, newer, "INSERT INTO demo_db.elect_newer VALUES (1)")
        _set_read_only(lab, older, False)
        assert not _read_only(lab, "master1") and not _read_only(lab, "master2")
        try:
            with lab_proxy(lab, tmp_path / f"restart-{newer}") as proxy:
                assert _proxy_writer(proxy) == newer
                assert _read_only(lab, older), f"{older} (behind) must be fenced"
                assert not _read_only(lab, newer), f"{newer} (newest GTIDs) must not be fenced"
                conn = proxy.connect()
                with conn.cursor() as cur:
                    cur.execute("SELECT /* pyproxy:writer */ @@server_id")
                    assert cur.fetchone() == (int(newer[-1]),)
                conn.close()
                log = proxy.log_text()
                print(f"\nstart with both writable, {newer} newer:\n" + "\n".join(
                    line for line in log.splitlines() if "writ" in line or "read_only" in line
                ))  # fmt: skip
        finally:
            root_rows(lab, older, "START SLAVE")
        lab.wait_replicated()


def _with_config(proxy: LabProxy, servers: list[dict[str, object]]) -> None:
    data = yaml.safe_load(proxy.config.read_text())
    data["servers"] = servers
    proxy.config.write_text(yaml.safe_dump(data, sort_keys=False))


@dataclass
class WriterWatch:
    """Polls both masters' read_only (the new writer first: sound for old -> new) and the
    proxy's writer, recording every observation, until stopped."""

    lab: Lab
    proxy: LabProxy
    new: str
    old: str
    both_writable: list[float] = field(default_factory=list)
    writers: list[str | None] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            new_rw = not _read_only(self.lab, self.new)
            old_rw = not _read_only(self.lab, self.old)
            if new_rw and old_rw:
                self.both_writable.append(time.monotonic())
            writer = _proxy_writer(self.proxy)
            if not self.writers or self.writers[-1] != writer:
                self.writers.append(writer)
            time.sleep(0.01)


def test_reload_removing_the_writer_switches_over_first(lab: Lab, tmp_path: Path) -> None:
    _reset(lab)
    with lab_proxy(lab, tmp_path / "reload") as proxy:
        assert _proxy_writer(proxy) == "master1"
        _make_table(proxy)
        servers = yaml.safe_load(proxy.config.read_text())["servers"]
        # Refused: master1 (the writer) goes and the only other master is renamed, so no
        # master the running proxy checks can take over. The running config stays.
        renamed = [s for s in servers if s["name"] != "master1"]
        renamed = [dict(s, name="m2-renamed") if s["name"] == "master2" else s for s in renamed]
        _with_config(proxy, renamed)
        os.kill(proxy.pid, signal.SIGHUP)
        _wait(lambda: "config reload refused" in proxy.log_text(), 20, "the refusal")
        assert "it removes master1, the current writer" in proxy.log_text()
        assert _proxy_writer(proxy) == "master1" and not _read_only(lab, "master1")
        assert _checks(proxy, "m2-renamed") == 0
        watch = WriterWatch(lab, proxy, new="master2", old="master1")
        poller = threading.Thread(target=watch.run, daemon=True)
        poller.start()
        _wait(lambda: bool(watch.writers), 20, "the first observation")
        with Writes(proxy, 4) as writes:
            _wait(lambda: len(writes.acked) > 100, 30, "writes before the reload")
            _with_config(proxy, [s for s in servers if s["name"] != "master1"])
            os.kill(proxy.pid, signal.SIGHUP)
            _wait(lambda: _proxy_writer(proxy) == "master2", 20, "the switchover to master2")
            _wait(lambda: "config reloaded" in proxy.log_text(), 20, "the reload")
            mark = len(writes.acked)
            _wait(lambda: len(writes.acked) > mark + 100, 30, "writes after the reload")
        watch.stop.set()
        poller.join(10)
        print(
            f"\nreload without the writer: proxy writers seen {watch.writers}; "
            f"client errors {writes.errors[:5]}; rows acked {len(writes.acked)}"
        )
        assert watch.both_writable == []
        assert watch.writers[0] == "master1" and watch.writers[-1] == "master2"
        assert set(watch.writers) <= {"master1", None, "master2"}
        assert not any("1105" in e or "sequence" in e.lower() for _, e in writes.errors)
        assert writes.errors == []  # a planned switchover: writes wait, nothing fails
        assert _read_only(lab, "master1") and not _read_only(lab, "master2")
        lost = set(writes.acked) - set(_rows(lab, "master2"))
        assert lost == set()
        # Every configured server is checked afterwards...
        before = {s: _checks(proxy, s) for s in ("master2", "replica")}
        _wait(
            lambda: all(_checks(proxy, s) > n + 2 for s, n in before.items()),
            20,
            "checks of every configured server",
        )
        # ... and master1, added back, is checked again (fenced: it stays a standby).
        gone = _checks(proxy, "master1")
        _with_config(proxy, servers)
        os.kill(proxy.pid, signal.SIGHUP)
        _wait(lambda: _checks(proxy, "master1") > gone + 2, 20, "checks of master1 again")
        assert _proxy_writer(proxy) == "master2"
        assert "internal error" not in proxy.log_text().lower()


@pytest.mark.timeout(300)
def test_frozen_writer_is_demoted_and_fenced_on_wake_up(lab: Lab, tmp_path: Path) -> None:
    """SIGSTOP the writer for 10 s under a write stream from several connections."""
    _reset(lab)
    with lab_proxy(lab, tmp_path / "freeze") as proxy:
        assert _proxy_writer(proxy) == "master1"
        _make_table(proxy)
        with Writes(proxy, 6) as writes:
            _wait(lambda: len(writes.acked) > 200, 30, "writes before the freeze")
            frozen_at = time.monotonic()
            pid = lab.kill("master1", signal.SIGSTOP)
            assert pid is not None
            try:
                _wait(lambda: _proxy_writer(proxy) == "master2", 20, "the promotion of master2")
                promoted_seen = time.monotonic()
                _wait(lambda: time.monotonic() > frozen_at + 10, 15, "10 s of freeze")
            finally:
                os.kill(pid, signal.SIGCONT)
            woke = time.monotonic()
            _wait(lambda: _read_only(lab, "master1"), 10, "master1 fenced on wake-up")
            fenced_after = time.monotonic() - woke
            mark = len(writes.acked)
            _wait(lambda: len(writes.acked) > mark + 100, 30, "writes after the wake-up")
        _wait(lambda: _rows(lab, "master1") == _rows(lab, "master2"), 60, "the masters to converge")
        on_m1 = on_m2 = _rows(lab, "master2")
        first_on_m2 = min(t for seq, (t, _) in writes.acked.items() if on_m2[seq] == 2)
        late_on_m1 = [
            seq for seq, (t, _) in writes.acked.items() if on_m2[seq] == 1 and t >= first_on_m2
        ]
        unacked_on_m1 = [s for s, sid in on_m1.items() if sid == 1 and s not in writes.acked]
        lost = set(writes.acked) - set(on_m2)
        print(
            f"\nfreeze: promotion seen {promoted_seen - frozen_at:.1f}s after SIGSTOP; fenced "
            f"{fenced_after * 1000:.0f} ms after SIGCONT; acked {len(writes.acked)}, lost "
            f"{len(lost)}; acked on master1 after the first on master2: {len(late_on_m1)}; "
            f"run on master1 but never acknowledged (in flight at the freeze): "
            f"{len(unacked_on_m1)}; client errors {len(writes.errors)}: {writes.errors[:3]}"
        )
        assert lost == set()
        assert late_on_m1 == []  # nothing acknowledged by the old master after the promotion
        # It took no more than what was in flight: at most one statement per connection.
        assert len(unacked_on_m1) <= writes.clients
        assert _read_only(lab, "master1")
        assert _proxy_writer(proxy) == "master2"


def test_a_clients_1290_changes_nothing_by_itself(lab: Lab, tmp_path: Path) -> None:
    """The writer turns read-only for a moment (a server-side event): the client whose write
    it refused gets the 1290; the writer changes only when the monitor's check sees it."""
    _reset(lab)
    with lab_proxy(lab, tmp_path / "1290", health={"check_interval_ms": 3000}) as proxy:
        assert _proxy_writer(proxy) == "master1"
        conn = proxy.connect()
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS demo_db.elect_1290 (id INT)")
        checks_before = _checks(proxy, "master1")
        _set_read_only(lab, "master1", True)
        try:
            with conn.cursor() as cur, pytest.raises(pymysql.MySQLError) as err:
                cur.execute("INSERT INTO demo_db.elect_1290 VALUES (1)")
            assert err.value.args[0] == READ_ONLY, err.value.args
            # The recheck it asked for: the monitor's own observation moves the writer.
            _wait(lambda: _proxy_writer(proxy) is None, 10, "the monitor to see read_only")
            assert _checks(proxy, "master1") > checks_before
        finally:
            _set_read_only(lab, "master1", False)
        _wait(lambda: _proxy_writer(proxy) == "master1", 15, "master1 followed again")
        with conn.cursor() as cur:
            cur.execute("INSERT INTO demo_db.elect_1290 VALUES (2)")
        conn.close()
        log = proxy.log_text()
        assert "refused a write as read-only" not in log
        assert "master1 -> none (master1 is read-only" in log, log[-3000:]
        assert _metric(proxy, "pyproxy_failovers_total") == 0


BIG_RESULT = "SELECT seq, REPEAT('z', 200) FROM seq_1_to_200000"


def _hang_up_mid_result(proxy: LabProxy) -> None:
    rude = RawClient(proxy.port)
    try:
        rude.login(proxy.user, proxy.password, "demo_db")
        rude.query(BIG_RESULT)
        got = 0
        while got < 64 * 1024:
            got += len(rude.sock.recv(65536))
    finally:
        rude.close()


@pytest.mark.timeout(LOAD_SECONDS + 300)
def test_load_does_not_fool_the_health_checker(lab: Lab, tmp_path: Path) -> None:
    """Many busy clients and clients hanging up mid-result: no server marked DOWN, no writer
    change (a check that cannot run on time is unknown, not failed)."""
    raise_nofile()
    _reset(lab)
    with lab_proxy(lab, tmp_path / "load", limits={"max_client_connections": 2000}) as proxy:
        writer = _proxy_writer(proxy)
        assert writer == "master1"
        stop = threading.Event()
        hang_ups = [0]

        def rude() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError, ConnectionError, PermissionError):
                    _hang_up_mid_result(proxy)
                    hang_ups[0] += 1

        failed_before = {s: _checks(proxy, s, "failed") for s in ("master1", "master2")}
        downs: list[str] = []
        writers: set[str | None] = set()
        with PoliteClients(proxy, BUSY) as polite:
            threads = [threading.Thread(target=rude, daemon=True) for _ in range(RUDE)]
            for t in threads:
                t.start()
            until = time.monotonic() + LOAD_SECONDS
            while time.monotonic() < until:
                downs += _down_servers(proxy)
                writers.add(_proxy_writer(proxy))
                time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(60)
        failovers = _metric(proxy, "pyproxy_failovers_total")
        unknown = {s: _checks(proxy, s, "unknown") for s in ("master1", "master2", "replica")}
        failed = {s: _checks(proxy, s, "failed") - failed_before[s] for s in failed_before}
        latency = {
            s: _metric(proxy, "pyproxy_health_check_duration_seconds", server=s)
            for s in ("master1", "master2", "replica")
        }
        print(
            f"\nload {LOAD_SECONDS:.0f}s: polite statements {polite.statements}, errors "
            f"{len(polite.errors)}, slowest {polite.max_latency:.2f}s; hang-ups {hang_ups[0]}; "
            f"checks failed {failed}, unknown {unknown}; last check latency {latency}; "
            f"writers seen {writers}; servers seen DOWN {sorted(set(downs))}; "
            f"failovers {failovers:.0f}"
        )
        assert downs == []
        assert writers == {"master1"}
        assert failovers == 0
        assert polite.errors == [], polite.errors[:5]
        assert hang_ups[0] > 0
        assert proxy.answers()
