"""PyMySQL through the endpoint: column types, utf8mb4, 20 MiB BLOBs, errors, sessions, CALL."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pymysql
import pytest
from pymysql.constants import CLIENT

from tests.integration.clients._support import connect, unique

if TYPE_CHECKING:
    from tests.support.endpoints import Endpoint

    Conn = pymysql.Connection[Any]

# column -> (SQL type, value sent, value expected back)
COLUMNS: dict[str, tuple[str, Any, Any]] = {
    "ti": ("TINYINT", -128, -128),
    "tiu": ("TINYINT UNSIGNED", 255, 255),
    "si": ("SMALLINT", -32768, -32768),
    "siu": ("SMALLINT UNSIGNED", 65535, 65535),
    "mi": ("MEDIUMINT", -8388608, -8388608),
    "miu": ("MEDIUMINT UNSIGNED", 16777215, 16777215),
    "i": ("INT", -2147483648, -2147483648),
    "iu": ("INT UNSIGNED", 4294967295, 4294967295),
    "bi": ("BIGINT", -(2**63), -(2**63)),
    "biu": ("BIGINT UNSIGNED", 2**64 - 1, 2**64 - 1),
    "dc": (
        "DECIMAL(30,10)",
        Decimal("-12345678901234567890.0123456789"),
        Decimal("-12345678901234567890.0123456789"),
    ),
    "f": ("FLOAT", 1.5, 1.5),
    "d": ("DOUBLE", 3.141592653589793, 3.141592653589793),
    "bit": ("BIT(10)", b"\x02\x05", b"\x02\x05"),
    "dte": ("DATE", dt.date(2024, 2, 29), dt.date(2024, 2, 29)),
    "dtm": (
        "DATETIME(6)",
        dt.datetime(2024, 2, 29, 23, 59, 58, 123456),
        dt.datetime(2024, 2, 29, 23, 59, 58, 123456),
    ),
    "ts": ("TIMESTAMP NULL", dt.datetime(2030, 1, 2, 3, 4, 5), dt.datetime(2030, 1, 2, 3, 4, 5)),
    "tm": (
        "TIME",
        dt.timedelta(hours=25, minutes=3, seconds=4),
        dt.timedelta(hours=25, minutes=3, seconds=4),
    ),
    "tm6": (
        "TIME(6)",
        "-01:02:03.456789",
        -dt.timedelta(hours=1, minutes=2, seconds=3, microseconds=456789),
    ),
    "yr": ("YEAR", 2024, 2024),
    "ch": ("CHAR(10)", "abc", "abc"),
    "vc": ("VARCHAR(100)", "héllo wörld", "héllo wörld"),
    "tx": ("TEXT", "ü" * 30000, "ü" * 30000),
    "bl": ("BLOB", bytes(range(256)) * 40, bytes(range(256)) * 40),
    "en": ("ENUM('small','medium','large')", "medium", "medium"),
    "st": ("SET('read','write','admin')", "read,admin", {"read", "admin"}),
    "js": (
        "JSON",
        json.dumps({"a": [1, 2, {"b": None}], "s": "🐬"}),
        {"a": [1, 2, {"b": None}], "s": "🐬"},
    ),
    "bn": ("BINARY(4)", b"\x00\x01", b"\x00\x01\x00\x00"),
    "vb": ("VARBINARY(10)", b"\x00\xff\x00", b"\x00\xff\x00"),
}


@pytest.fixture
def conn(proxy_endpoint: Endpoint) -> Iterator[Conn]:
    c = connect(proxy_endpoint)
    yield c
    c.close()


def _normalize(column: str, value: Any) -> Any:
    if column == "st" and isinstance(value, str):
        return set(value.split(","))
    if column == "js" and value is not None:
        return json.loads(value)
    return value


def test_every_column_type_round_trips(conn: Conn, new_table: Callable[[], str]) -> None:
    t = new_table()
    names = list(COLUMNS)
    with conn.cursor() as cur:
        cols = ", ".join(f"{name} {sqltype}" for name, (sqltype, _, _) in COLUMNS.items())
        cur.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY, {cols}) DEFAULT CHARSET=utf8mb4")
        marks = ", ".join(["%s"] * (len(names) + 1))
        insert = f"INSERT INTO {t} (id, {', '.join(names)}) VALUES ({marks})"
        cur.execute(insert, [1, *(sent for _, sent, _ in COLUMNS.values())])
        cur.execute(insert, [2, *([None] * len(names))])
        cur.execute(f"SELECT {', '.join(names)} FROM {t} ORDER BY id")
        full, nulls = cur.fetchall()
    got = {name: _normalize(name, value) for name, value in zip(names, full, strict=True)}
    assert got == {name: expected for name, (_, _, expected) in COLUMNS.items()}
    assert nulls == (None,) * len(names)


def test_utf8mb4_emoji_and_cjk(conn: Conn, new_table: Callable[[], str]) -> None:
    t = new_table()
    samples = ["🐬🚀👩‍💻", "漢字かなカナ한국어", "mixed ünïcödé 😀 中文"]
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY, s VARCHAR(50)) CHARSET=utf8mb4")
        cur.executemany(f"INSERT INTO {t} VALUES (%s, %s)", list(enumerate(samples)))
        cur.execute(f"SELECT s, CHAR_LENGTH(s), LENGTH(s) FROM {t} ORDER BY id")
        rows = cur.fetchall()
        cur.execute(f"SELECT id FROM {t} WHERE s = %s", (samples[1],))
        found = cur.fetchall()
        cur.execute("SELECT %s, HEX(%s)", ("🐬", "🐬"))
        echoed = cur.fetchone()
    assert rows == tuple((s, len(s), len(s.encode())) for s in samples)
    assert found == ((1,),)
    assert echoed == ("🐬", "F09F90AC")


def test_twenty_mib_blob_round_trip(proxy_endpoint: Endpoint, new_table: Callable[[], str]) -> None:
    t = new_table()
    data = os.urandom(20 * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    # The statement is > 16 MiB, so it travels as several protocol packets each way.
    big = connect(proxy_endpoint, max_allowed_packet=64 * 1024 * 1024)
    try:
        with big.cursor() as cur:
            cur.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY, b LONGBLOB)")
            cur.execute(f"INSERT INTO {t} VALUES (1, %s)", (data,))
            cur.execute(f"SELECT LENGTH(b), SHA2(b, 256) FROM {t} WHERE id = 1")
            assert cur.fetchone() == (len(data), digest)
            cur.execute(f"SELECT b FROM {t} WHERE id = 1")
            (back,) = cur.fetchone()
    finally:
        big.close()
    assert len(back) == len(data)
    assert hashlib.sha256(back).hexdigest() == digest


@pytest.mark.parametrize(
    ("sql", "exc_type", "errno", "sqlstate", "message"),
    [
        (
            "INSERT INTO {t} VALUES (1)",
            pymysql.err.IntegrityError,
            1062,
            "23000",
            "Duplicate entry '1' for key 'PRIMARY'",
        ),
        (
            "SELECT * FROM {missing}",
            pymysql.err.ProgrammingError,
            1146,
            "42S02",
            "Table '{db}.{missing}' doesn't exist",
        ),
        (
            "SELEC 1",
            pymysql.err.ProgrammingError,
            1064,
            "42000",
            "You have an error in your SQL syntax",
        ),
    ],
    ids=["duplicate-key", "unknown-table", "syntax"],
)
def test_error_errno_sqlstate_message(
    conn: Conn,
    new_table: Callable[[], str],
    proxy_endpoint: Endpoint,
    sql: str,
    exc_type: type[pymysql.err.Error],
    errno: int,
    sqlstate: str,
    message: str,
) -> None:
    t, missing = new_table(), unique("no_such_table")
    names = {"t": t, "missing": missing, "db": proxy_endpoint.database}
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY)")
        cur.execute(f"INSERT INTO {t} VALUES (1)")
        with pytest.raises(exc_type) as err:
            cur.execute(sql.format(**names))
        assert err.value.args[0] == errno
        assert err.value.sqlstate == sqlstate
        assert message.format(**names) in err.value.args[1]
        # The session is still usable after the error.
        cur.execute(f"SELECT COUNT(*) FROM {t}")
        assert cur.fetchone() == (1,)


def test_warnings_in_non_strict_mode(conn: Conn, new_table: Callable[[], str]) -> None:
    t = new_table()
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute(f"CREATE TABLE {t} (v VARCHAR(3))")
        affected = cur.execute(f"INSERT INTO {t} VALUES (%s), (%s), (%s)", ("abcdef", "xy", "1234"))
        assert affected == 3
        assert cur.warning_count == 2
        warnings = conn.show_warnings()
        cur.execute(f"SELECT v FROM {t}")
        assert sorted(r[0] for r in cur.fetchall()) == ["123", "abc", "xy"]
    assert [(level, code) for level, code, _ in warnings] == [("Warning", 1265)] * 2
    assert "Data truncated for column 'v' at row 1" in warnings[0][2]


def test_affected_rows_and_last_insert_id(conn: Conn, new_table: Callable[[], str]) -> None:
    t = new_table()
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, n INT)")
        cur.execute(f"INSERT INTO {t} (n) VALUES (10)")
        first = cur.lastrowid
        assert cur.rowcount == 1
        assert first > 0
        # A multi-row INSERT reports the id of its FIRST row (auto_increment_increment may
        # be > 1 on a multi-master lab, so compare with what the table holds).
        cur.execute(f"INSERT INTO {t} (n) VALUES (20), (30), (40)")
        assert cur.rowcount == 3
        multi = cur.lastrowid
        cur.execute(f"SELECT id FROM {t} WHERE n = 20")
        assert cur.fetchone() == (multi,)
        assert multi > first
        cur.execute("SELECT LAST_INSERT_ID()")
        assert cur.fetchone() == (multi,)
        assert cur.execute(f"UPDATE {t} SET n = n + 1 WHERE n >= 20") == 3
        assert cur.rowcount == 3
        assert cur.execute(f"UPDATE {t} SET n = n WHERE n >= 20") == 0  # matched, not changed
        assert cur.execute(f"DELETE FROM {t} WHERE n > 30") == 2
        cur.execute(f"SELECT id, n FROM {t}")
        assert cur.rowcount == 2


def test_transactions_commit_and_rollback(
    conn: Conn, proxy_endpoint: Endpoint, new_table: Callable[[], str]
) -> None:
    t = new_table()
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=InnoDB")
    other = connect(proxy_endpoint)
    try:
        conn.begin()
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {t} VALUES (1, 'gone'), (2, 'gone')")
            cur.execute(f"SELECT COUNT(*) FROM {t}")
            assert cur.fetchone() == (2,)
        conn.rollback()
        conn.begin()
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {t} VALUES (3, 'kept')")
        # A second session reads from a replica unless told otherwise; the writer is where
        # transaction visibility is decided, so it asks there (pyproxy's routing hint).
        with other.cursor() as cur:  # uncommitted: invisible to a second session
            cur.execute(f"SELECT /* pyproxy:writer */ COUNT(*) FROM {t}")
            assert cur.fetchone() == (0,)
        conn.commit()
        with conn.cursor() as cur:
            cur.execute(f"SELECT id, v FROM {t}")
            assert cur.fetchall() == ((3, "kept"),)
        with other.cursor() as cur:
            cur.execute(f"SELECT /* pyproxy:writer */ id, v FROM {t}")
            assert cur.fetchall() == ((3, "kept"),)
    finally:
        other.close()


def test_multi_statements_and_nextset(
    proxy_endpoint: Endpoint, new_table: Callable[[], str]
) -> None:
    t = new_table()
    multi = connect(proxy_endpoint, client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        with multi.cursor() as cur:
            cur.execute(
                f"CREATE TABLE {t} (id INT PRIMARY KEY);"
                f"INSERT INTO {t} VALUES (1), (2), (3);"
                f"SELECT id FROM {t} ORDER BY id;"
                "SELECT 'x' AS a, 'y' AS b;"
                f"DELETE FROM {t} WHERE id = 2"
            )
            sets: list[tuple[int, Any]] = []
            while True:
                sets.append((cur.rowcount, tuple(cur.fetchall())))
                if not cur.nextset():
                    break
            cur.execute("SELECT 42")  # the connection is back in sync afterwards
            assert cur.fetchone() == (42,)
    finally:
        multi.close()
    assert sets == [(0, ()), (3, ()), (3, ((1,), (2,), (3,))), (1, (("x", "y"),)), (1, ())]


def test_ping_and_select_db(conn: Conn, proxy_endpoint: Endpoint) -> None:
    conn.ping(reconnect=False)
    with conn.cursor() as cur:
        cur.execute("SET @marker = 'same-session'")
    conn.select_db("information_schema")
    with conn.cursor() as cur:
        cur.execute("SELECT DATABASE(), @marker")
        assert cur.fetchone() == ("information_schema", "same-session")
    conn.select_db(proxy_endpoint.database)
    conn.ping(reconnect=False)
    with conn.cursor() as cur:
        cur.execute("SELECT DATABASE(), @marker")
        assert cur.fetchone() == (proxy_endpoint.database, "same-session")


def test_stored_procedure_with_several_result_sets(
    conn: Conn, new_table: Callable[[], str]
) -> None:
    t = new_table()
    proc = unique("pymysql_proc")
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(10))")
        cur.execute(f"INSERT INTO {t} VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        cur.execute(
            f"CREATE PROCEDURE {proc}(IN lo INT, OUT total INT)\n"
            "BEGIN\n"
            f"  SELECT id, v FROM {t} WHERE id >= lo ORDER BY id;\n"
            f"  SELECT COUNT(*) AS n FROM {t};\n"
            f"  SELECT SUM(id) INTO total FROM {t};\n"
            "END"
        )
        try:
            cur.callproc(proc, (2, 0))
            first = cur.fetchall()
            assert cur.nextset()
            second = cur.fetchall()
            while cur.nextset():  # the CALL's own final OK result
                pass
            cur.execute(f"SELECT @_{proc}_1")  # callproc's OUT parameter
            total = cur.fetchone()
            cur.execute(f"CALL {proc}(3, @t)")  # plain CALL text through execute()
            plain = cur.fetchall()
            while cur.nextset():
                pass
            cur.execute("SELECT @t")
            plain_total = cur.fetchone()
        finally:
            cur.execute(f"DROP PROCEDURE IF EXISTS {proc}")
    assert first == ((2, "b"), (3, "c"))
    assert second == ((3,),)
    assert total == (6,)
    assert plain == ((3, "c"),)
    assert plain_total == (6,)
