"""Session state left by CALL, a stored function or a quoted built-in (`GET_LOCK`) stays with
its session (pinned to its backend connection) and never reaches another client, through
the real pyproxy process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from proxy.lab.lab import Lab
from tests.support.proxyproc import LabProxy, lab_proxy
from tests.support.servers import root_rows

IDLE_S = 3.0  # well past the 1 s after which an idle session gives back unpinned connections
PROBE = "SELECT /* pyproxy:writer */ @pv, IS_USED_LOCK('pin_lock') = CONNECTION_ID()"
NO_SUCH_TABLE = 1146


def _writer(lab: Lab) -> str:
    return str(next(r for r in lab.status() if r["read_only"] == "OFF")["node"])


@pytest.fixture(scope="module")
def proxy(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProxy]:
    root = lab.connect_root(_writer(lab))
    with root.cursor() as cur:
        cur.execute(
            "CREATE OR REPLACE PROCEDURE demo_db.pin_state() BEGIN SET @pv = 'hello'; "
            "CREATE TEMPORARY TABLE IF NOT EXISTS pin_tmp (a INT); DO GET_LOCK('pin_lock', 0); "
            "END"
        )
        cur.execute(
            "CREATE OR REPLACE FUNCTION demo_db.pin_f() RETURNS INT NO SQL "
            "BEGIN SET @fv = 'from pin_f'; RETURN 1; END"
        )
    root.close()
    lab.wait_replicated()
    with lab_proxy(lab, tmp_path_factory.mktemp("pins")) as running:
        yield running


def _q(conn: pymysql.Connection, sql: str) -> tuple[Any, ...]:
    with conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
    return tuple(rows[0]) if rows else ()


def _lock_free(lab: Lab, name: str) -> bool:
    return root_rows(lab, _writer(lab), f"SELECT IS_FREE_LOCK('{name}')") == [(1,)]


def _wait_lock_free(lab: Lab, name: str) -> bool:
    deadline = time.monotonic() + 20
    while not _lock_free(lab, name):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_call_state_stays_with_its_session(proxy: LabProxy, lab: Lab) -> None:
    a = proxy.connect()
    _q(a, "CALL pin_state()")  # @pv, a temporary table, a user-level lock
    _q(a, "SELECT 1")
    time.sleep(IDLE_S)
    others = [proxy.connect() for _ in range(3)]
    seen = [_q(b, PROBE) for b in others]
    assert all(row[0] is None and not row[1] for row in seen), seen
    for b in others:
        with pytest.raises(pymysql.err.ProgrammingError) as missing:
            _q(b, "SELECT /* pyproxy:writer */ COUNT(*) FROM pin_tmp")
        assert missing.value.args[0] == NO_SUCH_TABLE
    assert _q(a, PROBE) == ("hello", 1)  # A kept all of it
    assert _q(a, "SELECT COUNT(*) FROM pin_tmp") == (0,)
    for b in others:
        b.close()
    a.close()
    # A gone: its connection is reset before anyone else's use, the lock released.
    assert _wait_lock_free(lab, "pin_lock")


def test_quoted_get_lock_pins(proxy: LabProxy, lab: Lab) -> None:
    a, b = proxy.connect(), proxy.connect()
    assert _q(a, "SELECT `GET_LOCK`('pin_quoted', 0)") == (1,)
    time.sleep(IDLE_S)
    assert _q(b, "SELECT IS_FREE_LOCK('pin_quoted')") == (0,)
    assert _q(b, "SELECT GET_LOCK('pin_quoted', 0)") == (0,)
    assert _q(a, "SELECT IS_USED_LOCK('pin_quoted') = CONNECTION_ID()") == (1,)
    a.close()
    b.close()
    assert _wait_lock_free(lab, "pin_quoted")


def test_stored_function_state_stays_with_its_session(proxy: LabProxy) -> None:
    a = proxy.connect()
    assert _q(a, "SELECT pin_f()") == (1,)
    time.sleep(IDLE_S)
    others = [proxy.connect() for _ in range(3)]
    seen = [_q(b, "SELECT /* pyproxy:writer */ @fv") for b in others]
    assert seen == [(None,)] * 3
    assert _q(a, "SELECT @fv") == ("from pin_f",)
    for b in others:
        b.close()
    a.close()


def test_lock_taken_on_a_replica_by_hint_is_not_inherited(proxy: LabProxy) -> None:
    """A pinning statement a hint sends to a replica pins nothing (only the writer holds
    pins), so its connection goes back to the pool: reset before anyone else uses it."""
    on_replica = "SELECT /* pyproxy:server=replica1 */ "
    a = proxy.connect()
    assert _q(a, on_replica + "GET_LOCK('pin_on_replica', 0)") == (1,)
    time.sleep(IDLE_S)
    b = proxy.connect()
    assert _q(b, on_replica + "IS_USED_LOCK('pin_on_replica') = CONNECTION_ID()") != (1,)
    a.close()
    b.close()
