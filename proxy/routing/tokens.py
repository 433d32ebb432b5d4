"""Token lists for the classifier: from digest text (regex or sqlparse) and from raw SQL."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

from sqlparse import tokens as T
from sqlparse.lexer import Lexer

from proxy.routing.sqllexer import SqlparseLexer

__all__ = (
    "Tokenizer",
    "raw_statements",
    "regex_tokens",
    "split_statements",
    "sqlparse_tokens",
    "stock_sqlparse_tokens",
)

Tokenizer = Callable[[str], list[str]]
"""Turns digest text into tokens: lower-case words, `?`, @vars, operators, punctuation."""

# Words, variables (one token: @x, @@session.x, @?), quoted identifiers, the operators
# the classifier distinguishes (:= vs =), client-side %s placeholders (one token, as in
# sqlparse) and any other single character.
_VARIABLE = r"@@?(?:`(?:[^`]|``)*`?|[\w$.]+|\?)?"
_OPERATORS = r":=|<=>|[<>!]=|<>|->>?|\|\||&&|%(?:\(\w+\))?s"
_DIGEST_TOKEN = re.compile(rf"`(?:[^`]|``)*`?|{_VARIABLE}|[\w$]+|{_OPERATORS}|\S")

# Raw SQL: the same tokens plus literals; group 1 (comments, executable comment markers,
# whitespace) is skipped.
_RAW_PATTERN = r"""
    (/\*(?!m?!)(?:[^*]*\*+(?:[^/*][^*]*\*+)*/|.*)|--(?=\s|$)[^\n]*|\#[^\n]*|/\*m?![0-9]*|\*/|\s+)
   |'(?>{S1})(?:'|.*)|"(?>{S2})(?:"|.*)|`(?:[^`]|``)*`?
   |@@?(?:`(?:[^`]|``)*`?|'(?>{S1})(?:'|.*)|"(?>{S2})(?:"|.*)
      |[\w$.]+)?
   |[\w$]+(?:\.[0-9]+)?|:=|<=>|[<>!]=|<>|->>?|\|\||&&|\S
    """


def _raw_regex(escapes: bool) -> re.Pattern[str]:
    # {S1}/{S2}: string bodies with backslash escapes (the default) or without them
    # (sql_mode NO_BACKSLASH_ESCAPES).
    s1, s2 = (
        (r"(?:[^'\\]|\\.|'')*", r'(?:[^"\\]|\\.|"")*')
        if escapes
        else ("(?:[^']|'')*", '(?:[^"]|"")*')
    )
    pattern = _RAW_PATTERN.replace("{S1}", s1).replace("{S2}", s2)
    return re.compile(pattern, re.VERBOSE | re.DOTALL | re.IGNORECASE)


_RAW_TOKEN = (_raw_regex(False), _raw_regex(True))  # indexed by backslash_escapes

# sqlparse lexes '+@' or '-@' as one operator: a space keeps '@' at a token start.
_AT_AFTER_OPERATOR = re.compile(r"(?<=[^\s@\w`?])@")
# Token types that can't come out of digest text: sqlparse misread it.
_MISREAD = (T.Comment, T.String, T.Error, T.Generic)
_OTHER_KIND, _SPACE_KIND, _MISREAD_KIND, _KEYWORD_KIND = range(4)


@cache
def _kind(ttype: Any) -> int:
    """What the classifier needs of a sqlparse token type (its `in` test is Python code)."""
    if ttype in T.Whitespace or ttype in T.Newline:
        return _SPACE_KIND
    if any(ttype in kind for kind in _MISREAD):
        return _MISREAD_KIND
    return _KEYWORD_KIND if ttype in T.Keyword else _OTHER_KIND


# Built once (~20 ms of regex compiling) and never changed afterwards.
_LEXER = SqlparseLexer()


def regex_tokens(text: str) -> list[str]:
    """Tokenize digest text with one regex (fast path)."""
    return _DIGEST_TOKEN.findall(text)


def sqlparse_tokens(text: str) -> list[str]:
    """Tokenize digest text with sqlparse's lexer, normalized to regex_tokens' shape.

    Only the lexer runs (sqlparse's grouping pass costs ~4x more and builds a tree the
    classifier does not need), driven by SqlparseLexer: the same tokens ~5x faster.
    """
    return _from_sqlparse(text, _LEXER.tokens)


def stock_sqlparse_tokens(text: str) -> list[str]:
    """sqlparse_tokens through sqlparse's own `Lexer.get_tokens` loop (for comparison)."""
    lexer = Lexer.get_default_instance()  # type: ignore[no-untyped-call]  # sqlparse: untyped
    return _from_sqlparse(text, lambda t: list(lexer.get_tokens(t)))


def _from_sqlparse(text: str, lex: Callable[[str], list[tuple[Any, str]]]) -> list[str]:
    # Digest text has no comments, so '--' is two minus signs (MySQL needs '-- ' for a
    # comment); sqlparse would read it as a comment and hide the rest of the line.
    spaced = text
    while "--" in spaced:
        spaced = spaced.replace("--", "- -")
    if "@" in spaced:
        spaced = _AT_AFTER_OPERATOR.sub(" @", spaced)
    pairs: list[tuple[int, str]] = []
    for ttype, v in lex(spaced):
        kind = _kind(ttype)
        if kind == _SPACE_KIND:
            continue
        if kind == _MISREAD_KIND:
            # Digest text has no comments or strings; an error token is an unterminated
            # quoted identifier, a command token a stray backslash: sqlparse misread it.
            return regex_tokens(text)
        pairs.append((kind, v))
    out: list[str] = []
    i = 0
    n = len(pairs)
    while i < n:
        ttype, v = pairs[i]
        i += 1
        if v in ("@", "@@") and i < n:
            # sqlparse splits @x and @@session.x: glue them back into one token.
            v += pairs[i][1]
            i += 1
            while i + 1 < n and pairs[i][1] == "." and pairs[i + 1][1][0] not in "(),;=":
                v += "." + pairs[i + 1][1]
                i += 2
            out.append(v)
        elif ttype == _KEYWORD_KIND and not v.isidentifier():
            out.extend(v.split())  # multi-word keywords such as 'order by', 'not null'
        else:
            out.append(v)
    return out


def split_statements(tokens: list[str]) -> list[tuple[int, int]]:
    """Split a token list at top-level `;` into [start, end) ranges, skipping empty ones.

    A `;` inside a BEGIN ... END body of CREATE/ALTER PROCEDURE, FUNCTION, TRIGGER or EVENT,
    or of MariaDB's `BEGIN NOT ATOMIC`, does not end the statement.
    """
    ranges: list[tuple[int, int]] = []
    start = 0
    depth = 0
    compound = False
    n = len(tokens)
    for i, t in enumerate(tokens):
        if t == ";" and depth == 0:
            if i > start:
                ranges.append((start, i))
            start = i + 1
            compound = False
            continue
        if i == start:
            compound = t in ("create", "alter")
        elif t == "atomic" and i == start + 2 and tokens[start : start + 2] == ["begin", "not"]:
            compound = True
            depth += 1
        elif compound and tokens[i - 1] not in ("(", ",", "."):  # not a column named begin
            if t in ("begin", "case"):
                depth += 1
            elif t == "end" and depth > 0:
                # END IF / END LOOP / ... close blocks whose opener is not counted.
                nxt = tokens[i + 1] if i + 1 < n else ""
                if nxt not in ("if", "loop", "while", "repeat", "for"):
                    depth -= 1
    if n > start:
        ranges.append((start, n))
    return ranges


def raw_statements(sql: str, *, backslash_escapes: bool = True) -> list[tuple[str, list[str]]]:
    """Split raw SQL like split_statements: (statement text, its tokens) per statement.

    Tokens keep literals verbatim (quotes included); words are lower-cased. The text runs
    from the first to the last token, so surrounding comments and executable comment
    markers (`/*!40101 ... */`) are left out. backslash_escapes=False reads strings as a
    session with NO_BACKSLASH_ESCAPES would.
    """
    tokens: list[str] = []
    spans: list[tuple[int, int]] = []
    for m in _RAW_TOKEN[backslash_escapes].finditer(sql):
        if m.lastindex == 1:
            continue
        t = m.group()
        tokens.append(t if t[0] in "'\"`" else t.lower())
        spans.append(m.span())
    return [(sql[spans[a][0] : spans[b - 1][1]], tokens[a:b]) for a, b in split_statements(tokens)]
