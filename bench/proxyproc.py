"""pyproxy as a separate process: start with a high file limit, read its CPU and RSS, stop."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

import pymysql

from bench.topology import PYPROXY

CLK_TCK = os.sysconf("SC_CLK_TCK")


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

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config = config
        self.port = port
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.nofile = 0

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ProxyFailed("pyproxy is not running")
        return self.proc.pid

    def start(self, user: str, password: str, timeout: float = 30) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(PYPROXY), "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=raise_nofile,  # thousands of client sockets need a high limit
            )
        self._wait_ready(user, password, timeout)
        self.nofile = _proc_nofile(self.pid)

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
                    return
                finally:
                    conn.close()
            except (OSError, pymysql.err.MySQLError) as exc:
                last = exc
                time.sleep(0.2)
        raise ProxyFailed(
            f"pyproxy not ready on port {self.port} after {timeout}s: {last}\n{self.log_tail()}"
        )

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ProxyFailed(f"pyproxy exited with {self.proc.returncode}\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """utime + stime of the proxy process (all its threads) so far."""
        self._check_alive()
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
        return (utime + stime) / CLK_TCK

    def rss_kb(self) -> int:
        self._check_alive()
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise ProxyFailed("no VmRSS in /proc status")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

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


def _proc_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0
