"""MonitorLog: bounded per-server history of the monitor's checks."""

from __future__ import annotations

from proxy.health.monitorlog import CheckRecord, MonitorLog


def _check(port: int, t: int) -> CheckRecord:
    return CheckRecord("127.0.0.1", port, t, 10, 0, None, False, None)


def test_keeps_the_last_checks_of_each_server() -> None:
    history = [3]
    log = MonitorLog(lambda: history[0])
    for t in range(10):
        log.record("a", _check(1, t))
        log.record("b", _check(2, t))
    records = log.records()
    assert [(r.port, r.time_start_us) for r in records] == [
        (1, 7), (1, 8), (1, 9), (2, 7), (2, 8), (2, 9),
    ]  # fmt: skip


def test_a_new_length_applies_at_the_next_check() -> None:
    history = [5]
    log = MonitorLog(lambda: history[0])
    for t in range(5):
        log.record("a", _check(1, t))
    history[0] = 2
    log.record("a", _check(1, 5))
    assert [r.time_start_us for r in log.records()] == [4, 5]
    history[0] = 4
    log.record("a", _check(1, 6))
    assert [r.time_start_us for r in log.records()] == [4, 5, 6]
