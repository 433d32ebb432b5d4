"""Causal reads' pure logic: marks from GTIDs and positions, coverage, where a read goes."""

from __future__ import annotations

from proxy.routing.causal import (
    Candidate,
    Decision,
    PositionCache,
    applied_mark,
    caught_up,
    commit_mark,
    covers,
    decide,
    is_mysql_mark,
    merge,
    wait_gtid,
    wait_query,
)

UUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID2 = "4e11fa47-71ca-11e1-9e33-c80aa9429562"


def test_commit_mark_mariadb_per_domain() -> None:
    assert commit_mark("1-1-10") == {1: 10}
    assert commit_mark("1-1-10,2-2-3,1-3-12") == {1: 12, 2: 3}
    assert commit_mark("") == {}


def test_commit_mark_mysql_per_uuid_highest_transaction() -> None:
    assert commit_mark(f"{UUID.upper()}:1-5:7,\n{UUID2}:3") == {UUID: 7, UUID2: 3}


def test_applied_mark_mysql_stops_at_a_gap() -> None:
    assert applied_mark(f"{UUID}:1-5:7-9") == {UUID: 5}
    assert applied_mark(f"{UUID}:1-5:6-9") == {UUID: 9}
    assert applied_mark(f"{UUID}:3-9") == {}
    assert applied_mark("1-1-10,2-2-3") == {1: 10, 2: 3}


def test_covers_every_key() -> None:
    assert covers({1: 10, 2: 3}, {1: 10})
    assert covers({1: 10}, {})
    assert not covers({1: 9}, {1: 10})
    assert not covers({1: 10}, {1: 10, 2: 1})  # a domain the replica never saw


def test_merge_keeps_the_maximum() -> None:
    a = {1: 10}
    assert merge(a, {1: 8, 2: 4}) == {1: 10, 2: 4}
    assert a == {1: 10}  # not changed in place


def test_wait_gtid_forms() -> None:
    assert wait_gtid({2: 3, 1: 10}) == "1-0-10,2-0-3"
    assert wait_gtid({UUID: 7}) == f"{UUID}:1-7"
    assert is_mysql_mark({UUID: 7})
    assert not is_mysql_mark({1: 7})


def test_wait_query_mariadb_and_mysql() -> None:
    assert wait_query("1-0-10", 50, mariadb=True) == "SELECT MASTER_GTID_WAIT('1-0-10', 0.050)"
    assert wait_query(f"{UUID}:1-7", 1500, mariadb=False) == (
        f"SELECT WAIT_FOR_EXECUTED_GTID_SET('{UUID}:1-7', 1.500)"
    )


def test_caught_up_only_on_zero() -> None:
    assert caught_up(b"0")
    # MariaDB's timeout (-1), MySQL's (1), NULL or an error (None): not caught up.
    for value in (b"-1", b"1", None, b""):
        assert not caught_up(value)


def test_position_cache_parses_once_and_stays_bounded() -> None:
    cache = PositionCache()
    first = cache.mark("1-1-10")
    assert cache.mark("1-1-10") is first
    for i in range(PositionCache.LIMIT + 5):
        assert cache.mark(f"1-1-{i}") == {1: i}
    assert len(cache._parsed) <= PositionCache.LIMIT


def test_decide_prefers_a_fresh_replica_in_router_order() -> None:
    cands = [Candidate("r1", {1: 5}, 0.0), Candidate("r2", {1: 10}, 0.0)]
    assert decide({1: 10}, cands) == Decision(fresh="r2")
    assert decide({1: 5}, cands) == Decision(fresh="r1")
    assert decide({}, cands) == Decision(fresh="r1")  # nothing written yet


def test_decide_waits_on_the_first_replica_not_known_to_lag() -> None:
    cands = [Candidate("r1", {1: 5}, 3.0), Candidate("r2", {1: 6}, None)]
    assert decide({1: 10}, cands) == Decision(wait_on="r2")


def test_decide_writer_when_all_lag_or_mark_unknown() -> None:
    lagging = [Candidate("r1", {1: 5}, 3.0)]
    assert decide({1: 10}, lagging) == Decision()
    assert decide(None, [Candidate("r1", {1: 99}, 0.0)]) == Decision()
    assert decide({1: 1}, []) == Decision()


def test_decide_waits_on_the_replica_nearest_the_mark() -> None:
    cands = [Candidate("r1", {1: 5}, 0.0), Candidate("r2", {1: 9}, 0.0), Candidate("r3", {}, 0.0)]
    assert decide({1: 10}, cands) == Decision(wait_on="r2")
    tied = [Candidate("r1", {1: 5}, 0.0), Candidate("r2", {1: 5}, None)]
    assert decide({1: 10}, tied) == Decision(wait_on="r1")  # the router's choice on ties
