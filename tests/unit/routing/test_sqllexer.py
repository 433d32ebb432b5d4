"""SqlparseLexer gives exactly sqlparse's tokens: checked against sqlparse's own lexer loop."""

from __future__ import annotations

import random
import re

import pytest
from sqlparse import keywords
from sqlparse.lexer import Lexer

from proxy.routing.digest import compute_digest
from proxy.routing.sqllexer import SqlparseLexer, first_chars
from tests.unit.routing.test_classifier import CASES

LEXER = SqlparseLexer()
STOCK = Lexer.get_default_instance()  # type: ignore[no-untyped-call]


def stock(text: str) -> list[tuple[object, str]]:
    return list(STOCK.get_tokens(text))


@pytest.mark.parametrize("sql", [c[0] for c in CASES])
def test_same_tokens_as_sqlparse_on_the_classifier_table(sql: str) -> None:
    assert LEXER.tokens(sql) == stock(sql)
    text = compute_digest(sql).text
    assert LEXER.tokens(text) == stock(text)


# Fragments that exercise every regex of sqlparse's table, plus characters that start
# none (or several) of them, non-ASCII letters and case-folding oddities.
PIECES = [
    "SELECT",
    "select",
    "from",
    "t1",
    "`q``x`",
    "\u00b4a\u00b4",
    "?",
    "%s",
    "%(name)s",
    ":v",
    "$1",
    "\\x",
    "CASE",
    "in",
    "@v",
    "@@session.x",
    "##t",
    "#t",
    "a.b",
    ".5",
    "f(",
    "0x1F",
    "-0x",
    "1e5",
    "-1.5E-3",
    "12",
    "1.",
    "'it''s'",
    "'a\\'b'",
    "'open",
    '"q"',
    '""',
    '"x\\"y"',
    "[col]",
    "x[1]",
    "LEFT JOIN",
    "natural  join",
    "END IF",
    "end",
    "IF NOT EXISTS",
    "NOT NULL",
    "ASC NULLS FIRST",
    "desc",
    "NULLS LAST",
    "UNION ALL",
    "CREATE OR REPLACE",
    "DOUBLE PRECISION",
    "GROUP BY",
    "order\nby",
    "PRIMARY KEY",
    "HANDLER FOR",
    "GO 5",
    "LATERAL VIEW EXPLODE",
    "AT TIME ZONE 'UTC'",
    "NOT LIKE",
    "ilike",
    "REGEXP BINARY",
    "sbtest4_id",
    "$x",
    "x$y",
    ";",
    ":",
    "::",
    ":=",
    "(",
    ")",
    "[",
    "]",
    ",",
    ".",
    "->",
    "->>",
    "#>>",
    "@>",
    "<@",
    "?|",
    "?&",
    "#-",
    "-",
    "<=>",
    "!=",
    "~",
    "+",
    "/",
    "^",
    "&",
    "|",
    "*",
    "--",
    "-- c\n",
    "# c\n",
    "--+h\n",
    "\t",
    "\r\n",
    "\r",
    "\n",
    "\u017felect",
    "\u212a",
    "İ",
    "é",
    "日本",
    "\x00",
    "\x7f",
    "{",
    "}",
    "'",
    '"',
    "`",
    "\\",
]


def test_same_tokens_as_sqlparse_on_random_text() -> None:
    rng = random.Random(20261121)
    for _ in range(4000):
        parts = [rng.choice(PIECES) for _ in range(rng.randint(0, 14))]
        text = "".join(p + rng.choice(("", " ", "  ", "\n")) for p in parts)
        assert LEXER.tokens(text) == stock(text), repr(text)


def test_dollar_quotes_and_block_comments_go_to_sqlparse() -> None:
    for text in ("select $$a$$ from t", "select /* c */ 1", "select $tag$x$tag$"):
        assert LEXER.tokens(text) == stock(text)


def test_first_chars_is_a_superset() -> None:
    """Wherever a regex of the table matches, the text starts with one of its first chars."""
    rng = random.Random(7)
    alphabet = [chr(i) for i in range(32, 127)] + ["\t", "\n", "\r"]
    samples = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(20000)
    ]
    samples += PIECES
    for pattern, _ in keywords.SQL_REGEX:
        chars = first_chars(pattern)
        if chars is None:
            continue
        regex = re.compile(pattern, re.IGNORECASE | re.UNICODE)
        for s in samples:
            if s and s[0].isascii() and regex.match(s):
                assert s[0] in chars, (pattern, s)


def test_first_chars_of_simple_patterns() -> None:
    assert first_chars(r"\?") == frozenset("?")
    assert first_chars(r"(?<!\w)[$:?]\w+") == frozenset("$:?")
    assert first_chars(r"-?\d+") == frozenset("-0123456789")
    assert first_chars("ab") == frozenset("aA")
    assert first_chars("a?") is None  # can match the empty string
    assert first_chars(".x") is None  # any character
