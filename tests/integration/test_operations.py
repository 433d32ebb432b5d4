"""Operations: metrics (promtool), the dashboard, the admin interface, reloads, drains, Docker."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml

from proxy.lab.lab import Lab
from proxy.lab.servers import free_port
from proxy.testing import ProxyThread
from tests.support.endpoints import Endpoint
from tests.support.proxyproc import lab_proxy

ROOT = Path(__file__).resolve().parents[2]


def _http_port(proxy: ProxyThread) -> int:
    return proxy.server.http.port


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _traffic(ep: Endpoint) -> None:
    conn = ep.connect()
    with conn.cursor() as cur:
        for i in range(20):
            cur.execute("SELECT %s + 1 AS ops_probe", (i,))
        cur.execute("CREATE TABLE IF NOT EXISTS ops_probe (id INT PRIMARY KEY)")
        cur.execute("REPLACE INTO ops_probe VALUES (1)")
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute("SELECT * FROM ops_no_such_table")
    conn.close()


def test_metrics_pass_promtool(proxy: ProxyThread, proxy_endpoint: Endpoint) -> None:
    _traffic(proxy_endpoint)
    status, body = _get(_http_port(proxy), "/metrics")
    assert status == 200
    text = body.decode()
    for name in (
        "pyproxy_queries_total",
        "pyproxy_query_duration_seconds_bucket",
        "pyproxy_server_state",
        "pyproxy_replication_lag_seconds",
        "pyproxy_backend_connections",
        "pyproxy_health_checks_total",
        "pyproxy_failovers_total",
        "pyproxy_client_connections",
    ):
        assert name in text, name
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus)"
    res = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    assert res.returncode == 0 and not res.stdout and not res.stderr, res


def _exported_names(text: str) -> set[str]:
    """Every series name the exposition declares, samples or not (a counter with no rules
    configured yet still exists)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split(" ")[0])
    return names


def test_dashboard_queries_only_exported_metrics(
    proxy: ProxyThread, proxy_endpoint: Endpoint
) -> None:
    _traffic(proxy_endpoint)
    exported = _exported_names(_get(_http_port(proxy), "/metrics")[1].decode())
    dashboard = json.loads((ROOT / "grafana/dashboards/pyproxy.json").read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= set(re.findall(r"\bpyproxy_[a-z_]+", target["expr"]))
    assert used, "the dashboard queries no pyproxy metric"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    for path in (
        "grafana/provisioning/datasources/prometheus.yaml",
        "grafana/provisioning/dashboards/pyproxy.yaml",
    ):
        assert yaml.safe_load((ROOT / path).read_text())["apiVersion"] == 1


def _get_with(port: int, path: str, token: str | None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_http_api_token(lab: Lab, tmp_path: Path) -> None:
    os.environ["H2_TEST_TOKEN"] = "t0ken-from-env"
    try:
        # secrets may come from the environment
        with lab_proxy(lab, tmp_path, admin={"http_token": "${H2_TEST_TOKEN}"}) as running:
            port = running.http_port
            for path in ("/metrics", "/healthz", "/readyz"):
                assert _get_with(port, path, None)[0] == 200, path
            for path in ("/api/servers", "/api/digests", "/api/pools"):
                status, headers = _get_with(port, path, None)
                assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
                assert _get_with(port, path, "wrong")[0] == 401
                assert _get_with(port, path, "t0ken-from-env")[0] == 200
    finally:
        del os.environ["H2_TEST_TOKEN"]


def test_http_api_off_loopback_needs_a_token(lab: Lab, tmp_path: Path) -> None:
    with lab_proxy(lab, tmp_path, listeners={"http": {"host": "0.0.0.0"}}) as running:
        port = running.http_port
        assert _get_with(port, "/metrics", None)[0] == 200
        assert _get_with(port, "/api/digests", None)[0] == 403
        assert "admin.http_token" in running.log_text()


def test_http_api(proxy: ProxyThread) -> None:
    port = _http_port(proxy)
    assert _get(port, "/healthz")[0] == 200
    status, body = _get(port, "/readyz")
    assert status == 200 and json.loads(body)["writer"] == "master1"
    servers = json.loads(_get(port, "/api/servers")[1])
    assert {s["name"] for s in servers} == {"master1", "master2", "replica1", "replica2"}
    assert isinstance(json.loads(_get(port, "/api/digests")[1]), list)
    assert len(json.loads(_get(port, "/api/pools")[1])) == 4
    assert _get(port, "/nope")[0] == 404


def _admin_cli(proxy: ProxyThread, sql: str) -> str:
    admin = proxy.config.admin
    res = subprocess.run(
        [
            "mariadb",
            "-h",
            "127.0.0.1",
            "-P",
            str(proxy.server.admin.port),
            "-u",
            admin.username,
            f"-p{admin.password}",
            "-e",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_admin_sql_answers_live_data(proxy: ProxyThread, proxy_endpoint: Endpoint) -> None:
    _traffic(proxy_endpoint)
    servers = _admin_cli(
        proxy, "SELECT hostname, port, hostgroup_id, status FROM runtime_mysql_servers"
    )
    lines = servers.splitlines()
    assert lines[0].split("\t") == ["hostname", "port", "hostgroup_id", "status"]
    assert len(lines) == 5 and all(ln.endswith("ONLINE") for ln in lines[1:])
    digests = _admin_cli(
        proxy,
        "SELECT hostgroup, digest_text, count_star, sum_time FROM "
        "stats_mysql_query_digest ORDER BY sum_time DESC LIMIT 10",
    )
    rows = digests.splitlines()
    assert rows[0].split("\t") == ["hostgroup", "digest_text", "count_star", "sum_time"]
    assert 1 < len(rows) <= 11
    times = [int(r.split("\t")[-1]) for r in rows[1:]]
    assert times == sorted(times, reverse=True)
    probe = _admin_cli(
        proxy,
        "SELECT digest_text FROM stats_mysql_query_digest WHERE digest_text LIKE '%ops_probe%'",
    )
    assert "select ? + ? as ops_probe" in probe
    # Arbitrary SELECTs with WHERE / ORDER BY / LIMIT work on every table.
    admin = proxy.config.admin
    conn = pymysql.connect(
        host="127.0.0.1", port=proxy.server.admin.port, user=admin.username, password=admin.password
    )
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count_star FROM stats_mysql_query_digest "
            "WHERE digest_text LIKE '%ops_probe%' ORDER BY count_star DESC LIMIT 1"
        )
        row = cur.fetchone()
        assert row is not None and int(row[0]) >= 20  # admin values are text, as in ProxySQL
        cur.execute("SELECT srv_port, ConnUsed + ConnFree FROM stats_mysql_connection_pool")
        assert len(cur.fetchall()) == 4
        cur.execute("SELECT COUNT(*) FROM mysql_query_rules")
        assert cur.fetchone() in ((0,), ("0",))
        with pytest.raises(pymysql.err.MySQLError):
            cur.execute("DELETE FROM runtime_mysql_servers")
    conn.close()
    with pytest.raises(pymysql.err.OperationalError) as err:
        pymysql.connect(
            host="127.0.0.1", port=proxy.server.admin.port, user="admin", password="wrong"
        )
    assert err.value.args[0] == 1045


def test_offline_drain_finishes_running_statements(
    proxy: ProxyThread, proxy_endpoint: Endpoint
) -> None:
    ep = proxy_endpoint
    conn = pymysql.connect(host=ep.host, port=ep.port, user=ep.user, password=ep.password)
    result: list[object] = []

    def long_read() -> None:
        with conn.cursor() as cur:
            cur.execute("/* pyproxy:server=replica2 */ SELECT SLEEP(1.5), @@server_id")
            result.append(cur.fetchone())

    t = threading.Thread(target=long_read)
    t.start()
    time.sleep(0.3)
    _admin_cli(proxy, "SET SERVER replica2 OFFLINE")
    t.join(10)
    assert result == [(0, 102)]  # the running statement finished normally
    try:
        other = pymysql.connect(
            host=ep.host, port=ep.port, user=ep.user, password=ep.password, autocommit=True
        )
        with other.cursor() as cur:
            seen = set()
            for _ in range(30):
                cur.execute("SELECT @@server_id")
                seen.add(cur.fetchone()[0])
        other.close()
        assert seen == {101}
        status = _admin_cli(
            proxy, "SELECT status FROM runtime_mysql_servers WHERE name = 'replica2'"
        )
        assert "OFFLINE_SOFT" in status
    finally:
        _admin_cli(proxy, "SET SERVER replica2 ONLINE")
        conn.close()
    deadline = time.monotonic() + 5
    while proxy.server.cluster.server("replica2").status.value != "ONLINE":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _start_cli(cfg: Path, data: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    """`pyproxy --config cfg` (data written there) as users start it, its output in log."""
    cfg.write_text(yaml.safe_dump(data))
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def test_sighup_reload(lab: Lab, tmp_path: Path) -> None:
    data = lab.proxy_config()
    ports = {k: free_port() for k in ("mysql", "admin", "http")}
    for key, port in ports.items():
        data["listeners"][key]["port"] = port
    full = [dict(s) for s in data["servers"]]
    data["servers"] = [s for s in full if s["name"] != "replica2"]
    cfg, log = tmp_path / "pyproxy.yaml", tmp_path / "proxy.log"
    proc = _start_cli(cfg, data, log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", ports["mysql"]), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        clients = [
            pymysql.connect(
                host="127.0.0.1",
                port=ports["mysql"],
                user="app",
                password="app-pass",
                database="demo_db",
                autocommit=True,  # autocommit off would send every read to the writer
            )
            for _ in range(3)
        ]

        def ids(conn: pymysql.Connection, n: int = 30) -> set[int]:
            with conn.cursor() as cur:
                out = set()
                for _ in range(n):
                    cur.execute("SELECT @@server_id")
                    out.add(int(cur.fetchone()[0]))
            return out

        assert ids(clients[0]) == {101}
        data["servers"] = full
        cfg.write_text(yaml.safe_dump(data))
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while 102 not in ids(clients[1], 10):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        for c in clients:  # no client connection was dropped
            assert ids(c, 4) <= {101, 102}
        # A broken config: one log line naming the key, and nothing changes.
        broken = dict(data, servers=[*full[:1], dict(full[1], port=70000), *full[2:]])
        cfg.write_text(yaml.safe_dump(broken))
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "servers[1].port" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        refused = [ln for ln in log.read_text().splitlines() if "reload refused" in ln]
        assert len(refused) == 1 and "servers[1].port" in refused[0]
        assert ids(clients[2]) == {101, 102}
        for c in clients:
            c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert proc.returncode == 0


def test_sighup_while_starting_is_a_reload(lab: Lab, tmp_path: Path) -> None:
    """SIGHUPs from its first log line until it listens (a config management tool reloading
    as it deploys): the proxy neither dies (SIGHUP's default action) nor misses the reload,
    which runs once it has started. (Before its first line, Python itself is starting.)"""
    data = lab.proxy_config()
    for key in ("mysql", "admin", "http"):
        data["listeners"][key]["port"] = free_port()
    cfg, log = tmp_path / "pyproxy.yaml", tmp_path / "proxy.log"
    proc = _start_cli(cfg, data, log)
    try:
        deadline = time.monotonic() + 30
        hups = 0
        while not log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.005)
        while "pyproxy listening on" not in log.read_text():
            assert proc.poll() is None, f"died of SIGHUP #{hups}\n{log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()
            proc.send_signal(signal.SIGHUP)
            hups += 1
            time.sleep(0.02)
        while "config reloaded" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        conn = pymysql.connect(
            host="127.0.0.1", port=data["listeners"]["mysql"]["port"], user="app",
            password="app-pass", database="demo_db",
        )  # fmt: skip
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        conn.close()
        print(f"\n{hups} SIGHUPs while starting: alive, reloaded once started")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert proc.returncode == 0


@pytest.mark.parametrize("taken", ["mysql", "admin", "http"])
def test_a_taken_listener_port_is_named(lab: Lab, tmp_path: Path, taken: str) -> None:
    """A listener's port already taken (a ProxySQL still on 6032, say): pyproxy exits 1 with
    one line naming that listener and its address, not another one's."""
    data = lab.proxy_config()
    for key in ("mysql", "admin", "http"):
        data["listeners"][key]["port"] = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        data["listeners"][taken]["port"] = port
        log = tmp_path / "proxy.log"
        proc = _start_cli(tmp_path / "pyproxy.yaml", data, log)
        try:
            returncode = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert returncode == 1, text
    assert f"pyproxy: listeners.{taken}: cannot listen on 127.0.0.1:{port}: " in text, text
    assert "Traceback" not in text, text


def test_docker_compose_agrees_with_config() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    expected = {"mysql-master1": "33061", "mysql-master2": "33062", "mysql-replica": "33063"}
    for name, host_port in expected.items():
        svc = services[name]
        assert svc["image"] == "mysql:8.4"
        assert svc["ports"] == [f"127.0.0.1:{host_port}:3306"]
        assert "--read-only=ON" in svc["command"] and "--gtid-mode=ON" in svc["command"]
    # The admin and the HTTP API are published on the host's loopback only.
    assert services["pyproxy"]["ports"] == [
        "6033:6033",
        "127.0.0.1:6032:6032",
        "127.0.0.1:6070:6070",
    ]
    docker_cfg = yaml.safe_load((ROOT / "config/pyproxy.docker.yaml").read_text())
    assert {s["host"]: s["port"] for s in docker_cfg["servers"]} == dict.fromkeys(expected, 3306)
    assert {s["name"] for s in docker_cfg["servers"]} == set(expected)
    host_cfg = yaml.safe_load((ROOT / "config/pyproxy.yaml").read_text())
    assert sorted(str(s["port"]) for s in host_cfg["servers"]) == sorted(expected.values())
    # Every ${VAR} the docker config needs is passed in by the compose file.
    env = services["pyproxy"]["environment"]
    needed = set(re.findall(r"\$\{(\w+)", (ROOT / "config/pyproxy.docker.yaml").read_text()))
    assert needed <= set(env), needed - set(env)
    assert services["bootstrap"]["environment"] == env
    prom = yaml.safe_load((ROOT / "config/prometheus.yml").read_text())
    target = prom["scrape_configs"][0]["static_configs"][0]["targets"][0]
    assert target == f"pyproxy:{docker_cfg['listeners']['http']['port']}"
    # The file is valid for Compose itself.
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose (Debian package) is missing"

    def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if k != "ADMIN_PASSWORD"}
        return subprocess.run(
            [tool, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**environ, **env},
        )

    res = compose_config(ADMIN_PASSWORD="s3cret")
    assert res.returncode == 0, res.stderr
    # No admin password chosen: Compose itself refuses, naming the variable.
    res = compose_config()
    assert res.returncode != 0 and "set ADMIN_PASSWORD" in res.stderr, res.stderr

    def check(admin_password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "proxy.cli",
                "--config",
                str(ROOT / "config/pyproxy.docker.yaml"),
                "--check",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={
                **os.environ,
                "APP_PASSWORD": "a",
                "MONITOR_PASSWORD": "b",
                "BACKEND_ADMIN_PASSWORD": "c",
                "ADMIN_PASSWORD": admin_password,
            },
        )

    assert check("d").returncode == 0
    # The admin listens on 0.0.0.0 in the container: admin/admin or no password is refused.
    for weak in ("admin", ""):
        res = check(weak)
        assert res.returncode != 0
        assert "admin.password: must be set, and not to the default" in res.stderr, res.stderr


RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"


def test_runaway_admin_query_neither_blocks_clients_nor_runs_forever(
    lab: Lab, tmp_path: Path
) -> None:
    with lab_proxy(lab, tmp_path, admin={"query_timeout_ms": 8000}) as running:

        def admin() -> pymysql.Connection:
            return pymysql.connect(
                host="127.0.0.1", port=running.admin_port, user="admin", password="admin"
            )

        outcome: list[object] = []

        def runaway() -> None:
            conn = admin()
            started = time.monotonic()
            try:
                with conn.cursor() as cur:
                    cur.execute(RUNAWAY)
                outcome.append("finished")
            except pymysql.err.MySQLError as exc:
                outcome.append(exc.args)
            outcome.append(time.monotonic() - started)
            with conn.cursor() as cur:  # the admin session goes on
                cur.execute("SELECT COUNT(*) FROM runtime_mysql_servers")
                outcome.append(cur.fetchone())
            conn.close()

        t = threading.Thread(target=runaway)
        t.start()
        time.sleep(0.5)  # the runaway query is running
        worst = 0.0
        answered = 0
        while t.is_alive() and answered < 200:
            started = time.monotonic()
            conn = pymysql.connect(  # a new client: accept, login and a query
                host="127.0.0.1",
                port=running.port,
                user="app",
                password="app-pass",
                database="demo_db",
            )
            with conn.cursor() as cur:
                for _ in range(5):
                    cur.execute("SELECT 1")
                    assert cur.fetchone() == (1,)
                    answered += 1
            conn.close()
            worst = max(worst, time.monotonic() - started)
        # Another admin query is answered meanwhile (a second worker thread).
        other = admin()
        with other.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM runtime_mysql_servers")
            assert cur.fetchone() == ("4",)
            with pytest.raises(pymysql.err.MySQLError, match="more than 100000 rows"):
                cur.execute(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                    "WHERE x < 200000) SELECT x FROM c"
                )
            with pytest.raises(pymysql.err.MySQLError, match="too big"):
                cur.execute("SELECT length(zeroblob(1000000000))")  # one step, 1 GB
        other.close()
        t.join(60)
        assert not t.is_alive()
    # Generous bounds: the loop was blocked for the whole query before (15 s for 20M rows).
    assert answered >= 10 and worst < 4.0, (answered, worst)
    code, message = outcome[0]  # type: ignore[misc]
    assert code == 1317 and "admin.query_timeout_ms (8000 ms)" in message
    assert 7.5 < outcome[1] < 60  # type: ignore[operator]
    assert outcome[2] == ("4",)
