"""The proxy's data path on real servers: auth, limits, faults, KILL, state, pooling."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from pathlib import Path

import mysql.connector
import pymysql
import pytest

from proxy.lab.lab import Lab
from proxy.testing import ProxyThread
from tests.support.endpoints import Endpoint, proxy_config
from tests.support.tls import self_signed


def _connect(ep: Endpoint, **kwargs: object) -> pymysql.Connection:
    params: dict[str, object] = {
        "host": ep.host,
        "port": ep.port,
        "user": ep.user,
        "password": ep.password,
        "database": ep.database,
        "connect_timeout": 5,
        "read_timeout": 30,
    }
    params.update(kwargs)
    return pymysql.connect(**params)  # type: ignore[arg-type]


def _scalar(conn: pymysql.Connection, sql: str) -> object:
    with conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
    return row[0] if row else None


def _pool_is_clean(proxy: ProxyThread) -> None:
    """Every connection the pool counts is alive, and idle ones are really idle."""

    async def check() -> tuple[list[str], dict[str, int]]:
        pool = proxy.server.pool
        problems = []
        in_use: dict[str, int] = {}
        for session in proxy.server.sessions.values():
            for conn in session.attached.values():
                in_use[conn.server_name] = in_use.get(conn.server_name, 0) + 1
                if conn.broken:
                    problems.append(f"session {session.id} holds a broken connection")
        for queue in pool._idle.values():
            for conn in queue:
                if conn.broken:
                    problems.append(f"idle connection to {conn.server_name} is broken")
        counts = {}
        for name in proxy.server.cluster.servers:
            counts[name] = pool.open_count(name) - pool.idle_count(name) - in_use.get(name, 0)
        return problems, counts

    deadline = time.monotonic() + 5
    while True:
        problems, leaks = proxy.call(check())
        if (not problems and not any(leaks.values())) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert problems == []
    assert all(v == 0 for v in leaks.values()), f"connections counted but not held: {leaks}"


def test_wrong_password_is_refused_like_mysql(proxy: ProxyThread, proxy_endpoint: Endpoint) -> None:
    created = sum(s.created for s in proxy.server.pool.stats.values())
    with pytest.raises(pymysql.err.OperationalError) as err:
        _connect(proxy_endpoint, password="wrong")
    assert err.value.args == (
        1045,
        "Access denied for user 'app'@'127.0.0.1' (using password: YES)",
    )
    with pytest.raises(pymysql.err.OperationalError) as err:
        _connect(proxy_endpoint, user="nobody", password="")
    assert err.value.args == (
        1045,
        "Access denied for user 'nobody'@'127.0.0.1' (using password: NO)",
    )
    # No backend connection is opened for a client that failed to authenticate.
    assert sum(s.created for s in proxy.server.pool.stats.values()) == created


def test_unknown_schema_at_login(proxy_endpoint: Endpoint) -> None:
    with pytest.raises(pymysql.err.OperationalError) as err:
        _connect(proxy_endpoint, database="no_such_db")
    assert err.value.args[0] == 1049


def test_basic_round_trip_and_errors(proxy_endpoint: Endpoint) -> None:
    conn = _connect(proxy_endpoint)
    with conn.cursor() as cur:
        cur.execute("SELECT 1, 'héllo ✓', NULL")
        assert cur.fetchone() == (1, "héllo ✓", None)
        with pytest.raises(pymysql.err.ProgrammingError) as err:
            cur.execute("SELECT * FROM no_such_table")
        assert err.value.args[0] == 1146
        cur.execute("SELECT 2")  # the session goes on after an error
        assert cur.fetchone() == (2,)
    conn.ping()
    conn.close()


def test_session_state_does_not_leak_between_clients(proxy_endpoint: Endpoint) -> None:
    a = _connect(proxy_endpoint)
    with a.cursor() as cur:
        cur.execute("SET time_zone = '+05:00'")
        cur.execute("SET SESSION sql_mode = 'ANSI_QUOTES'")
    time.sleep(1.5)  # idle: the proxy gives its backend connection back to the pool
    b = _connect(proxy_endpoint)
    assert _scalar(b, "SELECT @@time_zone") == "SYSTEM"
    assert "ANSI_QUOTES" not in str(_scalar(b, "SELECT @@sql_mode"))
    # ...and a's state follows a to whatever backend connection it gets next.
    assert _scalar(a, "SELECT @@time_zone") == "+05:00"
    assert _scalar(a, "SELECT @@sql_mode") == "ANSI_QUOTES"
    a.close()
    b.close()


def test_use_database_and_charset_survive_multiplexing(proxy_endpoint: Endpoint) -> None:
    conn = _connect(proxy_endpoint, charset="latin1")
    with conn.cursor() as cur:
        cur.execute("USE mysql")
    time.sleep(1.5)
    assert _scalar(conn, "SELECT DATABASE()") == "mysql"
    assert _scalar(conn, "SELECT @@character_set_client") == "latin1"
    conn.close()


def test_user_variables_pin_the_backend(proxy_endpoint: Endpoint) -> None:
    conn = _connect(proxy_endpoint)
    with conn.cursor() as cur:
        cur.execute("SET @answer = 42")
    time.sleep(1.5)  # a pinned session keeps its connection even when idle
    assert _scalar(conn, "SELECT @answer") == 42
    conn.close()


def test_transaction_commit_and_rollback(proxy_endpoint: Endpoint) -> None:
    conn = _connect(proxy_endpoint, autocommit=False)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS tx_probe (id INT PRIMARY KEY, v INT)")
        cur.execute("DELETE FROM tx_probe")
        conn.commit()
        cur.execute("INSERT INTO tx_probe VALUES (1, 1)")
        conn.rollback()
        cur.execute("INSERT INTO tx_probe VALUES (2, 2)")
        conn.commit()
        cur.execute("SELECT id FROM tx_probe")
        assert cur.fetchall() == ((2,),)
        cur.execute("DROP TABLE tx_probe")
    conn.close()


def test_backend_killed_mid_query(proxy: ProxyThread, proxy_endpoint: Endpoint, lab: Lab) -> None:
    victim = _connect(proxy_endpoint)
    bystander = _connect(proxy_endpoint)
    backend_id = int(_scalar(victim, "SELECT CONNECTION_ID()"))  # type: ignore[arg-type]
    writer = next(r["node"] for r in lab.status() if r["read_only"] == "OFF")
    errors: list[BaseException] = []

    def long_query() -> None:
        try:
            _scalar(victim, "SELECT SLEEP(20)")
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=long_query)
    t.start()
    time.sleep(0.5)
    root = lab.connect_root(writer)
    with root.cursor() as cur:
        cur.execute(f"KILL CONNECTION {backend_id}")
    root.close()
    t.join(10)
    assert not t.is_alive()
    assert errors and isinstance(errors[0], pymysql.err.OperationalError)
    assert _scalar(bystander, "SELECT 1") == 1
    bystander.close()
    victim.close()
    _pool_is_clean(proxy)


def _raw_client(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.recv(4096)  # the greeting
    return s


def test_malformed_packets_do_not_hurt_other_clients(
    proxy: ProxyThread, proxy_endpoint: Endpoint
) -> None:
    rng = random.Random(1234)
    healthy = _connect(proxy_endpoint)
    kinds = ["garbage", "truncated", "wrong_length", "bad_command", "oversized", "zero"]
    for i in range(1000):
        kind = kinds[i % len(kinds)]
        s = _raw_client(proxy.port)
        try:
            if kind == "garbage":
                s.sendall(rng.randbytes(rng.randint(1, 300)))
            elif kind == "truncated":
                s.sendall(struct.pack("<I", 50 | (1 << 24))[:3])
            elif kind == "wrong_length":
                s.sendall(struct.pack("<I", 200 | (1 << 24)) + rng.randbytes(20))
            elif kind == "bad_command":
                s.sendall(struct.pack("<I", 3 | (1 << 24)) + bytes([0xEE, 1, 2]))
            elif kind == "oversized":
                s.sendall(struct.pack("<I", 0xFFFFFF | (1 << 24)) + rng.randbytes(64))
            else:
                s.sendall(b"\x00\x00\x00\x01")
        except OSError:
            pass
        finally:
            s.close()
        if i % 200 == 0:
            assert _scalar(healthy, "SELECT 1") == 1
    assert _scalar(healthy, "SELECT 1") == 1
    fresh = _connect(proxy_endpoint)
    assert _scalar(fresh, "SELECT 2") == 2
    fresh.close()
    healthy.close()
    _pool_is_clean(proxy)


def test_garbage_after_login_gets_an_error(proxy_endpoint: Endpoint) -> None:
    conn = _connect(proxy_endpoint)
    sock = conn._sock
    assert sock is not None
    sock.sendall(struct.pack("<I", 3 | (0 << 24)) + bytes([0xEE, 1, 2]))  # unknown command
    header = sock.recv(4)
    payload = sock.recv(struct.unpack("<I", header)[0] & 0xFFFFFF)
    assert payload[0] == 0xFF and struct.unpack("<H", payload[1:3])[0] == 1047
    assert _scalar(conn, "SELECT 3") == 3  # still usable
    conn.close()


def test_kill_query_and_connection_through_the_proxy(proxy_endpoint: Endpoint) -> None:
    victim = _connect(proxy_endpoint)
    killer = _connect(proxy_endpoint)
    victim_id = victim.thread_id()
    result: list[object] = []

    def sleeper() -> None:
        try:
            result.append(_scalar(victim, "SELECT SLEEP(20)"))
        except pymysql.err.OperationalError as exc:
            result.append(exc.args[0])

    t = threading.Thread(target=sleeper)
    started = time.monotonic()
    t.start()
    time.sleep(0.5)
    with killer.cursor() as cur:
        cur.execute(f"KILL QUERY {victim_id}")
    t.join(10)
    assert time.monotonic() - started < 10
    assert result in ([1], [1317])  # SLEEP() returns 1 or "Query execution was interrupted"
    assert _scalar(victim, "SELECT 5") == 5
    with killer.cursor() as cur:
        cur.execute(f"KILL {victim_id}")
        with pytest.raises(pymysql.err.OperationalError) as err:
            cur.execute("KILL 999999")
        assert err.value.args[0] == 1094
    with pytest.raises(pymysql.err.OperationalError):
        _scalar(victim, "SELECT 6")
    killer.close()


def test_load_data_local_infile(proxy_endpoint: Endpoint, tmp_path: Path) -> None:
    data = tmp_path / "rows.csv"
    data.write_text("".join(f"{i},name{i}\n" for i in range(1000)))
    conn = _connect(proxy_endpoint, local_infile=True)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS infile_probe (id INT PRIMARY KEY, name TEXT)")
        cur.execute("DELETE FROM infile_probe")
        cur.execute(
            f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE infile_probe FIELDS TERMINATED BY ','"
        )
        assert cur.rowcount == 1000
        cur.execute("SELECT COUNT(*) FROM infile_probe")
        assert cur.fetchone() == (1000,)
        cur.execute("DROP TABLE infile_probe")
    conn.commit()
    conn.close()


def test_packet_bigger_than_max_allowed_packet(lab: Lab) -> None:
    config = proxy_config(lab, limits={"max_allowed_packet": 1024 * 1024})
    small = ProxyThread(config).start()
    try:
        ep = Endpoint("127.0.0.1", small.port, "app", "app-pass", "demo_db")
        conn = _connect(ep)
        with conn.cursor() as cur, pytest.raises(pymysql.err.OperationalError) as err:
            cur.execute("SELECT %s", ("x" * (2 * 1024 * 1024),))
        assert err.value.args[0] in (1153, 2006, 2013)  # ERR, or the close seen first
        again = _connect(ep)
        assert _scalar(again, "SELECT 1") == 1
        again.close()
    finally:
        small.stop()


def test_too_many_connections_and_idle_timeout(lab: Lab) -> None:
    config = proxy_config(lab, limits={"max_client_connections": 2, "client_idle_timeout_s": 1.5})
    limited = ProxyThread(config).start()
    try:
        ep = Endpoint("127.0.0.1", limited.port, "app", "app-pass", "demo_db")
        a, b = _connect(ep), _connect(ep)
        with pytest.raises(pymysql.err.OperationalError) as err:
            _connect(ep)
        assert err.value.args == (1040, "Too many connections")
        time.sleep(3.5)  # both idle past the timeout: the proxy closed them
        with pytest.raises(pymysql.err.OperationalError):
            _scalar(a, "SELECT 1")
        b.close()
        c = _connect(ep)
        assert _scalar(c, "SELECT 1") == 1
        c.close()
    finally:
        limited.stop()


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


@pytest.mark.parametrize("plugin", ["mysql_native_password", "caching_sha2_password"])
def test_tls_and_auth_plugins(lab: Lab, tls_files: tuple[Path, Path], plugin: str) -> None:
    cert, key = tls_files
    config = proxy_config(
        lab, frontend_tls={"cert": str(cert), "key": str(key)}, auth_plugin=plugin
    )
    server = ProxyThread(config).start()
    try:
        ep = Endpoint("127.0.0.1", server.port, "app", "app-pass", "demo_db")
        tls = _connect(ep, ssl={"check_hostname": False, "verify_mode": 0})
        cipher = _scalar(tls, "SELECT 1")
        assert cipher == 1
        assert tls._sock is not None and tls._sock.version() is not None  # type: ignore[attr-defined]
        tls.close()
        plain = _connect(ep)  # TLS stays optional
        assert _scalar(plain, "SELECT 1") == 1
        plain.close()
        with pytest.raises(pymysql.err.OperationalError) as err:
            _connect(ep, password="bad")
        assert err.value.args[0] == 1045
    finally:
        server.stop()


@pytest.mark.parametrize("client_plugin", ["mysql_native_password", "caching_sha2_password"])
@pytest.mark.parametrize("plugin", ["mysql_native_password", "caching_sha2_password"])
def test_change_user_auth_plugins(lab: Lab, plugin: str, client_plugin: str) -> None:
    """COM_CHANGE_USER is authenticated like a login, whichever plugin the proxy announces and
    the client uses; a wrong password gets 1045 and the connection is closed."""
    server = ProxyThread(proxy_config(lab, auth_plugin=plugin)).start()
    try:
        acct = lab.accounts.app
        conn = mysql.connector.connect(
            host="127.0.0.1",
            port=server.port,
            user=acct.username,
            password=acct.password,
            database="demo_db",
            auth_plugin=client_plugin,
            use_pure=True,
            connection_timeout=10,
        )
        cur = conn.cursor()
        cur.execute("SET @v = 1")
        conn.cmd_change_user(username=acct.username, password=acct.password, database="demo_db")
        cur = conn.cursor()
        cur.execute("SELECT @v, DATABASE(), CURRENT_USER()")
        assert cur.fetchone() == (None, "demo_db", f"{acct.username}@%")
        with pytest.raises(mysql.connector.Error) as refused:
            conn.cmd_change_user(username=acct.username, password="wrong", database="demo_db")
        assert refused.value.errno == 1045
        assert refused.value.msg == (
            f"Access denied for user '{acct.username}'@'127.0.0.1' (using password: YES)"
        )
        with pytest.raises(mysql.connector.Error):
            conn.cmd_query("SELECT 1")
    finally:
        server.stop()


def test_change_user_and_reset_connection(proxy_endpoint: Endpoint) -> None:
    conn = _connect(proxy_endpoint)
    with conn.cursor() as cur:
        cur.execute("SET @v = 1")
        cur.execute("SET time_zone = '+02:00'")
    conn._execute_command(31, b"")  # COM_RESET_CONNECTION (PyMySQL has no API for it)
    conn._read_ok_packet()
    assert _scalar(conn, "SELECT @v") is None
    assert _scalar(conn, "SELECT @@time_zone") == "SYSTEM"
    conn.close()


def _read_packets_until_eof(conn: pymysql.Connection) -> list[bytes]:
    packets = []
    while True:
        packet = conn._read_packet()
        packets.append(packet._data)
        if packet.is_eof_packet() or packet.is_error_packet():
            return packets


def test_field_list_set_option_and_process_kill(proxy_endpoint: Endpoint) -> None:
    conn = _connect(proxy_endpoint)
    # COM_FIELD_LIST (what the mysql CLI's auto-rehash sends): column definitions, then EOF.
    conn._execute_command(0x04, b"products\0")
    packets = _read_packets_until_eof(conn)
    assert len(packets) == 8 and b"stock_quantity" in b"".join(packets)
    # COM_SET_OPTION turns multi-statements on for a client that connected without them.
    conn._execute_command(0x1B, b"\x00\x00")
    conn._read_packet()
    with conn.cursor() as cur:
        cur.execute("SELECT 1; SELECT 2")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset() and cur.fetchall() == ((2,),)
    # COM_PROCESS_KILL (PyMySQL's kill()) of another session of the same user.
    victim = _connect(proxy_endpoint)
    conn.kill(victim.thread_id())
    with pytest.raises(pymysql.err.OperationalError):
        _scalar(victim, "SELECT 1")
    assert _scalar(conn, "SELECT 9") == 9
    conn.close()


def test_client_gone_mid_result(proxy: ProxyThread, proxy_endpoint: Endpoint) -> None:
    for _ in range(3):
        conn = _connect(proxy_endpoint)
        sock = conn._sock
        assert sock is not None
        query = b"SELECT seq, REPEAT('x', 500) FROM seq_1_to_200000"
        sock.sendall(struct.pack("<I", len(query) + 1) + b"\x03" + query)
        sock.recv(1000)  # the first bytes of the result...
        sock.close()  # ...and the client is gone
    other = _connect(proxy_endpoint)
    assert _scalar(other, "SELECT COUNT(*) FROM seq_1_to_1000") == 1000
    other.close()
    _pool_is_clean(proxy)


def test_connections_of_an_older_topology_are_not_repooled(
    proxy: ProxyThread, proxy_endpoint: Endpoint
) -> None:
    """A connection in use when its server was dropped (down, removed, moved, demoted) is
    closed when given back, never handed to another session."""
    conn = _connect(proxy_endpoint, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT 1 FOR UPDATE")  # a transaction: the writer connection stays held

    session_id = conn.thread_id()

    async def held() -> list[object]:
        session = proxy.server.sessions[session_id]
        return [c for c in session.attached.values() if c.in_transaction]

    async def drop(name: str) -> None:
        proxy.server.pool.drop_server(name)

    backend = proxy.call(held())
    assert len(backend) == 1
    old = backend[0]
    proxy.call(drop(old.server_name))  # type: ignore[attr-defined]
    with conn.cursor() as cur:
        cur.execute("COMMIT")
    conn.close()
    deadline = time.monotonic() + 5
    while old.state.value != "closed" and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.05)
    assert old.state.value == "closed"  # type: ignore[attr-defined]
    pooled = [c for q in proxy.server.pool._idle.values() for c in q]
    assert old not in pooled
    _pool_is_clean(proxy)
