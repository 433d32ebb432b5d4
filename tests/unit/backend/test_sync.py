"""SessionState: what pyproxy can tell of a session's sql_mode."""

from __future__ import annotations

import pytest

from proxy.backend.sync import SessionState


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
