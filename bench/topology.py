"""The benchmark's own lab (2 masters + 1 replica) in a temp dir, via the `pyproxy lab` CLI."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import yaml

from bench.settings import REPO
from proxy.lab.servers import free_port

PYPROXY = REPO / ".venv" / "bin" / "pyproxy"


class LabFailed(RuntimeError):
    """The lab did not come up (or a node cannot be reached)."""


@dataclass(frozen=True)
class NodeInfo:
    name: str
    role: str  # master | replica
    port: int


class BenchLab:
    """A lab in a fresh temp dir; `destroy()` stops its servers and removes the dir."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="pyproxy-bench-"))
        self.dir = self.tmp / "lab"
        self.config: dict[str, Any] = {}
        self.nodes: list[NodeInfo] = []

    def _cli(self, *args: str, timeout: float = 180) -> str:
        cmd = [str(PYPROXY), "lab", *args, "--dir", str(self.dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise LabFailed(f"{' '.join(cmd[1:])} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def up(self) -> None:
        self._cli("up", "--masters", "2", "--replicas", "1")
        self.config = yaml.safe_load((self.dir / "pyproxy.yaml").read_text())
        self.nodes = [
            NodeInfo(s["name"], s.get("role", "master"), int(s["port"]))
            for s in self.config["servers"]
        ]

    def destroy(self, keep: bool = False) -> None:
        if keep:
            print(f"lab kept in {self.dir} (destroy: pyproxy lab destroy --dir {self.dir})")
            return
        try:
            if self.dir.exists():
                self._cli("destroy", timeout=120)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def app_user(self) -> tuple[str, str]:
        user = self.config["users"][0]
        return str(user["username"]), str(user.get("password", ""))

    @property
    def writer(self) -> NodeInfo:
        """The preferred master, which `lab up` makes the writer."""
        return next(n for n in self.nodes if n.role == "master")

    def root(self, node: str) -> pymysql.Connection:
        """root over the node's unix socket (no password in the lab)."""
        sock = self.dir / node / "mysqld.sock"
        return pymysql.connect(unix_socket=str(sock), user="root", autocommit=True)

    def scalar(self, node: str, sql: str) -> Any:
        conn = self.root(node)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                row = cur.fetchone()
                return row[0] if row else None
        finally:
            conn.close()

    def server_version(self) -> str:
        return str(self.scalar(self.writer.name, "SELECT VERSION()"))

    def create_database(self, name: str) -> None:
        self.scalar(self.writer.name, f"CREATE DATABASE IF NOT EXISTS `{name}`")

    def wait_for_rows(self, database: str, tables: int, rows: int, timeout: float = 60) -> None:
        """Every node has the sysbench tables filled (i.e. replication has applied prepare)."""
        sql = " + ".join(
            f"(SELECT COUNT(*) FROM `{database}`.sbtest{i})" for i in range(1, tables + 1)
        )
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while True:
                try:
                    if int(self.scalar(node.name, f"SELECT {sql}")) >= tables * rows:
                        break
                except pymysql.err.MySQLError:
                    pass  # table not created there yet
                if time.monotonic() > deadline:
                    raise LabFailed(f"{node.name}: the sysbench tables did not replicate")
                time.sleep(0.2)

    def backend_connections(self, user: str) -> dict[str, int]:
        """Connections of `user` on each node (what pyproxy holds open on the servers)."""
        sql = f"SELECT COUNT(*) FROM information_schema.processlist WHERE user = '{user}'"
        return {n.name: int(self.scalar(n.name, sql)) for n in self.nodes}

    def write_proxy_config(
        self, name: str = "pyproxy-bench.yaml", **overrides: Any
    ) -> tuple[Path, dict[str, Any]]:
        """A copy of the lab's proxy config (top-level keys overridden) on free listener
        ports, in its own file (a running proxy's is never rewritten): (path, the config)."""
        config = {**self.config, **overrides}
        ports = [free_port() for _ in range(3)]
        config["listeners"] = {
            name: {"host": "127.0.0.1", "port": port}
            for name, port in zip(("mysql", "admin", "http"), ports, strict=True)
        }
        path = self.tmp / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path, config
