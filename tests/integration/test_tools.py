"""The workflow tools (load, verify, drill, crud, demo) on a lab of their own: drills kill."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
import yaml

from proxy.cli import main
from proxy.lab.lab import Lab
from proxy.lab.servers import free_port
from proxy.testing import ProxyThread
from proxy.tools.crud import statements
from tests.support.endpoints import proxy_config
from tests.support.servers import root_execute


def _up(lab: Lab) -> None:
    """Start the lab, or restart what a test killed."""
    lab.up(masters=2, replicas=2, semisync=True)


@pytest.fixture(scope="module")
def tools_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("tools") / "lab")
    _up(lab)
    try:
        yield lab
    finally:
        lab.destroy()


@pytest.fixture
def proxy_file(tools_lab: Lab, tmp_path: Path) -> Iterator[Path]:
    """A config whose listeners.mysql is a pyproxy running in this process."""
    thread = ProxyThread(proxy_config(tools_lab)).start()
    data = tools_lab.proxy_config()
    data["listeners"]["mysql"]["port"] = thread.port
    path = tmp_path / "pyproxy.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        yield path
    finally:
        thread.stop()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _through(port: int, *sql: str) -> None:
    conn = pymysql.connect(
        host="127.0.0.1",
        port=port,
        user="app",
        password="app-pass",
        database="demo_db",
        autocommit=True,
    )
    try:
        with conn.cursor() as cur:
            for s in sql:
                cur.execute(s)
    finally:
        conn.close()


def test_every_command_answers_bad_input_with_one_line(
    tools_lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers: []\nusers: []\nbogus: 1\n")
    closed = free_port()  # nothing listens there
    unreachable = tmp_path / "unreachable.yaml"
    unreachable.write_text(
        yaml.safe_dump(
            {
                "listeners": {"mysql": {"host": "127.0.0.1", "port": closed}},
                "servers": [
                    {"name": "m1", "host": "127.0.0.1", "port": closed, "role": "master"},
                    {"name": "r1", "host": "127.0.0.1", "port": closed, "role": "replica"},
                ],
                "users": [{"username": "app", "password": "app-pass"}],
            }
        )
    )
    expected = {
        "load": "cannot connect to pyproxy at 127.0.0.1",
        "verify": "cannot reach any server: m1",
        "drill failover": "drills run on a lab topology",
        "crud": "cannot connect to pyproxy at 127.0.0.1",
    }
    for command, unreachable_says in expected.items():
        name = command.split()[0]
        for config, says in [
            (missing, "cannot read config: No such file or directory"),
            (bad, "bogus: unknown key"),
            (unreachable, unreachable_says),
        ]:
            code, out, err = _run(capsys, *command.split(), "--config", str(config))
            assert code == 1, (command, config, out, err)
            assert out == ""
            lines = err.splitlines()
            assert len(lines) == 1, (command, config, err)
            assert lines[0].startswith(f"pyproxy {name}: ") and says in lines[0], lines[0]
            if config is not unreachable:
                assert str(config) in lines[0]
    # The installed entry point behaves the same (no traceback, exit code 1).
    proc = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "load", "--config", str(unreachable)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_verify_names_a_row_deleted_on_a_replica(
    tools_lab: Lab, proxy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(tools_lab.config_path)
    port = yaml.safe_load(proxy_file.read_text())["listeners"]["mysql"]["port"]
    values = ", ".join(f"({i}, 'item {i}', {i * 1.5})" for i in range(1, 51))
    _through(
        port,
        "DROP TABLE IF EXISTS verify_items",
        "CREATE TABLE verify_items (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(8,2))",
        f"INSERT INTO verify_items VALUES {values}",
    )
    code, out, _ = _run(capsys, "verify", "--config", cfg)
    assert code == 0, out
    assert "result: OK: 4 nodes match the writer" in out

    root_execute(
        tools_lab,
        "replica2",
        "SET SESSION sql_log_bin = 0",
        "DELETE FROM demo_db.verify_items WHERE id = 7",
    )
    code, out, _ = _run(capsys, "verify", "--config", cfg)
    assert code == 1, out
    assert re.search(r"replica2: demo_db\.verify_items: 49 rows \(writer 50\), checksum", out), out
    assert "result: DIVERGED: demo_db.verify_items differs on replica2" in out
    assert "replica1: demo_db.verify_items" not in out

    # Large tables go by key ranges, and the report narrows the difference down to one.
    code, out, _ = _run(capsys, "verify", "--config", cfg, "--chunk-rows", "10")
    assert code == 1, out
    assert (
        "replica2: demo_db.verify_items: 49 rows (writer 50), 1 of 5 chunks differ: id min..10"
        in out
    ), out

    _through(port, "DROP TABLE verify_items")  # replicated: every node is the same again
    code, out, _ = _run(capsys, "verify", "--config", cfg)
    assert code == 0, out


def _rows_on(lab: Lab, node: str) -> int:
    conn = lab.connect_app(node, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = 'demo_db' AND TABLE_NAME = 'pyproxy_load'"
            )
            row = cur.fetchone()
            if row is None or not int(row[0]):
                return 0
            cur.execute("SELECT COUNT(*) FROM demo_db.pyproxy_load")
            row = cur.fetchone()
            return int(row[0]) if row is not None else 0
    finally:
        conn.close()


def test_load_keeps_going_when_a_replica_dies(
    tools_lab: Lab, proxy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _rows_on(tools_lab, "replica2")

    def kill_once_rows_arrive() -> None:
        # Kill mid-run: once replica2 has some of the load's rows (or after 2 s regardless).
        deadline = time.monotonic() + 2.0
        while _rows_on(tools_lab, "replica2") < before + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        tools_lab.kill("replica2")

    killer = threading.Thread(target=kill_once_rows_arrive)
    killer.start()
    try:
        code, out, _ = _run(
            capsys, "load", "--config", str(proxy_file), "--duration", "5", "--mix", "50:50"
        )
    finally:
        killer.join()
    assert code == 1, out  # not every row could be confirmed everywhere
    nodes = ("master1", "master2", "replica1", "replica2")
    rows = {
        words[0]: line for line in out.splitlines() if (words := line.split()) and words[0] in nodes
    }
    assert "UNREACHABLE since +" in rows["replica2"], out
    assert "rows not confirmed" in rows["replica2"]
    for node in ("master1", "master2", "replica1"):
        assert rows[node].rstrip().endswith("ok"), out
    seen = {node: int(line.split()[2]) for node, line in rows.items()}
    inserts = int(re.search(r"(\d+) inserts", out).group(1))  # type: ignore[union-attr]
    # It kept writing after the kill: rows every other node has and replica2 never saw.
    assert seen["master1"] == seen["master2"] == seen["replica1"] == inserts, out
    assert 0 < seen["replica2"] < inserts, out
    assert re.search(r"result: PROBLEMS: .*rows not confirmed on replica2 \(unreachable\)", out)

    # verify reports the missing node instead of failing on it.
    code, out, _ = _run(capsys, "verify", "--config", str(tools_lab.config_path))
    assert code == 1
    assert "replica2  replica" in out and "UNREACHABLE" in out
    assert "replica2 unreachable" in out.splitlines()[-1]
    _up(tools_lab)


def test_crud_script_through_the_proxy(
    proxy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "crud", "--config", str(proxy_file))
    assert code == 0, out
    assert re.search(r"result: CRUD ok: 7 checks on products and orders \((mariadb|mysql) CLI", out)
    code, out, _ = _run(capsys, "crud", "--config", str(proxy_file), "--no-cli")
    assert code == 0, out
    assert "7 checks on products and orders (PyMySQL" in out
    code, out, _ = _run(capsys, "crud", "--config", str(proxy_file), "--print")
    assert code == 0 and out.startswith("-- pyproxy CRUD test on demo_db")
    assert len(statements(out)) == 15


def _timeline(out: str) -> dict[str, float]:
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^  (t\d) +([+-]\d+\.\d+) s", out, re.MULTILINE)
    }


@pytest.mark.parametrize(
    ("scenario", "labels"),
    [
        ("failover", ["t0", "t1", "t2", "t3"]),
        ("switchover", ["t0", "t2", "t3"]),
        ("replica-loss", ["t0", "t1", "t2", "t3", "t4", "t5"]),
        ("broken-replica", ["t0", "t1", "t2", "t3", "t4"]),
    ],
)
def test_drill(
    tools_lab: Lab, capsys: pytest.CaptureFixture[str], scenario: str, labels: list[str]
) -> None:
    code, out, _ = _run(
        capsys,
        "drill",
        scenario,
        "--config",
        str(tools_lab.config_path),
        "--before",
        "1",
        "--after",
        "0.5",
    )
    assert code == 0, out
    times = _timeline(out)
    assert sorted(times) == labels, out
    assert times["t0"] == 0.0
    assert all(t >= 0 for t in times.values()), out
    assert "rows lost: 0 of " in out
    assert "result: OK: 4 nodes match the writer" in out
    assert out.rstrip().endswith("result: OK")
    if scenario == "failover":
        assert times["t1"] <= times["t2"] <= times["t3"] < 2.0, out
    if scenario == "switchover":
        assert "client errors after t0: 0" in out


def test_demo(tools_lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code, out, _ = _run(capsys, "demo", "--dir", str(tools_lab.root), "--load-seconds", "2")
    assert code == 0, out
    report = out[out.index("== pyproxy demo report") :]
    assert re.search(r"CRUD +ok: 7 checks", report), report
    assert re.search(r"load +\d+ ops .*every row on every node", report), report
    assert re.search(r"verify +OK: 4 nodes match", report), report
    assert re.search(
        r"failover +killed master\d \(the writer.*detected \+\d\.\d+ s, promoted \+\d\.\d+ s, "
        r"first write \+\d\.\d+ s; .*0 rows lost",
        report,
    ), report
    assert "(after the drill)" in report
    assert report.rstrip().splitlines()[-1].startswith("result: OK")
    assert time.monotonic() - started < 60
    assert tools_lab.load() is not None  # a lab it did not create is left in place
