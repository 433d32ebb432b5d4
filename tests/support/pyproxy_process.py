"""The real `pyproxy` process for tests: started on free ports from a config dict, stopped after."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class PyproxyProcess:
    """A running pyproxy: its process, ports (mysql, admin, http) and log file."""

    proc: subprocess.Popen[bytes]
    ports: dict[str, int]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def pyproxy_process(data: dict[str, Any], workdir: Path) -> Iterator[PyproxyProcess]:
    """Run `python -m proxy.cli --config FILE` with data's listeners moved to free ports;
    yields once the MySQL port accepts connections; SIGTERM and a clean exit afterwards."""
    ports = {name: free_port() for name in ("mysql", "admin", "http")}
    for name, port in ports.items():
        data["listeners"][name]["port"] = port
    cfg = workdir / "pyproxy.yaml"
    cfg.write_text(yaml.safe_dump(data))
    log = workdir / "pyproxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    running = PyproxyProcess(proc, ports, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, running.log_text()
            try:
                socket.create_connection(("127.0.0.1", ports["mysql"]), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, running.log_text()
                time.sleep(0.1)
        yield running
        assert proc.poll() is None, "pyproxy died: " + running.log_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
