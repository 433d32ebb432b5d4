"""Health policy: replica usability, the writer election and failback readiness."""

from __future__ import annotations

from dataclasses import replace

import pytest

from proxy.health.policy import (
    CheckResult,
    MasterView,
    elect,
    ready_for_failback,
    replica_problem,
)
from proxy.health.replstatus import ReplicaStatus

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
    # Keep the current one and fence the other; no current: hold and report.
    e = elect("m2", [m("m1", True, False, False), m("m2", True, False, False)])
    assert (e.writer, e.fence, e.conflict) == ("m2", ["m1"], ["m1", "m2"])
    e = elect(None, [m("m1", True, False, False), m("m2", True, False, False)])
    assert (e.writer, e.fence, e.conflict) == (None, [], ["m1", "m2"])
    # A writable master that failed its latest check is not counted.
    e = elect("m1", [m("m1", True, False, False), m("m2", False, False, False)])
    assert (e.writer, e.fence) == ("m1", [])


def test_read_only_current_writer_means_a_switchover_elsewhere() -> None:
    assert elect("m1", [m("m1", True, False, True), m("m2", True, False, True)]).writer is None


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
