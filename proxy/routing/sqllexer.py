"""sqlparse's lexer, run faster: its own regex table, tried only where the first character fits.

sqlparse's `Lexer.get_tokens` tries its ~50 regexes one by one at every position until one
matches, in Python: 75-250 µs for a typical statement. The same table runs here as one
compiled alternation per first character, holding (in sqlparse's order) only the regexes
that can start with that character, so a position costs one `match` call in C. An
alternation takes its first matching branch, exactly as sqlparse's loop takes its first
matching regex, so the tokens are sqlparse's tokens: tests/unit/routing compare both
lexers on every statement of the classifier table and on random text. Keywords are looked
up with sqlparse's own `Lexer.is_keyword`. Text that sqlparse lexes with extra machinery
(dollar quotes, `/*` comments) goes to `Lexer.get_tokens` itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlparse import keywords
from sqlparse import tokens as T
from sqlparse.lexer import Lexer

__all__ = ("SqlparseLexer", "first_chars")

_FLAGS = re.IGNORECASE | re.UNICODE  # as sqlparse's Lexer.set_SQL_REGEX compiles them
_ASCII = frozenset(chr(i) for i in range(128))
# Under IGNORECASE these ASCII letters also match non-ASCII ones (long s, Kelvin sign,
# dotted and dotless i): a class or literal with non-ASCII characters may start with them.
_FOLDS = frozenset("iIkKsS")

try:  # the regex parser is internal: if it is missing, every regex may start anywhere
    from re import _constants as C  # type: ignore[attr-defined]
    from re import _parser as P  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other Pythons
    C = P = None

Chars = frozenset[str] | None
"""ASCII characters a match can start with; None: any character."""


def _chars_of(codes: Iterable[int]) -> frozenset[str]:
    out: set[str] = set()
    for code in codes:
        ch = chr(code)
        if code >= 128:
            out |= _FOLDS
        out |= {ch, ch.lower(), ch.upper()}
    return frozenset(out) & _ASCII


_CATEGORIES = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
}


def _class(items: list[tuple[Any, Any]]) -> Chars:
    """The ASCII characters a character class ([...]) matches."""
    found: set[str] = set()
    negate = False
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            found |= _chars_of([av])
        elif op is C.RANGE:
            lo, hi = av
            found |= _chars_of(range(lo, min(hi, 127) + 1))
            if hi >= 128:
                found |= _FOLDS
        elif op is C.CATEGORY and str(av) in _CATEGORIES:
            probe = re.compile(_CATEGORIES[str(av)], _FLAGS)
            found |= {ch for ch in _ASCII if probe.match(ch)}
        else:
            return None
    # A negated class matches every ASCII character outside the set; folding can only
    # make it match more, so the complement of the exact ASCII members is a superset.
    return frozenset(_ASCII - found) if negate else frozenset(found)


def _firsts(seq: Iterable[tuple[Any, Any]]) -> tuple[Chars, bool]:
    """(characters a sequence can start with, whether it can match the empty string)."""
    found: set[str] = set()
    for op, av in seq:
        chars, nullable = _item(op, av)
        if chars is None:
            return None, False
        found |= chars
        if not nullable:
            return frozenset(found), False
    return frozenset(found), True


def _item(op: Any, av: Any) -> tuple[Chars, bool]:
    if op is C.LITERAL:
        return _chars_of([av]), False
    if op is C.IN:
        return _class(av), False
    if op is C.SUBPATTERN:
        return _firsts(av[-1])
    if op is getattr(C, "ATOMIC_GROUP", ()):
        return _firsts(av)
    if op is C.BRANCH:
        found: set[str] = set()
        nullable = False
        for branch in av[1]:
            chars, empty = _firsts(branch)
            if chars is None:
                return None, False
            found |= chars
            nullable = nullable or empty
        return frozenset(found), nullable
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", ())):
        low, _high, sub = av
        chars, empty = _firsts(sub)
        return chars, empty or low == 0
    if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
        return frozenset(), True  # zero width: ignoring its condition only adds candidates
    return None, False  # ANY, NOT_LITERAL, group references, anything new


def first_chars(pattern: str) -> Chars:
    """ASCII characters a match of `pattern` can start with (a superset); None: any."""
    if P is None:
        return None
    try:
        chars, nullable = _firsts(P.parse(pattern, _FLAGS))
    except Exception:  # an unexpected shape only costs speed
        return None
    return None if nullable else chars


class SqlparseLexer:
    """sqlparse's SQL_REGEX table as one alternation per first character."""

    def __init__(self, lexer: Lexer | None = None) -> None:
        self.lexer = lexer or Lexer.get_default_instance()  # type: ignore[no-untyped-call]
        self.table: list[tuple[str, Any]] = list(keywords.SQL_REGEX)
        firsts = [first_chars(p) for p, _ in self.table]
        self.every = self._compile(range(len(self.table)))
        self.by_char: dict[str, tuple[re.Pattern[str], list[Any]]] = {}
        compiled: dict[tuple[int, ...], tuple[re.Pattern[str], list[Any]]] = {}
        self.space: tuple[Any, str] | None = None
        for ch in sorted(_ASCII):
            key = tuple(i for i, f in enumerate(firsts) if f is None or ch in f)
            if key not in compiled:
                compiled[key] = self._compile(key)
            self.by_char[ch] = compiled[key]
            if ch == " " and key and self.table[key[0]][0] == r"\s+?":
                # The first regex that can match at a space is the lazy `\s+?`: a space is
                # always a whitespace token of its own. Half the tokens are spaces.
                self.space = (self.table[key[0]][1], " ")

    def _compile(self, indexes: Iterable[int]) -> tuple[re.Pattern[str], list[Any]]:
        # Each regex is wrapped in a group; m.lastindex is the wrapping group of the branch
        # that matched, since it closes after any group inside it. actions[g] is the
        # action of the regex wrapped by group g. No regex of the table refers to a group
        # by number, so renumbering them changes nothing.
        parts: list[str] = []
        actions: list[Any] = [None]
        for i in indexes:
            pattern, action = self.table[i]
            parts.append(f"({pattern})")
            actions.append(action)
            actions.extend([None] * re.compile(pattern, _FLAGS).groups)
        return re.compile("|".join(parts), _FLAGS), actions

    def tokens(self, text: str) -> list[tuple[Any, str]]:
        """(token type, value) pairs, as `list(Lexer.get_tokens(text))` returns them."""
        if "$" in text or "/*" in text:
            return list(self.lexer.get_tokens(text))
        out: list[tuple[Any, str]] = []
        by_char = self.by_char
        every = self.every
        is_keyword = self.lexer.is_keyword
        keyword = keywords.PROCESS_AS_KEYWORD
        space = self.space
        pos = 0
        n = len(text)
        while pos < n:
            ch = text[pos]
            if ch == " " and space is not None:
                out.append(space)
                pos += 1
                continue
            regex, actions = by_char.get(ch, every)
            m = regex.match(text, pos)
            if m is None:
                out.append((T.Error, ch))
                pos += 1
                continue
            end = m.end()
            if end == pos:  # an empty match: sqlparse's loop can't take it; let it decide
                return list(self.lexer.get_tokens(text))
            action = actions[m.lastindex]  # type: ignore[index]
            value = text[pos:end]
            out.append(is_keyword(value) if action is keyword else (action, value))
            pos = end
        return out
