"""Running pyproxy for tests, tools and the benchmark: in a thread of this process, or as the
real `pyproxy` process."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pymysql

from proxy.app import Proxy
from proxy.config import Config

T = TypeVar("T")

CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_LINE = "pyproxy listening on"  # logged once every worker process listens


class ProxyThread:
    """A proxy serving from a background thread (uvloop), so a test can drive it with clients."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = _new_loop()
        self.server = Proxy(config)
        self._thread = threading.Thread(target=self.loop.run_forever, name="pyproxy", daemon=True)

    def start(self) -> ProxyThread:
        self._thread.start()
        self.call(self.server.start())
        return self

    @property
    def port(self) -> int:
        return self.server.port

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the proxy's loop and wait for its result."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.server.stop(grace_s=1.0))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


# -- the real process ------------------------------------------------------------------------------
def pyproxy_command() -> list[str]:
    """The `pyproxy` console script of this interpreter's environment (else `python -m`)."""
    script = Path(sys.executable).with_name("pyproxy")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "proxy.cli"]


class ProxyFailed(RuntimeError):
    """pyproxy did not start, or died."""


def raise_nofile() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class ProxyProcess:
    """`pyproxy --config CFG` in its own session (Ctrl-C in the terminal reaches only us)."""

    def __init__(
        self, config: Path, port: int, log: Path, command: Sequence[str] | None = None
    ) -> None:
        self.config = config
        self.port = port
        self.log_path = log
        self.command = list(command or pyproxy_command())
        self.proc: subprocess.Popen[bytes] | None = None
        self.nofile = 0

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ProxyFailed("pyproxy is not running")
        return self.proc.pid

    def start(self, user: str, password: str, timeout: float = 30) -> None:
        """Start it and wait until it serves; stopped again if it does not (or the wait is cut)."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [*self.command, "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=raise_nofile,  # thousands of client sockets need a high limit
            )
        try:
            self._wait_ready(user, password, timeout)
            self.nofile = _proc_nofile(self.pid)
        except BaseException:  # Ctrl-C or SIGTERM too: a process of its own session stays
            self.stop()
            raise

    def _wait_ready(self, user: str, password: str, timeout: float) -> None:
        """Listening and routing: a read and a write both answer through it."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                conn = pymysql.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user=user,
                    password=password,
                    connect_timeout=3,
                    read_timeout=5,
                )
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                        cur.execute("SELECT /* pyproxy:writer */ 1")
                finally:
                    conn.close()
                # The first worker may answer before the others (and the admin) are up.
                if READY_LINE in self.log_text():
                    return
                last = ProxyFailed("not every worker is up yet")
                time.sleep(0.2)
            except (OSError, pymysql.err.MySQLError) as exc:
                last = exc
                time.sleep(0.2)
        raise ProxyFailed(
            f"pyproxy not ready on port {self.port} after {timeout}s: {last}\n{self.log_tail()}"
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ProxyFailed(f"pyproxy exited with {self.proc.returncode}\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        """The worker processes (the topology process's children) running now."""
        self._check_alive()
        return children(self.pid)

    def pids(self) -> list[int]:
        """The topology process and its workers."""
        return [self.pid, *self.worker_pids()]

    def cpu_seconds(self) -> float:
        """utime + stime so far of the topology process and its workers now running."""
        return sum(self.cpu_by_pid().values())

    def cpu_by_pid(self) -> dict[int, float]:
        """utime + stime of each pyproxy process (all its threads) so far."""
        return {pid: seconds for pid in self.pids() if (seconds := cpu_seconds(pid)) is not None}

    def rss_kb(self) -> int:
        """Resident memory of the topology process and its workers."""
        self._check_alive()
        total = 0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue  # a worker that just exited
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def log_text(self) -> str:
        """Everything the process logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = 20) -> dict[str, object]:
        """SIGTERM, then SIGKILL if it has not exited after `timeout` s; how it went."""
        if self.proc is None:
            return {}
        proc, self.proc = self.proc, None
        start = time.monotonic()
        killed = False
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                proc.kill()
                proc.wait()
        return {
            "exit_code": proc.returncode,
            "stop_s": round(time.monotonic() - start, 2),
            "killed_after_sigterm_timeout": killed,
        }


def start_on_free_ports(start: Callable[[], T], attempts: int = 3) -> T:
    """start(): build a pyproxy on free ports and start it. A free port can be taken before
    the proxy binds it (client sockets use the same ephemeral range): then start() runs again,
    and picks new ports."""
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except ProxyFailed as exc:
            # "Address already in use" (a plain bind) or "... address already in use" (uvloop)
            if "address already in use" not in str(exc).lower() or attempt == attempts:
                raise
    raise AssertionError("unreachable")


def children(pid: int) -> list[int]:
    """The child processes of pid (from /proc, every thread's children)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(found)


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads) so far; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLK_TCK


def _proc_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


def admin_query(port: int, sql: str, user: str = "admin", password: str = "admin") -> list[Any]:
    """One statement on a pyproxy admin port: its rows, as dicts by column name."""
    conn = pymysql.connect(
        host="127.0.0.1",
        port=port,
        user=user,
        password=password,
        cursorclass=pymysql.cursors.DictCursor,
        connect_timeout=10,
        read_timeout=30,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()
