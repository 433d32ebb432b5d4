"""The lab's topology on real servers: replication, read_only, accounts, recovery."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pymysql
import pytest

from proxy.lab.lab import Lab
from proxy.lab.servers import LabError


def _wait_rows(lab: Lab, node: str, sql: str, expected: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        conn = lab.connect_root(node)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                got = int(next(iter(cur.fetchone().values())))
        finally:
            conn.close()
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_every_node_replicates(lab: Lab) -> None:
    rows = lab.status()
    assert [r["node"] for r in rows] == ["master1", "master2", "replica1", "replica2"]
    for r in rows:
        assert (r["io"], r["sql"]) == ("Yes", "Yes"), r
    writers = [r["node"] for r in rows if r["read_only"] == "OFF"]
    assert len(writers) == 1


@pytest.mark.parametrize("origin", ["master1", "master2"])
def test_row_written_on_a_master_reaches_every_node(lab: Lab, origin: str) -> None:
    name = f"row-{uuid.uuid4().hex}"
    conn = lab.connect_root(origin)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO demo_db.products (name, price, stock_quantity) VALUES (%s, 9.99, 1)",
            (name,),
        )
    conn.close()
    sql = f"SELECT COUNT(*) FROM demo_db.products WHERE name = '{name}'"
    for node in ["master1", "master2", "replica1", "replica2"]:
        assert _wait_rows(lab, node, sql, 1) == 1, node


def test_app_user_cannot_write_on_a_replica(lab: Lab) -> None:
    conn = lab.connect_app("replica1", database="demo_db")
    with conn.cursor() as cur, pytest.raises(pymysql.err.OperationalError) as err:
        cur.execute("INSERT INTO products (name) VALUES ('nope')")
    conn.close()
    assert err.value.args[0] == 1290  # ER_OPTION_PREVENTS_STATEMENT (read-only)


def test_monitor_user_sees_replication_but_no_data(lab: Lab) -> None:
    acct = lab.accounts.monitor
    conn = pymysql.connect(
        host="127.0.0.1",
        port=lab.node("replica1").port,
        user=acct.username,
        password=acct.password,
    )
    with conn.cursor() as cur:
        cur.execute("SHOW SLAVE STATUS")
        assert cur.fetchone() is not None
        cur.execute("SELECT @@read_only")
        assert cur.fetchone() == (1,)
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute("SELECT * FROM demo_db.products")
    conn.close()


def test_auto_increment_offsets_differ_between_masters(lab: Lab) -> None:
    offsets = []
    for node in ["master1", "master2"]:
        conn = lab.connect_root(node)
        with conn.cursor() as cur:
            cur.execute("SELECT @@auto_increment_increment AS i, @@auto_increment_offset AS o")
            row = cur.fetchone()
        conn.close()
        assert row["i"] == 2
        offsets.append(row["o"])
    assert sorted(offsets) == [1, 2]


def test_killed_replica_restarts_and_catches_up(lab: Lab) -> None:
    conn = lab.connect_root("master1")
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS demo_db.catchup")
        cur.execute("CREATE TABLE demo_db.catchup (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
    assert (
        _wait_rows(
            lab,
            "replica2",
            "SELECT COUNT(*) FROM information_schema.tables "
            "WHERE table_schema='demo_db' AND table_name='catchup'",
            1,
        )
        == 1
    )
    assert lab.kill("replica2") is not None
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO demo_db.catchup (v) VALUES (%s)", [(i,) for i in range(1000)])
    conn.close()
    lab.up(masters=2, replicas=2)  # restarts the dead node only
    assert _wait_rows(lab, "replica2", "SELECT COUNT(*) FROM demo_db.catchup", 1000) == 1000


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _our_servers(root: Path) -> list[str]:
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if str(root).encode() in cmd:
            out.append(proc.name)
    return out


def test_cli_default_lab_lifecycle(tmp_path: Path) -> None:
    root = tmp_path / "cli-lab"
    up = _cli("lab", "up", "--dir", str(root))
    assert up.returncode == 0, up.stderr
    assert "2 masters, 1 replicas" in up.stdout
    again = _cli("lab", "up", "--dir", str(root))  # a second up on a running lab is harmless
    assert again.returncode == 0, again.stderr
    status = _cli("lab", "status", "--dir", str(root))
    lines = status.stdout.splitlines()
    assert [ln.split()[0] for ln in lines[1:4]] == ["master1", "master2", "replica"]
    assert all(" Yes  Yes " in ln for ln in lines[1:4]), status.stdout
    assert (root / "pyproxy.yaml").exists()
    wrong_shape = _cli("lab", "up", "--dir", str(root), "--masters", "3")
    assert wrong_shape.returncode == 1 and "destroy" in wrong_shape.stderr
    assert "Traceback" not in wrong_shape.stderr
    down = _cli("lab", "down", "--dir", str(root))
    assert down.returncode == 0 and "master1" in down.stdout
    assert _our_servers(root) == []
    assert _cli("lab", "destroy", "--dir", str(root)).returncode == 0
    assert not root.exists()


def test_taken_port_gives_one_clear_paragraph(tmp_path: Path) -> None:
    import socket

    root = tmp_path / "port-lab"
    lab = Lab(root)
    lab.up(masters=1, replicas=0)
    port = lab.node("master1").port
    lab.down()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        with pytest.raises(LabError, match="already taken"):
            lab.up(masters=1, replicas=0)
        res = _cli("lab", "up", "--dir", str(root), "--masters", "1", "--replicas", "0")
        assert res.returncode == 1
        assert "Traceback" not in res.stderr and "already taken" in res.stderr
    lab.destroy()
