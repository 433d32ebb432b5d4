"""Query rules from the config: match a statement and route, block or rewrite it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.config import QueryRule


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
        self._cache: dict[tuple[str, str, str | None], RuleAction | None] = {}

    def __bool__(self) -> bool:
        return bool(self._rules)

    @property
    def rules(self) -> list[QueryRule]:
        return [c.rule for c in self._rules]

    def match(self, sql: str, digest_text: str, user: str, schema: str | None) -> RuleAction | None:
        if self._digest_only:
            key = (digest_text, user, schema)
            if key in self._cache:
                action = self._cache[key]
            else:
                action = self._match(sql, digest_text, user, schema)
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = action
        else:
            action = self._match(sql, digest_text, user, schema)
        if action is not None:
            self.hits[action.index] += 1
        return action

    def _match(
        self, sql: str, digest_text: str, user: str, schema: str | None
    ) -> RuleAction | None:
        for i, c in enumerate(self._rules):
            rule = c.rule
            if rule.username is not None and rule.username != user:
                continue
            if rule.schema_name is not None and rule.schema_name != schema:
                continue
            if c.digest is not None and not c.digest.search(digest_text):
                continue
            if c.pattern is not None and not c.pattern.search(sql):
                continue
            if rule.rewrite is not None and c.pattern is not None:
                return RuleAction(i, rewritten_sql=c.pattern.sub(rule.rewrite, sql))
            return RuleAction(i, route=rule.route, block=rule.block)
        return None
