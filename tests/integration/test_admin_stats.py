"""The stats_* and monitor.* admin tables after real traffic through the real pyproxy process."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.admin.stats import COMMANDS_COLS
from proxy.lab.lab import Lab
from tests.support.proxyproc import LabProxy, lab_proxy
from tests.support.stats import (
    ERRNO_NO_SUCH_TABLE,
    admin_rows,
    run_traffic,
    with_dead_replica,
)

HISTORY = 5
READS, WRITES, ERRORS = 30, 10, 3


@pytest.fixture(scope="module")
def proxy(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProxy]:
    servers = with_dead_replica(lab.proxy_config()["servers"])
    with lab_proxy(
        lab,
        tmp_path_factory.mktemp("stats"),
        servers=servers,
        health={"check_interval_ms": 200, "log_history": HISTORY},
    ) as running:
        run_traffic(running, READS, WRITES, ERRORS)
        yield running


def _digest_counts(proxy: LabProxy, table: str = "stats_mysql_query_digest") -> Counter[str]:
    """count_star per digest_text, summed over the servers that ran it."""
    counts: Counter[str] = Counter()
    for r in admin_rows(proxy, f"SELECT digest_text, count_star FROM {table}"):
        counts[r["digest_text"].lower()] += r["count_star"]
    return counts


def test_query_digest_and_its_reset(proxy: LabProxy) -> None:
    rows = admin_rows(proxy, "SELECT * FROM stats_mysql_query_digest")
    assert all(r["username"] == proxy.user and r["schemaname"] == "demo_db" for r in rows)
    assert all(r["sum_time"] >= r["max_time"] >= r["min_time"] >= 0 for r in rows)
    assert all(r["digest"].startswith("0x") for r in rows)
    counts = _digest_counts(proxy)
    assert counts["select ? + ?"] >= READS
    assert counts["insert into stats_probe (v) values (?)"] >= WRITES

    # Reading the _reset table returns the statistics and clears them: nothing ran since.
    assert _digest_counts(proxy, "stats_mysql_query_digest_reset")["select ? + ?"] >= READS
    assert admin_rows(proxy, "SELECT * FROM stats_mysql_query_digest") == []
    assert admin_rows(proxy, "SELECT * FROM stats_mysql_query_digest_reset") == []
    run_traffic(proxy, reads=2, writes=0, errors=0)
    assert _digest_counts(proxy)["select ? + ?"] == 2


def test_commands_counters(proxy: LabProxy) -> None:
    rows = {
        r["Command"]: r for r in admin_rows(proxy, "SELECT * FROM stats_mysql_commands_counters")
    }
    assert rows["SELECT"]["Total_cnt"] >= READS + ERRORS
    assert rows["INSERT"]["Total_cnt"] >= WRITES
    assert rows["CREATE"]["Total_cnt"] >= 1
    assert rows["DELETE"]["Total_cnt"] == 0  # every command is listed, counted or not
    buckets = [c for c in COMMANDS_COLS if c.startswith("cnt_")]
    for name in ("SELECT", "INSERT"):
        assert sum(rows[name][b] for b in buckets) == rows[name]["Total_cnt"]
        assert rows[name]["Total_Time_us"] > 0


def test_errors_by_errno(proxy: LabProxy) -> None:
    rows = admin_rows(
        proxy, f"SELECT * FROM stats_mysql_errors WHERE errno = {ERRNO_NO_SUCH_TABLE}"
    )
    assert sum(r["count_star"] for r in rows) >= ERRORS
    row = rows[0]
    assert row["username"] == proxy.user and row["schemaname"] == "demo_db"
    assert row["client_address"] == "127.0.0.1"
    assert "no_such_table_for_stats" in row["last_error"]
    ports = {n["port"] for n in proxy.lab.proxy_config()["servers"]}
    assert row["port"] in ports and row["hostname"] == "127.0.0.1"
    assert row["first_seen"] <= row["last_seen"]


def test_global_counters(proxy: LabProxy) -> None:
    values = {
        r["Variable_Name"]: int(r["Variable_Value"])
        for r in admin_rows(proxy, "SELECT * FROM stats_mysql_global")
    }
    assert values["Questions"] >= READS + WRITES + ERRORS
    assert values["Queries_with_error"] >= ERRORS
    assert values["Client_Connections_created"] >= 1
    assert values["Server_Connections_created"] >= 1
    assert values["Queries_frontends_bytes_recv"] > 0 and values["Queries_frontends_bytes_sent"] > 0
    assert values["ProxySQL_Uptime"] >= 0
    assert values["Failovers"] == 0
    # ProxySQL's schema names work too.
    qualified = admin_rows(proxy, "SELECT * FROM stats.stats_mysql_global")
    assert {r["Variable_Name"] for r in qualified} == set(values)


def test_connection_pool_and_processlist(proxy: LabProxy) -> None:
    pool = admin_rows(proxy, "SELECT * FROM stats_mysql_connection_pool")
    assert {r["server"] for r in pool} >= {"master1", "replica1", "ghost"}
    writer = next(r for r in pool if r["hostgroup"] == 0)
    assert writer["ConnOK"] >= 1 and writer["status"] == "ONLINE"
    assert writer["Queries"] >= WRITES
    assert sum(r["Queries"] for r in pool if r["hostgroup"] == 1) >= READS
    assert next(r for r in pool if r["server"] == "ghost")["ConnOK"] == 0
    conn = proxy.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
        rows = admin_rows(
            proxy, f"SELECT * FROM stats_mysql_processlist WHERE user = '{proxy.user}'"
        )
        assert rows and rows[0]["db"] == "demo_db" and rows[0]["cli_host"] == "127.0.0.1"
    finally:
        conn.close()


def _checks_per_server(table: str) -> str:
    return f"SELECT hostname, port, COUNT(*) AS n FROM {table} GROUP BY hostname, port"


def test_monitor_logs_bounded_and_show_a_server_down(proxy: LabProxy) -> None:
    ghost_port = next(s["port"] for s in proxy_servers(proxy) if s["name"] == "ghost")
    # Enough checks for every log to be full (a failing server is checked every 0.1 s).
    deadline = time.monotonic() + 60
    while True:
        counts = admin_rows(proxy, _checks_per_server("monitor.mysql_server_ping_log"))
        if len(counts) == 5 and all(c["n"] == HISTORY for c in counts):
            break
        assert time.monotonic() < deadline, counts
        time.sleep(0.5)
    time.sleep(1.5)  # more checks ran: the logs stay at HISTORY rows per server
    for table in ("mysql_server_ping_log", "mysql_server_read_only_log"):
        counts = admin_rows(proxy, _checks_per_server(f"monitor.{table}"))
        assert Counter(c["n"] for c in counts) == Counter({HISTORY: 5}), (table, counts)

    ping = admin_rows(proxy, "SELECT * FROM monitor.mysql_server_ping_log ORDER BY time_start_us")
    dead = [r for r in ping if r["port"] == ghost_port]
    assert all("Can't connect" in (r["ping_error"] or "") for r in dead), dead
    alive = [r for r in ping if r["port"] != ghost_port]
    assert all(r["ping_error"] is None and r["ping_success_time_us"] > 0 for r in alive), alive

    read_only = admin_rows(proxy, "SELECT * FROM monitor.mysql_server_read_only_log")
    by_port = {r["port"]: r["read_only"] for r in read_only if r["error"] is None}
    roles = {s["port"]: s["role"] for s in proxy_servers(proxy)}
    assert sorted(by_port[p] for p, role in roles.items() if role == "master") == [0, 1]
    assert all(
        by_port[p] == 1 for p, role in roles.items() if role == "replica" and p != ghost_port
    )

    lag = admin_rows(proxy, "SELECT * FROM monitor.mysql_server_replication_lag_log")
    replicas = {p for p, role in roles.items() if role == "replica"}
    assert replicas <= {r["port"] for r in lag}
    assert all(r["repl_lag"] is not None and r["repl_lag"] < 60 for r in lag
               if r["port"] in replicas - {ghost_port})  # fmt: skip
    assert all(r["error"] for r in lag if r["port"] == ghost_port)


def proxy_servers(proxy: LabProxy) -> list[dict[str, Any]]:
    """The servers the running proxy was configured with (the lab's and the dead one)."""
    return list(yaml.safe_load(Path(proxy.config).read_text())["servers"])


def test_no_password_in_any_stats_table(proxy: LabProxy) -> None:
    secrets = {proxy.password, proxy.lab.accounts.monitor.password}
    for table in (
        "stats_mysql_query_digest", "stats_mysql_connection_pool", "stats_mysql_global",
        "stats_mysql_commands_counters", "stats_mysql_processlist", "stats_mysql_errors",
        "monitor.mysql_server_ping_log", "monitor.mysql_server_read_only_log",
        "monitor.mysql_server_replication_lag_log",
    ):  # fmt: skip
        text = repr(admin_rows(proxy, f"SELECT * FROM {table}"))
        assert not any(s in text for s in secrets), table


def _wait_for_rows(proxy: LabProxy, sql: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(admin_rows(proxy, sql)) < count:
        assert time.monotonic() < deadline, admin_rows(proxy, sql)
        time.sleep(0.3)


def test_monitor_logs_show_access_denied_after_the_account_changes(
    lab: Lab, tmp_path: Path
) -> None:
    # A high failure threshold: the servers stay in use while the monitor is refused.
    health = {"check_interval_ms": 200, "failure_threshold": 1000}
    with lab_proxy(lab, tmp_path, health=health) as running:
        config = Path(running.config)
        data = yaml.safe_load(config.read_text())
        good = data["monitor"]["password"]
        data["monitor"]["password"] = "not-the-password"
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        admin_rows(running, "RELOAD")
        denied = (
            "SELECT DISTINCT port FROM monitor.mysql_server_ping_log "
            "WHERE ping_error LIKE '%Access denied for user%'"
        )
        _wait_for_rows(running, denied, len(data["servers"]))
        assert "not-the-password" not in repr(
            admin_rows(running, "SELECT * FROM monitor.mysql_server_ping_log")
        )
        assert running.answers()

        data["monitor"]["password"] = good
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        admin_rows(running, "RELOAD")
        since = int(time.time() * 1e6)
        recovered = (
            "SELECT DISTINCT port FROM monitor.mysql_server_ping_log "
            f"WHERE ping_error IS NULL AND time_start_us > {since}"
        )
        _wait_for_rows(running, recovered, len(data["servers"]))
