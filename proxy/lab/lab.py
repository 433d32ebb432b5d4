"""The local replication lab: a topology of real servers in one directory, up with one command."""

from __future__ import annotations

import json
import shutil
import signal
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import yaml

from proxy.lab import servers
from proxy.lab.bootstrap import (
    Accounts,
    BootstrapError,
    Flavor,
    Node,
    Topology,
    bootstrap,
    connect,
    detect_flavor,
    gtid_position,
    replica_status,
    session,
)
from proxy.lab.servers import LabError, NodeFiles

STATE_FILE = "lab.json"


@dataclass
class LabNode:
    name: str
    role: str
    port: int
    server_id: int

    def files(self, root: Path) -> NodeFiles:
        return NodeFiles(root / self.name)


@dataclass
class LabState:
    masters: int
    replicas: int
    semisync: bool
    flavor: str
    nodes: list[LabNode] = field(default_factory=list)


class Lab:
    """A lab directory: its state file, node directories and generated proxy config."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.accounts = Accounts()

    # -- state ------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def config_path(self) -> Path:
        return self.root / "pyproxy.yaml"

    def load(self) -> LabState | None:
        try:
            raw = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            msg = f"{self.state_path} is unreadable ({exc}); `lab destroy` resets it."
            raise LabError(msg) from None
        nodes = [LabNode(**n) for n in raw.pop("nodes")]
        return LabState(**raw, nodes=nodes)

    def _save(self, state: LabState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_path.write_text(json.dumps(asdict(state), indent=2) + "\n")

    def files(self, name: str) -> NodeFiles:
        return NodeFiles(self.root / name)

    def node(self, name: str) -> Node:
        """Root access to a node over its unix socket (no password in the lab)."""
        state = self._require()
        for n in state.nodes:
            if n.name == name:
                return self._node(n)
        raise LabError(f"the lab has no node named {name!r}")

    def _node(self, n: LabNode) -> Node:
        return Node(
            name=n.name,
            role=n.role,
            host="127.0.0.1",
            port=n.port,
            unix_socket=str(self.files(n.name).socket),
        )

    def _require(self) -> LabState:
        state = self.load()
        if state is None:
            raise LabError(f"No lab in {self.root}: run `pyproxy lab up --dir {self.root}` first.")
        return state

    def topology(self) -> Topology:
        state = self._require()
        return Topology(
            nodes=[self._node(n) for n in state.nodes],
            accounts=self.accounts,
            semisync=state.semisync,
        )

    # -- commands ---------------------------------------------------------------------------
    def up(
        self, masters: int = 2, replicas: int = 1, semisync: bool = False, timeout: float = 60.0
    ) -> LabState:
        binary = servers.find_server_binary()
        state = self.load()
        if state is None:
            state = self._plan(masters, replicas, semisync, binary.flavor)
        elif (state.masters, state.replicas, state.semisync) != (masters, replicas, semisync):
            # Growing a lab by adding replicas is allowed; anything else needs a new lab.
            if (state.masters, state.semisync) != (masters, semisync) or replicas < state.replicas:
                raise LabError(
                    f"The lab in {self.root} has {state.masters} masters and {state.replicas} "
                    f"replicas{' with semisync' if state.semisync else ''}; run "
                    f"`pyproxy lab destroy --dir {self.root}` first to change its shape."
                )
            self._add_replicas(state, replicas)
        self._save(state)
        for n in state.nodes:
            files = self.files(n.name)
            if not files.cnf.exists():
                servers.write_cnf(
                    files,
                    binary,
                    port=n.port,
                    server_id=n.server_id,
                    role=n.role,
                    domain_id=n.server_id,
                    masters=state.masters,
                    master_index=n.server_id if n.role == "master" else 0,
                    semisync=state.semisync,
                )
            self._init_from_template(files, binary)
        for n in state.nodes:
            servers.start(self.files(n.name), binary, n.name)
        try:
            bootstrap(self.topology())
        except BootstrapError as exc:
            raise LabError(f"Replication setup failed: {exc}\n{self._log_tails()}") from None
        self.wait_replicated(timeout)
        self.write_proxy_config(state)
        return state

    def _plan(self, masters: int, replicas: int, semisync: bool, flavor: str) -> LabState:
        if masters < 1 or replicas < 0:
            raise LabError("A lab needs at least one master and zero or more replicas.")
        state = LabState(masters=masters, replicas=0, semisync=semisync, flavor=flavor)
        taken: set[int] = set()
        for i in range(1, masters + 1):
            state.nodes.append(LabNode(f"master{i}", "master", _free_port(taken), i))
        self._add_replicas(state, replicas, taken)
        return state

    def _add_replicas(self, state: LabState, replicas: int, taken: set[int] | None = None) -> None:
        taken = taken if taken is not None else {n.port for n in state.nodes}
        for i in range(state.replicas + 1, replicas + 1):
            name = "replica" if replicas == 1 and state.replicas == 0 else f"replica{i}"
            server_id = 100 + i
            state.nodes.append(LabNode(name, "replica", _free_port(taken), server_id))
        state.replicas = replicas

    def _init_from_template(self, files: NodeFiles, binary: servers.ServerBinary) -> None:
        # Initializing once and copying is faster than one install-db per node.
        if (files.datadir / "mysql").is_dir():
            return
        template = self.root / ".template"
        if not (template / "data" / "mysql").is_dir():
            shutil.rmtree(template, ignore_errors=True)
            template.mkdir(parents=True)
            shutil.copy(files.cnf, template / "my.cnf")
            cnf = (template / "my.cnf").read_text().replace(str(files.root), str(template))
            (template / "my.cnf").write_text(cnf)
            servers.initialize_datadir(NodeFiles(template), binary)
        shutil.copytree(template / "data", files.datadir, dirs_exist_ok=True)
        # MySQL stores its server_uuid in the datadir; each copy needs its own.
        (files.datadir / "auto.cnf").unlink(missing_ok=True)
        for stale in files.datadir.glob("binlog.*"):
            stale.unlink()

    def wait_replicated(self, timeout: float = 60.0) -> None:
        """Write a probe row on each master and wait until every node has all of them."""
        topo = self.topology()
        tokens: dict[str, str] = {}
        for m in topo.masters:
            token = uuid.uuid4().hex
            with session(m) as cur:
                cur.execute(
                    "INSERT INTO pyproxy_lab.probe (token, origin) VALUES (%s, %s)", (token, m.name)
                )
            tokens[token] = m.name
        deadline = time.monotonic() + timeout
        missing: dict[str, list[str]] = {}
        while True:
            missing = {}
            for node in topo.nodes:
                with session(node) as cur:
                    cur.execute(
                        "SELECT token FROM pyproxy_lab.probe WHERE token IN %s", (list(tokens),)
                    )
                    seen = {r["token"] for r in cur.fetchall()}
                lacking = [tokens[t] for t in tokens if t not in seen]
                if lacking:
                    missing[node.name] = lacking
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if missing:
            detail = "; ".join(f"{n} lacks rows from {', '.join(m)}" for n, m in missing.items())
            rows = "\n".join(self.status_lines())
            raise LabError(
                f"Replication did not converge within {timeout:.0f}s: {detail}.\n{rows}\n"
                f"{self._log_tails()}"
            )

    def down(self) -> list[str]:
        state = self.load()
        if state is None:
            return []
        stopped = []
        for n in reversed(state.nodes):
            if servers.stop(self.files(n.name)):
                stopped.append(n.name)
        return stopped

    def destroy(self) -> list[str]:
        stopped = self.down()
        if self.root.exists():
            if not self.state_path.exists() and any(self.root.iterdir()):
                raise LabError(
                    f"{self.root} is not a lab directory (no {STATE_FILE}); not removed."
                )
            shutil.rmtree(self.root)
        return stopped

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int | None:
        """Signal one node's server (SIGKILL by default; SIGSTOP freezes it)."""
        self.node(name)
        return servers.kill(self.files(name), sig)

    # -- reporting ----------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        state = self._require()
        rows = []
        for n in state.nodes:
            row: dict[str, Any] = {
                "node": n.name,
                "port": n.port,
                "role": n.role,
                "server_id": n.server_id,
                "pid": servers.running_pid(self.files(n.name)),
                "read_only": "-",
                "io": "-",
                "sql": "-",
                "lag": "-",
                "gtid": "-",
                "error": "",
            }
            if row["pid"] is None:
                row["error"] = "not running"
                rows.append(row)
                continue
            try:
                with session(self._node(n)) as cur:
                    flavor, version = detect_flavor(cur)
                    cur.execute("SELECT @@GLOBAL.read_only AS ro")
                    row["read_only"] = "ON" if int(cur.fetchone()["ro"]) else "OFF"
                    rs = replica_status(cur, flavor, version)
                    if rs:
                        row["io"], row["sql"] = rs.io_running, rs.sql_running
                        row["lag"] = "NULL" if rs.seconds_behind is None else rs.seconds_behind
                        row["error"] = rs.last_error
                    row["gtid"] = gtid_position(cur, flavor)
                    if n.role == "master":
                        row["role"] = "master (writer)" if row["read_only"] == "OFF" else "master"
            except (BootstrapError, pymysql.MySQLError) as exc:
                row["error"] = str(exc)
            rows.append(row)
        return rows

    def status_lines(self) -> list[str]:
        rows = self.status()
        cols = ["node", "port", "role", "server_id", "read_only", "io", "sql", "lag", "gtid"]
        table = [cols] + [[str(r[c]) for c in cols] for r in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
        out = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in table]
        out += [f"{r['node']}: {r['error']}" for r in rows if r["error"]]
        return out

    def _log_tails(self) -> str:
        state = self.load()
        if state is None:
            return ""
        parts = []
        for n in state.nodes:
            log = self.files(n.name).error_log
            parts.append(f"--- {n.name}: last lines of {log}\n{servers.tail(log, 10)}")
        return "\n".join(parts)

    def log_tails(self, lines: int = 30) -> str:
        state = self.load()
        if state is None:
            return ""
        return "\n".join(
            f"--- {n.name} ({self.files(n.name).error_log})\n"
            + servers.tail(self.files(n.name).error_log, lines)
            for n in state.nodes
        )

    # -- proxy config -------------------------------------------------------------------------
    def proxy_config(self, state: LabState | None = None) -> dict[str, Any]:
        state = state or self._require()
        acc = self.accounts
        return {
            "listeners": {
                "mysql": {"host": "127.0.0.1", "port": 6033},
                "admin": {"host": "127.0.0.1", "port": 6032},
                "http": {"host": "127.0.0.1", "port": 6070},
            },
            "servers": [
                {
                    "name": n.name,
                    "host": "127.0.0.1",
                    "port": n.port,
                    "role": n.role,
                    **({"priority": n.server_id} if n.role == "master" else {"weight": 1}),
                }
                for n in state.nodes
            ],
            "users": [
                {
                    "username": acc.app.username,
                    "password": acc.app.password,
                    "default_schema": "demo_db",
                }
            ],
            "monitor": {"username": acc.monitor.username, "password": acc.monitor.password},
            "backend_admin": {"username": acc.admin.username, "password": acc.admin.password},
            "admin": {"username": "admin", "password": "admin"},
        }

    def write_proxy_config(self, state: LabState | None = None) -> Path:
        header = (
            "# Generated by `pyproxy lab up` for the lab in this directory.\n"
            "# Start the proxy with: pyproxy --config " + str(self.config_path) + "\n"
        )
        body = yaml.safe_dump(self.proxy_config(state), sort_keys=False)
        self.config_path.write_text(header + body)
        return self.config_path

    def connect_app(self, name: str, **kwargs: Any) -> pymysql.Connection:
        """A connection as the app user over TCP (how the proxy and tests reach a node)."""
        n = self.node(name)
        return pymysql.connect(
            host="127.0.0.1",
            port=n.port,
            user=self.accounts.app.username,
            password=self.accounts.app.password,
            **kwargs,
        )

    def connect_root(self, name: str) -> pymysql.Connection:
        return connect(self.node(name))

    @property
    def flavor(self) -> Flavor:
        return Flavor(self._require().flavor)


def _free_port(taken: set[int]) -> int:
    while True:
        port = servers.free_port()
        if port not in taken:
            taken.add(port)
            return port
