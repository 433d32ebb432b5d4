"""The admin tables (ProxySQL's names and columns) as rows built from the proxy's state and
the data plane's report."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.admin import configdb, stats
from proxy.admin.configdb import mask, native_hash
from proxy.cluster import READER_HOSTGROUP, WRITER_HOSTGROUP
from proxy.report import PoolNumbers, Row, WorkerReport

if TYPE_CHECKING:
    from proxy.view import ProxyView


def server_rows(proxy: ProxyView, report: WorkerReport | None = None) -> list[Row]:
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


def digest_rows(proxy: ProxyView, report: WorkerReport) -> list[Row]:
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
        for e in report.digests.values()
    ]


def digest_reset_rows(proxy: ProxyView, report: WorkerReport) -> list[Row]:
    """stats_mysql_query_digest_reset: the digests; reading clears them (ProxySQL's rule: the
    admin asks every worker to clear its digests with the report it takes)."""
    return digest_rows(proxy, report)


def global_rows(proxy: ProxyView, report: WorkerReport) -> list[Row]:
    """stats_mysql_global: the data path's counters (summed over workers) and its gauges."""
    values = stats.global_values(report.metrics, time.time())
    pools = report.pools.values()
    values.update({
        "Client_Connections_connected": report.connections,
        "Server_Connections_connected": sum(p.in_use + p.idle for p in pools),
        "Server_Connections_created": sum(p.created for p in pools),
        "ConnPool_get_conn_success": sum(p.reused for p in pools),
        "Failovers": len(proxy.failovers),
        "Writer_conflicts": proxy.conflicts,
    })  # fmt: skip
    return stats.global_rows(values)


def pool_rows(proxy: ProxyView, report: WorkerReport) -> list[Row]:
    """stats_mysql_connection_pool (summed over the workers)."""
    rows = []
    for name, st in proxy.cluster.servers.items():
        stats = report.pools.get(name, PoolNumbers())
        rows.append({
            "hostgroup": proxy.cluster.hostgroup(name),
            "srv_host": st.config.host,
            "srv_port": st.config.port,
            "status": st.status.value,
            "ConnUsed": stats.in_use,
            "ConnFree": stats.idle,
            "ConnOK": stats.created,
            "ConnERR": stats.errors,
            "ConnReused": stats.reused,
            "Queries": report.metrics.server_queries.get(name, 0),
            "Queries_in_flight": stats.outstanding,
            "Latency_us": int(proxy.check_stats[name].last_latency_s * 1e6)
            if name in proxy.check_stats
            else 0,
            "server": name,
        })  # fmt: skip
    return rows


def processlist_rows(proxy: ProxyView, report: WorkerReport) -> list[Row]:
    """stats_mysql_processlist: every user's client sessions in every worker (ThreadID: the
    worker) and the backend each runs on."""
    return list(report.processlist)


def worker_rows(proxy: ProxyView, report: WorkerReport) -> list[Row]:
    """stats_pyproxy_workers: each worker process, its clients and statements so far."""
    return [
        {"worker": w.index, "pid": w.pid, "connections": w.connections, "statements": w.statements}
        for w in sorted(report.workers, key=lambda w: w.index)
    ]


def rule_rows(proxy: ProxyView, report: WorkerReport) -> list[Row]:
    """runtime_mysql_query_rules, with their hit counts (summed over the workers)."""
    rules = proxy.router.rules.rules
    ids = proxy.config.rule_ids()
    counts = list(report.rule_hits[: len(rules)]) + [0] * (len(rules) - len(report.rule_hits))
    rows = []
    for rule_id, rule, hits in zip(ids, rules, counts, strict=True):
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


def user_rows(proxy: ProxyView, report: WorkerReport) -> list[Row]:
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


def variable_rows(proxy: ProxyView, report: WorkerReport) -> list[Row]:
    """runtime_global_variables (passwords masked)."""
    return [
        {"variable_name": name, "variable_value": mask(name, value)}
        for name, value in configdb.variable_rows(proxy.config)
    ]


def hostgroup_rows(proxy: ProxyView, report: WorkerReport) -> list[Row]:
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
_WORKER_COLS = ("worker", "pid", "connections", "statements")
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
TABLES: dict[str, tuple[tuple[str, ...], Callable[[ProxyView, WorkerReport], list[Row]]]] = {
    "runtime_mysql_servers": (_SERVER_COLS, server_rows),
    "stats_mysql_query_digest": (_DIGEST_COLS, digest_rows),
    "stats_mysql_connection_pool": (_POOL_COLS, pool_rows),
    "stats_mysql_processlist": (_PROCESSLIST_COLS, processlist_rows),
    "stats_pyproxy_workers": (_WORKER_COLS, worker_rows),
    "runtime_mysql_query_rules": (_RULE_COLS, rule_rows),
    "stats_mysql_query_digest_reset": (_DIGEST_COLS, digest_reset_rows),
    "stats_mysql_global": (stats.GLOBAL_COLS, global_rows),
    "stats_mysql_commands_counters": (
        stats.COMMANDS_COLS,
        lambda p, r: stats.commands_rows(r.metrics.commands),
    ),
    "stats_mysql_errors": (stats.ERRORS_COLS, lambda p, r: stats.error_rows(r.metrics.errors)),
    "monitor.mysql_server_ping_log": (
        stats.PING_LOG_COLS,
        lambda p, r: stats.ping_log_rows(p.monitor_log.records()),
    ),
    "monitor.mysql_server_read_only_log": (
        stats.READ_ONLY_LOG_COLS,
        lambda p, r: stats.read_only_log_rows(p.monitor_log.records()),
    ),
    "monitor.mysql_server_replication_lag_log": (
        stats.REPLICATION_LAG_LOG_COLS,
        lambda p, r: stats.replication_lag_log_rows(p.monitor_log.records()),
    ),
    "runtime_mysql_users": (_USER_COLS, user_rows),
    "runtime_global_variables": (("variable_name", "variable_value"), variable_rows),
    "runtime_mysql_replication_hostgroups": (
        configdb.columns("mysql_replication_hostgroups"),
        hostgroup_rows,
    ),
}
