"""Connection ids as on a direct server: handshake id, SHOW PROCESSLIST, KILL, wait_timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pymysql
import pytest
from pymysql.constants import CLIENT

from proxy.lab.lab import Lab
from proxy.testing import ProxyThread
from tests.support.endpoints import proxy_config

OTHER_USER = ("app_other", "other-pass")  # a second account: KILL across users is refused


@pytest.fixture(scope="module")
def ids_proxy(lab: Lab) -> Iterator[ProxyThread]:
    """A proxy of its own (no other test's sessions in its process list), two users."""
    name, password = OTHER_USER
    for node in lab.status():
        root = lab.connect_root(node["node"])
        with root.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")  # each node gets it, none replicates it
            cur.execute(f"CREATE USER IF NOT EXISTS '{name}'@'%' IDENTIFIED BY '{password}'")
            cur.execute(f"GRANT ALL ON demo_db.* TO '{name}'@'%'")
        root.close()
    users = [
        {"username": lab.accounts.app.username, "password": lab.accounts.app.password},
        {"username": name, "password": password},
    ]
    for user in users:
        user["default_schema"] = "demo_db"
    thread = ProxyThread(proxy_config(lab, users=users)).start()
    try:
        yield thread
    finally:
        thread.stop()


def _connect(proxy: ProxyThread, lab: Lab, other: bool = False, **kw: object) -> pymysql.Connection:
    user, password = OTHER_USER if other else (lab.accounts.app.username, lab.accounts.app.password)
    return pymysql.connect(  # type: ignore[call-overload, no-any-return]
        host="127.0.0.1",
        port=proxy.port,
        user=user,
        password=password,
        database="demo_db",
        connect_timeout=5,
        read_timeout=30,
        **kw,
    )


def _rows(conn: pymysql.Connection, sql: str) -> list[tuple[object, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def _broken(conn: pymysql.Connection) -> int:
    """The error number the connection's next statement gets (it must get one)."""
    with pytest.raises(pymysql.err.OperationalError) as err:
        _rows(conn, "SELECT 1")
    return int(err.value.args[0])


def _ids(conn: pymysql.Connection) -> list[object]:
    return [row[0] for row in _rows(conn, "SHOW PROCESSLIST")]


async def _pooled_with_wait_timeout(proxy: ProxyThread) -> list[str]:
    return [
        f"{conn.server_name} thread {conn.thread_id}"
        for queue in proxy.server.pool._idle.values()
        for conn in queue
        if conn.broken or "wait_timeout" in conn.session.variables
    ]


def test_issue_36_processlist_id_is_the_handshake_id(ids_proxy: ProxyThread, lab: Lab) -> None:
    """PyMySQL's test_issue_36, through pyproxy."""
    killer = _connect(ids_proxy, lab)
    conn = _connect(ids_proxy, lab)
    rows = _rows(conn, "show processlist")
    assert [len(r) for r in rows] == [10] * len(rows)  # MySQL's 8 columns, then the backend's
    kill_id = next(r[0] for r in rows if r[7] == "show processlist")
    assert kill_id == conn.thread_id()
    assert isinstance(kill_id, int) and kill_id >= 1_000_000_000
    mine = next(r for r in rows if r[0] == kill_id)
    assert mine[1:5] == (lab.accounts.app.username, mine[2], "demo_db", "Query")
    assert str(mine[2]).startswith("127.0.0.1:")
    idle = next(r for r in rows if r[0] == killer.thread_id())
    assert idle[4] == "Sleep" and idle[7] is None
    killer.kill(kill_id)  # COM_PROCESS_KILL
    with pytest.raises(pymysql.err.OperationalError):
        _rows(conn, "show tables")
    conn.close()
    deadline = time.monotonic() + 10
    while kill_id in _ids(killer) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert kill_id not in _ids(killer)
    killer.close()


def test_full_processlist_shows_the_whole_statement(ids_proxy: ProxyThread, lab: Lab) -> None:
    conn = _connect(ids_proxy, lab)
    comment = "x" * 150
    for sql, width in (
        (f"SHOW PROCESSLIST /* {comment} */", 100),
        (f"SHOW FULL PROCESSLIST /* {comment} */", None),
    ):
        info = next(r[7] for r in _rows(conn, sql) if r[0] == conn.thread_id())
        assert info == sql[:width]
    conn.close()


def test_kill_the_id_connection_id_returned(ids_proxy: ProxyThread, lab: Lab) -> None:
    """CONNECTION_ID() is the backend's thread id; KILL takes it too, and the session that
    asked keeps that backend connection (CONNECTION_ID() pins), however long it waits."""
    conn1 = _connect(ids_proxy, lab)
    conn2 = _connect(ids_proxy, lab)
    backend_id = _rows(conn1, "SELECT CONNECTION_ID()")[0][0]
    assert backend_id != conn1.thread_id()
    time.sleep(2)  # past the 1 s after which an idle session gives back what is not pinned
    assert _rows(conn1, "SELECT CONNECTION_ID()")[0][0] == backend_id  # stable, as direct
    row = next(r for r in _rows(conn2, "SHOW PROCESSLIST") if r[0] == conn1.thread_id())
    assert row[9] == backend_id
    # The admin's ProxySQL-style table shows the same, for every user.
    admin = pymysql.connect(
        host="127.0.0.1", port=ids_proxy.server.admin.port, user="admin", password="admin"
    )
    sql = (
        "SELECT SessionID, user, server, backend_thread_id, hostgroup FROM stats_mysql_processlist"
    )
    rows = {int(str(r[0])): [str(v) for v in r[1:]] for r in _rows(admin, sql)}  # all text
    admin.close()
    assert rows[conn1.thread_id()] == [lab.accounts.app.username, row[8], str(backend_id), "0"]
    assert conn2.thread_id() in rows
    _rows(conn2, f"KILL {backend_id}")
    assert _broken(conn1) in (2006, 2013)
    # KILL QUERY by the CONNECTION_ID() id interrupts the statement, not the connection.
    conn3 = _connect(ids_proxy, lab)
    backend_id = _rows(conn3, "SELECT CONNECTION_ID()")[0][0]
    result: list[object] = []

    def sleeper() -> None:
        try:
            result.append(_rows(conn3, "SELECT SLEEP(20)")[0][0])
        except pymysql.err.OperationalError as exc:
            result.append(exc.args[0])

    t = threading.Thread(target=sleeper)
    started = time.monotonic()
    t.start()
    time.sleep(0.5)
    _rows(conn2, f"KILL QUERY {backend_id}")
    t.join(15)
    assert time.monotonic() - started < 15
    assert result in ([1], [1317])
    assert _rows(conn3, "SELECT 5") == [(5,)]
    conn3.close()
    conn2.close()


def test_kill_forms_are_parsed_once_and_never_forwarded(ids_proxy: ProxyThread, lab: Lab) -> None:
    killer = _connect(ids_proxy, lab, client_flag=CLIENT.MULTI_STATEMENTS)
    victim = _connect(ids_proxy, lab)
    vid = victim.thread_id()
    refused = {
        "KILL QUERY ID 5": 1235,
        f"KILL USER {lab.accounts.app.username}": 1235,  # a backend would kill everyone's
        f"SELECT 1; KILL {vid}": 1235,
        "KILL 999999": 1094,
        "KILL CONNECTION 12345": 1094,
    }
    for sql, code in refused.items():
        with pytest.raises(pymysql.err.MySQLError) as err:
            _rows(killer, sql)
        assert err.value.args[0] == code, sql
    assert _rows(victim, "SELECT 1") == [(1,)]  # none of them touched it
    # A prepared KILL would reach a backend as one of its own (shared) thread ids.
    with pytest.raises(pymysql.err.MySQLError) as err:
        killer._execute_command(0x16, b"KILL ?")  # COM_STMT_PREPARE
        killer._read_packet()
    assert err.value.args[0] == 1295
    _rows(killer, f"/* why */ KILL HARD QUERY {vid}")  # nothing running: OK, still alive
    assert _rows(victim, "SELECT 2") == [(2,)]
    _rows(killer, f"/* why */ kill soft connection {vid};")
    assert _broken(victim) in (2006, 2013)
    # Killing yourself: ER_CONNECTION_KILLED, then the connection closes.
    with pytest.raises(pymysql.err.MySQLError) as err:
        _rows(killer, f"KILL {killer.thread_id()}")
    assert err.value.args[0] == 1927
    assert _broken(killer) in (2006, 2013)


def test_another_user_cannot_kill_or_see_my_sessions(ids_proxy: ProxyThread, lab: Lab) -> None:
    mine = _connect(ids_proxy, lab)
    backend_id = _rows(mine, "SELECT CONNECTION_ID()")[0][0]
    other = _connect(ids_proxy, lab, other=True)
    assert mine.thread_id() not in _ids(other)
    assert other.thread_id() in _ids(other)
    for sql in (f"KILL {mine.thread_id()}", f"KILL QUERY {mine.thread_id()}", f"KILL {backend_id}"):
        with pytest.raises(pymysql.err.OperationalError) as err:
            _rows(other, sql)
        assert err.value.args[0] == 1095, sql
    with pytest.raises(pymysql.err.OperationalError) as err:
        other.kill(mine.thread_id())
    assert err.value.args[0] == 1095
    assert _rows(mine, "SELECT CONNECTION_ID()") == [(backend_id,)]  # untouched
    mine.close()
    other.close()


def test_connection_gone_away(ids_proxy: ProxyThread, lab: Lab) -> None:
    """PyMySQL's test_connection_gone_away, through pyproxy: the client's wait_timeout
    closes it when idle, as the server would; the proxy's backend connections live on."""
    conn = _connect(ids_proxy, lab)
    cur = conn.cursor()
    cur.execute("SET wait_timeout=1")
    time.sleep(2)
    with pytest.raises(pymysql.OperationalError) as cm:
        cur.execute("SELECT 1+1")
    assert cm.value.args[0] in (2006, 2013, 4031)
    # Every spelling, and the value is the client's (replayed on its backend connections).
    for sql in (
        "SET SESSION wait_timeout = 1",
        "SET @@session.wait_timeout=1",
        "SET @@wait_timeout = 1",
    ):
        conn = _connect(ids_proxy, lab)
        _rows(conn, sql)
        assert _rows(conn, "SELECT @@wait_timeout") == [(1,)]
        time.sleep(2)
        assert _broken(conn) in (2006, 2013, 4031), sql
    # A busy client is not idle: a statement longer than wait_timeout runs to its end.
    conn = _connect(ids_proxy, lab)
    _rows(conn, "SET wait_timeout = 1")
    assert _rows(conn, "SELECT SLEEP(2.5)") == [(0,)]
    assert _rows(conn, "SELECT 3") == [(3,)]
    conn.close()
    # interactive_timeout changes nothing for the current connection (MariaDB neither).
    conn = _connect(ids_proxy, lab, client_flag=CLIENT.INTERACTIVE)
    _rows(conn, "SET SESSION interactive_timeout = 1")
    time.sleep(2)
    assert _rows(conn, "SELECT 4") == [(4,)]
    # pyproxy's pool never keeps a connection carrying a client's short wait_timeout (its
    # server would close it there): the session keeps it, idle past the 1 s after which
    # sessions give back their connections, and it closes with the session.
    conn = _connect(ids_proxy, lab)
    _rows(conn, "SET wait_timeout = 4")
    assert _rows(conn, "SELECT @@wait_timeout") == [(4,)]
    time.sleep(2)
    assert ids_proxy.call(_pooled_with_wait_timeout(ids_proxy)) == []
    assert _rows(conn, "SELECT 7") == [(7,)]
    time.sleep(6)
    assert _broken(conn) in (2006, 2013, 4031)
    assert ids_proxy.call(_pooled_with_wait_timeout(ids_proxy)) == []
    fresh = _connect(ids_proxy, lab)
    assert _rows(fresh, "SELECT @@wait_timeout") == [(28800,)]
    time.sleep(2)
    assert _rows(fresh, "SELECT 6") == [(6,)]
    fresh.close()
    conn.close()
