"""Statements that follow the previous one pin nothing; a write never reaches a replica."""

from __future__ import annotations

import random

import pymysql
import pytest

from tests.support.endpoints import Endpoint

READ_ONLY = 1290  # ER_OPTION_PREVENTS_STATEMENT: the replica refused a write


def _conn(ep: Endpoint) -> pymysql.Connection:
    return ep.connect(read_timeout=30)


@pytest.fixture(scope="module")
def table(proxy_endpoint: Endpoint) -> str:
    conn = _conn(proxy_endpoint)
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS pin_rows (id INT AUTO_INCREMENT PRIMARY KEY, v INT)"
        )
    conn.close()
    return "pin_rows"


@pytest.mark.parametrize(
    "reporter",
    [
        "SELECT ROW_COUNT()",
        "SELECT FOUND_ROWS()",
        "SHOW WARNINGS",
        "SELECT @@warning_count",
        "SELECT @@error_count",
        "SHOW ERRORS",
        "GET DIAGNOSTICS @n = NUMBER",
    ],
)
def test_reporting_statement_then_write(
    proxy_endpoint: Endpoint, table: str, reporter: str
) -> None:
    """A read on a replica, a statement about it (which runs there), then writes: no 1290."""
    conn = _conn(proxy_endpoint)
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {table} LIMIT 1")
        cur.execute(reporter)
        cur.execute(f"INSERT INTO {table} (v) VALUES (1)")
        cur.execute("CREATE TABLE IF NOT EXISTS pin_created (id INT)")
        cur.execute(f"UPDATE {table} SET v = 2 WHERE id = LAST_INSERT_ID()")
    conn.close()


def test_row_count_reports_on_the_previous_statement(proxy_endpoint: Endpoint, table: str) -> None:
    conn = _conn(proxy_endpoint)
    with conn.cursor() as cur:
        cur.execute(f"INSERT INTO {table} (v) VALUES (7), (7), (7)")
        cur.execute("SELECT ROW_COUNT()")
        assert cur.fetchone() == (3,)
        cur.execute(f"SELECT SQL_CALC_FOUND_ROWS id FROM {table} WHERE v = 7 LIMIT 1")
        cur.execute("SELECT FOUND_ROWS()")
        found = cur.fetchone()
        assert found is not None and found[0] >= 3
    conn.close()


STATEMENTS = [
    "SELECT COUNT(*) FROM pin_rows",
    "SELECT @@server_id",
    "SELECT * FROM pin_rows ORDER BY id DESC LIMIT 3",
    "SELECT ROW_COUNT()",
    "SELECT FOUND_ROWS()",
    "SHOW WARNINGS",
    "SHOW ERRORS",
    "SELECT @@warning_count",
    "SELECT @@error_count",
    "SHOW COUNT(*) WARNINGS",
    "INSERT INTO pin_rows (v) VALUES (3)",
    "UPDATE pin_rows SET v = v + 1 WHERE id = LAST_INSERT_ID()",
    "DELETE FROM pin_rows WHERE v > 1000000",
    "SET @v = 5",
    "SELECT @v",
    "CREATE TABLE IF NOT EXISTS pin_created (id INT)",
    "SELECT SQL_CALC_FOUND_ROWS id FROM pin_rows LIMIT 1",
    "SELECT 1 FROM nonexistent_table_for_an_error",
    "SELECT CAST('x' AS UNSIGNED)",  # a warning
]


def test_random_mixes_never_write_to_a_replica(proxy_endpoint: Endpoint, table: str) -> None:
    """Random mixes of reads, writes and the statements that report on the previous one:
    no statement ever gets 1290 (a write sent to a read-only replica)."""
    rng = random.Random(1290)
    refused: list[tuple[int, list[str]]] = []
    for round_ in range(40):
        conn = _conn(proxy_endpoint)
        done: list[str] = []
        with conn.cursor() as cur:
            for sql in rng.choices(STATEMENTS, k=25):
                done.append(sql)
                try:
                    cur.execute(sql)
                    cur.fetchall()
                except pymysql.err.MySQLError as exc:
                    if exc.args[0] == READ_ONLY:
                        refused.append((round_, done[-6:]))
        conn.close()
    assert not refused, f"writes refused as read-only: {refused[:3]}"
