"""Topology bootstrap: accounts, replication, read_only and semisync on running servers."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pymysql
import pymysql.cursors

from proxy.health.replstatus import ReplicaStatus, normalize_replica_status

log = logging.getLogger(__name__)


class BootstrapError(RuntimeError):
    """A step of the topology setup failed; the message says which and why."""


class Flavor(Enum):
    MARIADB = "mariadb"
    MYSQL = "mysql"


@dataclass(frozen=True)
class Account:
    username: str
    password: str


@dataclass(frozen=True)
class Accounts:
    """The accounts every node gets (same names and passwords everywhere)."""

    app: Account = Account("app", "app-pass")
    monitor: Account = Account("monitor", "monitor-pass")
    admin: Account = Account("pyproxy_admin", "admin-pass")
    replication: Account = Account("repl", "repl-pass")


@dataclass
class Node:
    """How to reach one server as root (TCP, or a unix socket when given)."""

    name: str
    role: str  # "master" or "replica"
    host: str
    port: int
    root_user: str = "root"
    root_password: str = ""
    unix_socket: str | None = None
    # The address other servers use to replicate from this one (differs in docker).
    advertised_host: str | None = None
    advertised_port: int | None = None
    source: str | None = None  # name of the node this one replicates from

    @property
    def repl_host(self) -> str:
        return self.advertised_host or self.host

    @property
    def repl_port(self) -> int:
        return self.advertised_port or self.port


@dataclass
class Topology:
    nodes: list[Node]
    accounts: Accounts = field(default_factory=Accounts)
    semisync: bool = False
    demo_schema: bool = True

    @property
    def masters(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "master"]

    @property
    def replicas(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "replica"]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def connect(node: Node, timeout: float = 5.0, database: str | None = None) -> pymysql.Connection:
    kwargs: dict[str, Any] = {
        "user": node.root_user,
        "password": node.root_password,
        "connect_timeout": timeout,
        "read_timeout": 60,
        "autocommit": True,
        "cursorclass": pymysql.cursors.DictCursor,
    }
    if database:
        kwargs["database"] = database
    if node.unix_socket:
        kwargs["unix_socket"] = node.unix_socket
    else:
        kwargs["host"] = node.host
        kwargs["port"] = node.port
    try:
        return pymysql.connect(**kwargs)
    except pymysql.MySQLError as exc:
        raise BootstrapError(f"cannot connect to {node.name} ({_where(node)}): {exc}") from exc


def _where(node: Node) -> str:
    return node.unix_socket or f"{node.host}:{node.port}"


@contextmanager
def session(node: Node) -> Iterator[Any]:
    conn = connect(node)
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def detect_flavor(cur: Any) -> tuple[Flavor, tuple[int, ...]]:
    cur.execute("SELECT VERSION() AS v")
    version: str = cur.fetchone()["v"]
    numbers = tuple(int(p) for p in version.split("-")[0].split(".")[:3])
    return (Flavor.MARIADB if "MariaDB" in version else Flavor.MYSQL), numbers


def _run(cur: Any, node: Node, statements: Sequence[str]) -> None:
    for sql in statements:
        try:
            cur.execute(sql)
        except pymysql.MySQLError as exc:
            shown = sql if "PASSWORD" not in sql.upper() and "IDENTIFIED" not in sql else sql[:40]
            raise BootstrapError(f"{node.name}: `{shown}` failed: {exc}") from exc


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def account_statements(flavor: Flavor, accounts: Accounts) -> list[str]:
    """Idempotent statements creating the four accounts with least privileges."""
    app_privs = (
        "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, REFERENCES, "
        "CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, "
        "CREATE ROUTINE, ALTER ROUTINE, EVENT, TRIGGER, PROCESS"
    )
    if flavor is Flavor.MARIADB:
        # MariaDB >= 10.5 split REPLICATION CLIENT; 10.11's ALL includes READ_ONLY ADMIN,
        # which is why the app user gets an explicit list and never ALL or SUPER.
        monitor_privs = "BINLOG MONITOR, SLAVE MONITOR"
        admin_privs = (
            "READ_ONLY ADMIN, REPLICATION SLAVE ADMIN, REPLICATION MASTER ADMIN, "
            "BINLOG MONITOR, SLAVE MONITOR, CONNECTION ADMIN, PROCESS, RELOAD, SELECT"
        )
    else:
        monitor_privs = "REPLICATION CLIENT"
        admin_privs = (
            "SYSTEM_VARIABLES_ADMIN, REPLICATION_SLAVE_ADMIN, REPLICATION CLIENT, "
            "CONNECTION_ADMIN, PROCESS, RELOAD, SELECT"
        )
    out: list[str] = []
    grants = [
        (accounts.app, app_privs),
        (accounts.monitor, monitor_privs),
        (accounts.admin, admin_privs),
        (accounts.replication, "REPLICATION SLAVE"),
    ]
    for acct, privs in grants:
        user = f"{_quote(acct.username)}@'%'"
        out.append(f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY {_quote(acct.password)}")
        out.append(f"ALTER USER {user} IDENTIFIED BY {_quote(acct.password)}")
        out.append(f"GRANT {privs} ON *.* TO {user}")
    return out


DEMO_SCHEMA = [
    "CREATE DATABASE IF NOT EXISTS demo_db",
    """CREATE TABLE IF NOT EXISTS demo_db.products (
        id INT AUTO_INCREMENT PRIMARY KEY,
        name VARCHAR(255) NOT NULL,
        description TEXT,
        price DECIMAL(10,2) NOT NULL DEFAULT 0,
        stock_quantity INT NOT NULL DEFAULT 0,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE IF NOT EXISTS demo_db.orders (
        id INT AUTO_INCREMENT PRIMARY KEY,
        product_id INT NOT NULL,
        quantity INT NOT NULL DEFAULT 1,
        total_price DECIMAL(10,2) NOT NULL DEFAULT 0,
        customer_name VARCHAR(255) NOT NULL,
        order_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        status ENUM('pending','completed','cancelled') NOT NULL DEFAULT 'pending',
        CONSTRAINT fk_orders_product FOREIGN KEY (product_id) REFERENCES demo_db.products(id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    # The lab's own probe table: `up` writes a row on each master and waits to see it everywhere.
    "CREATE DATABASE IF NOT EXISTS pyproxy_lab",
    """CREATE TABLE IF NOT EXISTS pyproxy_lab.probe (
        token VARCHAR(64) PRIMARY KEY,
        origin VARCHAR(64) NOT NULL,
        written_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
    ) ENGINE=InnoDB""",
]


def replica_status(cur: Any, flavor: Flavor, version: tuple[int, ...]) -> ReplicaStatus | None:
    if flavor is Flavor.MYSQL and version >= (8, 0, 22):
        cur.execute("SHOW REPLICA STATUS")
    else:
        cur.execute("SHOW SLAVE STATUS")
    row = cur.fetchone()
    return normalize_replica_status(row) if row else None


def gtid_position(cur: Any, flavor: Flavor) -> str:
    if flavor is Flavor.MARIADB:
        cur.execute("SELECT @@GLOBAL.gtid_current_pos AS g")
    else:
        cur.execute("SELECT @@GLOBAL.gtid_executed AS g")
    return str(cur.fetchone()["g"] or "").replace("\n", "")


def read_only_statements(flavor: Flavor, on: bool) -> list[str]:
    value = "ON" if on else "OFF"
    if flavor is Flavor.MYSQL:
        # super_read_only also stops accounts with SUPER; turning it OFF must precede read_only.
        if on:
            return ["SET GLOBAL read_only = ON", "SET GLOBAL super_read_only = ON"]
        return ["SET GLOBAL super_read_only = OFF", "SET GLOBAL read_only = OFF"]
    return [f"SET GLOBAL read_only = {value}"]


def semisync_statements(flavor: Flavor, version: tuple[int, ...], timeout_ms: int) -> list[str]:
    """Both directions of semisync on a master of a master-master pair."""
    if flavor is Flavor.MARIADB:
        return [
            "SET GLOBAL rpl_semi_sync_master_enabled = ON",
            "SET GLOBAL rpl_semi_sync_slave_enabled = ON",
            f"SET GLOBAL rpl_semi_sync_master_timeout = {timeout_ms}",
            "SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC",
            "SET GLOBAL rpl_semi_sync_master_wait_no_slave = OFF",
        ]
    return [
        "INSTALL PLUGIN rpl_semi_sync_source SONAME 'semisync_source.so'",
        "INSTALL PLUGIN rpl_semi_sync_replica SONAME 'semisync_replica.so'",
        "SET GLOBAL rpl_semi_sync_source_enabled = ON",
        "SET GLOBAL rpl_semi_sync_replica_enabled = ON",
        f"SET GLOBAL rpl_semi_sync_source_timeout = {timeout_ms}",
        "SET GLOBAL rpl_semi_sync_source_wait_no_replica = OFF",
    ]


def change_source_statements(flavor: Flavor, source: Node, repl: Account) -> list[str]:
    host, port = _quote(source.repl_host), source.repl_port
    user, password = _quote(repl.username), _quote(repl.password)
    if flavor is Flavor.MARIADB:
        # slave_pos on masters too: a master's own events that come back from its peer are
        # skipped by server_id, and slave_pos never asks the peer for a GTID it lacks.
        pos = "slave_pos"
        return [
            "STOP SLAVE",
            f"CHANGE MASTER TO MASTER_HOST={host}, MASTER_PORT={port}, MASTER_USER={user}, "
            f"MASTER_PASSWORD={password}, MASTER_USE_GTID={pos}, MASTER_CONNECT_RETRY=1",
            "START SLAVE",
        ]
    return [
        "STOP REPLICA",
        f"CHANGE REPLICATION SOURCE TO SOURCE_HOST={host}, SOURCE_PORT={port}, "
        f"SOURCE_USER={user}, SOURCE_PASSWORD={password}, SOURCE_AUTO_POSITION=1, "
        "GET_SOURCE_PUBLIC_KEY=1, SOURCE_CONNECT_RETRY=1",
        "START REPLICA",
    ]


def _source_of(topology: Topology, node: Node) -> Node | None:
    if node.source:
        return topology.node(node.source)
    masters = topology.masters
    if node.role == "replica":
        return masters[0]
    if len(masters) == 2:
        # Master-master: each master replicates from the other.
        return masters[1] if node is masters[0] else masters[0]
    if len(masters) > 2:
        # A ring: each master replicates from the previous one.
        i = masters.index(node)
        return masters[i - 1]
    return None


def bootstrap(topology: Topology, semisync_timeout_ms: int = 2000) -> None:
    """Bring running servers to the configured topology; safe to run again."""
    writable: list[str] = []
    for node in topology.nodes:
        with session(node) as cur:
            flavor, version = detect_flavor(cur)
            # Accounts are created locally on each node and kept out of the binlog so that
            # re-running never replicates a conflicting CREATE USER.
            _run(cur, node, ["SET SESSION sql_log_bin = 0"])
            _run(cur, node, account_statements(flavor, topology.accounts))
            _run(cur, node, ["SET SESSION sql_log_bin = 1"])
            cur.execute("SELECT @@GLOBAL.read_only AS ro")
            if node.role == "master" and not int(cur.fetchone()["ro"]):
                writable.append(node.name)
            if node.role == "replica":
                _run(cur, node, read_only_statements(flavor, True))
            if topology.semisync and node.role == "master":
                stmts = semisync_statements(flavor, version, semisync_timeout_ms)
                _run_tolerating_installed(cur, node, stmts)
    # The preferred master (the first) becomes the writer only when no master is writable
    # yet: a second `up` after a failover must not create a second writer.
    if not writable and topology.masters:
        writer = topology.masters[0]
        with session(writer) as cur:
            flavor, _ = detect_flavor(cur)
            _run(cur, writer, read_only_statements(flavor, False))
        writable.append(writer.name)
    elif len(writable) > 1:
        log.warning("more than one writable master: %s", ", ".join(writable))
    if topology.demo_schema:
        with session(topology.node(writable[0])) as cur:
            _run(cur, topology.node(writable[0]), DEMO_SCHEMA)
    for node in topology.nodes:
        source = _source_of(topology, node)
        if source is None:
            continue
        with session(node) as cur:
            flavor, version = detect_flavor(cur)
            status = replica_status(cur, flavor, version)
            if status and (status.source_host, status.source_port) == (
                source.repl_host,
                source.repl_port,
            ):
                # Already pointed at the right source: just make sure the threads run.
                if not status.healthy:
                    _run(
                        cur, node, ["START SLAVE" if flavor is Flavor.MARIADB else "START REPLICA"]
                    )
                continue
            repl = topology.accounts.replication
            _run(cur, node, change_source_statements(flavor, source, repl))


def _run_tolerating_installed(cur: Any, node: Node, statements: Sequence[str]) -> None:
    for sql in statements:
        try:
            cur.execute(sql)
        except pymysql.MySQLError as exc:
            # 1125/1968: plugin already installed; harmless on a second run.
            if sql.startswith("INSTALL PLUGIN") and exc.args and exc.args[0] in (1125, 1968):
                continue
            raise BootstrapError(f"{node.name}: `{sql}` failed: {exc}") from exc
