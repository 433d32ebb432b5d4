"""Row builders for ProxySQL's stats_* and monitor.* tables, from plain counters (Metrics or a
sum of them, the monitor's log), with ProxySQL's column names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from proxy.health.monitorlog import CheckRecord
from proxy.metrics import COMMAND_BUCKETS_US, COMMANDS, ErrorCount, ErrorKey, Metrics

Row = dict[str, Any]

_BUCKET_COLS = (
    *(
        f"cnt_{us // 1_000_000}s" if us >= 1_000_000 else f"cnt_{us // 1000}ms" if us >= 1000
        else f"cnt_{us}us"
        for us in COMMAND_BUCKETS_US
    ),
    "cnt_INFs",
)  # fmt: skip
COMMANDS_COLS = ("Command", "Total_Time_us", "Total_cnt", *_BUCKET_COLS)
ERRORS_COLS = (
    "hostgroup",
    "hostname",
    "port",
    "username",
    "client_address",
    "schemaname",
    "errno",
    "count_star",
    "first_seen",
    "last_seen",
    "last_error",
)
GLOBAL_COLS = ("Variable_Name", "Variable_Value")
PING_LOG_COLS = ("hostname", "port", "time_start_us", "ping_success_time_us", "ping_error")
READ_ONLY_LOG_COLS = ("hostname", "port", "time_start_us", "success_time_us", "read_only", "error")
REPLICATION_LAG_LOG_COLS = (
    "hostname",
    "port",
    "time_start_us",
    "success_time_us",
    "repl_lag",
    "error",
)


def commands_rows(commands: Mapping[str, list[int]]) -> list[Row]:
    """stats_mysql_commands_counters: every command, counted or not (times in microseconds;
    cnt_X: statements that took at most X and more than the previous bound)."""
    width = len(COMMANDS_COLS) - 1
    return [
        dict(zip(COMMANDS_COLS, (command, *commands.get(command, [0] * width)), strict=True))
        for command in COMMANDS
    ]


def error_rows(errors: Mapping[ErrorKey, ErrorCount]) -> list[Row]:
    """stats_mysql_errors: errors the servers answered, by server, user, client and errno."""
    return [
        {
            "hostgroup": hostgroup,
            "hostname": hostname,
            "port": port,
            "username": username,
            "client_address": client,
            "schemaname": schema,
            "errno": errno,
            "count_star": e.count,
            "first_seen": e.first_seen,
            "last_seen": e.last_seen,
            "last_error": e.last_error,
        }
        for (hostgroup, hostname, port, username, client, schema, errno), e in errors.items()
    ]


def global_values(m: Metrics, now: float) -> dict[str, int]:
    """stats_mysql_global's counters kept by the data path (the caller adds the gauges it reads
    from live state: connections open, pooled, failovers)."""
    questions = sum(m.queries.values())
    errors = sum(n for (_, _, outcome), n in m.queries.items() if outcome == "error")
    return {
        "ProxySQL_Uptime": int(now - m.started),
        "Client_Connections_created": m.accepted,
        "Client_Connections_aborted": sum(m.refused.values()),
        "Questions": questions,
        "Queries_with_error": errors,
        "Queries_frontends_bytes_recv": m.bytes_in,
        "Queries_frontends_bytes_sent": m.bytes_out,
        "Server_Connections_aborted": sum(m.backend_errors.values()),
        "Backend_query_time_nsec": sum(counts[0] for counts in m.commands.values()) * 1000,
        "Query_timeouts": m.query_timeouts,
        "Reads_retried_on_down": m.reads_retried_on_down,
        "Backend_connections_lost": sum(m.backend_lost.values()),
        "Consistency_reads_to_writer": m.consistency_reads_to_writer,
        "Gtid_waits_caught_up": m.gtid_waits.get("caught_up", 0),
        "Gtid_waits_timed_out": m.gtid_waits.get("timed_out", 0),
    }


def global_rows(values: Mapping[str, int]) -> list[Row]:
    """stats_mysql_global: one (Variable_Name, Variable_Value) row per counter."""
    return [{"Variable_Name": k, "Variable_Value": str(v)} for k, v in values.items()]


def ping_log_rows(checks: Iterable[CheckRecord]) -> list[Row]:
    """monitor.mysql_server_ping_log: every check (it reaches the server, like a ping)."""
    return [
        {
            "hostname": c.hostname,
            "port": c.port,
            "time_start_us": c.time_start_us,
            "ping_success_time_us": c.success_time_us or 0,
            "ping_error": c.error,
        }
        for c in checks
    ]


def read_only_log_rows(checks: Iterable[CheckRecord]) -> list[Row]:
    """monitor.mysql_server_read_only_log: read_only as each check saw it."""
    return [
        {
            "hostname": c.hostname,
            "port": c.port,
            "time_start_us": c.time_start_us,
            "success_time_us": c.success_time_us or 0,
            "read_only": c.read_only,
            "error": c.error,
        }
        for c in checks
    ]


def replication_lag_log_rows(checks: Iterable[CheckRecord]) -> list[Row]:
    """monitor.mysql_server_replication_lag_log: the replicas' (and replicating masters')
    Seconds_Behind_Master; NULL when the replica does not know (SQL thread stopped)."""
    return [
        {
            "hostname": c.hostname,
            "port": c.port,
            "time_start_us": c.time_start_us,
            "success_time_us": c.success_time_us or 0,
            "repl_lag": c.repl_lag,
            "error": c.error,
        }
        for c in checks
        if c.is_replica
    ]
