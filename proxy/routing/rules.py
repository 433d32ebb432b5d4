"""Query rules from the config: match a statement and route, block or rewrite it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from proxy.config import QueryRule
from proxy.routing.digest import normalize
from proxy.routing.tokens import raw_statements

UNCHECKABLE = (
    "pyproxy: PREPARE or EXECUTE IMMEDIATE from a variable or an expression can't be checked "
    "against the query rules; use a string literal"
)
"""The error for SQL text the rules can't see while a block rule applies to the session."""

# Digest text that may carry SQL inside a string: PREPARE ... FROM, EXECUTE IMMEDIATE.
_CARRIES_SQL = re.compile(r"\bprepare\b|\bimmediate\b")
_MAX_NESTING = 4
# MySQL's escape sequences in strings; any other \x is x. \% and \_ keep their backslash.
_ESCAPES = {
    "0": "\0",
    "b": "\b",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "Z": "\x1a",
    "%": "\\%",
    "_": "\\_",
}
# A doubled quote, and with escapes a backslash sequence, in one pass.
_UNQUOTE = {
    (q, escapes): re.compile((r"\\(.)|" if escapes else "") + q * 2, re.DOTALL)
    for q in "'\""
    for escapes in (False, True)
}


@dataclass(frozen=True, slots=True)
class RuleAction:
    """What the first matching rule says; index is the rule's position, for its hit counter."""

    index: int
    route: str | None = None
    block: str | None = None
    rewritten_sql: str | None = None


@dataclass
class _Compiled:
    rule: QueryRule
    digest: re.Pattern[str] | None
    pattern: re.Pattern[str] | None


class QueryRules:
    """The configured rules, compiled once; checked in order for every statement."""

    def __init__(self, rules: list[QueryRule]) -> None:
        self._rules = [
            _Compiled(
                r,
                re.compile(r.match_digest, re.IGNORECASE) if r.match_digest else None,
                re.compile(r.match_pattern, re.IGNORECASE) if r.match_pattern else None,
            )
            for r in rules
        ]
        self.hits = [0] * len(rules)
        # Rules that look only at the digest decide the same way for every literal: cache them.
        self._digest_only = all(c.pattern is None for c in self._rules)
        self._cache: dict[tuple[str, str, str | None, bool], RuleAction | None] = {}

    def __bool__(self) -> bool:
        return bool(self._rules)

    @property
    def rules(self) -> list[QueryRule]:
        return [c.rule for c in self._rules]

    def decide(
        self,
        sql: str,
        digest_text: str,
        user: str,
        schema: str | None,
        *,
        multi: bool,
        backslash_escapes: bool | None,
    ) -> RuleAction | None:
        """The action for a client's text: a statement or a multi-statement batch.

        A single statement is matched as a whole (route, block or rewrite). A batch is matched
        statement by statement, without rewrite rules: a block of any statement blocks the
        batch, else the first statement routed by a rule routes it. The SQL inside
        `PREPARE s FROM '...'` and `EXECUTE IMMEDIATE '...'` is checked for block rules too;
        when that SQL is not a string literal (a variable, an expression) and a block rule
        applies to the session, the text is refused (RuleAction with block=UNCHECKABLE).
        When the session's string escaping is not known (backslash_escapes None), both
        readings of a text with a backslash are checked.
        """
        ambiguous = backslash_escapes is not True and "\\" in sql
        if not (multi or ambiguous or _CARRIES_SQL.search(digest_text)):
            return self.match(sql, digest_text, user, schema)
        primary = backslash_escapes is not False  # the reading matched as a whole
        action = None
        if not multi:
            if ambiguous and not primary:
                digest_text = normalize(sql, backslash_escapes=False)[0]
            action = self.match(sql, digest_text, user, schema)
            if action is not None and action.block is not None:
                return action
        readings = (True, False) if backslash_escapes is None else (primary,)
        for escapes in readings:
            for text in _texts(sql, escapes, multi or escapes != primary):
                if text is None:
                    blocking = self._blocking(user, schema)
                    if blocking is None:
                        continue
                    return RuleAction(blocking, block=UNCHECKABLE)
                found = self.match(
                    text, normalize(text, backslash_escapes=escapes)[0], user, schema, rewrite=False
                )
                if found is None:
                    continue
                if found.block is not None:
                    return found
                if action is None and found.route is not None:
                    action = found
        return action

    def _blocking(self, user: str, schema: str | None) -> int | None:
        """The index of the first block rule that applies to this user and schema."""
        for i, c in enumerate(self._rules):
            rule = c.rule
            if (
                rule.block is not None
                and rule.username in (None, user)
                and rule.schema_name in (None, schema)
            ):
                return i
        return None

    def match(
        self,
        sql: str,
        digest_text: str,
        user: str,
        schema: str | None,
        *,
        rewrite: bool = True,
    ) -> RuleAction | None:
        """The first rule matching one text; rewrite=False passes over rewrite rules."""
        if self._digest_only:
            key = (digest_text, user, schema, rewrite)
            if key in self._cache:
                action = self._cache[key]
            else:
                action = self._match(sql, digest_text, user, schema, rewrite)
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = action
        else:
            action = self._match(sql, digest_text, user, schema, rewrite)
        if action is not None:
            self.hits[action.index] += 1
        return action

    def _match(
        self, sql: str, digest_text: str, user: str, schema: str | None, rewrite: bool
    ) -> RuleAction | None:
        for i, c in enumerate(self._rules):
            rule = c.rule
            if rule.username is not None and rule.username != user:
                continue
            if rule.schema_name is not None and rule.schema_name != schema:
                continue
            if rule.rewrite is not None and not rewrite:
                continue
            if c.digest is not None and not c.digest.search(digest_text):
                continue
            if c.pattern is not None and not c.pattern.search(sql):
                continue
            if rule.rewrite is not None and c.pattern is not None:
                return RuleAction(i, rewritten_sql=c.pattern.sub(rule.rewrite, sql))
            return RuleAction(i, route=rule.route, block=rule.block)
        return None


def _texts(sql: str, escapes: bool, statements: bool, depth: int = 0) -> Iterator[str | None]:
    """The texts the rules must see in sql: each statement (when `statements`), and, nested,
    the SQL of PREPARE ... FROM / EXECUTE IMMEDIATE; None for SQL that can't be read."""
    split = raw_statements(sql, backslash_escapes=escapes)
    for text, tokens in split:
        if statements or len(split) > 1:
            yield text
        for inner in _carried_sql(tokens, escapes):
            if inner is None or depth >= _MAX_NESTING:
                yield None
            else:
                yield from _texts(inner, escapes, True, depth + 1)


def _carried_sql(tokens: list[str], escapes: bool) -> Iterator[str | None]:
    """The SQL of each `PREPARE name FROM <x>` and `EXECUTE IMMEDIATE <x>` in a statement's
    tokens: the text when <x> is string literals (adjacent ones are concatenated), else None."""
    n = len(tokens)
    for i, t in enumerate(tokens):
        if t == "prepare" and i + 2 < n and tokens[i + 2] == "from":
            if i > 0 and tokens[i - 1] in ("select", ",", ".", "(", "xa"):
                continue  # a column named prepare, XA PREPARE
            start = i + 3
        elif t == "execute" and i + 1 < n and tokens[i + 1] == "immediate":
            start = i + 2
        else:
            continue
        end = start
        while end < n and tokens[end] not in (";", "using"):
            end += 1
        parts = tokens[start:end]
        if parts and all(p[0] in "'\"" and len(p) > 1 and p[-1] == p[0] for p in parts):
            yield "".join(_unquote(p, escapes) for p in parts)
        else:
            yield None


def _unquote(literal: str, escapes: bool) -> str:
    """The value of a quoted string literal token, as the server reads it."""
    quote = literal[0]
    pattern = _UNQUOTE[quote, escapes]
    return pattern.sub(
        lambda m: quote if m.lastindex is None else _ESCAPES.get(m[1], m[1]), literal[1:-1]
    )
