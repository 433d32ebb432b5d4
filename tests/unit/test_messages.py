"""Every message between the topology process and a worker survives pickling (with the hot
modules compiled by mypyc too: a frozen native class would not unpickle)."""

from __future__ import annotations

import pickle

import pytest

from proxy.cluster import Cluster
from proxy.messages import (
    BusyOn,
    Drain,
    Events,
    Heartbeat,
    Kill,
    Ready,
    Recheck,
    Refused,
    Reload,
    ReportRequest,
    Start,
    Sync,
)
from proxy.metrics import Metrics
from proxy.report import WorkerReport
from proxy.topology import WriterChanged
from tests.unit.test_topology import CONFIG, EVENTS

MESSAGES: list[object] = [
    Start(0, 2, CONFIG, Cluster.from_config(CONFIG, "m1"), "10.11", 3306, 1, 9, {"app": 2}, 7),
    Events((*EVENTS, WriterChanged("m1", None, "demoted")), None),
    Heartbeat("m1"),
    Reload(CONFIG, {"app": 2}),
    Drain(5.0),
    ReportRequest(True),
    Sync(),
    BusyOn("m1"),
    Kill(1000000001, "app", True),
    Refused(1094, "Unknown thread id: 5"),
    Ready(1234),
    Recheck("r1"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_message_survives_pickling(message: object) -> None:
    assert pickle.loads(pickle.dumps(message)) == message


def test_report_survives_pickling() -> None:
    metrics = Metrics()
    metrics.count_query(False, True, True, 0.001, "SELECT", "r1")
    report = WorkerReport((), 1, metrics, {}, {}, ({"SessionID": 1},), (1, 2))
    loaded = pickle.loads(pickle.dumps(report))
    assert (loaded.processlist, loaded.rule_hits) == (report.processlist, report.rule_hits)
    assert loaded.metrics.commands["SELECT"] == metrics.commands["SELECT"]
    assert loaded.metrics.latency["reader"].count == 1
