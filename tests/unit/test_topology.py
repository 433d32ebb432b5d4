"""The topology owner: events are plain picklable data, apply() is the one way to change the
cluster view, and listeners hear only of real changes."""

from __future__ import annotations

import asyncio
import pickle

import pytest

from proxy.cluster import (
    READER_HOSTGROUP,
    STANDBY_HOSTGROUP,
    WRITER_HOSTGROUP,
    Cluster,
    HostStatus,
)
from proxy.config import Server, parse_config
from proxy.topology import (
    Event,
    GtidAdvanced,
    PositionObserved,
    ServerConfigured,
    ServerError,
    ServerRemoved,
    ServerStatusChanged,
    SwitchoverEnded,
    SwitchoverStarted,
    Topology,
    WriterChanged,
)

CONFIG = parse_config(
    {
        "servers": [
            {"name": "m1", "host": "127.0.0.1", "port": 3306, "role": "master"},
            {"name": "m2", "host": "127.0.0.1", "port": 3307, "role": "master"},
            {"name": "r1", "host": "127.0.0.1", "port": 3308, "role": "replica"},
        ],
        "users": [{"username": "app", "password": "pw"}],
    }
)
NEW_SERVER = Server(name="r2", host="127.0.0.1", port=3309, role="replica")

EVENTS: list[Event] = [
    WriterChanged("m1", "m2", "promoted", 12.5),
    SwitchoverStarted("m1", "m2"),
    SwitchoverEnded("m1", "m2", True),
    ServerStatusChanged("r1", HostStatus.SHUNNED, "lag 30s"),
    PositionObserved("r1", "0-1-10", 1.5, True),
    GtidAdvanced("m1", "0-1-11"),
    ServerError("r1", "connection refused"),
    ServerConfigured(NEW_SERVER, moved=True),
    ServerRemoved("r1"),
]


def _topology() -> tuple[Topology, list[Event]]:
    topology = Topology(Cluster.from_config(CONFIG, "m1"))
    heard: list[Event] = []
    topology.subscribe(heard.append)
    return topology, heard


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_events_round_trip_through_pickle(event: Event) -> None:
    assert pickle.loads(pickle.dumps(event)) == event


def test_the_same_events_give_the_same_cluster() -> None:
    """A follower applying the decider's events (sent over a pipe) ends in the same state."""
    leader, _ = _topology()
    follower, _ = _topology()
    for event in EVENTS:
        leader.apply(event)
        follower.apply(pickle.loads(pickle.dumps(event)))
    assert leader.cluster == follower.cluster
    assert leader.failovers[-1].reason == "switchover"


def test_writer_changes_are_heard_once_and_recorded() -> None:
    topology, heard = _topology()
    assert topology.cluster.writer == "m1"
    topology.apply(WriterChanged("m1", "m2", "promoted", 1.0))
    topology.apply(WriterChanged("m1", "m2", "promoted", 1.0))  # no change: not heard again
    assert topology.cluster.writer == "m2"
    assert len(heard) == 1
    (failover,) = topology.failovers
    assert (failover.old_writer, failover.new_writer, failover.reason) == ("m1", "m2", "promoted")
    assert failover.detected_at == 1.0
    topology.apply(WriterChanged("m2", None, "read-only"))
    assert topology.cluster.writer is None and len(topology.failovers) == 1


def test_switchover_holds_the_writer_then_restores_or_moves_it() -> None:
    topology, _ = _topology()
    topology.apply(SwitchoverStarted("m1", "m2"))
    assert topology.cluster.writer is None and topology.switching is not None
    topology.apply(SwitchoverEnded("m1", "m2", done=False))
    assert topology.cluster.writer == "m1" and topology.switching is None
    assert not topology.failovers
    topology.apply(SwitchoverStarted("m1", "m2"))
    topology.apply(SwitchoverEnded("m1", "m2", done=True))
    assert topology.cluster.writer == "m2"
    assert [f.reason for f in topology.failovers] == ["switchover"]


def test_status_reason_and_positions() -> None:
    topology, heard = _topology()
    r1 = topology.cluster.server("r1")
    topology.apply(ServerStatusChanged("r1", HostStatus.SHUNNED, "lag 30s"))
    topology.apply(ServerStatusChanged("r1", HostStatus.SHUNNED, "lag 40s"))
    assert r1.status is HostStatus.SHUNNED and r1.reason == "lag 40s"
    assert len(heard) == 1  # the reason alone changed the second time
    topology.apply(PositionObserved("r1", "0-1-5", 2.0, True))
    topology.apply(GtidAdvanced("r1", "0-1-7"))
    topology.apply(ServerError("r1", "boom"))
    # merged per domain with what the check saw (server id 0: not known)
    assert (r1.gtid_position, r1.lag_s, r1.read_only, r1.last_error) == (
        "0-0-7",
        2.0,
        True,
        "boom",
    )
    assert len(heard) == 1  # positions and errors change at every check: not broadcast
    topology.apply(ServerStatusChanged("nosuch", HostStatus.DOWN, ""))  # removed meanwhile
    assert len(heard) == 1


def test_servers_added_changed_and_removed() -> None:
    topology, heard = _topology()
    topology.apply(ServerConfigured(NEW_SERVER))
    assert topology.cluster.server("r2").config == NEW_SERVER
    # members: the servers as the router walks them, kept with the dict
    assert topology.cluster.members == tuple(topology.cluster.servers.values())
    moved = NEW_SERVER.model_copy(update={"port": 4000})
    topology.apply(ServerConfigured(moved, moved=True))
    assert topology.cluster.server("r2").config.port == 4000
    topology.apply(ServerRemoved("r2"))
    topology.apply(ServerRemoved("r2"))
    assert "r2" not in topology.cluster.servers
    assert topology.cluster.members == tuple(topology.cluster.servers.values())
    assert [type(e).__name__ for e in heard] == [
        "ServerConfigured",
        "ServerConfigured",
        "ServerRemoved",
    ]


def test_role_and_hostgroup() -> None:
    topology, _ = _topology()
    cluster = topology.cluster
    assert [cluster.role(n) for n in ("m1", "m2", "r1")] == ["writer", "standby", "reader"]
    assert [cluster.hostgroup(n) for n in ("m1", "m2", "r1")] == [
        WRITER_HOSTGROUP,
        STANDBY_HOSTGROUP,
        READER_HOSTGROUP,
    ]
    for status, role in [
        (HostStatus.SHUNNED, "shunned"),
        (HostStatus.OFFLINE_SOFT, "offline"),
        (HostStatus.DOWN, "down"),
    ]:
        topology.apply(ServerStatusChanged("r1", status, ""))
        assert cluster.role("r1") == role


async def test_waiters_wake_on_a_change() -> None:
    topology, _ = _topology()
    waiter = asyncio.create_task(topology.changed(30))
    await asyncio.sleep(0)
    topology.apply(ServerStatusChanged("r1", HostStatus.DOWN, "gone"))
    await asyncio.wait_for(waiter, 5)


def test_no_writer_until_elected_and_why() -> None:
    topology = Topology(Cluster.from_config(CONFIG))
    assert (
        topology.cluster.writer is None
        and "no writer elected yet" in topology.cluster.writer_reason
    )
    topology.apply(WriterChanged(None, None, "waiting for the first check of m2"))
    assert topology.cluster.writer_reason == "waiting for the first check of m2"
    topology.apply(WriterChanged(None, "m1", "followed"))
    topology.apply(SwitchoverStarted("m1", "m2"))
    assert topology.cluster.writer_reason == "switchover m1 -> m2 in progress"
    topology.apply(SwitchoverEnded("m1", "m2", done=True))
    # The writer removed from under the cluster (never by a reload, which switches over
    # first): no writer rather than a name nothing can look up.
    topology.apply(ServerRemoved("m2"))
    assert topology.cluster.writer is None
    assert "removed from the config" in topology.cluster.writer_reason
