"""The stats_* and monitor.* row builders, fed plain counters."""

from __future__ import annotations

import pickle

from proxy.admin.stats import (
    COMMANDS_COLS,
    ERRORS_COLS,
    PING_LOG_COLS,
    READ_ONLY_LOG_COLS,
    REPLICATION_LAG_LOG_COLS,
    commands_rows,
    error_rows,
    global_rows,
    global_values,
    ping_log_rows,
    read_only_log_rows,
    replication_lag_log_rows,
)
from proxy.health.monitorlog import CheckRecord
from proxy.metrics import COMMANDS, Metrics


def test_commands_counters_have_proxysql_columns_and_buckets() -> None:
    assert COMMANDS_COLS == (
        "Command", "Total_Time_us", "Total_cnt", "cnt_100us", "cnt_500us", "cnt_1ms", "cnt_5ms",
        "cnt_10ms", "cnt_50ms", "cnt_100ms", "cnt_500ms", "cnt_1s", "cnt_5s", "cnt_10s",
        "cnt_INFs",
    )  # fmt: skip
    m = Metrics()
    m.count_query(False, True, True, 0.00005, "select", "db1")  # 50 us
    m.count_query(False, True, True, 0.0003, "SELECT", "db1")  # 300 us
    m.count_query(True, False, False, 12.0, "insert", "db1")  # beyond 10 s
    m.count_query(True, False, True, 0.002, "frobnicate", "db1")
    rows = {r["Command"]: r for r in commands_rows(m.commands)}
    assert list(rows) == list(COMMANDS)  # every command, counted or not
    select = rows["SELECT"]
    assert (select["Total_cnt"], select["Total_Time_us"]) == (2, 350)
    assert (select["cnt_100us"], select["cnt_500us"], select["cnt_1ms"]) == (1, 1, 0)
    assert rows["INSERT"]["cnt_INFs"] == 1 and rows["INSERT"]["cnt_10s"] == 0
    assert rows["UNKNOWN"]["Total_cnt"] == 1 and rows["UNKNOWN"]["cnt_5ms"] == 1
    assert rows["DELETE"]["Total_cnt"] == 0
    assert all(set(r) == set(COMMANDS_COLS) for r in rows.values())


def test_errors_count_by_errno_and_keep_the_last_message() -> None:
    m = Metrics()
    key = (1, "10.0.0.2", 3306, "app", "10.0.0.9", "shop", 1146)
    m.record_error(key, "Table 'shop.a' doesn't exist")
    m.record_error(key, "Table 'shop.b' doesn't exist")
    m.record_error((0, "10.0.0.1", 3306, "app", "10.0.0.9", "shop", 1062), "Duplicate entry")
    rows = sorted(error_rows(m.errors), key=lambda r: r["errno"])
    assert [(r["errno"], r["count_star"]) for r in rows] == [(1062, 1), (1146, 2)]
    assert rows[1]["last_error"] == "Table 'shop.b' doesn't exist"
    assert rows[1]["first_seen"] <= rows[1]["last_seen"]
    assert rows[1]["hostname"] == "10.0.0.2" and rows[1]["client_address"] == "10.0.0.9"
    assert all(set(r) == set(ERRORS_COLS) for r in rows)


def test_errors_table_is_bounded() -> None:
    m = Metrics()
    for errno in range(20_000):
        m.record_error((0, "h", 1, "u", "c", "s", errno), "x")
    assert len(m.errors) == 10_000


def test_global_values_from_counters() -> None:
    m = Metrics()
    m.accepted = 5
    m.refused["auth"] += 2
    m.bytes_in, m.bytes_out = 100, 200
    m.count_query(True, False, True, 0.001, "insert", "db1")
    m.count_query(False, True, False, 0.001, "select", "db1")
    values = global_values(m, m.started + 42.5)
    assert values["ProxySQL_Uptime"] == 42
    assert values["Client_Connections_created"] == 5
    assert values["Client_Connections_aborted"] == 2
    assert values["Questions"] == 2 and values["Queries_with_error"] == 1
    assert values["Backend_query_time_nsec"] == 2_000_000
    assert global_rows({"Questions": 2}) == [{"Variable_Name": "Questions", "Variable_Value": "2"}]


def _check(port: int, error: str | None = None, replica: bool = True) -> CheckRecord:
    ok = error is None
    return CheckRecord(
        "127.0.0.1", port, 1_000, 250 if ok else None, 1 if ok else None, 3 if ok else None,
        replica, error,
    )  # fmt: skip


def test_monitor_log_rows() -> None:
    checks = [_check(1), _check(1, "Access denied for user 'monitor'"), _check(2, replica=False)]
    ping = ping_log_rows(checks)
    assert [(r["port"], r["ping_success_time_us"], r["ping_error"]) for r in ping] == [
        (1, 250, None), (1, 0, "Access denied for user 'monitor'"), (2, 250, None),
    ]  # fmt: skip
    read_only = read_only_log_rows(checks)
    assert [r["read_only"] for r in read_only] == [1, None, 1]
    lag = replication_lag_log_rows(checks)
    assert [(r["port"], r["repl_lag"]) for r in lag] == [(1, 3), (1, None)]  # not the master
    assert set(ping[0]) == set(PING_LOG_COLS)
    assert set(read_only[0]) == set(READ_ONLY_LOG_COLS)
    assert set(lag[0]) == set(REPLICATION_LAG_LOG_COLS)


def test_metrics_pickle_for_the_worker_reports() -> None:
    m = Metrics()
    m.count_query(False, True, True, 0.001, "select", "db1")
    m.record_error((0, "h", 1, "u", "c", "s", 1146), "x")
    copy = pickle.loads(pickle.dumps(m))
    assert commands_rows(copy.commands) == commands_rows(m.commands)
    assert error_rows(copy.errors) == error_rows(m.errors)
