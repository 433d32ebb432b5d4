"""ProxySQL's configuration tables in SQLite (mysql_servers, mysql_users, mysql_query_rules,
mysql_replication_hostgroups, global_variables) and their conversion to and from a Config."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from proxy.cluster import READER_HOSTGROUP, WRITER_HOSTGROUP
from proxy.config import Config, ConfigError, QueryRule, Server, User

# ProxySQL's modules (LOAD MYSQL <module> ...) and the tables each one covers.
MODULES: dict[str, tuple[str, ...]] = {
    "servers": ("mysql_servers", "mysql_replication_hostgroups"),
    "users": ("mysql_users",),
    "query rules": ("mysql_query_rules",),
    "variables": ("global_variables",),
}
TABLE_NAMES = tuple(t for tables in MODULES.values() for t in tables)


def _default(model: type[BaseModel], field: str) -> Any:
    return model.model_fields[field].default


# ProxySQL's columns (those pyproxy has a setting for) and, at the end, pyproxy's own.
_DDL = {
    "mysql_servers": f"""(
    hostgroup_id INT NOT NULL DEFAULT {WRITER_HOSTGROUP},
    hostname VARCHAR NOT NULL,
    port INT NOT NULL DEFAULT {_default(Server, "port")},
    status VARCHAR NOT NULL DEFAULT 'ONLINE',
    weight INT NOT NULL DEFAULT {_default(Server, "weight")},
    max_connections INT NOT NULL DEFAULT {_default(Server, "max_connections")},
    use_ssl INT NOT NULL DEFAULT 0,
    comment VARCHAR NOT NULL DEFAULT '',
    name VARCHAR,
    priority INT NOT NULL DEFAULT {_default(Server, "priority")},
    ssl_ca VARCHAR,
    ssl_verify INT NOT NULL DEFAULT 0,
    PRIMARY KEY (hostgroup_id, hostname, port))""",
    "mysql_replication_hostgroups": """(
    writer_hostgroup INT NOT NULL PRIMARY KEY,
    reader_hostgroup INT NOT NULL UNIQUE,
    check_type VARCHAR NOT NULL DEFAULT 'read_only',
    comment VARCHAR NOT NULL DEFAULT '')""",
    "mysql_users": f"""(
    username VARCHAR NOT NULL PRIMARY KEY,
    password VARCHAR NOT NULL DEFAULT '',
    active INT NOT NULL DEFAULT 1,
    default_hostgroup INT NOT NULL DEFAULT {WRITER_HOSTGROUP},
    default_schema VARCHAR,
    max_connections INT NOT NULL DEFAULT {_default(User, "max_connections")},
    consistency VARCHAR)""",
    "mysql_query_rules": """(
    rule_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    active INT NOT NULL DEFAULT 0,
    username VARCHAR,
    schemaname VARCHAR,
    match_digest VARCHAR,
    match_pattern VARCHAR,
    destination_hostgroup INT,
    error_msg VARCHAR,
    replace_pattern VARCHAR,
    apply INT NOT NULL DEFAULT 0,
    comment VARCHAR,
    destination_server VARCHAR)""",
    "global_variables": """(
    variable_name VARCHAR NOT NULL PRIMARY KEY,
    variable_value VARCHAR NOT NULL)""",
}


def create_tables(db: sqlite3.Connection, schema: str) -> None:
    for table in TABLE_NAMES:
        db.execute(f"CREATE TABLE IF NOT EXISTS {schema}.{table} {_DDL[table]}")


def columns(table: str) -> tuple[str, ...]:
    body = _DDL[table].strip("()\n ")
    return tuple(
        line.split()[0] for line in body.splitlines() if not line.strip().startswith("PRIMARY")
    )


# -- global_variables -------------------------------------------------------------------------
# The config sections kept as variables; the rest (listeners, admin, frontend_tls, logging)
# always comes from the YAML, like ProxySQL's datadir and admin credentials in proxysql.cnf.
VARIABLE_SECTIONS = (
    "monitor",
    "backend_admin",
    "pool",
    "limits",
    "health",
    "routing",
    "auth_plugin",
    "server_version",
)

Path = tuple[str, ...]


@dataclass(frozen=True)
class Variable:
    name: str
    path: Path  # where it is in the config
    scale: int = 1  # ProxySQL's value in ms for a setting pyproxy keeps in seconds


# ProxySQL's names for pyproxy's settings; several names for one setting are aliases.
_PROXYSQL_NAMES: dict[Path, tuple[tuple[str, ...], int]] = {
    ("monitor", "username"): (("mysql-monitor_username",), 1),
    ("monitor", "password"): (("mysql-monitor_password",), 1),
    ("monitor", "ssl"): (("mysql-monitor_ssl",), 1),
    ("health", "enabled"): (("mysql-monitor_enabled",), 1),
    ("health", "check_interval_ms"): (
        (
            "mysql-monitor_ping_interval",
            "mysql-monitor_read_only_interval",
            "mysql-monitor_connect_interval",
            "mysql-monitor_replication_lag_interval",
        ),
        1,
    ),
    ("health", "check_timeout_ms"): (
        (
            "mysql-monitor_connect_timeout",
            "mysql-monitor_ping_timeout",
            "mysql-monitor_read_only_timeout",
        ),
        1,
    ),
    ("health", "failure_threshold"): (("mysql-monitor_ping_max_failures",), 1),
    ("limits", "max_client_connections"): (("mysql-max_connections",), 1),
    ("limits", "max_allowed_packet"): (("mysql-max_allowed_packet",), 1),
    ("limits", "client_idle_timeout_s"): (("mysql-wait_timeout",), 1000),
    ("limits", "connect_timeout_s"): (("mysql-connect_timeout_client",), 1000),
    ("limits", "query_digests_max_digest_length"): (("mysql-query_digests_max_digest_length",), 1),
    ("pool", "connect_timeout_ms"): (("mysql-connect_timeout_server",), 1),
    ("routing", "query_timeout_ms"): (("mysql-default_query_timeout",), 1),
    ("server_version",): (("mysql-server_version",), 1),
    ("auth_plugin",): (("mysql-default_authentication_plugin",), 1),
}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _variables() -> tuple[Variable, ...]:
    out: list[Variable] = []
    for section in VARIABLE_SECTIONS:
        model = _model_of(Config.model_fields[section].annotation)
        paths = [(section,)] if model is None else [(section, f) for f in model.model_fields]
        for path in paths:
            names, scale = _PROXYSQL_NAMES.get(path, (("pyproxy-" + ".".join(path),), 1))
            out.extend(Variable(name, path, scale) for name in names)
    return tuple(out)


VARIABLES = _variables()
VARIABLE_BY_NAME = {v.name: v for v in VARIABLES}


def aliases(name: str) -> list[str]:
    """The variable's name and the other names of the same setting."""
    path = VARIABLE_BY_NAME[name].path
    return [v.name for v in VARIABLES if v.path == path]


def _get(data: dict[str, Any], path: Path) -> Any:
    value: Any = data
    for key in path:
        value = None if value is None else value.get(key)
    return value


def _text(value: Any, scale: int) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if scale != 1:
        return str(round(value * scale))
    return str(value)


def variable_rows(config: Config) -> list[tuple[str, str]]:
    data = config.model_dump()
    return [(v.name, _text(_get(data, v.path), v.scale)) for v in VARIABLES]


# Settings read once, at start: a LOAD records them, the next start applies them.
RESTART_ONLY: tuple[Path, ...] = (("health", "enabled"), ("server_version",))


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The variables changed from old to new that wait for the next start."""
    before, after = old.model_dump(), new.model_dump()
    return [
        v.name
        for v in VARIABLES
        if v.path in RESTART_ONLY and _get(before, v.path) != _get(after, v.path)
    ]


def mask(name: str, value: str) -> str:
    """A password variable's value as runtime_* tables show it."""
    return "********" if name.endswith("password") and value else value


# -- Config -> rows ---------------------------------------------------------------------------
def native_hash(password: str) -> str:
    """mysql_native_password's stored form (*SHA1(SHA1(pw))), how runtime shows a password."""
    if not password:
        return ""
    inner = hashlib.sha1(password.encode()).digest()
    return "*" + hashlib.sha1(inner).hexdigest().upper()


def rows(config: Config, table: str) -> list[tuple[Any, ...]]:
    """The rows of one configuration table for config, in columns(table) order."""
    if table == "mysql_servers":
        return [
            (
                WRITER_HOSTGROUP if s.role == "master" else READER_HOSTGROUP,
                s.host,
                s.port,
                s.status,
                s.weight,
                s.max_connections,
                int(s.tls.enabled),
                s.comment,
                s.name,
                s.priority,
                s.tls.ca,
                int(s.tls.verify),
            )
            for s in config.servers
        ]
    if table == "mysql_replication_hostgroups":
        return [(WRITER_HOSTGROUP, READER_HOSTGROUP, "read_only", "masters / replicas")]
    if table == "mysql_users":
        return [
            (
                u.username,
                u.password,
                1,
                WRITER_HOSTGROUP,
                u.default_schema,
                u.max_connections,
                u.consistency,
            )
            for u in config.users
        ]
    if table == "mysql_query_rules":
        return [
            _rule_row(rule_id, r)
            for rule_id, r in zip(config.rule_ids(), config.query_rules, strict=True)
        ]
    if table == "global_variables":
        return list(variable_rows(config))
    raise KeyError(table)


def _rule_row(rule_id: int, r: QueryRule) -> tuple[Any, ...]:
    hostgroup = {"writer": WRITER_HOSTGROUP, "reader": READER_HOSTGROUP}.get(r.route or "")
    server = r.route if r.route is not None and hostgroup is None else None
    return (
        rule_id,
        1,
        r.username,
        r.schema_name,
        r.match_digest,
        r.match_pattern,
        hostgroup,
        r.block,
        r.rewrite,
        1,
        r.name,
        server,
    )


def write_config(
    db: sqlite3.Connection, schema: str, config: Config, tables: Iterable[str]
) -> None:
    """Replace the tables' rows in schema (main or disk) with config's (in the caller's
    transaction)."""
    for table in tables:
        cols = columns(table)
        db.execute(f"DELETE FROM {schema}.{table}")
        db.executemany(
            f"INSERT INTO {schema}.{table} ({', '.join(cols)}) "
            f"VALUES ({', '.join('?' * len(cols))})",
            rows(config, table),
        )


# -- rows -> Config ---------------------------------------------------------------------------
class TableError(ConfigError):
    """A configuration table can't become a config: str() names the table, row and column."""


Where = Callable[[tuple[int | str, ...]], str]


def _select(db: sqlite3.Connection, schema: str, table: str, order: str) -> list[dict[str, Any]]:
    cur = db.execute(f"SELECT * FROM {schema}.{table} ORDER BY {order}")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _hostgroups(db: sqlite3.Connection, schema: str) -> None:
    expected = (WRITER_HOSTGROUP, READER_HOSTGROUP, "read_only")
    found = [
        (r["writer_hostgroup"], r["reader_hostgroup"], r["check_type"])
        for r in _select(db, schema, "mysql_replication_hostgroups", "rowid")
    ]
    if found != [expected]:
        raise TableError(
            "mysql_replication_hostgroups: pyproxy runs one replication cluster, with the row "
            f"(writer_hostgroup={WRITER_HOSTGROUP}, reader_hostgroup={READER_HOSTGROUP}, "
            f"check_type='read_only'); found {found}"
        )


def _server_data(db: sqlite3.Connection, schema: str) -> tuple[list[dict[str, Any]], list[str]]:
    servers, labels = [], []
    for r in _select(db, schema, "mysql_servers", "rowid"):
        label = (
            f"mysql_servers row (hostgroup_id={r['hostgroup_id']}, "
            f"hostname={r['hostname']!r}, port={r['port']})"
        )
        role = {WRITER_HOSTGROUP: "master", READER_HOSTGROUP: "replica"}.get(r["hostgroup_id"])
        if role is None:
            raise TableError(
                f"{label}, column hostgroup_id: unknown hostgroup {r['hostgroup_id']}: "
                f"{WRITER_HOSTGROUP} holds the masters (the writer and the standby masters), "
                f"{READER_HOSTGROUP} the replicas (see mysql_replication_hostgroups)"
            )
        tls: dict[str, Any] = {"enabled": r.get("use_ssl"), "verify": r.get("ssl_verify", 0)}
        if r.get("ssl_ca") is not None:
            tls["ca"] = r["ssl_ca"]
        servers.append(
            _present(
                {
                    "name": r.get("name") or f"{r['hostname']}:{r['port']}",
                    "host": r["hostname"],
                    "port": r["port"],
                    "role": role,
                    "status": r["status"],
                    "weight": r["weight"],
                    "max_connections": r["max_connections"],
                    "priority": r.get("priority"),
                    "comment": r["comment"],
                    "tls": tls,
                }
            )
        )
        labels.append(label)
    return servers, labels


def _user_data(db: sqlite3.Connection, schema: str) -> tuple[list[dict[str, Any]], list[str]]:
    users, labels = [], []
    for r in _select(db, schema, "mysql_users", "rowid"):
        label = f"mysql_users row (username={r['username']!r})"
        if r["default_hostgroup"] != WRITER_HOSTGROUP:
            raise TableError(
                f"{label}, column default_hostgroup: pyproxy sends each statement to the "
                f"writer or a replica itself (and by mysql_query_rules); only "
                f"{WRITER_HOSTGROUP} is accepted"
            )
        if not r["active"]:
            continue  # kept in the table, not loaded (ProxySQL's active=0)
        users.append(
            _present(
                {
                    "username": r["username"],
                    "password": r["password"],
                    "default_schema": r["default_schema"],
                    "max_connections": r["max_connections"],
                    "consistency": r.get("consistency"),
                }
            )
        )
        labels.append(label)
    return users, labels


def _rule_data(db: sqlite3.Connection, schema: str) -> tuple[list[dict[str, Any]], list[str]]:
    rules, labels = [], []
    for r in _select(db, schema, "mysql_query_rules", "rule_id"):
        label = f"mysql_query_rules rule_id={r['rule_id']}"
        if not r["active"]:
            continue
        if not r["apply"]:
            raise TableError(
                f"{label}, column apply: pyproxy stops at the first matching rule; set apply=1 "
                f"(chains of rules with apply=0 are not supported)"
            )
        hostgroup, server = r["destination_hostgroup"], r.get("destination_server")
        route = server
        if hostgroup is not None:
            route = {WRITER_HOSTGROUP: "writer", READER_HOSTGROUP: "reader"}.get(hostgroup)
            if route is None or server is not None:
                raise TableError(
                    f"{label}, column destination_hostgroup: unknown hostgroup {hostgroup}: "
                    f"{WRITER_HOSTGROUP} (the writer) or {READER_HOSTGROUP} (the replicas); "
                    f"destination_server names one server instead"
                    if route is None
                    else f"{label}: destination_hostgroup or destination_server, not both"
                )
        rules.append(
            _present(
                {
                    "rule_id": r["rule_id"],
                    "name": r["comment"],
                    "username": r["username"],
                    "schema_name": r["schemaname"],
                    "match_digest": r["match_digest"],
                    "match_pattern": r["match_pattern"],
                    "route": route,
                    "block": r["error_msg"],
                    "rewrite": r["replace_pattern"],
                }
            )
        )
        labels.append(label)
    return rules, labels


def _present(data: dict[str, Any]) -> dict[str, Any]:
    """NULL columns take the setting's default."""
    return {k: v for k, v in data.items() if v is not None}


def _variable_data(
    db: sqlite3.Connection, schema: str, running: dict[str, Any], chosen: dict[Path, str]
) -> dict[str, Any]:
    """The variable sections of the config from global_variables (missing rows keep the
    running value; aliases of one setting must agree, or only one of them changed)."""
    values: dict[Path, dict[str, str]] = {}
    for r in _select(db, schema, "global_variables", "variable_name"):
        var = VARIABLE_BY_NAME.get(r["variable_name"])
        if var is None:
            raise TableError(f"global_variables: unknown variable {r['variable_name']!r}")
        values.setdefault(var.path, {})[var.name] = str(r["variable_value"])
    data = {k: running.get(k) for k in VARIABLE_SECTIONS}
    for path, named in values.items():
        scale = VARIABLE_BY_NAME[next(iter(named))].scale
        now = _text(_get(running, path), scale)
        distinct = set(named.values())
        if len(distinct) > 1:
            distinct.discard(now)  # the alias that was changed wins
        if len(distinct) > 1:
            shown = ", ".join(f"{n}={v!r}" for n, v in named.items())
            raise TableError(
                f"global_variables: {shown} are one pyproxy setting ({'.'.join(path)}): "
                f"give them the same value"
            )
        text = distinct.pop()
        chosen[path] = " = ".join(n for n, v in named.items() if v == text)  # errors name them
        value: Any = text
        if scale != 1:
            try:
                value = float(text) / scale
            except ValueError:
                raise TableError(
                    f"global_variables {chosen[path]}: {text!r} is not a number"
                ) from None
        _set(data, path, value)
    backend_admin = data.get("backend_admin")
    if isinstance(backend_admin, dict) and not backend_admin.get("username"):
        data["backend_admin"] = None  # both variables empty: no backend_admin account
    return data


def _set(data: dict[str, Any], path: Path, value: Any) -> None:
    field = Config.model_fields[path[0]]
    if len(path) == 1:
        data[path[0]] = None if value == "" and field.default is None else value
        return
    section = data.get(path[0])
    section = dict(section) if isinstance(section, dict) else {}
    section[path[1]] = value
    data[path[0]] = section


def read_config(
    db: sqlite3.Connection, schema: str, base: Config, modules: Iterable[str]
) -> Config:
    """base with the modules' settings taken from the tables in schema, validated by the same
    model as the YAML; TableError names the table, row and column of the first problem."""
    data = base.model_dump(exclude_none=True)
    labels: dict[str, list[str]] = {}
    chosen: dict[Path, str] = {}  # the variable name each setting was read from
    for module in modules:
        if module == "servers":
            _hostgroups(db, schema)
            data["servers"], labels["servers"] = _server_data(db, schema)
        elif module == "users":
            data["users"], labels["users"] = _user_data(db, schema)
        elif module == "query rules":
            data["query_rules"], labels["query_rules"] = _rule_data(db, schema)
        elif module == "variables":
            data.update(_variable_data(db, schema, base.model_dump(), chosen))
    data = {k: v for k, v in data.items() if v is not None}
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise TableError(_explain(exc, labels, chosen)) from None


_COLUMNS = {
    "servers": {"host": "hostname", "role": "hostgroup_id", "tls": "use_ssl"},
    "users": {},
    "query_rules": {
        "schema_name": "schemaname",
        "route": "destination_hostgroup",
        "block": "error_msg",
        "rewrite": "replace_pattern",
        "name": "comment",
    },
}
_TLS_COLUMNS = {"enabled": "use_ssl", "ca": "ssl_ca", "verify": "ssl_verify"}
_ACROSS = re.compile(r"^(servers|users|query_rules)\[(\d+)\]\.(\w+): (.*)$")
# The model's words for a rule or a server, in the tables' columns.
_RULE_WORDS = (
    (
        "route, block or rewrite",
        "destination_hostgroup, destination_server, error_msg or replace_pattern",
    ),
    ("rewrite needs", "replace_pattern needs"),
    ("role: master", f"hostgroup_id {WRITER_HOSTGROUP} (a master)"),
)


def _where(
    loc: tuple[int | str, ...], labels: dict[str, list[str]], chosen: dict[Path, str]
) -> str:
    section = str(loc[0])
    if section in labels and len(loc) >= 2 and isinstance(loc[1], int):
        label = labels[section][loc[1]]
        if len(loc) == 2:
            return label
        field = str(loc[2])
        column = _COLUMNS[section].get(field, field)
        if field == "tls" and len(loc) > 3:
            column = _TLS_COLUMNS.get(str(loc[3]), column)
        return f"{label}, column {column}"
    path = tuple(str(p) for p in loc[:2])
    names = [v.name for v in VARIABLES if v.path == path]
    if names:
        return f"global_variables {chosen.get(path, names[0])}"
    return ".".join(str(p) for p in loc)


def _explain(exc: ValidationError, labels: dict[str, list[str]], chosen: dict[Path, str]) -> str:
    err = exc.errors()[0]
    msg = str(err["msg"]).removeprefix("Value error, ")
    for ours, theirs in _RULE_WORDS:
        msg = msg.replace(ours, theirs)
    if err["type"] == "extra_forbidden":
        msg = "unknown setting"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    loc = tuple(err["loc"])
    if not loc and (m := _ACROSS.match(msg)):
        loc, msg = (m.group(1), int(m.group(2)), m.group(3)), m.group(4)
        if msg.startswith("no server named"):
            where = _where(loc, labels, chosen).removesuffix("destination_hostgroup")
            return f"{where}destination_server: {msg}"
    elif not loc and msg.startswith("servers: "):
        return f"mysql_servers: {msg.removeprefix('servers: ')}{more}"
    where = _where(loc, labels, chosen) if loc else "configuration"
    return f"{where}: {msg}{more}"
