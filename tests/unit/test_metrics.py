"""Metrics: the per-statement counters and the dicts the exposition and the admin read."""

from __future__ import annotations

import copy
import pickle

from proxy.metrics import Metrics


def _traffic() -> Metrics:
    m = Metrics()
    m.count_query(False, True, True, 0.0003, "select", "replica1")
    m.count_query(False, True, False, 0.002, "SELECT", "replica1")
    m.count_query(True, False, True, 0.001, "insert", "master1")
    m.count_query(True, True, True, 0.0001, "frobnicate", "master1")
    return m


def test_counts_read_as_the_dicts_of_route_class_outcome_command_and_server() -> None:
    m = _traffic()
    assert m.queries == {
        ("writer", "read", "ok"): 1,
        ("writer", "write", "ok"): 1,
        ("reader", "read", "ok"): 1,
        ("reader", "read", "error"): 1,
    }
    assert list(m.latency) == ["writer", "reader"]
    assert (m.latency["reader"].count, m.latency["writer"].count) == (2, 2)
    assert m.server_queries == {"replica1": 2, "master1": 2}
    assert set(m.commands) == {"SELECT", "INSERT", "UNKNOWN"}
    assert m.commands["SELECT"][:2] == [2300, 2]
    assert sum(m.commands["SELECT"][2:]) == 2


def test_workers_counts_add_up_and_stay_their_own() -> None:
    a, b = _traffic(), pickle.loads(pickle.dumps(_traffic()))
    total = Metrics()
    total.add(a)
    total.add(copy.deepcopy(b))
    assert total.queries == {key: 2 * n for key, n in a.queries.items()}
    assert total.commands["SELECT"][:2] == [4600, 4]
    assert total.server_queries == {"replica1": 4, "master1": 4}
    assert total.latency["reader"].count == 4
    total.count_query(False, True, True, 0.0003, "select", "replica1")
    assert a.server_queries["replica1"] == 2 and a.latency["reader"].count == 2
