"""The real `pyproxy --config FILE` process in front of the lab, as users run it."""

from __future__ import annotations

import contextlib
import tempfile
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

    def __init__(self, config: Path, port: int, log: Path, lab: Lab) -> None:
        super().__init__(config, port, log)
        self.lab = lab

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
    proc = ProxyProcess(config, data["listeners"]["mysql"]["port"], workdir / "pyproxy.log", lab)
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
