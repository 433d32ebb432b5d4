"""ProxySQL's configuration layers on the real pyproxy process: the setup guide's admin
commands, verbatim through the mariadb CLI, each proven on traffic; a restart after SAVE ...
TO DISK; bad rows refused with runtime unchanged; a corrupt disk database stops the start."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest

from proxy.lab.lab import Lab
from tests.support.proxyproc import LabProxy, PoliteClients, start_lab_proxy

# The setup guide's commands, verbatim (the issue's).
GUIDE_VARIABLES = "SET mysql-monitor_username='monitor'; SET mysql-monitor_password='monitor'; SET mysql-monitor_ssl='false'; LOAD MYSQL VARIABLES TO RUNTIME; SAVE MYSQL VARIABLES TO DISK;"  # noqa: E501
GUIDE_SERVERS = "LOAD MYSQL SERVERS TO RUNTIME; SAVE MYSQL SERVERS TO DISK;"
GUIDE_ADD = "INSERT INTO mysql_servers(hostgroup_id,hostname,port) VALUES (1,'127.0.0.1',{port}); LOAD MYSQL SERVERS TO RUNTIME;"  # noqa: E501
GUIDE_OFFLINE = "UPDATE mysql_servers SET status='OFFLINE_SOFT' WHERE port={port}; LOAD MYSQL SERVERS TO RUNTIME;"  # noqa: E501
RULE = (
    "INSERT INTO mysql_query_rules(rule_id,active,match_digest,error_msg,apply) "
    "VALUES (10,1,'^SELECT \\? AS layers_probe','blocked by rule 10',1); "
    "LOAD MYSQL QUERY RULES TO RUNTIME;"
)
RULE_5 = (
    "INSERT INTO mysql_query_rules(rule_id,active,match_digest,error_msg,apply) "
    "VALUES (5,1,'^SELECT {}','{}',1)"
)


def sections(lab: Lab) -> dict[str, Any]:
    """The lab without replica2 (the guide adds it); the disk database next to the YAML. The
    monitor is told wrong credentials on purpose below: a high failure threshold keeps the
    servers ONLINE meanwhile (this test is about the settings reaching the monitor)."""
    servers = [s for s in lab.proxy_config()["servers"] if s["name"] != "replica2"]
    return {
        "servers": servers,
        "admin": {"database": "proxysql.db"},
        "health": {"failure_threshold": 1_000_000},
    }


def admin(proxy: LabProxy, sql: str, password: str = "admin") -> subprocess.CompletedProcess[str]:
    """sql through the mariadb CLI on the admin port, as an operator types it."""
    return subprocess.run(
        ["mariadb", "-h", "127.0.0.1", "-P", str(proxy.admin_port), "-u", "admin",
         f"-p{password}", "--batch", "--skip-column-names", "-e", sql],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def admin_ok(proxy: LabProxy, sql: str) -> list[list[str]]:
    done = admin(proxy, sql)
    assert done.returncode == 0, f"{sql}\n{done.stderr}"
    return [line.split("\t") for line in done.stdout.splitlines()]


def read_ports(proxy: LabProxy, count: int) -> list[int]:
    """Which server each of count fresh reads ran on."""
    ports = []
    for _ in range(count):
        conn = proxy.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@port")
                row = cur.fetchone()
                assert row is not None
                ports.append(int(row[0]))
        finally:
            conn.close()
    return ports


def wait_for(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def runtime(proxy: LabProxy) -> list[list[str]]:
    return admin_ok(
        proxy,
        "SELECT name, port, status FROM runtime_mysql_servers ORDER BY name; "
        "SELECT rule_id, error_msg FROM runtime_mysql_query_rules ORDER BY rule_id; "
        "SELECT * FROM runtime_global_variables ORDER BY variable_name",
    )


def test_setup_guide_verbatim_takes_effect_and_survives_a_restart(lab: Lab, tmp_path: Path) -> None:
    r1, r2 = lab.node("replica1").port, lab.node("replica2").port
    monitor = lab.accounts.monitor
    proxy = start_lab_proxy(lab, tmp_path, **sections(lab))
    try:
        assert r2 not in read_ports(proxy, 10)
        with PoliteClients(proxy, 3) as polite:
            # The guide's monitor settings: 'monitor' is not the lab's monitor password, so the
            # monitor, now logging in with it, reports access denied.
            admin_ok(
                proxy,
                GUIDE_VARIABLES,
            )
            variables = dict(admin_ok(proxy, "SELECT * FROM runtime_global_variables"))
            assert variables["mysql-monitor_username"] == "monitor"
            assert variables["mysql-monitor_password"] == "********"  # never in clear
            assert variables["mysql-monitor_ssl"] == "false"

            def denied(user: str) -> bool:
                """Both where ProxySQL users look (the monitor's ping log) and the server's
                reason in runtime_mysql_servers."""
                needle = f"Access denied for user '{user}'"
                pings = admin_ok(proxy, "SELECT ping_error FROM monitor.mysql_server_ping_log")
                reasons = admin_ok(proxy, "SELECT reason FROM runtime_mysql_servers")
                return any(needle in (r[0] or "") for r in pings) and any(
                    needle in r[0] for r in reasons
                )

            wait_for(lambda: denied("monitor"), "the monitor to report access denied")
            admin_ok(
                proxy, "SET mysql-monitor_username='layers_nobody'; LOAD MYSQL VARIABLES TO RUNTIME"
            )
            wait_for(lambda: denied("layers_nobody"), "access denied for the new monitor user")
            admin_ok(
                proxy,
                f"SET mysql-monitor_username='{monitor.username}'; "
                f"SET mysql-monitor_password='{monitor.password}'; "
                "LOAD MYSQL VARIABLES TO RUNTIME; SAVE MYSQL VARIABLES TO DISK",
            )

            admin_ok(proxy, GUIDE_SERVERS)
            # An added replica takes reads.
            admin_ok(
                proxy,
                GUIDE_ADD.format(port=r2),
            )
            assert r2 in read_ports(proxy, 30)
            # The monitor's refused logins above may have taken replica1 out of the read pool
            # until its next good check: the drain below starts from it taking reads.
            wait_for(lambda: r1 in read_ports(proxy, 4), "replica1 to take reads again")

            # OFFLINE_SOFT: reads running on replica1 finish; new ones go elsewhere. The
            # sleepers name replica1: routed, all six could take replica2's turns of the
            # rotation the polite clients share (1 run in 11 did).
            results: list[tuple[int, int] | str] = []

            def sleeper() -> None:
                try:
                    conn = proxy.connect()
                    with conn.cursor() as cur:
                        cur.execute("SELECT /* pyproxy:server=replica1 */ SLEEP(4), @@port")
                        row = cur.fetchone()
                        assert row is not None
                        results.append((int(row[0]), int(row[1])))
                    conn.close()
                except pymysql.MySQLError as exc:
                    results.append(str(exc))

            sleepers = [threading.Thread(target=sleeper) for _ in range(6)]
            for t in sleepers:
                t.start()
            wait_for(
                lambda: sum(
                    1 for row in admin_ok(proxy, "SELECT info FROM stats_mysql_processlist")
                    if "SLEEP" in row[0]
                ) == 6,
                "the sleeping reads to run",
            )  # fmt: skip
            admin_ok(
                proxy,
                GUIDE_OFFLINE.format(port=r1),
            )
            for t in sleepers:
                t.join(60)
            assert len(results) == 6 and all(isinstance(r, tuple) for r in results), results
            assert results == [(0, r1)] * 6  # they ran on replica1 and finished after the drain
            assert r1 not in read_ports(proxy, 20)

            # A rule inserted and loaded blocks its statement.
            assert proxy.answers()
            probe = proxy.connect()
            with probe.cursor() as cur:
                cur.execute("SELECT 1 AS layers_probe")
            admin_ok(
                proxy,
                RULE,
            )
            with (
                probe.cursor() as cur,
                pytest.raises(pymysql.MySQLError, match="blocked by rule 10"),
            ):
                cur.execute("SELECT 1 AS layers_probe")
            probe.close()
            admin_ok(proxy, "SAVE MYSQL SERVERS TO DISK; SAVE MYSQL QUERY RULES TO DISK;")
            # SIGHUP applies what a restart would: the disk database, not the older YAML.
            os.kill(proxy.pid, signal.SIGHUP)
            wait_for(lambda: "config reloaded" in proxy.log_text(), "the SIGHUP reload")
            probe = proxy.connect()
            with (
                probe.cursor() as cur,
                pytest.raises(pymysql.MySQLError, match="blocked by rule 10"),
            ):
                cur.execute("SELECT 1 AS layers_probe")
            probe.close()
            assert r2 in read_ports(proxy, 30)
        assert polite.errors == [] and polite.statements > 0  # no LOAD dropped a client
        proxy.stop_clean()

        # The YAML (without replica2 or the rule) is now behind the disk database.
        checked = subprocess.run(
            [*proxy.command, "--config", str(proxy.config), "--check"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert checked.returncode == 0 and "from the disk database" in checked.stdout
        proxy = start_lab_proxy(lab, tmp_path, **sections(lab))
        servers = {
            row[0]: row
            for row in admin_ok(proxy, "SELECT name, port, status FROM runtime_mysql_servers")
        }
        assert servers[f"127.0.0.1:{r2}"][2] == "ONLINE"
        assert servers["replica1"][2] == "OFFLINE_SOFT"
        assert admin_ok(proxy, "SELECT rule_id FROM runtime_mysql_query_rules") == [["10"]]
        ports = read_ports(proxy, 20)
        assert r2 in ports and r1 not in ports
        with (
            proxy.connect() as conn,
            conn.cursor() as cur,
            pytest.raises(pymysql.MySQLError, match="blocked by rule 10"),
        ):
            cur.execute("SELECT 2 AS layers_probe")
        proxy.stop_clean()

        # --initial: the YAML again.
        proxy = LabProxy(lab, tmp_path, **sections(lab))
        proxy.command = [*proxy.command, "--initial"]
        proxy.start(proxy.user, proxy.password)
        names = [row[0] for row in admin_ok(proxy, "SELECT name FROM runtime_mysql_servers")]
        assert sorted(names) == ["master1", "master2", "replica1"]
        assert admin_ok(proxy, "SELECT COUNT(*) FROM runtime_mysql_query_rules") == [["0"]]
        assert (tmp_path / "proxysql.db.bak").exists()
    finally:
        if proxy.alive():
            proxy.stop_clean()


def test_bad_rows_are_refused_and_runtime_is_unchanged(lab: Lab, tmp_path: Path) -> None:
    r1 = lab.node("replica1").port
    proxy = start_lab_proxy(lab, tmp_path, **sections(lab))
    try:
        before = runtime(proxy)
        for change, load, error in [
            (
                f"UPDATE mysql_servers SET port=70000 WHERE port={r1}",
                "LOAD MYSQL SERVERS TO RUNTIME",
                "mysql_servers row (hostgroup_id=1, hostname='127.0.0.1', port=70000), "
                "column port: Input should be less than or equal to 65535",
            ),
            (
                "INSERT INTO mysql_servers(hostgroup_id,hostname,port) VALUES (7,'127.0.0.1',3999)",
                "LOAD MYSQL SERVERS TO RUNTIME",
                "mysql_servers row (hostgroup_id=7, hostname='127.0.0.1', port=3999), "
                "column hostgroup_id: unknown hostgroup 7",
            ),
            (
                "SET mysql-monitor_read_only_interval='often'",
                "LOAD MYSQL VARIABLES TO RUNTIME",
                # SET gives every ProxySQL name of pyproxy's one check interval the value
                "mysql-monitor_read_only_interval = mysql-monitor_replication_lag_interval: "
                "Input should be a valid integer",
            ),
        ]:
            admin(proxy, change)
            done = admin(proxy, load)
            assert done.returncode != 0
            assert "runtime unchanged" in done.stderr and error in done.stderr, done.stderr
            assert done.stderr.count("ERROR") == 1
            assert runtime(proxy) == before
            # Back to what runs (ProxySQL's SAVE ... TO MEMORY copies runtime to memory).
            admin_ok(proxy, "SAVE MYSQL SERVERS TO MEMORY; SAVE MYSQL VARIABLES FROM RUNTIME")
        # rule_id is the primary key, as in ProxySQL: a second rule 5 is refused at once.
        admin_ok(
            proxy,
            RULE_5.format(5, "five"),
        )
        done = admin(
            proxy,
            RULE_5.format(6, "six"),
        )
        assert done.returncode != 0 and "mysql_query_rules.rule_id" in done.stderr
        assert runtime(proxy) == before
        assert admin(proxy, "DELETE FROM runtime_mysql_servers").returncode != 0
        for never_silent in ("SET admin-admin_credentials='x:y'", "SET mysql-threads='4'",
                             "SET mysql-max_connections=1 2"):  # fmt: skip
            assert admin(proxy, never_silent).returncode != 0, never_silent
        assert runtime(proxy) == before
        # A wrong admin password: MySQL's access denied.
        denied = admin(proxy, "SELECT 1", password="wrong")
        assert denied.returncode != 0 and "ERROR 1045" in denied.stderr
        assert proxy.answers()
    finally:
        proxy.stop_clean()


def test_a_corrupt_disk_database_stops_the_start_with_the_way_out(lab: Lab, tmp_path: Path) -> None:
    proxy = LabProxy(lab, tmp_path, **sections(lab))
    db = tmp_path / "proxysql.db"
    db.write_bytes(b"not a database " * 1000)
    started = subprocess.run(
        [*proxy.command, "--config", str(proxy.config)], capture_output=True, text=True, timeout=60
    )
    assert started.returncode == 1
    assert str(db) in started.stderr and "--initial" in started.stderr, started.stderr
    proxy.command = [*proxy.command, "--initial"]
    proxy.start(proxy.user, proxy.password)
    try:
        assert proxy.answers()
        assert (tmp_path / "proxysql.db.bak").read_bytes().startswith(b"not a database")
    finally:
        proxy.stop_clean()


def test_users_load_to_runtime_and_back_from_disk(lab: Lab, tmp_path: Path) -> None:
    """mysql_users: an inactive user can't log in once loaded, its open sessions go on; the
    disk copy brings it back."""
    proxy = start_lab_proxy(lab, tmp_path, **sections(lab))
    try:
        admin_ok(proxy, "SAVE MYSQL USERS TO DISK")
        hashed = admin_ok(proxy, "SELECT password FROM runtime_mysql_users")
        assert hashed[0][0].startswith("*") and proxy.password not in hashed[0][0]
        kept = proxy.connect()
        admin_ok(proxy, "UPDATE mysql_users SET active=0; LOAD MYSQL USERS TO RUNTIME")
        assert admin_ok(proxy, "SELECT COUNT(*) FROM runtime_mysql_users") == [["0"]]
        with pytest.raises(pymysql.OperationalError) as denied:
            proxy.connect()
        assert denied.value.args[0] == 1045
        with kept.cursor() as cur:
            cur.execute("SELECT 7")
            assert cur.fetchone() == (7,)
        kept.close()
        admin_ok(proxy, "LOAD MYSQL USERS FROM DISK; LOAD MYSQL USERS TO RUNTIME")
        assert proxy.answers()
    finally:
        proxy.stop_clean()
