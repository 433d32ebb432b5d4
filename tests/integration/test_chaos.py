"""Bounded chaos against the real pyproxy process: 100 polite clients beside clients that hang
up mid-result, send garbage, pipeline ping floods, sit half-open and send oversize packets.
PYPROXY_CHAOS_SECONDS sets the length (default 60)."""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress

import pytest

from proxy.lab.lab import Lab
from proxy.protocol.packets import build_packet
from proxy.testing import raise_nofile
from tests.integration.test_hardening import PING, hang_up_mid_result
from tests.support.proxyproc import LabProxy, PoliteClients, RawClient, lab_proxy

SECONDS = float(os.environ.get("PYPROXY_CHAOS_SECONDS", "60"))
POLITE = 100
IDLE_POOL = 16  # pool.max_idle_per_server: idle connections kept per server, user and profile
# Client flavours here, each with its own pooled backend connections (PyMySQL's capability
# flags differ from the raw clients'): what may stay open per server is IDLE_POOL * PROFILES.
PROFILES = 2
LIMITS = {
    "connect_timeout_s": 3.0,
    "max_unauthenticated_connections": 500,
    "max_allowed_packet": 4 << 20,
}
TABLE = "demo_db.chaos_polite"
# Commands garbage must not start with: COM_PROCESS_KILL with a random id could hit a polite
# client of the same user (that would be the rude client's right, not a proxy fault).
NO_GARBAGE_COMMANDS = {0x0C}


class Rude:
    """The rude clients: each kind loops in its own thread until the end, counting actions."""

    def __init__(self, proxy: LabProxy, until: float) -> None:
        self.proxy = proxy
        self.until = until
        self.actions: Counter[str] = Counter()
        self.lock = threading.Lock()

    def count(self, kind: str) -> None:
        with self.lock:
            self.actions[kind] += 1

    def loop(self, kind: str, action: Callable[[random.Random], None]) -> threading.Thread:
        def run() -> None:
            rng = random.Random(kind)
            while time.monotonic() < self.until:
                with suppress(OSError, ConnectionError, PermissionError):
                    action(rng)
                self.count(kind)
                time.sleep(rng.uniform(0.05, 0.3))

        thread = threading.Thread(target=run, name=kind, daemon=True)
        thread.start()
        return thread

    def mid_result(self, rng: random.Random) -> None:
        hang_up_mid_result(self.proxy, rng.choice(("fin", "reset", "close")))

    def garbage_before_login(self, rng: random.Random) -> None:
        client = RawClient(self.proxy.port)
        try:
            client.read_packet()
            client.send(rng.randbytes(rng.randrange(1, 4000)))
            client.error_code()
        finally:
            client.close()

    def garbage_after_login(self, rng: random.Random) -> None:
        client = RawClient(self.proxy.port)
        try:
            client.login(self.proxy.user, self.proxy.password)
            for _ in range(rng.randrange(1, 20)):
                payload = rng.randbytes(rng.randrange(1, 300))
                if payload[0] in NO_GARBAGE_COMMANDS:
                    continue
                if rng.random() < 0.5:
                    client.send(build_packet(0, payload))  # well framed, nonsense inside
                else:
                    client.send(payload)  # not even framed
        finally:
            client.close()

    def ping_flood(self, rng: random.Random) -> None:
        client = RawClient(self.proxy.port)
        try:
            client.login(self.proxy.user, self.proxy.password)
            client.query("SELECT SLEEP(1)")
            block = PING * 10_000
            client.sock.settimeout(2)
            with suppress(TimeoutError):  # nobody reads the answers: the proxy stops reading
                for _ in range(rng.randrange(5, 40)):
                    client.send(block)
        finally:
            client.close()

    def half_open(self, rng: random.Random) -> None:
        held = []
        try:
            for _ in range(rng.randrange(50, 300)):
                held.append(socket.create_connection(("127.0.0.1", self.proxy.port)))
            time.sleep(rng.uniform(0.5, LIMITS["connect_timeout_s"] + 1))
        finally:
            for s in held:
                s.close()

    def oversize(self, rng: random.Random) -> None:
        client = RawClient(self.proxy.port)
        try:
            if rng.random() < 0.5:
                client.read_packet()
            else:
                client.login(self.proxy.user, self.proxy.password)
            client.send(struct.pack("<I", 0xFFFFFF))  # a 16 MiB fragment follows...
            chunk = bytes(1 << 20)
            for _ in range(rng.randrange(1, 20)):
                client.send(chunk)
        finally:
            client.close()


@pytest.mark.timeout(SECONDS + 300)
def test_chaos(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> None:
    raise_nofile()
    workdir = tmp_path_factory.mktemp("chaos")
    with lab_proxy(lab, workdir, limits=LIMITS, pool={"max_idle_per_server": IDLE_POOL}) as proxy:
        setup = proxy.connect()
        with setup.cursor() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} "
                "(id BIGINT AUTO_INCREMENT PRIMARY KEY, client INT NOT NULL, KEY (client))"
            )
        setup.close()
        backends_before = proxy.backend_connections()
        with PoliteClients(proxy, POLITE, table=TABLE) as polite:
            rss_before = rss_peak = proxy.rss_mib()
            rude = Rude(proxy, time.monotonic() + SECONDS)
            threads = [
                rude.loop(name, action)
                for name, action in [
                    ("mid_result", rude.mid_result),
                    ("garbage_before_login", rude.garbage_before_login),
                    ("garbage_after_login", rude.garbage_after_login),
                    ("ping_flood", rude.ping_flood),
                    ("half_open", rude.half_open),
                    ("oversize", rude.oversize),
                ]
            ]
            while time.monotonic() < rude.until:
                assert proxy.alive(), proxy.log_tail()
                rss_peak = max(rss_peak, proxy.rss_mib())
                time.sleep(0.5)
            for t in threads:
                t.join(60)
        statements, errors = polite.statements, polite.errors
        assert proxy.alive(), proxy.log_tail()
        # Every rude session ends (one that hung up cleanly still runs its next two commands).
        settle = time.monotonic() + 30
        while (sessions_after := proxy.client_connections()) and time.monotonic() < settle:
            time.sleep(0.5)

        # The pools trimmed and aborted backends gone from the servers (a server thread still
        # sending a result to a closed socket ends when it notices): the bound is the same,
        # only the time to reach it is waited for, up to 30 s.
        def over_bound() -> bool:
            after = proxy.backend_connections()
            return any(n > backends_before[s] + IDLE_POOL * PROFILES for s, n in after.items())

        settle = time.monotonic() + 30
        while over_bound() and time.monotonic() < settle:
            time.sleep(1)
        rss_after = proxy.rss_mib()
        backends_after = proxy.backend_connections()
        print(
            f"\nchaos {SECONDS:.0f} s: polite clients {POLITE}, statements {statements}, "
            f"errors {len(errors)}\n"
            f"rude actions: {dict(rude.actions)}\n"
            f"RSS MiB: before {rss_before:.0f}, peak {rss_peak:.0f}, after {rss_after:.0f}\n"
            f"app backend connections: before {backends_before}, after {backends_after}\n"
            f"client sessions left in the proxy: {sessions_after}"
        )
        assert errors == [], errors[:5]
        assert statements > POLITE
        assert all(rude.actions[kind] > 0 for kind in rude.actions)
        # Every rude session was ended and forgotten (if not: which, and doing what).
        left = proxy.admin_rows("SELECT * FROM stats_mysql_processlist")
        assert sessions_after == 0, "\n".join(map(str, left))
        assert rss_after < rss_before + 64
        for server, count in backends_after.items():
            assert count <= backends_before[server] + IDLE_POOL * PROFILES, (server, count)
        assert proxy.answers()
        with proxy.connect().cursor() as cur:
            cur.execute(f"DROP TABLE {TABLE}")
