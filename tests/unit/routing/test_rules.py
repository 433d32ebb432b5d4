"""Query rules: every statement of a batch and the SQL inside PREPARE / EXECUTE IMMEDIATE."""

from __future__ import annotations

import pytest

from proxy.config import QueryRule
from proxy.routing.digest import compute_digest
from proxy.routing.rules import UNCHECKABLE, QueryRules
from proxy.routing.tokens import raw_statements

# README's example rules.
RULES = [
    QueryRule(
        name="no-drop-for-app",
        match_digest=r"\bdrop\s+(temporary\s+)?(table|schema|database)\b",
        username="app",
        block="DROP is not allowed through pyproxy",
    ),
    QueryRule(name="reports", match_digest=r"^select .* from report_", route="replica2"),
    QueryRule(name="renamed", match_pattern=r"\blegacy_products\b", rewrite="products"),
]


def _decide(sql: str, user: str = "app", escapes: bool | None = True) -> object:
    rules = QueryRules(RULES)
    multi = len(raw_statements(sql)) > 1
    action = rules.decide(
        sql, compute_digest(sql).text, user, "demo_db", multi=multi, backslash_escapes=escapes
    )
    if action is None:
        return None
    return action.block or action.route or action.rewritten_sql


BLOCKED = "DROP is not allowed through pyproxy"


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE t",
        "drop   table if exists t",
        "DROP SCHEMA s",
        "DROP DATABASE s",
        "DROP TEMPORARY TABLE t",
        "/*!50000 DROP TABLE t */",
        "SET STATEMENT max_statement_time=1 FOR DROP TABLE t",
        "SELECT 1; DROP TABLE t",
        "SELECT 1;DROP TABLE t;",
        "PREPARE s FROM 'DROP TABLE t'",
        'PREPARE s FROM "DROP TABLE t"',
        "PREPARE s FROM 'DROP ' 'TABLE t'",  # adjacent literals are one string
        "PREPARE s FROM 'DROP\\tTABLE t'",
        "EXECUTE IMMEDIATE 'DROP TABLE t'",
        "EXECUTE IMMEDIATE 'DROP TABLE t' USING 1",
        "SELECT 1; EXECUTE IMMEDIATE 'DROP TABLE t'",
        "PREPARE s FROM 'EXECUTE IMMEDIATE ''DROP TABLE t'''",
        "SET STATEMENT max_statement_time=1 FOR EXECUTE IMMEDIATE 'DROP TABLE t'",
        "BEGIN NOT ATOMIC PREPARE s FROM 'DROP TABLE t'; EXECUTE s; END",
    ],
)
def test_drop_blocked_everywhere(sql: str) -> None:
    assert _decide(sql) == BLOCKED
    assert _decide(sql, user="other") in (None, "replica2")


@pytest.mark.parametrize(
    "sql",
    [
        "PREPARE s FROM @q",
        "EXECUTE IMMEDIATE @q",
        "EXECUTE IMMEDIATE CONCAT('DR', 'OP TABLE t')",
        "PREPARE s FROM 0x44524f50",
        "SELECT 1; PREPARE s FROM @q",
    ],
)
def test_sql_from_a_variable_is_refused_when_a_block_rule_applies(sql: str) -> None:
    assert _decide(sql) == UNCHECKABLE
    assert _decide(sql, user="other") is None  # no block rule for this user: nothing to hide


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'drop table t'",
        "PREPARE s FROM 'SELECT ?'",
        "EXECUTE s",
        "DEALLOCATE PREPARE s",
        "XA PREPARE 'x'",
        "SELECT prepare, x FROM t",
        "SELECT 1; SELECT 2",
        "SELECT 'it''s; DROP TABLE t'",
    ],
)
def test_harmless_statements_pass(sql: str) -> None:
    assert _decide(sql) is None


def test_backslash_readings() -> None:
    # One string with backslash escapes, a DROP without them (NO_BACKSLASH_ESCAPES).
    sql = "SELECT 'a\\'; DROP TABLE t; -- '"
    assert _decide(sql, escapes=True) is None
    assert _decide(sql, escapes=False) == BLOCKED
    assert _decide(sql, escapes=None) == BLOCKED  # the session's sql_mode is unknown
    hidden = "SET STATEMENT x='\\' FOR DROP TABLE t -- '"
    assert _decide(hidden, escapes=True) is None
    assert _decide(hidden, escapes=None) == BLOCKED
    inner = "PREPARE s FROM 'SELECT \\'x\\''"
    assert _decide(inner, escapes=True) is None


def test_route_and_rewrite() -> None:
    assert _decide("SELECT a FROM report_daily") == "replica2"
    # A batch is routed by the first statement a route rule matches.
    assert _decide("SELECT 1; SELECT a FROM report_daily") == "replica2"
    assert _decide("SELECT * FROM legacy_products") == "SELECT * FROM products"
    # Rewrites apply to a single statement only, never inside a batch.
    assert _decide("SELECT 1; SELECT * FROM legacy_products") is None


def test_hits_count_matches() -> None:
    rules = QueryRules(RULES)
    for sql in ("SELECT 1; DROP TABLE t", "DROP SCHEMA s", "SELECT 1"):
        rules.decide(
            sql, compute_digest(sql).text, "app", None, multi=";" in sql, backslash_escapes=True
        )
    assert rules.hits == [2, 0, 0]


def _match(rules: QueryRules, sql: str, user: str = "app", schema: str | None = "a") -> object:
    action = rules.match(sql, compute_digest(sql).text, user, schema)
    return None if action is None else (action.index, action.route or action.rewritten_sql)


def test_first_matching_rule_wins_with_user_and_schema_filters() -> None:
    rules = QueryRules(
        [
            QueryRule(match_digest="^select", username="bob", route="r1"),
            QueryRule(match_digest="^select", schema_name="b", route="r2"),
            QueryRule(match_digest="^select", route="writer"),
            QueryRule(match_digest="^select", route="never"),  # shadowed by the one before
        ]
    )
    assert _match(rules, "SELECT 1", user="bob") == (0, "r1")
    assert _match(rules, "SELECT 1", schema="b") == (1, "r2")
    assert _match(rules, "SELECT 1", schema=None) == (2, "writer")
    assert _match(rules, "UPDATE t SET a = 1") is None
    assert rules.hits == [1, 1, 1, 0]


def test_digest_rules_are_cached_per_user_and_schema() -> None:
    rules = QueryRules([QueryRule(match_digest="^select", username="bob", route="r1")])
    # Same digest, other literals: the cached decision stands, and hits still count.
    assert _match(rules, "SELECT 1", user="bob") == (0, "r1")
    assert _match(rules, "SELECT 2", user="bob") == (0, "r1")
    assert _match(rules, "SELECT 3", user="app") is None  # another user: not the cached answer
    assert rules.hits == [2]


def test_pattern_rules_see_the_literals() -> None:
    rules = QueryRules(
        [
            QueryRule(match_pattern=r"id = 42\b", route="r1"),
            QueryRule(match_pattern=r"\bfrom old\b", rewrite="from new"),
        ]
    )
    assert _match(rules, "SELECT * FROM t WHERE id = 42") == (0, "r1")
    assert _match(rules, "SELECT * FROM t WHERE id = 43") is None
    assert _match(rules, "SELECT * from old") == (1, "SELECT * from new")
    # Without rewrite (statements inside a batch), rewrite rules are passed over.
    assert rules.match("SELECT * from old", "", "app", None, rewrite=False) is None


def test_no_rules() -> None:
    rules = QueryRules([])
    assert not rules and rules.rules == []
    assert _match(rules, "DROP TABLE t") is None
    assert QueryRules(RULES) and QueryRules(RULES).rules == RULES
