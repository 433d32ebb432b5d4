"""mysql-connector-python (pure Python): text cursor, server-side prepared cursor, COM_ commands."""

from __future__ import annotations

import datetime as dt
import io
import os
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import mysql.connector
import pytest
from mysql.connector.connection import MySQLConnection
from mysql.connector.cursor import MySQLCursorPrepared

from tests.integration.clients._support import unique

if TYPE_CHECKING:
    from tests.support.endpoints import Endpoint


def _connect(ep: Endpoint) -> MySQLConnection:
    conn = ep.connector(charset="utf8mb4", connection_timeout=10)
    assert isinstance(conn, MySQLConnection), "use_pure=True must give the pure-Python protocol"
    return conn


@pytest.fixture
def conn(proxy_endpoint: Endpoint) -> Iterator[MySQLConnection]:
    c = _connect(proxy_endpoint)
    yield c
    c.close()


def _one(conn: MySQLConnection, sql: str) -> tuple[Any, ...]:
    cur = conn.cursor()
    cur.execute(sql)
    row = cur.fetchone()
    cur.close()
    assert row is not None
    return tuple(row)


def test_plain_cursor_text_protocol(conn: MySQLConnection, new_table: Callable[[], str]) -> None:
    t = new_table()
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(30))")
    cur.executemany(f"INSERT INTO {t} (name) VALUES (%s)", [("a",), ("b 🐬",), ("c",)])
    assert cur.rowcount == 3
    cur.execute(f"SELECT name FROM {t} WHERE name <> %s ORDER BY id", ("a",))
    assert cur.fetchall() == [("b 🐬",), ("c",)]
    cur.execute(f"UPDATE {t} SET name = UPPER(name)")
    assert cur.rowcount == 3
    cur.execute("SELECT 1 + 1, 'x', NULL")
    assert cur.fetchone() == (2, "x", None)
    cur.close()


def test_prepared_cursor_reexecuted_with_null_and_big_params(
    conn: MySQLConnection, new_table: Callable[[], str]
) -> None:
    t = new_table()
    setup = conn.cursor()
    setup.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(30), data LONGBLOB)")
    setup.close()
    cur = conn.cursor(prepared=True)
    assert isinstance(cur, MySQLCursorPrepared)
    insert = f"INSERT INTO {t} (id, name, data) VALUES (?, ?, ?)"  # one statement, re-executed
    big = os.urandom(1024 * 1024)
    streamed = os.urandom(300 * 1024)
    for row in [(1, "one", b"\x00\x01"), (2, None, None), (3, "big", big)]:
        cur.execute(insert, row)
        assert cur.rowcount == 1
    # A file-like parameter travels as COM_STMT_SEND_LONG_DATA before COM_STMT_EXECUTE.
    cur.execute(insert, (4, "streamed", io.BytesIO(streamed)))
    select = f"SELECT id, name, data FROM {t} WHERE id = ?"
    got = {}
    for i in (1, 2, 3, 4):
        cur.execute(select, (i,))
        got[i] = cur.fetchall()
    cur.execute(f"SELECT COUNT(*) FROM {t} WHERE name IS NULL AND data IS NULL")
    assert cur.fetchall() == [(1,)]
    cur.execute(f"SELECT id FROM {t} WHERE name <=> ?", (None,))  # a NULL param in a WHERE
    assert cur.fetchall() == [(2,)]
    cur.close()
    assert got[1] == [(1, "one", b"\x00\x01")]
    assert got[2] == [(2, None, None)]
    assert got[3] == [(3, "big", big)]
    assert got[4] == [(4, "streamed", streamed)]


def test_prepared_cursor_binary_protocol_types(
    conn: MySQLConnection, new_table: Callable[[], str]
) -> None:
    t = new_table()
    # No YEAR column: the pure-Python binary row parser (protocol._parse_binary_values) has no
    # YEAR branch and reads its 2-byte integer as a length-encoded string, garbling every
    # later column. That is a client bug, seen against MariaDB directly; PyMySQL covers YEAR.
    columns = {
        "ti": ("TINYINT", -128),
        "iu": ("INT UNSIGNED", 4294967295),
        "bi": ("BIGINT", -(2**63)),
        "biu": ("BIGINT UNSIGNED", 2**64 - 1),
        "dc": ("DECIMAL(20,6)", Decimal("-12345678901234.123456")),
        "f": ("FLOAT", 0.5),
        "d": ("DOUBLE", 2.718281828459045),
        "dte": ("DATE", dt.date(1999, 12, 31)),
        "dtm": ("DATETIME(6)", dt.datetime(2024, 2, 29, 23, 59, 58, 123456)),
        "ts": ("TIMESTAMP NULL", dt.datetime(2030, 1, 2, 3, 4, 5)),
        "tm": ("TIME(6)", dt.timedelta(hours=30, seconds=1, microseconds=5)),
        "vc": ("VARCHAR(40)", "ünïcödé 漢字 🐬"),
        "tx": ("TEXT", "long " * 1000),
        "bl": ("BLOB", bytes(range(256))),
        "en": ("ENUM('x','y')", "y"),
        "nul": ("INT", None),
    }
    setup = conn.cursor()
    cols = ", ".join(f"{name} {sqltype}" for name, (sqltype, _) in columns.items())
    setup.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY, {cols}) DEFAULT CHARSET=utf8mb4")
    setup.close()
    cur = conn.cursor(prepared=True)
    marks = ", ".join("?" * (len(columns) + 1))
    cur.execute(
        f"INSERT INTO {t} (id, {', '.join(columns)}) VALUES ({marks})",
        (1, *(value for _, value in columns.values())),
    )
    cur.execute(f"SELECT {', '.join(columns)} FROM {t} WHERE id = ?", (1,))
    (row,) = cur.fetchall()
    cur.close()
    got = dict(zip(columns, row, strict=True))
    assert got == {name: value for name, (_, value) in columns.items()}


def test_reset_connection_and_reset_session(conn: MySQLConnection) -> None:
    tmp = unique("conn_tmp")
    cur = conn.cursor()
    cur.execute("SET @kept = 1, SESSION sql_mode = 'ANSI_QUOTES'")
    cur.execute(f"CREATE TEMPORARY TABLE {tmp} (i INT)")
    cur.close()
    assert _one(conn, f"SELECT COUNT(*) FROM {tmp}") == (0,)
    assert conn.cmd_reset_connection() is True  # COM_RESET_CONNECTION, not a re-login
    assert _one(conn, "SELECT @kept") == (None,)
    assert "ANSI_QUOTES" not in _one(conn, "SELECT @@SESSION.sql_mode")[0]
    cur = conn.cursor()
    with pytest.raises(mysql.connector.errors.ProgrammingError) as err:
        cur.execute(f"SELECT COUNT(*) FROM {tmp}")  # temporary tables went with the reset
    assert err.value.errno == 1146
    cur.close()
    conn.reset_session(user_variables={"after": "reset"}, session_variables={"wait_timeout": 123})
    assert _one(conn, "SELECT @after, @@SESSION.wait_timeout") == ("reset", 123)


def test_change_user_back_to_same_user(conn: MySQLConnection, proxy_endpoint: Endpoint) -> None:
    ep = proxy_endpoint
    _one(conn, "SELECT @before := 'set'")
    conn.cmd_change_user(username=ep.user, password=ep.password, database=ep.database)
    user, database, marker = _one(conn, "SELECT CURRENT_USER(), DATABASE(), @before")
    assert user.split("@")[0] == ep.user
    assert database == ep.database
    assert marker is None  # COM_CHANGE_USER starts a fresh session
    assert _one(conn, "SELECT 'still works'") == ("still works",)


def test_statistics(conn: MySQLConnection) -> None:
    stats = conn.cmd_statistics()
    assert {"Uptime", "Threads", "Questions", "Open tables"} <= set(stats)
    assert int(stats["Uptime"]) > 0
    assert int(stats["Threads"]) >= 1
    assert _one(conn, "SELECT 1") == (1,)  # the session is in sync after COM_STATISTICS


def test_error_errno_and_sqlstate(conn: MySQLConnection, proxy_endpoint: Endpoint) -> None:
    cur = conn.cursor()
    with pytest.raises(mysql.connector.errors.ProgrammingError) as err:
        cur.execute("SELECT * FROM no_such_table_conn")
    assert (err.value.errno, err.value.sqlstate) == (1146, "42S02")
    assert f"{proxy_endpoint.database}.no_such_table_conn" in err.value.msg
    cur.close()
    prepared = conn.cursor(prepared=True)
    with pytest.raises(mysql.connector.errors.ProgrammingError) as err:
        prepared.execute("SELECT * FROM no_such_table_conn WHERE id = ?", (1,))
    assert (err.value.errno, err.value.sqlstate) == (1146, "42S02")
    prepared.close()
    assert _one(conn, "SELECT 2") == (2,)
