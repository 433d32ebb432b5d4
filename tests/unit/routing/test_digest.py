"""Digests shown in statistics never carry a literal, whatever the session's sql_mode."""

from __future__ import annotations

import random

import pytest

from proxy.routing.digest import compute_digest, reported_digest


def _literal_positions(sql: str, escapes: bool) -> set[int]:
    """Positions inside a string literal, by a plain character loop (the reference)."""
    inside: set[int] = set()
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "#":
            while i < n and sql[i] != "\n":
                i += 1
        elif c in "'\"":
            i += 1
            while i < n:
                escaped = escapes and sql[i] == "\\"
                if i + 1 < n and (escaped or sql[i] == c == sql[i + 1]):
                    inside |= {i, i + 1}
                    i += 2
                elif sql[i] == c:
                    break
                else:
                    inside.add(i)
                    i += 1
        i += 1
    return inside


_PIECES = ["select ", " ", ",", "'", '"', "\\", "W", "W", "=", "a", "#", "\n", "''", ";"]


def _cases(seed: int, count: int) -> list[str]:
    """Random texts of quotes, backslashes, comments and W placeholders for secrets."""
    rng = random.Random(seed)
    return [
        "select " + "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 24)))
        for _ in range(count)
    ]


def _mark(i: int) -> str:
    """A word unique to position i: stands for a secret."""
    return "zq" + "".join(chr(97 + int(d)) for d in str(i)) + "x"


def _with_marks(template: str, literal: set[int]) -> tuple[str, list[str]]:
    """The text with each W inside a string (for `literal`) made a unique secret word, and
    the other Ws a plain word; and the secrets."""
    out: list[str] = []
    secrets: list[str] = []
    for i, ch in enumerate(template):
        if ch == "W" and i in literal:
            secrets.append(_mark(i))
            out.append(secrets[-1])
        else:
            out.append("b" if ch == "W" else ch)
    return "".join(out), secrets


@pytest.mark.parametrize("mode", [True, False, None])
def test_no_literal_in_reported_digest(mode: bool | None) -> None:
    """mode: the session's reading (with backslash escapes, without, or unknown: both)."""
    checked = 0
    for template in _cases(13, 4000):
        readings = (True, False) if mode is None else (mode,)
        literal = set().union(*(_literal_positions(template, r) for r in readings))
        sql, secrets = _with_marks(template, literal)
        if not secrets:
            continue
        checked += 1
        text = reported_digest(sql, compute_digest(sql), mode).text
        assert not [s for s in secrets if s in text], (sql, text)
    assert checked > 500


def test_reported_digest_follows_sql_mode() -> None:
    sql = "SELECT 'C:\\', 'hunter2-secret'"
    d = compute_digest(sql)
    assert d.text == "select ?hunter2-secret?"  # with backslash escapes that part is SQL
    assert reported_digest(sql, d, True) is d
    no_escapes = reported_digest(sql, d, False)
    assert no_escapes.text == "select ?, ?"
    assert no_escapes.id != d.id
    assert reported_digest(sql, d, None).text == "select ?..."
    plain = compute_digest("SELECT 'a\\nb'")
    assert reported_digest("SELECT 'a\\nb'", plain, None) is plain  # both readings agree
