"""asyncmy (asyncio driver): connect, execute/fetch, executemany, transactions, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncmy
import pytest
from asyncmy.cursors import DictCursor

if TYPE_CHECKING:
    from tests.support.endpoints import Endpoint


async def _connect(ep: Endpoint, **kwargs: Any) -> asyncmy.Connection:
    options: dict[str, Any] = {"charset": "utf8mb4", "autocommit": True, **kwargs}
    return await asyncmy.connect(
        host=ep.host,
        port=ep.port,
        user=ep.user,
        password=ep.password,
        database=ep.database,
        connect_timeout=10,
        **options,
    )


async def test_connect_execute_fetch(
    proxy_endpoint: Endpoint, new_table: Callable[[], str]
) -> None:
    t = new_table()
    conn = await _connect(proxy_endpoint)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT 1, 'two', NULL, 2.5, CAST(%s AS CHAR)", ("🐬",))
            assert await cur.fetchone() == (1, "two", None, 2.5, "🐬")
            await cur.execute(f"CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
            assert await cur.execute(f"INSERT INTO {t} (v) VALUES (%s), (%s)", (7, 8)) == 2
            first_id = cur.lastrowid
            await cur.execute(f"SELECT id FROM {t} WHERE v = 7")
            assert await cur.fetchone() == (first_id,)
            await cur.execute("SELECT seq FROM seq_1_to_1000")
            assert list(await cur.fetchmany(10)) == [(i,) for i in range(1, 11)]
            rest = await cur.fetchall()
            assert len(rest) == 990
            assert rest[-1] == (1000,)
        async with conn.cursor(DictCursor) as dcur:
            await dcur.execute(f"SELECT v FROM {t} ORDER BY v")
            assert await dcur.fetchall() == [{"v": 7}, {"v": 8}]
        await conn.ping(reconnect=False)
    finally:
        conn.close()


async def test_executemany(proxy_endpoint: Endpoint, new_table: Callable[[], str]) -> None:
    t = new_table()
    rows = [(i, f"name-{i}", None if i % 3 == 0 else i * 1.5) for i in range(500)]
    conn = await _connect(proxy_endpoint)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(20), x DOUBLE)")
            # INSERT ... VALUES is batched into multi-row statements by the driver.
            assert await cur.executemany(f"INSERT INTO {t} VALUES (%s, %s, %s)", rows) == 500
            await cur.executemany(
                f"UPDATE {t} SET name = %s WHERE id = %s", [("first", 0), ("last", 499)]
            )
            await cur.execute(f"SELECT id, name, x FROM {t} ORDER BY id")
            got = await cur.fetchall()
    finally:
        conn.close()
    expected = [list(r) for r in rows]
    expected[0][1], expected[-1][1] = "first", "last"
    assert [list(r) for r in got] == expected


async def test_transaction_commit_and_rollback(
    proxy_endpoint: Endpoint, new_table: Callable[[], str]
) -> None:
    t = new_table()
    conn = await _connect(proxy_endpoint, autocommit=False)
    other = await _connect(proxy_endpoint)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY) ENGINE=InnoDB")
            await conn.begin()
            await cur.execute(f"INSERT INTO {t} VALUES (1), (2)")
            await conn.rollback()
            await conn.begin()
            await cur.execute(f"INSERT INTO {t} VALUES (3)")
            # A second session reads from a replica unless told otherwise; transaction
            # visibility is the writer's business, so it asks there (a pyproxy hint).
            async with other.cursor() as ocur:
                await ocur.execute(f"SELECT /* pyproxy:writer */ COUNT(*) FROM {t}")
                assert await ocur.fetchone() == (0,)
            await conn.commit()
            await cur.execute(f"SELECT id FROM {t}")
            assert list(await cur.fetchall()) == [(3,)]
        async with other.cursor() as ocur:
            await ocur.execute(f"SELECT /* pyproxy:writer */ id FROM {t}")
            assert list(await ocur.fetchall()) == [(3,)]
    finally:
        conn.close()
        other.close()


@pytest.mark.parametrize(
    ("sql", "exc_type", "errno", "sqlstate"),
    [
        ("INSERT INTO {t} VALUES (1)", asyncmy.errors.IntegrityError, 1062, "23000"),
        ("SELECT * FROM {t}_missing", asyncmy.errors.ProgrammingError, 1146, "42S02"),
        ("SELEC 1", asyncmy.errors.ProgrammingError, 1064, "42000"),
    ],
    ids=["duplicate-key", "unknown-table", "syntax"],
)
async def test_error_codes(
    proxy_endpoint: Endpoint,
    new_table: Callable[[], str],
    sql: str,
    exc_type: type[Exception],
    errno: int,
    sqlstate: str,
) -> None:
    t = new_table()
    conn = await _connect(proxy_endpoint)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY)")
            await cur.execute(f"INSERT INTO {t} VALUES (1)")
            with pytest.raises(exc_type) as err:
                await cur.execute(sql.format(t=t))
            assert err.value.args[0] == errno
            assert err.value.sqlstate == sqlstate  # type: ignore[attr-defined]
            await cur.execute("SELECT 'usable'")
            assert await cur.fetchone() == ("usable",)
    finally:
        conn.close()


async def test_server_side_prepared_statement(
    proxy_endpoint: Endpoint, new_table: Callable[[], str]
) -> None:
    t = new_table()
    conn = await _connect(proxy_endpoint)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(20))")
        insert = await conn.prepare(f"INSERT INTO {t} VALUES (?, ?)")
        for row in [(1, "a"), (2, None), (3, "ü🐬")]:
            assert (await insert.execute(row)).affected_rows == 1
        await insert.close()
        select = await conn.prepare(f"SELECT id, v FROM {t} WHERE id >= ? ORDER BY id")
        rows = (await select.execute((2,))).rows
        await select.close()
    finally:
        conn.close()
    assert [tuple(r) for r in rows] == [(2, None), (3, "ü🐬")]
