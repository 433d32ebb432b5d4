"""The health checker honours servers[].tls: a backend whose monitor account requires TLS is
checked over TLS and stays ONLINE (without it, the same backend fails its checks)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from proxy.cluster import HostStatus
from proxy.config import Config
from proxy.lab import servers
from proxy.lab.lab import Lab
from proxy.testing import ProxyThread
from tests.support.endpoints import proxy_config
from tests.support.tls import self_signed

NODE = "replica2"


def _root(lab: Lab, sql: str) -> list[tuple[object, ...]]:
    conn = lab.connect_root(NODE)
    try:
        with conn.cursor(pymysql.cursors.Cursor) as cur:
            cur.execute("SET sql_log_bin = 0")  # this server only: the others have no TLS
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def _restart(lab: Lab, cnf: str) -> None:
    files = lab.files(NODE)
    servers.stop(files)
    files.cnf.write_text(cnf)
    state = lab.load()
    assert state is not None
    lab.up(masters=state.masters, replicas=state.replicas, semisync=state.semisync)


@pytest.fixture
def tls_only_monitor(lab: Lab, tmp_path: Path) -> Iterator[None]:
    """NODE restarted with a certificate, its monitor account REQUIRE SSL; undone after."""
    cert, key = self_signed(tmp_path)
    files = lab.files(NODE)
    original = files.cnf.read_text()
    _restart(lab, original + f"ssl_cert={cert}\nssl_key={key}\n")
    try:
        assert _root(lab, "SHOW VARIABLES LIKE 'have_ssl'") == [("have_ssl", "YES")]
        _root(lab, "ALTER USER 'monitor'@'%' REQUIRE SSL")
        yield
    finally:
        _root(lab, "ALTER USER 'monitor'@'%' REQUIRE NONE")
        _restart(lab, original)


def _config(lab: Lab, tls: bool) -> Config:
    config = proxy_config(lab)
    for server in config.servers:
        if server.name == NODE:
            server.tls.enabled = tls
    return config


def _checks(proxy: ProxyThread) -> tuple[int, int]:
    stats = proxy.server.check_stats[NODE]
    return stats.checks_ok, stats.checks_failed


def test_monitor_connects_over_tls(lab: Lab, tls_only_monitor: None) -> None:
    proxy = ProxyThread(_config(lab, tls=True)).start()
    try:
        ok_before, _ = _checks(proxy)
        deadline = time.monotonic() + 20
        while _checks(proxy)[0] < ok_before + 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        ok, failed = _checks(proxy)
        assert ok >= ok_before + 3 and failed == 0
        assert proxy.server.cluster.server(NODE).status is HostStatus.ONLINE
    finally:
        proxy.stop()
    # The same server without servers[].tls: the monitor is refused (the check is real).
    plain = ProxyThread(_config(lab, tls=False)).start()
    try:
        deadline = time.monotonic() + 20
        while _checks(plain)[1] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _checks(plain)[1] > 0
        assert "Access denied" in plain.server.cluster.server(NODE).last_error
    finally:
        plain.stop()
