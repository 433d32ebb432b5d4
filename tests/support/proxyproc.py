"""The real `pyproxy --config FILE` process in front of the lab, as users run it."""

from __future__ import annotations

import contextlib
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import yaml

from bench.proxyproc import ProxyFailed
from bench.proxyproc import ProxyProcess as _Process
from proxy.lab.lab import Lab
from proxy.lab.servers import free_port
from tests.conftest import Endpoint


class ProxyProcess(_Process):
    """A running pyproxy process with the lab's app account."""

    def __init__(self, config: Path, data: dict[str, Any], log: Path, lab: Lab) -> None:
        super().__init__(config, data["listeners"]["mysql"]["port"], log)
        self.lab = lab
        self.admin_port: int = data["listeners"]["admin"]["port"]
        self.http_port: int = data["listeners"]["http"]["port"]

    def metrics(self) -> str:
        """The Prometheus exposition from /metrics."""
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text: str = resp.read().decode()
        return text

    def connect(self, **kwargs: Any) -> pymysql.Connection:
        acct = self.lab.accounts.app
        params: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": acct.username,
            "password": acct.password,
            "database": "demo_db",
            "connect_timeout": 5,
            "read_timeout": 30,
            "autocommit": True,
        }
        params.update(kwargs)
        return pymysql.connect(**params)

    def endpoint(self) -> Endpoint:
        acct = self.lab.accounts.app
        return Endpoint("127.0.0.1", self.port, acct.username, acct.password, "demo_db")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@contextlib.contextmanager
def start_proxy(lab: Lab, **overrides: Any) -> Iterator[ProxyProcess]:
    """Start pyproxy for the lab on free ports; config sections in overrides are merged in.
    On exit: SIGTERM, and the process must have exited cleanly."""
    data = lab.proxy_config()
    for listener in data["listeners"].values():
        listener["port"] = free_port()
    for key, value in overrides.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    workdir = Path(tempfile.mkdtemp(prefix="pyproxy-proc-"))
    config = workdir / "pyproxy.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = ProxyProcess(config, data, workdir / "pyproxy.log", lab)
    acct = lab.accounts.app
    proc.start(acct.username, acct.password)
    try:
        yield proc
        if not proc.alive():
            raise ProxyFailed(
                f"pyproxy died: exit {proc.proc and proc.proc.returncode}\n{proc.log_tail()}"
            )
    finally:
        result = proc.stop()
    assert result.get("exit_code") == 0, (
        f"pyproxy did not stop cleanly: {result}\n{proc.log_tail()}"
    )
