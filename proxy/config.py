"""Configuration: the YAML schema, validation with key-naming errors, ${ENV} substitution."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """The config could not be loaded; str() is one line naming the key and the reason."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Listen(_Model):
    host: str = "127.0.0.1"
    port: int = Field(6033, ge=0, le=65535)


class Listeners(_Model):
    mysql: Listen = Listen(host="127.0.0.1", port=6033)
    admin: Listen = Listen(host="127.0.0.1", port=6032)
    http: Listen = Listen(host="127.0.0.1", port=6070)


class TLSFiles(_Model):
    cert: str
    key: str
    ca: str | None = None


class BackendTLS(_Model):
    enabled: bool = False
    ca: str | None = None
    verify: bool = False


class Server(_Model):
    name: str
    host: str
    port: int = Field(3306, ge=1, le=65535)
    role: Literal["master", "replica"]
    priority: int = 1  # masters: lower is preferred as writer
    weight: int = Field(1, ge=0)
    max_connections: int = Field(200, ge=1)
    tls: BackendTLS = BackendTLS()
    # OFFLINE_SOFT: drained (running statements finish, nothing new), as in ProxySQL.
    status: Literal["ONLINE", "OFFLINE_SOFT"] = "ONLINE"
    comment: str = ""


Consistency = Literal["read_your_writes", "causal", "causal_global", "eventual", "strong"]


class User(_Model):
    username: str
    password: str
    default_schema: str | None = None
    max_connections: int = Field(10_000, ge=1)
    consistency: Consistency | None = None  # overrides routing.consistency for this user


class Routing(_Model):
    # read_your_writes: a session reads its own writes; causal: a read sees every commit
    # pyproxy acknowledged before it, on any connection; causal_global: ... and every commit
    # the writer had when the read arrived (several pyproxy instances); eventual: any replica
    # within the lag limit; strong: every read on the writer.
    consistency: Consistency = "read_your_writes"  # the default: bench/causal.py, README
    reads_fallback_to_writer: bool = True  # no healthy replica: reads go to the writer
    writer_serves_reads: bool = False  # the writer is also in the read pool
    # read_your_writes: how long a read may wait for a replica to apply the session's last
    # write (MASTER_GTID_WAIT / WAIT_FOR_EXECUTED_GTID_SET) before it runs on the writer.
    read_your_writes_wait_ms: int = Field(50, ge=0, le=10_000)
    # causal, causal_global: how long a read may wait for a replica to reach the high-water
    # mark (MASTER_GTID_WAIT / WAIT_FOR_EXECUTED_GTID_SET) before it runs on the writer.
    causal_wait_ms: int = Field(50, ge=0, le=10_000)
    # causal_global: a writer position whose query was sent at most this long before a read
    # arrived is reused for it (0: every read waits for a position asked after it arrived;
    # concurrent reads still share one query).
    causal_position_max_age_us: int = Field(0, ge=0, le=10_000_000)
    # A session never reads from a replica older than one it already read from.
    monotonic_reads: bool = False
    # Any statement running longer gets KILL QUERY on its server (ProxySQL's
    # mysql-default_query_timeout, same default: 10 hours). 0: no limit.
    query_timeout_ms: int = Field(36_000_000, ge=0)


class QueryRule(_Model):
    """Like ProxySQL's mysql_query_rules: the first rule that matches decides."""

    name: str | None = None
    rule_id: int | None = Field(None, ge=1)  # ProxySQL's rule_id; unset: its position (1, 2...)
    match_digest: str | None = None  # regex on the normalized statement (literals are ?)
    match_pattern: str | None = None  # regex on the statement text itself
    username: str | None = None
    schema_name: str | None = None
    route: str | None = None  # writer | reader | <server name>
    block: str | None = None  # the error message the client gets
    rewrite: str | None = None  # replacement for match_pattern (re.sub syntax)

    @model_validator(mode="after")
    def _one_action(self) -> QueryRule:
        actions = [a for a in (self.route, self.block, self.rewrite) if a is not None]
        if len(actions) != 1:
            raise ValueError("a rule needs exactly one of route, block or rewrite")
        if self.match_digest is None and self.match_pattern is None:
            raise ValueError("a rule needs match_digest or match_pattern")
        if self.rewrite is not None and self.match_pattern is None:
            raise ValueError("rewrite needs match_pattern")
        for field_name in ("match_digest", "match_pattern"):
            pattern = getattr(self, field_name)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"{field_name}: invalid regex: {exc}") from None
        return self


class Account(_Model):
    username: str
    password: str = ""


class MonitorAccount(Account):
    # false: the monitor never uses TLS, even to servers with tls.enabled (mysql-monitor_ssl).
    ssl: bool = True


class Admin(Account):
    """The admin interface (listeners.admin) and the HTTP API (listeners.http)."""

    username: str = "admin"
    password: str = "admin"
    # An admin SELECT runs on a worker thread and is interrupted after this long.
    query_timeout_ms: int = Field(5000, ge=1, le=3_600_000)
    # Bearer token the HTTP API asks for, beyond /metrics, /healthz and /readyz. Unset (or
    # empty), /api/* answer on a loopback listener only.
    http_token: str | None = None
    # The disk layer of the admin's configuration (ProxySQL's proxysql.db), relative to the
    # config file. Unset: no disk layer (SAVE ... TO DISK fails).
    database: str | None = None


def is_loopback(host: str) -> bool:
    """Does a listener on host accept connections from this machine only?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class Pool(_Model):
    max_idle_per_server: int = Field(64, ge=0)
    idle_timeout_s: float = Field(300.0, gt=0)
    connect_timeout_ms: int = Field(3000, ge=1)


class Limits(_Model):
    max_client_connections: int = Field(10_000, ge=1)  # logged-in clients
    # Connections still in the handshake (not logged in yet) count here, not above; when
    # full, newer ones wait in the listen queue and the oldest handshake is dropped once it
    # has had its chance to log in, so a flood of silent sockets cannot lock real clients out.
    max_unauthenticated_connections: int = Field(1_000, ge=1)
    # The whole login (handshake, TLS, auth exchange) must finish within this (MySQL's
    # connect_timeout).
    connect_timeout_s: float = Field(10.0, gt=0)
    # At most 1 GiB, MySQL's own ceiling for max_allowed_packet (the packet reader counts in
    # 64-bit integers when compiled).
    max_allowed_packet: int = Field(64 * 1024 * 1024, ge=1024, le=1 << 30)
    client_idle_timeout_s: float = Field(28_800.0, gt=0)
    # Prepared statements one client session may hold open (COM_STMT_PREPARE without
    # COM_STMT_CLOSE); one more gets error 1461, as from MariaDB's max_prepared_stmt_count.
    max_prepared_stmt_count: int = Field(16_382, ge=1, le=1_048_576)
    # digest_text in stats_mysql_query_digest is cut here (ProxySQL's
    # mysql-query_digests_max_digest_length, same default).
    query_digests_max_digest_length: int = Field(2048, ge=16, le=1_048_576)


class Health(_Model):
    enabled: bool = True
    check_interval_ms: int = Field(500, ge=10)
    check_timeout_ms: int = Field(300, ge=10)
    failure_threshold: int = Field(3, ge=1)
    max_replication_lag_s: float = Field(10.0, ge=0)
    failover_hold_ms: int = Field(5000, ge=0)
    failback: Literal["none", "after_catchup"] = "none"
    # checks kept per server in monitor.mysql_server_ping_log, _read_only_log, _replication_lag_log
    log_history: int = Field(100, ge=1, le=100_000)


class Config(_Model):
    listeners: Listeners = Listeners()
    servers: list[Server]
    users: list[User]
    monitor: MonitorAccount = MonitorAccount(username="monitor")
    backend_admin: Account | None = None  # flips read_only on failover
    admin: Admin = Admin()  # the 6032 interface and the HTTP API token
    frontend_tls: TLSFiles | None = None
    auth_plugin: Literal["mysql_native_password", "caching_sha2_password"] = "mysql_native_password"
    # What clients see as the server version. Unset: the writer's own version string, so that
    # drivers pick the right dialect (e.g. no MySQL-only collations towards MariaDB).
    server_version: str | None = None
    pool: Pool = Pool()
    limits: Limits = Limits()
    health: Health = Health()
    routing: Routing = Routing()
    query_rules: list[QueryRule] = []
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Worker processes serving clients (ProxySQL's mysql-threads); auto: one per usable core.
    # The health checker, elections and the admin run apart, in the topology process.
    workers: Literal["auto"] | int = "auto"
    # A worker that has heard nothing from the topology process for this long stops sending
    # writes (reads continue) until it hears again.
    topology_silence_ms: int = Field(1500, ge=100, le=60_000)

    @field_validator("workers")
    @classmethod
    def _workers_positive(cls, workers: Literal["auto"] | int) -> Literal["auto"] | int:
        if workers != "auto" and not 1 <= workers <= 256:
            raise ValueError("must be auto or a number of processes from 1 to 256")
        return workers

    @property
    def worker_count(self) -> int:
        """The number of worker processes: workers, or the usable cores for auto."""
        if self.workers == "auto":
            return max(1, len(os.sched_getaffinity(0)))
        return self.workers

    @field_validator("servers")
    @classmethod
    def _servers_named_once(cls, servers: list[Server]) -> list[Server]:
        names = [s.name for s in servers]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"server name {name!r} is used more than once")
        return servers

    @model_validator(mode="after")
    def _one_master_at_least(self) -> Config:
        if not any(s.role == "master" for s in self.servers):
            raise ValueError("servers: at least one server must have role: master")
        admin_host = self.listeners.admin.host
        if self.admin.password in ("", "admin") and not is_loopback(admin_host):
            # The admin can switch the writer over, take servers offline and reload.
            raise ValueError(
                f"admin.password: must be set, and not to the default, when the admin listens "
                f"on {admin_host} (listeners.admin.host), which is not a loopback address"
            )
        names = {s.name for s in self.servers}
        previous = 0
        for i, rule in enumerate(self.query_rules):
            if rule.route not in (None, "writer", "reader") and rule.route not in names:
                raise ValueError(f"query_rules[{i}].route: no server named {rule.route!r}")
            rule_id = rule.rule_id or previous + 1
            if rule_id <= previous:
                # ProxySQL checks rules in rule_id order; the list is that order here.
                raise ValueError(
                    f"query_rules[{i}].rule_id: {rule_id} is not above the previous rule's "
                    f"({previous}): rule ids are unique and in the order the rules apply"
                )
            previous = rule_id
        return self

    def rule_ids(self) -> list[int]:
        """Each query rule's rule_id (its own, or the one after the previous rule's)."""
        ids: list[int] = []
        for rule in self.query_rules:
            ids.append(rule.rule_id or (ids[-1] if ids else 0) + 1)
        return ids

    def user(self, name: str) -> User | None:
        for u in self.users:
            if u.username == name:
                return u
        return None

    @property
    def masters(self) -> list[Server]:
        return sorted((s for s in self.servers if s.role == "master"), key=lambda s: s.priority)

    @property
    def replicas(self) -> list[Server]:
        return [s for s in self.servers if s.role == "replica"]


_NAMES_KEY = re.compile(r"[\w.\[\]]+: ")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(value: Any, path: str) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {name} is not set")

        return _ENV.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _key(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_config(data: Any) -> Config:
    if not isinstance(data, dict):
        raise ConfigError("(top level): must be a mapping of keys to values")
    data = _substitute(data, "")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "is required"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        if not err["loc"] and _NAMES_KEY.match(msg):
            raise ConfigError(f"{msg}{more}") from None  # a check across keys names its key
        raise ConfigError(f"{_key(tuple(err['loc']))}: {msg}{more}") from None


def load_config(path: str | os.PathLike[str]) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{p}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    return parse_config(data)
