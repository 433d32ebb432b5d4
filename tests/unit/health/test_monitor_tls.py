"""The health checker connects as servers[].tls says, with the data path's TLS context."""

from __future__ import annotations

import ssl

from proxy.cluster import Cluster
from proxy.config import parse_config
from proxy.health.monitor import Monitor
from proxy.topology import Topology

CONFIG = parse_config(
    {
        "servers": [
            {
                "name": "m1",
                "host": "127.0.0.1",
                "port": 3306,
                "role": "master",
                "tls": {"enabled": True},
            },
            {"name": "r1", "host": "127.0.0.1", "port": 3307, "role": "replica"},
        ],
        "users": [{"username": "app", "password": "pw"}],
        "monitor": {"username": "monitor", "password": "mon-pw"},
        "backend_admin": {"username": "admin", "password": "adm-pw"},
    }
)


def _monitor() -> Monitor:
    return Monitor(lambda: CONFIG, Topology(Cluster.from_config(CONFIG)))


def test_tls_server_is_checked_over_tls() -> None:
    monitor = _monitor()
    tls_server, plain_server = CONFIG.servers
    args = monitor.connect_args(tls_server, CONFIG.monitor)
    ctx = args["ssl"]
    assert isinstance(ctx, ssl.SSLContext)
    # verify: false (the default) as on the data path: encrypted, certificate not checked.
    assert ctx.verify_mode is ssl.CERT_NONE and not ctx.check_hostname
    assert (args["host"], args["port"], args["user"], args["password"]) == (
        "127.0.0.1",
        3306,
        "monitor",
        "mon-pw",
    )
    assert monitor.connect_args(plain_server, CONFIG.monitor)["ssl"] is None


def test_fencing_and_promotion_connections_use_tls_too() -> None:
    monitor = _monitor()
    assert CONFIG.backend_admin is not None
    args = monitor.connect_args(CONFIG.servers[0], CONFIG.backend_admin)
    assert isinstance(args["ssl"], ssl.SSLContext) and args["user"] == "admin"


def test_verify_on_checks_the_certificate() -> None:
    config = CONFIG.model_copy(deep=True)
    config.servers[0].tls.verify = True
    monitor = Monitor(lambda: config, Topology(Cluster.from_config(config)))
    ctx = monitor.connect_args(config.servers[0], config.monitor)["ssl"]
    assert ctx.verify_mode is ssl.CERT_REQUIRED


def test_monitor_ssl_false_checks_without_tls() -> None:
    """mysql-monitor_ssl='false' (monitor.ssl): the monitor's own connections go plain; the
    fencing account still follows servers[].tls."""
    monitor = _monitor()
    plain = CONFIG.monitor.model_copy(update={"ssl": False})
    assert monitor.connect_args(CONFIG.servers[0], plain)["ssl"] is None
    assert CONFIG.backend_admin is not None
    assert monitor.connect_args(CONFIG.servers[0], CONFIG.backend_admin)["ssl"] is not None
