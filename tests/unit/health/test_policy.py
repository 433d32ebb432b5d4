"""Health policy: replica usability, the writer election and failback readiness."""

from __future__ import annotations

from dataclasses import replace

import pytest

from proxy.health.policy import (
    CheckResult,
    LoopStalls,
    MasterView,
    elect,
    held_position,
    ready_for_failback,
    replica_problem,
    timeout_is_failure,
)
from proxy.health.replstatus import ReplicaStatus
from proxy.routing.gtid import contains

m = MasterView


def test_follow_the_one_writable_master() -> None:
    # Whoever this proxy thought was the writer.
    assert elect("m1", [m("m1", False, False, False), m("m2", True, False, False)]).writer == "m2"
    assert elect(None, [m("m1", True, False, True), m("m2", True, False, False)]).writer == "m2"


def test_failing_writer_is_kept_until_down() -> None:
    # A failing (not yet DOWN) writer is kept: no failover on a blip.
    e = elect("m1", [m("m1", False, False, False), m("m2", True, False, True)])
    assert (e.writer, e.promote) == ("m1", None)


def test_down_writer_promotes_the_next_by_priority() -> None:
    e = elect("m1", [m("m1", False, True, False), m("m2", True, False, True)])
    assert (e.writer, e.promote) == ("m2", "m2")
    masters = [m("m1", False, True, None), m("m2", True, False, None), m("m3", True, False, True)]
    e = elect(None, masters)  # never-checked masters are no candidates
    assert (e.writer, e.promote) == ("m3", "m3")
    assert elect("m1", [m("m1", False, True, False), m("m2", False, True, True)]).writer is None


def test_two_writable_masters() -> None:
    # Same GTIDs (a true tie): keep the current one and fence the other.
    e = elect("m2", [m("m1", True, False, False), m("m2", True, False, False)])
    assert (e.writer, e.fence, e.conflict) == ("m2", ["m1"], ["m1", "m2"])
    # A true tie and no current writer: priority breaks it.
    e = elect(None, [m("m1", True, False, False), m("m2", True, False, False)])
    assert (e.writer, e.fence, e.conflict) == ("m1", ["m2"], ["m1", "m2"])
    # A writable master that failed its latest check is not counted.
    e = elect("m1", [m("m1", True, False, False), m("m2", False, False, False)])
    assert (e.writer, e.fence) == ("m1", [])


def _gm(name: str, gtid: str, read_only: bool | None = False, **kw: bool) -> MasterView:
    return MasterView(name, kw.get("up", True), kw.get("down", False), read_only, gtid, **{
        k: v for k, v in kw.items() if k == "fence_pending"
    })  # fmt: skip


def test_restart_with_two_writable_masters_keeps_the_newest() -> None:
    """The issue's restart: master2 (the writer before) holds GTIDs master1 lacks."""
    m1, m2 = _gm("m1", "1-1-6,2-2-40"), _gm("m2", "1-1-6,2-2-41")
    e = elect(None, [m1, m2])
    assert (e.writer, e.fence, e.promote) == ("m2", ["m1"], None)
    assert e.why == "newest GTIDs"
    # The list order does not matter; only a true tie goes by priority.
    assert elect(None, [m2, m1]).writer == "m2"
    # MySQL GTID sets too.
    a = _gm("a", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
    b = _gm("b", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-7")
    assert (elect(None, [a, b]).writer, elect(None, [a, b]).fence) == ("b", ["a"])


def test_the_only_master_with_the_newest_gtids_is_never_fenced() -> None:
    # Even against the current writer: the newer one (holding all the current one has) wins.
    e = elect("m1", [_gm("m1", "1-1-6"), _gm("m2", "1-1-6,2-2-3")])
    assert (e.writer, e.fence) == ("m2", ["m1"])
    # Diverged (each holds transactions the other lacks) and no current writer: hold.
    e = elect(None, [_gm("m1", "1-1-7,2-2-3"), _gm("m2", "1-1-6,2-2-4")])
    assert (e.writer, e.fence, e.conflict) == (None, [], ["m1", "m2"])
    assert "diverged" in e.why
    # Diverged with a current writer: the one this proxy's clients write to stays.
    e = elect("m2", [_gm("m1", "1-1-7,2-2-3"), _gm("m2", "1-1-6,2-2-4")])
    assert (e.writer, e.fence) == ("m2", ["m1"])


def test_no_election_from_a_partial_view() -> None:
    # At start, a master neither checked nor DOWN yet: wait for it, whatever the others say.
    e = elect(None, [_gm("m1", "", read_only=True, up=False), _gm("m2", "1-1-5")])
    assert (e.writer, e.promote) == (None, None)
    assert "waiting for the first check of m1" in e.why
    # Once it is DOWN, the rest decide.
    e = elect(None, [_gm("m1", "", read_only=None, up=False, down=True), _gm("m2", "1-1-5")])
    assert e.writer == "m2"


def test_promotion_goes_to_the_master_no_other_is_ahead_of() -> None:
    masters = [
        _gm("m1", "1-1-9", read_only=False, up=False, down=True),
        _gm("m2", "1-1-7", read_only=True),
        _gm("m3", "1-1-8", read_only=True),
    ]
    e = elect("m1", masters)
    assert (e.writer, e.promote) == ("m3", "m3")
    # Both read-only at start: the newest is promoted; a tie goes by priority.
    e = elect(None, [_gm("m1", "1-1-5", read_only=True), _gm("m2", "1-1-5", read_only=True)])
    assert (e.writer, e.promote) == ("m1", "m1")


def test_a_demoted_master_is_fenced_when_it_answers_and_is_no_candidate() -> None:
    # master1 froze, master2 was promoted; master1 wakes up writable with what was in flight.
    m1 = _gm("m1", "1-1-9,2-2-1", fence_pending=True)
    m2 = _gm("m2", "1-1-8,2-2-5")
    e = elect("m2", [m1, m2])
    assert (e.writer, e.fence, e.conflict) == ("m2", ["m1"], [])
    # Not even a candidate when it is the only writable master.
    e = elect(None, [m1, _gm("m2", "1-1-8", read_only=True)])
    assert (e.writer, e.promote, e.fence) == ("m2", "m2", ["m1"])
    # Unreachable still: nothing to fence yet, and it is not waited for.
    gone = _gm("m1", "", read_only=False, up=False, fence_pending=True)
    assert elect("m2", [gone, m2]).fence == []


def test_loop_stalls_make_a_timeout_unknown() -> None:
    stalls = LoopStalls()
    # A loop on time: ticks run 1 ms late; a 300 ms timeout then is the server's.
    for i in range(10):
        stalls.record(i * 0.05, i * 0.05 + 0.001)
    assert stalls.stalled(0.1, 0.46, next_due=0.5) == pytest.approx(0.008)
    assert timeout_is_failure(stalls.stalled(0.1, 0.46, next_due=0.5), 0.3)
    # One long stall inside the check's window: the check could not run.
    stalls.record(1.0, 1.25)
    assert not timeout_is_failure(stalls.stalled(0.95, 1.3, next_due=1.3), 0.3)
    # A stall still going on (the tick is overdue) counts too.
    assert stalls.stalled(2.0, 2.3, next_due=2.05) == pytest.approx(0.25)
    assert not timeout_is_failure(stalls.stalled(2.0, 2.3, next_due=2.05), 0.3)
    # Lateness before the window does not count, and a tick straddling its start is cut.
    assert stalls.stalled(1.2, 1.3, next_due=1.3) == pytest.approx(0.05)


def test_held_position_counts_what_the_relay_log_holds() -> None:
    relayed = _check(_replica(retrieved_gtid="1-1-12"), gtid="1-1-10,2-2-3")
    assert contains(held_position(relayed), "1-1-12,2-2-3")
    assert held_position(_check(None, gtid="1-1-10")) == "1-1-10"


def _replica(**kw: object) -> ReplicaStatus:
    base = ReplicaStatus("127.0.0.1", 3306, "Yes", "Yes", 0, "", "", 0, 0, "0-1-10")
    return replace(base, **kw)  # type: ignore[arg-type]


def _check(
    replica: ReplicaStatus | None, read_only: bool = True, gtid: str = "0-1-10"
) -> CheckResult:
    return CheckResult(read_only, replica, gtid, 0.001)


@pytest.mark.parametrize(
    ("result", "shunned", "problem"),
    [
        (_check(_replica()), False, None),
        (_check(_replica(seconds_behind=3)), False, None),
        (_check(_replica(seconds_behind=3)), True, "catching up (lag 3s)"),
        (_check(_replica(seconds_behind=11)), False, "replication lag 11s > 10s"),
        (_check(_replica(seconds_behind=None)), False, "replication lag unknown"),
        (_check(_replica(), read_only=False), False, "read_only is OFF on a replica"),
        (_check(None), False, "not replicating (no replica status)"),
        (
            _check(_replica(io_running="Connecting", last_io_error="refused")),
            False,
            "replication stopped (IO Connecting, SQL Yes): refused",
        ),
        (_check(_replica(last_sql_error="dup key")), False, "replication error: dup key"),
    ],
)
def test_replica_problem(result: CheckResult, shunned: bool, problem: str | None) -> None:
    got = replica_problem(result, 10.0, shunned)
    if problem is None:
        assert got is None
    else:
        assert got is not None and got.startswith(problem)


def test_ready_for_failback() -> None:
    writer = _check(None, read_only=False, gtid="0-2-20")
    caught_up = _check(_replica(source_port=3307), gtid="0-2-20")
    assert ready_for_failback(caught_up, writer, 3307)
    assert not ready_for_failback(caught_up, writer, 3308)  # replicates from someone else
    assert not ready_for_failback(_check(_replica(source_port=3307)), writer, 3307)  # behind
    assert not ready_for_failback(None, writer, 3307)
    assert not ready_for_failback(caught_up, None, 3307)
    writable = _check(_replica(source_port=3307), read_only=False, gtid="0-2-20")
    assert not ready_for_failback(writable, writer, 3307)
    lagging = _check(_replica(source_port=3307, seconds_behind=1), gtid="0-2-20")
    assert not ready_for_failback(lagging, writer, 3307)
    unapplied = _check(
        _replica(source_port=3307, read_position=("b.1", 9), exec_position=("b.1", 4)),
        gtid="0-2-20",
    )
    assert not ready_for_failback(unapplied, writer, 3307)
    # MySQL GTID sets are not compared here: position and lag decide.
    mysql_writer = _check(None, read_only=False, gtid="3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
    assert ready_for_failback(_check(_replica(source_port=3307), gtid=""), mysql_writer, 3307)
