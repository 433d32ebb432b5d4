"""Reports of several workers summed into one (proxy.report.merge) and Metrics.add."""

from __future__ import annotations

from proxy.metrics import Metrics
from proxy.report import PoolNumbers, WorkerReport, WorkerShare, merge
from proxy.routing.stats import DigestStats


def _report(index: int, statements: int, sessions: list[int]) -> WorkerReport:
    metrics = Metrics()
    for _ in range(statements):
        metrics.count_query(False, True, True, 0.001, "SELECT", "replica1")
    metrics.accepted = len(sessions)
    metrics.refused["auth"] = index + 1
    digest = DigestStats(
        1, "demo", "app", "replica1", "0x01", "SELECT ?", count_star=statements,
        first_seen=100.0 + index, last_seen=200.0 + index, sum_time_us=10 * statements,
        min_time_us=5 + index, max_time_us=50 + index,
    )  # fmt: skip
    return WorkerReport(
        workers=(WorkerShare(index, 1000 + index, len(sessions), statements),),
        connections=len(sessions),
        metrics=metrics,
        digests={(1, "replica1", "app", "demo", 1): digest},
        pools={"replica1": PoolNumbers(created=2, idle=1, in_use=index)},
        processlist=tuple({"SessionID": s, "ThreadID": index} for s in sessions),
        rule_hits=(index, 1) if index else (3,),
    )


def test_merge_sums_counters_histograms_digests_pools() -> None:
    total = merge([_report(0, 3, [5, 1]), _report(1, 4, [3])])
    assert total.connections == 3
    assert sum(total.metrics.queries.values()) == 7
    assert total.metrics.latency["reader"].count == 7
    assert sum(total.metrics.latency["reader"].counts) == 7
    assert total.metrics.accepted == 3
    assert total.metrics.refused["auth"] == 3
    (digest,) = total.digests.values()
    assert digest.count_star == 7 and digest.sum_time_us == 70
    assert (digest.min_time_us, digest.max_time_us) == (5, 51)
    assert (digest.first_seen, digest.last_seen) == (100.0, 201.0)
    assert total.pools["replica1"] == PoolNumbers(created=4, idle=2, in_use=1)
    assert [row["SessionID"] for row in total.processlist] == [1, 3, 5]
    assert total.rule_hits == (4, 1)
    assert [w.index for w in total.workers] == [0, 1]


def test_merge_leaves_the_reports_unchanged() -> None:
    one = _report(0, 2, [1])
    merge([one, _report(1, 1, [2])])
    assert one.digests[(1, "replica1", "app", "demo", 1)].count_star == 2
    assert sum(one.metrics.queries.values()) == 2


def test_merge_of_nothing_is_empty() -> None:
    total = merge([])
    assert total.connections == 0 and total.processlist == () and total.rule_hits == ()


def test_merge_sums_command_buckets_errors_and_keeps_the_first_start() -> None:
    a, b = Metrics(started=100.0), Metrics(started=50.0)
    a.count_query(False, True, True, 0.0002, "select", "replica1")
    b.count_query(False, True, True, 0.0002, "SELECT", "replica1")
    key = (1, "127.0.0.1", 3306, "app", "127.0.0.1", "shop", 1146)
    a.record_error(key, "older")
    b.record_error(key, "newer")
    b.errors[key].last_seen += 10
    merged = merge([_with(a), _with(b)]).metrics
    assert merged.started == 50.0
    assert merged.commands["SELECT"][:2] == [400, 2]
    assert sum(merged.commands["SELECT"][2:]) == 2
    assert merged.server_queries["replica1"] == 2
    error = merged.errors[key]
    assert (error.count, error.last_error) == (2, "newer")


def _with(metrics: Metrics) -> WorkerReport:
    return WorkerReport((), 0, metrics, {}, {}, (), ())
