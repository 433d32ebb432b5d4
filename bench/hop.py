"""The extra hop alone, for reference: HAProxy in TCP mode (no MySQL parsing) before the writer.

Any proxy adds a hop: one more pair of loopback round trips and the kernel work of four more
socket calls per statement, on the same two cores sysbench and the servers use. HAProxy in TCP
mode relays bytes and does nothing else, in C, so its figures are a floor for what any proxy
can reach on this machine; pyproxy's distance from them is the cost of understanding MySQL.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from proxy.testing import CLK_TCK, raise_nofile

CONFIG = """\
global
    maxconn 4000
    nbthread {threads}
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend mysql
    bind 127.0.0.1:{port}
    default_backend writer
backend writer
    server writer 127.0.0.1:{backend}
"""


class HopProxy:
    """haproxy -db (foreground) with a generated config; started only if it is installed."""

    def __init__(self, workdir: Path, port: int, backend_port: int, threads: int = 1) -> None:
        self.config = workdir / f"haproxy-{threads}.cfg"
        self.log = workdir / f"haproxy-{threads}.log"
        self.port = port
        self.backend_port = backend_port
        # As many threads as the proxy it is compared with has workers (both default to one
        # per CPU): a relay spread over more threads sleeps and wakes more often per
        # statement, and pays for it in CPU.
        self.threads = threads
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        return shutil.which("haproxy")

    @staticmethod
    def version() -> str:
        out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True, timeout=10)
        first = out.stdout.splitlines()[0] if out.stdout else "haproxy"
        return " ".join(first.split()[:3])  # "HAProxy version 2.6.12-1+deb12u4"

    def start(self, timeout: float = 10) -> None:
        self.config.write_text(
            CONFIG.format(port=self.port, backend=self.backend_port, threads=self.threads)
        )
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["haproxy", "-db", "-f", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=raise_nofile,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("haproxy did not start listening")

    def cpu_seconds(self) -> float:
        """utime + stime of haproxy (one process, all its threads) so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
