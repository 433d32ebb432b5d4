"""The errors pyproxy itself sends, as real clients read them through the real process:
their sequence ids and error numbers are what the drivers accept."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import mysql.connector
import pymysql
import pytest

from proxy.lab.lab import Lab
from tests.support.proxyproc import LabProxy, lab_proxy
from tests.support.servers import root_rows

MIB = 1 << 20


def test_statement_over_max_allowed_packet_gets_1153_in_sequence(lab: Lab, tmp_path: Path) -> None:
    """A statement over max_allowed_packet sent as two packets (16 MiB - 1, then the rest):
    PyMySQL gets ER_NET_PACKET_TOO_LARGE, not 'Packet sequence number wrong'."""
    with lab_proxy(lab, tmp_path, workers=1, limits={"max_allowed_packet": 16 * MIB}) as proxy:
        conn = proxy.connect(max_allowed_packet=64 * MIB)
        with conn.cursor() as cur, pytest.raises(pymysql.MySQLError) as err:
            cur.execute("SELECT LENGTH(%s)", ("a" * (17 * MIB),))
        assert err.value.args[0] == 1153, err.value
        assert "max_allowed_packet" in str(err.value.args[1])
        conn.close()
        assert proxy.answers()


def _admin(proxy: LabProxy, sql: str) -> None:
    conn = pymysql.connect(
        host="127.0.0.1", port=proxy.admin_port, user="admin", password="admin", autocommit=True
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def _writer(proxy: LabProxy) -> str:
    """The writer's name, once the first election chose one."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = proxy.admin_rows("SELECT name, role FROM runtime_mysql_servers")
        for row in rows:
            if row["role"] == "writer":
                return str(row["name"])
        time.sleep(0.2)
    raise AssertionError(f"no writer elected\n{proxy.log_tail()}")


def test_no_backend_error_reaches_the_mariadb_cli(lab: Lab, tmp_path: Path) -> None:
    """The writer set OFFLINE by the admin: after failover_hold_ms a write gets pyproxy's
    error 9001 with its message; the mariadb CLI (libmariadb) prints it, not 2027
    'Received malformed packet' as it did for the client-range 2003."""
    with lab_proxy(lab, tmp_path, health={"failover_hold_ms": 500}) as proxy:
        master = _writer(proxy)
        _admin(proxy, f"SET SERVER {master} OFFLINE")
        try:
            cli = subprocess.run(
                ["mariadb", "-h127.0.0.1", f"-P{proxy.port}", f"-u{proxy.user}",
                 f"-p{proxy.password}", "demo_db", "-e", "INSERT INTO c (tag) VALUES ('x')"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
        finally:
            _admin(proxy, f"SET SERVER {master} ONLINE")
        assert cli.returncode == 1, cli
        assert "ERROR 9001 (HY000)" in cli.stderr, cli.stderr
        assert "no backend server is available" in cli.stderr, cli.stderr
        assert "2027" not in cli.stderr
        assert proxy.answers()


def test_prepared_statements_per_session_are_bounded(lab: Lab, tmp_path: Path) -> None:
    """A client that prepares and never closes: past limits.max_prepared_stmt_count it gets
    MariaDB's error 1461; its session goes on (an execute, a close, a prepare again)."""
    limit = 50
    with lab_proxy(lab, tmp_path, workers=1, limits={"max_prepared_stmt_count": limit}) as proxy:
        conn = mysql.connector.connect(
            host="127.0.0.1", port=proxy.port, user=proxy.user, password=proxy.password,
            database="demo_db", use_pure=True,
        )  # fmt: skip
        try:
            ids = [conn.cmd_stmt_prepare(f"SELECT {i} AS c".encode())["statement_id"]
                   for i in range(limit)]  # fmt: skip
            with pytest.raises(mysql.connector.Error) as err:
                conn.cmd_stmt_prepare(b"SELECT 'one too many'")
            assert err.value.errno == 1461, err.value
            assert err.value.sqlstate == "42000"
            assert f"max_prepared_stmt_count statements (current value: {limit})" in str(err.value)
            cur = conn.cursor(prepared=True)
            conn.cmd_stmt_close(ids[0])
            cur.execute("SELECT ? + 1", (41,))
            assert cur.fetchall() == [(42,)]
            cur.close()
        finally:
            conn.close()
        assert proxy.answers()


def test_a_write_cut_by_a_lost_backend_reaches_the_mariadb_cli(lab: Lab, tmp_path: Path) -> None:
    """The writer's backend connection is killed while an INSERT runs (its outcome unknown):
    the mariadb CLI prints pyproxy's 1927 'its outcome is unknown', not 2027 'Received
    malformed packet' as it did for the client-range 2013; other clients go on."""
    with lab_proxy(lab, tmp_path, workers=1) as proxy:
        master = _writer(proxy)
        root_rows(lab, master, "CREATE TABLE IF NOT EXISTS demo_db.cut (tag VARCHAR(8))")
        insert = "INSERT INTO cut (tag) SELECT IF(SLEEP(3) = 0, 'cut', 'x')"
        cli = subprocess.Popen(
            ["mariadb", "-h127.0.0.1", f"-P{proxy.port}", f"-u{proxy.user}",
             f"-p{proxy.password}", "demo_db", "-e", insert],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        killed = False
        while not killed and time.monotonic() < deadline:
            for (thread_id,) in root_rows(
                lab, master, "SELECT ID FROM information_schema.PROCESSLIST "
                "WHERE INFO LIKE 'INSERT INTO cut (tag) SELECT IF(SLEEP%'",
            ):  # fmt: skip
                root_rows(lab, master, f"KILL CONNECTION {thread_id}")
                killed = True
            time.sleep(0.05)
        _, stderr = cli.communicate(timeout=30)
        assert killed
        assert cli.returncode == 1, stderr
        assert "ERROR 1927 (70100)" in stderr and "outcome is unknown" in stderr, stderr
        assert "2027" not in stderr
        assert proxy.answers()
