"""The admin tables (ProxySQL's names and columns) as rows built from the proxy's live state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from proxy.admin import configdb, stats
from proxy.admin.configdb import mask, native_hash
from proxy.cluster import READER_HOSTGROUP, WRITER_HOSTGROUP
from proxy.frontend.processlist import backend_of, command_of

if TYPE_CHECKING:
    from proxy.view import ProxyView

Row = dict[str, Any]


def server_rows(proxy: ProxyView) -> list[Row]:
    """runtime_mysql_servers, plus pyproxy's own columns (name, role, read_only, lag...)."""
    rows = []
    for name, st in proxy.cluster.servers.items():
        cfg = st.config
        rows.append({
            "hostgroup_id": proxy.cluster.hostgroup(name),
            "hostname": cfg.host,
            "port": cfg.port,
            "status": st.status.value,
            "weight": cfg.weight,
            "max_connections": cfg.max_connections,
            "max_replication_lag": int(proxy.config.health.max_replication_lag_s),
            "use_ssl": int(cfg.tls.enabled),
            "comment": f"{name} ({proxy.cluster.role(name)})",
            "name": name,
            "role": proxy.cluster.role(name),
            "read_only": None if st.read_only is None else int(st.read_only),
            "replication_lag": st.lag_s,
            "reason": st.reason or st.last_error,
        })  # fmt: skip
    return rows


def digest_rows(proxy: ProxyView) -> list[Row]:
    """stats_mysql_query_digest (times in microseconds, like ProxySQL)."""
    return [
        {
            "hostgroup": e.hostgroup,
            "schemaname": e.schemaname,
            "username": e.username,
            "server": e.server,
            "digest": e.digest,
            "digest_text": e.digest_text,
            "count_star": e.count_star,
            "first_seen": int(e.first_seen),
            "last_seen": int(e.last_seen),
            "sum_time": e.sum_time_us,
            "min_time": e.min_time_us,
            "max_time": e.max_time_us,
            "sum_rows_affected": e.sum_rows_affected,
            "sum_rows_sent": e.sum_rows_sent,
        }
        for e in proxy.digests.entries.values()
    ]


def digest_reset_rows(proxy: ProxyView) -> list[Row]:
    """stats_mysql_query_digest_reset: the digests, which reading clears (ProxySQL's rule)."""
    rows = digest_rows(proxy)
    proxy.digests.reset()
    return rows


def global_rows(proxy: ProxyView) -> list[Row]:
    """stats_mysql_global: the data path's counters and the gauges read from live state."""
    values = stats.global_values(proxy.metrics, time.time())
    pool = proxy.pool
    values.update({
        "Client_Connections_connected": len(proxy.sessions),
        "Server_Connections_connected": sum(proxy.backend_in_use().values())
        + sum(pool.idle_count(name) for name in proxy.cluster.servers),
        "Server_Connections_created": sum(s.created for s in pool.stats.values()),
        "ConnPool_get_conn_success": sum(s.reused for s in pool.stats.values()),
        "Failovers": len(proxy.failovers),
        "Writer_conflicts": proxy.conflicts,
    })  # fmt: skip
    return stats.global_rows(values)


def pool_rows(proxy: ProxyView) -> list[Row]:
    """stats_mysql_connection_pool."""
    in_use = proxy.backend_in_use()
    rows = []
    for name, st in proxy.cluster.servers.items():
        stats = proxy.pool.stats[name]
        rows.append({
            "hostgroup": proxy.cluster.hostgroup(name),
            "srv_host": st.config.host,
            "srv_port": st.config.port,
            "status": st.status.value,
            "ConnUsed": in_use.get(name, 0),
            "ConnFree": proxy.pool.idle_count(name),
            "ConnOK": stats.created,
            "ConnERR": stats.errors,
            "ConnReused": stats.reused,
            "Queries": proxy.metrics.server_queries.get(name, 0),
            "Queries_in_flight": st.outstanding,
            "Latency_us": int(proxy.check_stats[name].last_latency_s * 1e6)
            if name in proxy.check_stats
            else 0,
            "server": name,
        })  # fmt: skip
    return rows


def processlist_rows(proxy: ProxyView) -> list[Row]:
    """stats_mysql_processlist: every user's client sessions and the backend each runs on."""
    rows = []
    now = time.monotonic()
    for session in sorted(proxy.sessions.values(), key=lambda s: s.id):
        if session.user is None:
            continue  # still logging in
        command, info = command_of(session, session.is_executing)
        conn = backend_of(session)
        server = proxy.cluster.servers.get(conn.server_name) if conn is not None else None
        rows.append({
            "ThreadID": 0,  # pyproxy runs one event loop
            "SessionID": session.id,
            "user": session.username,
            "db": session.state.schema or None,
            "cli_host": session.client.peer[0],
            "cli_port": session.client.peer[1],
            "hostgroup": proxy.cluster.hostgroup(server.name) if server is not None else None,
            "srv_host": server.config.host if server is not None else None,
            "srv_port": server.config.port if server is not None else None,
            "command": command,
            "time_ms": int((now - session.phase_since) * 1000),
            "info": info,
            "server": conn.server_name if conn is not None else None,
            "backend_thread_id": conn.thread_id if conn is not None else None,
        })  # fmt: skip
    return rows


def rule_rows(proxy: ProxyView) -> list[Row]:
    """mysql_query_rules, with their hit counts."""
    rules = proxy.router.rules
    ids = proxy.config.rule_ids()
    rows = []
    for rule_id, rule, hits in zip(ids, rules.rules, rules.hits, strict=True):
        route = rule.route
        dest = {"writer": WRITER_HOSTGROUP, "reader": READER_HOSTGROUP}.get(route or "")
        rows.append({
            "rule_id": rule_id,
            "active": 1,
            "username": rule.username,
            "schemaname": rule.schema_name,
            "match_digest": rule.match_digest,
            "match_pattern": rule.match_pattern,
            "destination_hostgroup": dest,
            "destination_server": route if dest is None else None,
            "error_msg": rule.block,
            "replace_pattern": rule.rewrite,
            "apply": 1,
            "hits": hits,
            "comment": rule.name,
        })  # fmt: skip
    return rows


def user_rows(proxy: ProxyView) -> list[Row]:
    """runtime_mysql_users: the password as its mysql_native_password hash, never in clear."""
    return [
        {
            "username": u.username,
            "password": native_hash(u.password),
            "active": 1,
            "default_hostgroup": WRITER_HOSTGROUP,
            "default_schema": u.default_schema,
            "max_connections": u.max_connections,
            "consistency": u.consistency or proxy.config.routing.consistency,
        }
        for u in proxy.config.users
    ]


def variable_rows(proxy: ProxyView) -> list[Row]:
    """runtime_global_variables (passwords masked)."""
    return [
        {"variable_name": name, "variable_value": mask(name, value)}
        for name, value in configdb.variable_rows(proxy.config)
    ]


def hostgroup_rows(proxy: ProxyView) -> list[Row]:
    """runtime_mysql_replication_hostgroups: pyproxy's one replication cluster."""
    table = "mysql_replication_hostgroups"
    cols = configdb.columns(table)
    return [dict(zip(cols, row, strict=True)) for row in configdb.rows(proxy.config, table)]


_SERVER_COLS = (
    "hostgroup_id",
    "hostname",
    "port",
    "status",
    "weight",
    "max_connections",
    "max_replication_lag",
    "use_ssl",
    "comment",
    "name",
    "role",
    "read_only",
    "replication_lag",
    "reason",
)
_DIGEST_COLS = (
    "hostgroup",
    "schemaname",
    "username",
    "server",
    "digest",
    "digest_text",
    "count_star",
    "first_seen",
    "last_seen",
    "sum_time",
    "min_time",
    "max_time",
    "sum_rows_affected",
    "sum_rows_sent",
)
_POOL_COLS = (
    "hostgroup",
    "srv_host",
    "srv_port",
    "status",
    "ConnUsed",
    "ConnFree",
    "ConnOK",
    "ConnERR",
    "ConnReused",
    "Queries",
    "Queries_in_flight",
    "Latency_us",
    "server",
)
_RULE_COLS = (
    "rule_id",
    "active",
    "username",
    "schemaname",
    "match_digest",
    "match_pattern",
    "destination_hostgroup",
    "destination_server",
    "error_msg",
    "replace_pattern",
    "apply",
    "hits",
    "comment",
)
_PROCESSLIST_COLS = (
    "ThreadID",
    "SessionID",
    "user",
    "db",
    "cli_host",
    "cli_port",
    "hostgroup",
    "srv_host",
    "srv_port",
    "command",
    "time_ms",
    "info",
    "server",
    "backend_thread_id",
)
_USER_COLS = (
    "username",
    "password",
    "active",
    "default_hostgroup",
    "default_schema",
    "max_connections",
    "consistency",
)

# table name -> (columns, row builder): the runtime and stats tables, built for each admin
# query from the live state (the editable tables are in proxy.admin.layers).
TABLES: dict[str, tuple[tuple[str, ...], Callable[[ProxyView], list[Row]]]] = {
    "runtime_mysql_servers": (_SERVER_COLS, server_rows),
    "stats_mysql_query_digest": (_DIGEST_COLS, digest_rows),
    "stats_mysql_connection_pool": (_POOL_COLS, pool_rows),
    "stats_mysql_processlist": (_PROCESSLIST_COLS, processlist_rows),
    "runtime_mysql_query_rules": (_RULE_COLS, rule_rows),
    "stats_mysql_query_digest_reset": (_DIGEST_COLS, digest_reset_rows),
    "stats_mysql_global": (stats.GLOBAL_COLS, global_rows),
    "stats_mysql_commands_counters": (
        stats.COMMANDS_COLS,
        lambda p: stats.commands_rows(p.metrics.commands),
    ),
    "stats_mysql_errors": (stats.ERRORS_COLS, lambda p: stats.error_rows(p.metrics.errors)),
    "monitor.mysql_server_ping_log": (
        stats.PING_LOG_COLS,
        lambda p: stats.ping_log_rows(p.monitor_log.records()),
    ),
    "monitor.mysql_server_read_only_log": (
        stats.READ_ONLY_LOG_COLS,
        lambda p: stats.read_only_log_rows(p.monitor_log.records()),
    ),
    "monitor.mysql_server_replication_lag_log": (
        stats.REPLICATION_LAG_LOG_COLS,
        lambda p: stats.replication_lag_log_rows(p.monitor_log.records()),
    ),
    "runtime_mysql_users": (_USER_COLS, user_rows),
    "runtime_global_variables": (("variable_name", "variable_value"), variable_rows),
    "runtime_mysql_replication_hostgroups": (
        configdb.columns("mysql_replication_hostgroups"),
        hostgroup_rows,
    ),
}
