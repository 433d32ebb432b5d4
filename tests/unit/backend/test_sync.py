"""SessionState (what pyproxy can tell of a session's sql_mode) and sync_steps."""

from __future__ import annotations

import pytest

from proxy.backend.sync import (
    SessionState,
    Step,
    StepKind,
    gtid_tracking_sql,
    in_sync,
    set_names_sql,
    sync_steps,
)


@pytest.mark.parametrize(
    ("variables", "escapes"),
    [
        ({}, None),  # the server's default sql_mode: not known here
        ({"sql_mode": "SET sql_mode='NO_BACKSLASH_ESCAPES'"}, False),
        ({"sql_mode": 'SET SESSION sql_mode = "STRICT_TRANS_TABLES,ANSI"'}, True),
        ({"sql_mode,time_zone": "SET @@session.sql_mode='', time_zone='+00:00'"}, True),
        ({"sql_mode": "SET sql_mode=CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')"}, None),
        ({"sql_mode": "SET sql_mode=REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', '')"}, None),
        ({"sql_mode": "SET sql_mode=DEFAULT"}, None),
        ({"time_zone": "SET time_zone='+00:00'"}, None),
    ],
)
def test_backslash_escapes(variables: dict[str, str], escapes: bool | None) -> None:
    assert SessionState(variables=variables).backslash_escapes() is escapes


# --------------------------------------------------------------------------- sync_steps


def _q(sql: str) -> Step:
    return Step(StepKind.QUERY, sql)


def test_in_sync_needs_nothing() -> None:
    state = SessionState(schema="db", variables={"time_zone": "SET time_zone='+00:00'"})
    assert sync_steps(state, state.copy(), mariadb=True) == []
    # No schema wanted: whatever the connection has is fine.
    assert sync_steps(SessionState(), SessionState(schema="other"), mariadb=True) == []


@pytest.mark.parametrize(
    ("want", "have"),
    [
        (SessionState(schema="db"), SessionState(schema="db")),
        (SessionState(), SessionState(schema="other")),
        (SessionState(schema="db"), SessionState(schema="other")),
        (SessionState(schema="db"), SessionState(schema="db", tainted=True)),
        (SessionState(autocommit=False), SessionState()),
        (SessionState(multi_statements=False), SessionState()),
        (SessionState(collation=46), SessionState()),
        (
            SessionState(collation=8, variables={"names": "SET NAMES latin1"}),
            SessionState(collation=45, variables={"names": "SET NAMES latin1"}),
        ),
        (SessionState(variables={"sql_mode": "SET sql_mode=''"}), SessionState()),
        (SessionState(), SessionState(variables={"sql_mode": "SET sql_mode=''"})),
    ],
)
def test_in_sync_is_sync_steps_returning_nothing(want: SessionState, have: SessionState) -> None:
    """ready_backend's per-statement check agrees with the steps backend_for would run."""
    assert in_sync(want, have) == (sync_steps(want, have, mariadb=True) == [])


def test_fresh_connection_gets_everything_in_order() -> None:
    want = SessionState(
        schema="shop",
        collation=46,
        autocommit=False,
        multi_statements=True,
        variables={"time_zone": "SET time_zone='+02:00'", "sql_mode": "SET sql_mode=''"},
    )
    assert sync_steps(want, SessionState(), mariadb=True) == [
        Step(StepKind.INIT_DB, "shop"),
        Step(StepKind.SET_OPTION, "on"),
        _q("SET NAMES utf8mb4 COLLATE utf8mb4_bin"),
        _q("SET time_zone='+02:00'"),
        _q("SET sql_mode=''"),
        _q("SET autocommit=0"),
    ]


def test_only_the_differences_are_replayed() -> None:
    have = SessionState(schema="a", variables={"time_zone": "SET time_zone='+00:00'"})
    want = have.copy()
    want.variables["sql_mode"] = "SET sql_mode=''"
    want.multi_statements = False
    assert sync_steps(want, have, mariadb=True) == [_q("SET sql_mode=''")]
    want.autocommit = False
    assert sync_steps(want, have, mariadb=True)[-1] == _q("SET autocommit=0")


@pytest.mark.parametrize(
    "have_vars",
    [
        {"time_zone": "SET time_zone='+00:00'"},  # left by an earlier session
        {"sql_mode": "SET sql_mode='ANSI'"},  # same variable, another value
    ],
)
def test_stale_variable_resets_and_replays(have_vars: dict[str, str]) -> None:
    have = SessionState(schema="db", multi_statements=True, variables=have_vars)
    want_vars = {"sql_mode": "SET sql_mode=''"}
    want = SessionState(schema="db", multi_statements=True, variables=want_vars)
    assert sync_steps(want, have, mariadb=True) == [
        Step(StepKind.RESET),
        # The reset keeps schema and multi-statements but puts the charset back to defaults.
        _q("SET NAMES utf8mb4 COLLATE utf8mb4_general_ci"),
        _q("SET sql_mode=''"),
    ]


def test_tainted_connection_is_reset() -> None:
    have = SessionState(schema="db", tainted=True)
    steps = sync_steps(SessionState(schema="db"), have, mariadb=False)
    assert steps[0] == Step(StepKind.RESET)
    assert Step(StepKind.INIT_DB, "db") not in steps  # a reset keeps the schema


def test_set_names_by_the_client_replaces_the_handshake_collation() -> None:
    want = SessionState(collation=8, variables={"names": "SET NAMES latin1"})
    have = SessionState(collation=45, variables={"names": "SET NAMES latin1"})
    assert sync_steps(want, have, mariadb=True) == []
    assert sync_steps(want, SessionState(), mariadb=True) == [_q("SET NAMES latin1")]


def test_multi_statements_off() -> None:
    want = SessionState(multi_statements=False)
    have = SessionState(multi_statements=True)
    assert sync_steps(want, have, mariadb=True) == [Step(StepKind.SET_OPTION, "off")]


@pytest.mark.parametrize(
    ("collation", "mariadb", "sql"),
    [
        (255, True, "SET NAMES utf8mb4"),  # MariaDB before 11.4 lacks utf8mb4_0900_ai_ci
        (255, False, "SET NAMES utf8mb4 COLLATE utf8mb4_0900_ai_ci"),
        (8, True, "SET NAMES latin1 COLLATE latin1_swedish_ci"),
        (999, True, "SET NAMES utf8mb4"),  # unknown id: the default character set
    ],
)
def test_set_names_sql(collation: int, mariadb: bool, sql: str) -> None:
    assert set_names_sql(collation, mariadb) == sql
    assert sync_steps(SessionState(collation=collation), SessionState(), mariadb) == [_q(sql)]


def test_copy_is_independent() -> None:
    state = SessionState(schema="db", variables={"a": "SET @@a=1"}, tainted=True)
    dup = state.copy()
    dup.variables["b"] = "SET @@b=2"
    assert state.variables == {"a": "SET @@a=1"}
    assert not dup.tainted  # a copy is the wanted state, never a leftover


def test_gtid_tracking_asked_of_mysql_only() -> None:
    # MySQL reports a commit's GTID only when the session asks; MariaDB's last_gtid tracking
    # is the server's configuration; without CLIENT_SESSION_TRACK no OK carries tracking.
    assert gtid_tracking_sql(False, True) == "SET SESSION session_track_gtids = OWN_GTID"
    assert gtid_tracking_sql(True, True) is None
    assert gtid_tracking_sql(False, False) is None
