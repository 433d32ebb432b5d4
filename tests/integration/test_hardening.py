"""Rude clients against the real pyproxy process: it survives, and a polite client beside them
sees nothing (issue 13: hang-ups mid-result, silent and trickling sockets, huge packets before
login, pipelined floods, per-user limits, log injection)."""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mysql.connector
import pymysql
import pytest

from proxy.frontend.client import AFTER_HANGUP_COMMANDS
from proxy.lab.lab import Lab
from proxy.protocol.constants import ErrorCode
from proxy.protocol.packets import build_command
from proxy.testing import raise_nofile
from tests.support.proxyproc import (
    LabProxy,
    PoliteClients,
    RawClient,
    lab_proxy,
    start_lab_proxy,
)

MIB = 1 << 20
CONNECT_TIMEOUT_S = 2.0
LIMITS = {
    # Fewer than the silent sockets below: they must not count against it.
    "max_client_connections": 1000,
    "connect_timeout_s": CONNECT_TIMEOUT_S,
    "max_unauthenticated_connections": 300,
    "max_allowed_packet": 4 * MIB,
}
CAPPED = {"username": "capped", "password": "capped-pass", "max_connections": 3}
# Generous: these 2-core machines are shared; a frozen proxy shows up as many seconds.
SLOWEST_POLITE_S = 2.0
BIG_RESULT = "SELECT seq, REPEAT('z', 200) FROM seq_1_to_200000"
PING = build_command(0x0E)
POLITE_ADDRESS = "127.0.0.2"


@pytest.fixture(scope="module")
def proxy(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProxy]:
    raise_nofile()  # this process holds the rude sockets
    with lab_proxy(
        lab, tmp_path_factory.mktemp("hardening"), limits=LIMITS, extra_users=[CAPPED]
    ) as running:
        yield running


def assert_unharmed(proxy: LabProxy, polite: PoliteClients) -> None:
    assert polite.errors == [], polite.errors[:5]
    assert polite.statements > 0
    assert polite.max_latency < SLOWEST_POLITE_S, f"slowest polite statement {polite.max_latency}"
    assert proxy.answers(), proxy.log_tail()


def wait_until(check: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return True
        time.sleep(0.2)
    return False


def running_anywhere(proxy: LabProxy, text: str) -> int:
    """Statements containing text still running on any lab server."""
    state = proxy.lab.load()
    assert state is not None
    found = 0
    for node in state.nodes:
        root = proxy.lab.connect_root(node.name)
        try:
            with root.cursor(pymysql.cursors.Cursor) as cur:
                cur.execute(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                    "WHERE INFO LIKE %s AND ID <> CONNECTION_ID()",
                    (f"%{text}%",),
                )
                row = cur.fetchone()
                found += int(row[0]) if row else 0
        finally:
            root.close()
    return found


def hang_up_mid_result(proxy: LabProxy, how: str) -> None:
    """Log in, ask for a 40 MB result, read 64 KiB of it and hang up: with a FIN first (what
    made the proxy write into a closed socket and die of SIGPIPE), with a reset, or plainly."""
    rude = RawClient(proxy.port)
    rude.login(proxy.user, proxy.password, "demo_db")
    rude.query(BIG_RESULT)
    got = 0
    while got < 64 * 1024:
        got += len(rude.sock.recv(65536))
    if how == "fin":
        rude.sock.shutdown(socket.SHUT_WR)
    elif how == "reset":
        rude.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    rude.close()


def test_client_gone_mid_result(proxy: LabProxy) -> None:
    status = Path(f"/proc/{proxy.pid}/status").read_text()
    ignored = int(
        next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16
    )
    assert ignored & 1 << (signal.SIGPIPE - 1), "SIGPIPE must stay ignored in the proxy"
    with PoliteClients(proxy, 4) as polite:
        for how in ("fin", "reset", "close") * 2:
            hang_up_mid_result(proxy, how)
            time.sleep(0.3)
            assert proxy.alive(), proxy.log_tail()
        time.sleep(1)
    assert_unharmed(proxy, polite)
    assert proxy.log_text().count("client went away mid-result") >= 6, proxy.log_tail()
    # Abandoned, not drained in the background: the big SELECTs are gone from the servers.
    assert wait_until(lambda: running_anywhere(proxy, "seq_1_to_200000") == 0)


def test_silent_and_trickling_clients_cannot_lock_others_out(proxy: LabProxy) -> None:
    timeouts, evicted = proxy.refused("connect_timeout"), proxy.refused("handshake_evicted")
    logins: list[str] = []
    stop = threading.Event()

    def fresh_logins() -> None:  # a new client every few ms while the flood is on
        while not stop.is_set():
            try:
                # From their own address, to find them in the proxy's log.
                conn = proxy.connect(bind_address=POLITE_ADDRESS)
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 41 + 1")
                        if cur.fetchone() != (42,):
                            logins.append("wrong answer")
                finally:
                    conn.close()
            except pymysql.MySQLError as exc:
                logins.append(str(exc))
            stop.wait(0.02)

    silent: list[socket.socket] = []
    slow: list[socket.socket] = []
    with PoliteClients(proxy, 4) as polite:
        login_thread = threading.Thread(target=fresh_logins)
        login_thread.start()
        try:
            for _ in range(1500):
                silent.append(socket.create_connection(("127.0.0.1", proxy.port)))
            for _ in range(100):
                slow.append(socket.create_connection(("127.0.0.1", proxy.port)))
            # Slowloris: one byte each every 0.5 s, past the connect timeout.
            end = time.monotonic() + CONNECT_TIMEOUT_S + 2
            while time.monotonic() < end:
                for s in slow:
                    with contextlib.suppress(OSError):
                        s.send(b"\x01")
                time.sleep(0.5)
        finally:
            stop.set()
            login_thread.join(30)
    for s in silent + slow:
        s.close()
    polite_lines = [line for line in proxy.log_text().splitlines() if f"({POLITE_ADDRESS})" in line]
    assert logins == [], (logins[:5], polite_lines[-10:])
    assert_unharmed(proxy, polite)
    assert proxy.refused("handshake_evicted") - evicted >= 1500 + 100 - 300
    # The 300 newest handshakes never finished: each was ended by the deadline.
    assert proxy.refused("connect_timeout") - timeouts >= 100
    assert "no login within connect_timeout_s" in proxy.log_text()


def test_a_login_has_its_chance_to_answer_before_a_flood_takes_its_place(
    proxy: LabProxy,
) -> None:
    """A burst of silent sockets, more than a worker holds, arrives right after a client's
    connection and before its answer: the burst waits in the listen queue, the client logs in."""
    evicted = proxy.refused("handshake_evicted")
    first = socket.create_connection(("127.0.0.1", proxy.port))
    started = time.monotonic()
    flood = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(400)]
    try:
        conn = proxy.connect(defer_connect=True)
        try:
            conn.connect(first)
        except pymysql.MySQLError as exc:  # how long it took tells a slow machine apart
            raise AssertionError(f"{exc} after {time.monotonic() - started:.3f}s") from None
        with conn.cursor() as cur:
            cur.execute("SELECT 41 + 1")
            assert cur.fetchone() == (42,)
        conn.close()
        # The workers hold 300 handshakes between them: the burst's oldest are dropped for
        # its newest once they had their chance, and the whole burst gets in, late.
        assert wait_until(lambda: proxy.refused("handshake_evicted") - evicted >= 400 - 300)
    finally:
        for s in flood:
            s.close()
        first.close()


def test_huge_packets_before_and_after_login(proxy: LabProxy) -> None:
    baseline = proxy.rss_mib()
    refused: list[int | None] = []

    def rude() -> None:
        client = RawClient(proxy.port)
        try:
            client.read_packet()  # the greeting
            # A 60 MiB handshake response: 16 MiB fragments, streamed until the proxy hangs up.
            client.send(struct.pack("<I", 0xFFFFFF | 1 << 24))
            chunk = bytes(MIB)
            for _ in range(60):
                client.send(chunk)
        except OSError:
            pass
        refused.append(client.error_code())
        client.close()

    with PoliteClients(proxy, 4) as polite:
        threads = [threading.Thread(target=rude) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # After login max_allowed_packet (4 MiB here) holds, decided on the header alone.
        after = RawClient(proxy.port)
        after.login(proxy.user, proxy.password)
        after.send(struct.pack("<I", 0xFFFFFF))
        assert after.error_code() == ErrorCode.ER_NET_PACKET_TOO_LARGE
        after.close()
    assert_unharmed(proxy, polite)
    assert len(refused) == 20
    assert proxy.refused("handshake_too_large") >= 20
    time.sleep(1)
    assert proxy.rss_mib() < baseline + 32, (baseline, proxy.rss_mib())


def ping_flood(proxy: LabProxy, count: int, seconds: float) -> tuple[int, int]:
    """A client that runs SELECT SLEEP(2) and pipelines count COM_PINGs behind it, reading
    the answers, for at most seconds. (bytes sent, bytes of answers read)"""
    rude = RawClient(proxy.port, timeout=seconds + 10)
    rude.login(proxy.user, proxy.password)
    received = [0]

    def drain() -> None:
        try:
            while data := rude.sock.recv(1 << 16):
                received[0] += len(data)
        except OSError:
            pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    rude.query("SELECT SLEEP(2)")
    sent = 0
    block = PING * 10_000
    deadline = time.monotonic() + seconds
    try:
        while sent < count * len(PING) and time.monotonic() < deadline:
            rude.send(block)
            sent += len(block)
    except OSError:
        pass
    # Stay for the answers (11 bytes per OK), so the proxy works through the whole flood
    # while the polite clients measure.
    while received[0] < sent // len(PING) * 11 and time.monotonic() < deadline:
        time.sleep(0.1)
    rude.close()
    reader.join(10)
    return sent, received[0]


def test_pipelined_flood_does_not_freeze_others(proxy: LabProxy) -> None:
    with PoliteClients(proxy, 4) as polite:
        sent, answered = ping_flood(proxy, 2_000_000, seconds=15)
    assert sent > 1_000_000 and answered > 0
    assert_unharmed(proxy, polite)


def test_hung_up_pipeline_is_not_run_on(proxy: LabProxy) -> None:
    """A client that sent its statements and hung up cleanly: "INSERT ...; QUIT" is kept (as
    MySQL keeps it), but a pipeline of 50,000 INSERTs is not run on once the hang-up is seen
    (MySQL stops when it cannot write the second answer): the session ends."""
    table = "hangup_items"
    setup = proxy.connect()

    def counts() -> dict[str, int]:
        with setup.cursor() as cur:  # in a transaction: on the writer, no replica lag
            cur.execute("BEGIN")
            cur.execute(f"SELECT tag, COUNT(*) FROM {table} GROUP BY tag")
            rows = dict(cur.fetchall())
            cur.execute("COMMIT")
        return rows

    with setup.cursor() as cur:
        cur.execute(f"CREATE TABLE IF NOT EXISTS {table} (id INT PRIMARY KEY, tag CHAR(4))")
        cur.execute(f"DELETE FROM {table}")
    before = proxy.client_connections()
    kept = RawClient(proxy.port)
    kept.login(proxy.user, proxy.password, "demo_db")
    kept.send(build_command(0x03, f"INSERT INTO {table} VALUES (0, 'kept')".encode()))
    kept.send(build_command(0x01))  # COM_QUIT
    kept.close()
    flood = RawClient(proxy.port, timeout=60)
    flood.login(proxy.user, proxy.password, "demo_db")
    statements = 50_000
    pipeline = b"".join(
        build_command(0x03, f"INSERT INTO {table} VALUES ({n}, 'pipe')".encode())
        for n in range(1, statements + 1)
    )
    sender = threading.Thread(target=flood.send, args=(pipeline,))
    sender.start()
    # Read every answer until the proxy hangs up, so that no reset cuts the pipeline short:
    # the hang-up (a FIN once all is sent) is a clean one, with commands still buffered.
    # Shut down once: asked again after the proxy's close, the socket is reset (ENOTCONN).
    shut = False
    while flood.sock.recv(1 << 20):
        if not shut and not sender.is_alive():
            flood.sock.shutdown(socket.SHUT_WR)
            shut = True
    sender.join()
    at_hangup = counts().get("pipe", 0)
    flood.close()
    assert wait_until(lambda: proxy.client_connections() == before, 60), proxy.log_tail()
    final = counts()
    with setup.cursor() as cur:
        cur.execute(f"DROP TABLE {table}")
    setup.close()
    print(f"\nhung-up pipeline: {at_hangup} INSERTs had run when the proxy hung up, "
          f"{final.get('pipe', 0)} in the end, of {statements}")  # fmt: skip
    assert final.get("kept") == 1
    assert final.get("pipe", 0) - at_hangup <= AFTER_HANGUP_COMMANDS + 1  # + one in flight


def test_sigterm_stops_the_proxy_during_a_flood(lab: Lab, tmp_path: Path) -> None:
    proxy = start_lab_proxy(lab, tmp_path, limits=LIMITS)
    try:
        flood = threading.Thread(target=ping_flood, args=(proxy, 10_000_000, 30), daemon=True)
        flood.start()
        time.sleep(3)
        assert proxy.proc is not None
        started = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        try:
            code = proxy.proc.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"pyproxy ignored SIGTERM for 20 s during a flood\n{proxy.log_tail()}")
        assert code == 0, proxy.log_tail()
        print(f"stopped {time.monotonic() - started:.1f} s after SIGTERM")
        flood.join(30)
    finally:
        proxy.stop()


def test_user_max_connections(proxy: LabProxy) -> None:
    before = proxy.refused("max_user_connections")
    capped = [_login_capped(proxy) for _ in "abc"]
    with pytest.raises(PermissionError) as refused:
        _login_capped(proxy)
    assert str(refused.value) == (
        "User capped already has more than 'max_user_connections' active connections"
    )
    assert proxy.refused("max_user_connections") == before + 1
    # Nor by COM_CHANGE_USER from another user's session.
    other = mysql.connector.connect(
        host="127.0.0.1", port=proxy.port, user=proxy.user, password=proxy.password, use_pure=True
    )
    with pytest.raises(mysql.connector.Error) as switched:
        other.cmd_change_user(username="capped", password="capped-pass")
    assert switched.value.errno == ErrorCode.ER_TOO_MANY_USER_CONNECTIONS
    other.close()
    capped.pop().close()
    assert wait_until(lambda: _can_login_capped(proxy))
    for client in capped:  # the first ones were never disturbed
        client.send(PING)
        assert client.read_packet().payload[0] == 0x00
        client.close()
    assert proxy.answers()  # other users never counted against it


def _login_capped(proxy: LabProxy) -> RawClient:
    client = RawClient(proxy.port)
    try:
        client.login(str(CAPPED["username"]), str(CAPPED["password"]))
    except PermissionError:
        client.close()
        raise
    return client


def _can_login_capped(proxy: LabProxy) -> bool:
    try:
        _login_capped(proxy).close()
    except PermissionError:
        return False
    return True


def test_client_text_in_logs_is_escaped_and_cut(proxy: LabProxy) -> None:
    forged = "2026-01-01 00:00:00,000 INFO pyproxy: forged line"
    with PoliteClients(proxy, 2) as polite:
        for user in (f"nobody\n{forged}", "x" * 60_000):
            with pytest.raises(pymysql.OperationalError) as denied:
                proxy.connect(user=user, password="wrong", database=None)
            assert denied.value.args[0] == ErrorCode.ER_ACCESS_DENIED_ERROR
        with pytest.raises(pymysql.MySQLError):  # 8 MiB: over the handshake size, cut off
            proxy.connect(user="y" * (8 * MIB), password="wrong", database=None)
    assert_unharmed(proxy, polite)
    lines = proxy.log_text().splitlines()
    assert not [line for line in lines if line.startswith(forged)]
    assert any("nobody\\x0a2026-01-01" in line for line in lines)
    assert max(len(line) for line in lines) < 2000
