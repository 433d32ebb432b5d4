"""Router: smooth weighted round-robin over replicas, and the choose() rules."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from proxy.cluster import Cluster, HostStatus
from proxy.config import parse_config
from proxy.routing.classifier import Classification, StatementKind
from proxy.routing.router import Router
from proxy.topology import Topology, WriterChanged

READ = Classification(StatementKind.READ, verb="select")
WRITE = Classification(StatementKind.WRITE, verb="insert")


def _router(weights: dict[str, int] | None = None, **routing: Any) -> Router:
    weights = {"r1": 3, "r2": 1} if weights is None else weights
    servers: list[dict[str, Any]] = [
        {"name": "m1", "host": "127.0.0.1", "port": 3306, "role": "master", "priority": 1},
        {"name": "m2", "host": "127.0.0.1", "port": 3307, "role": "master", "priority": 2},
    ]
    servers += [
        {"name": n, "host": "127.0.0.1", "port": 3310 + i, "role": "replica", "weight": w}
        for i, (n, w) in enumerate(weights.items())
    ]
    config = parse_config(
        {
            "servers": servers,
            "users": [{"username": "app", "password": "pw"}],
            "routing": routing,
        }
    )
    writer = config.masters[0].name if config.masters else None
    return Router(Cluster.from_config(config, writer), config)


def _names(router: Router, n: int) -> list[str | None]:
    return [s.name if (s := router.reader()) else None for _ in range(n)]


def test_smooth_weighted_round_robin_is_spread_and_exact() -> None:
    router = _router({"r1": 5, "r2": 1, "r3": 1})
    picks = _names(router, 7)
    # nginx's smooth WRR: the heavy server is never picked many times in a row at the start.
    assert picks == ["r1", "r1", "r2", "r1", "r3", "r1", "r1"]
    assert Counter(_names(router, 700)) == {"r1": 500, "r2": 100, "r3": 100}


def test_weight_zero_and_unusable_replicas_take_no_reads() -> None:
    router = _router({"r1": 2, "r2": 0, "r3": 1})
    assert [s.name for s in router.readers()] == ["r1", "r3"]
    router.cluster.server("r1").status = HostStatus.SHUNNED
    assert set(_names(router, 10)) == {"r3"}
    assert [s.name for s in router.readers()] == ["r3"]


def test_ties_go_to_the_fewest_in_flight() -> None:
    router = _router({"r1": 1, "r2": 1})
    router.cluster.server("r1").outstanding = 5
    assert _names(router, 1) == ["r2"]


def test_writer_serves_reads_with_at_least_weight_one() -> None:
    router = _router({"r1": 1}, writer_serves_reads=True)
    assert Counter(_names(router, 10)) == {"r1": 5, "m1": 5}
    Topology(router.cluster).apply(WriterChanged("m1", "m2", "test"))
    assert set(_names(router, 10)) == {"r1", "m2"}  # the old writer takes no reads


@pytest.mark.parametrize("fallback", [True, False])
def test_no_replica_left(fallback: bool) -> None:
    router = _router(reads_fallback_to_writer=fallback)
    for name in ("r1", "r2"):
        router.cluster.server(name).status = HostStatus.DOWN
    assert _names(router, 1) == (["m1"] if fallback else [None])


def test_writer_is_none_when_unknown_or_unusable() -> None:
    router = _router()
    assert router.writer() is not None and router.writer().name == "m1"  # type: ignore[union-attr]
    router.cluster.server("m1").status = HostStatus.OFFLINE_SOFT
    assert router.writer() is None
    Topology(router.cluster).apply(WriterChanged("m1", None, "test"))
    assert router.writer() is None
    assert router.choose(WRITE) is None


def _choose(router: Router, stmt: Classification, **kw: Any) -> str | None:
    server = router.choose(stmt, **kw)
    return server.name if server else None


def test_choose_by_kind_transaction_and_consistency() -> None:
    router = _router({"r1": 1}, consistency="read_your_writes")
    assert _choose(router, WRITE) == "m1"
    assert _choose(router, READ) == "r1"
    assert _choose(router, READ, autocommit=False) == "m1"  # inside a transaction
    # read_your_writes: reads after a write (its GTID unknown) go to the writer.
    assert _choose(router, READ, wrote=True) == "m1"
    assert _choose(router, READ, wrote=True, consistency="eventual") == "r1"
    assert _choose(router, READ, consistency="strong") == "m1"
    strong = Classification(StatementKind.READ, verb="select", hint_consistency="strong")
    assert _choose(router, strong, consistency="eventual") == "m1"
    assert _choose(_router({"r1": 1}, consistency="strong"), READ) == "m1"
    # causal: reads stay on replicas after a write (the session checks the replica's position).
    assert _choose(router, READ, wrote=True, consistency="causal") == "r1"
    assert _choose(router, READ, wrote=True, consistency="causal_global") == "r1"


def test_choose_by_route_hint_or_rule_override() -> None:
    router = _router({"r1": 1})
    assert _choose(router, READ, override="writer") == "m1"
    assert _choose(router, WRITE, override="reader") == "r1"
    assert _choose(router, WRITE, override="m2") == "m2"
    hinted = Classification(StatementKind.READ, verb="select", hint_route="m2")
    assert _choose(router, hinted) == "m2"
    assert _choose(router, hinted, override="r1") == "r1"  # the rule's route comes first
    # A server named in a hint that is unknown or not usable: routed by the statement.
    assert _choose(router, READ, override="nope") == "r1"
    router.cluster.server("m2").status = HostStatus.SHUNNED
    assert _choose(router, READ, override="m2") == "r1"
    assert _choose(router, WRITE, override="m2") == "m1"
