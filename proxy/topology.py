"""The one owner of the cluster view: every change to the writer, a server's status or position
is an event applied here, and the listeners (pool, sessions, waiters) hear of it from here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.cluster import Cluster, HostStatus, ServerState
from proxy.config import Server
from proxy.routing.gtid import merge_mariadb

log = logging.getLogger(__name__)


# The events are plain frozen data, so that a process that does not decide the topology
# (a worker) can follow one decided elsewhere from the same events sent over a pipe.
@dataclass(frozen=True)
class WriterChanged:
    """The writer is now new (None: none, writes wait); why: promoted, followed, or why there
    is none (old and new both None: only the reason changed)."""

    old: str | None
    new: str | None
    why: str
    detected_at: float = 0.0  # monotonic time the old writer was first seen failing


@dataclass(frozen=True)
class SwitchoverStarted:
    """A planned switchover holds new writes; elections wait until it ends."""

    old: str
    new: str


@dataclass(frozen=True)
class SwitchoverEnded:
    """The switchover is over: new is the writer (done) or old is again (not done)."""

    old: str
    new: str
    done: bool


@dataclass(frozen=True)
class ServerStatusChanged:
    name: str
    status: HostStatus
    reason: str


@dataclass(frozen=True)
class PositionObserved:
    """What a health check saw: GTID position, replication lag, read_only."""

    name: str
    gtid: str
    lag_s: float | None
    read_only: bool


@dataclass(frozen=True)
class GtidAdvanced:
    """A write through the proxy reached this GTID on the server (merged into its position)."""

    name: str
    gtid: str


@dataclass(frozen=True)
class ServerError:
    name: str
    error: str


@dataclass(frozen=True)
class ServerConfigured:
    """A server added or changed by the config; moved: its address changed."""

    server: Server
    moved: bool = False


@dataclass(frozen=True)
class ServerRemoved:
    name: str


Event = (
    WriterChanged
    | SwitchoverStarted
    | SwitchoverEnded
    | ServerStatusChanged
    | PositionObserved
    | GtidAdvanced
    | ServerError
    | ServerConfigured
    | ServerRemoved
)
Listener = Callable[[Event], None]


@dataclass(frozen=True)
class FailoverEvent:
    old_writer: str | None
    new_writer: str | None
    detected_at: float
    promoted_at: float
    reason: str


class Topology:
    """Owns the Cluster: apply() is the only code that changes it."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.failovers: list[FailoverEvent] = []
        self.switching: SwitchoverStarted | None = None  # elections wait while set
        self._listeners: list[Listener] = []
        self._followers: list[Listener] = []
        self._changed = asyncio.Event()

    def subscribe(self, listener: Listener) -> None:
        """listener(event) is called after every event that changed the writer, a server's
        status or the set of servers (not for positions and errors: they change each check)."""
        self._listeners.append(listener)

    def follow(self, follower: Listener) -> None:
        """follower(event) is called with every event applied, in order, changed or not: what
        a copy in another process needs to stay equal to this one."""
        self._followers.append(follower)

    async def changed(self, timeout: float) -> None:
        """Wait until the writer or a server's status changes (or timeout)."""
        event = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()

    def apply(self, event: Event) -> None:
        changed = self._change(event)
        for follower in self._followers:
            follower(event)
        if changed:
            for listener in list(self._listeners):
                listener(event)
            waking, self._changed = self._changed, asyncio.Event()
            waking.set()

    def _change(self, event: Event) -> bool:
        """Apply event to the cluster; whether listeners must hear of it."""
        cluster = self.cluster
        match event:
            case WriterChanged(old, new, why, detected_at):
                if new is None:
                    cluster.writer_reason = why  # what clients waiting for a writer are told
                if cluster.writer == new:
                    return False
                cluster.writer = new
                log.warning("writer: %s -> %s (%s)", old or "none", new or "none", why)
                if old is not None and new is not None:
                    self.failovers.append(
                        FailoverEvent(
                            old, new, detected_at or time.monotonic(), time.monotonic(), why
                        )
                    )
                return True
            case SwitchoverStarted(old, new):
                self.switching = event
                cluster.writer = None
                cluster.writer_reason = f"switchover {old} -> {new} in progress"
                return True
            case SwitchoverEnded(old, new, done):
                self.switching = None
                cluster.writer = new if done else old
                if done:
                    now = time.monotonic()
                    self.failovers.append(FailoverEvent(old, new, now, now, "switchover"))
                    log.warning("writer: %s -> %s (switchover)", old, new)
                return True
            case ServerStatusChanged(name, status, reason):
                state = cluster.servers.get(name)
                if state is None:
                    return False
                state.reason = reason
                if state.status is status:
                    return False
                log.warning(
                    "server %s: %s -> %s%s",
                    name,
                    state.status.value,
                    status.value,
                    f" ({reason})" if reason else "",
                )
                state.status = status
                return True
            case PositionObserved(name, gtid, lag_s, read_only):
                if (state := cluster.servers.get(name)) is not None:
                    state.gtid_position, state.lag_s, state.read_only = gtid, lag_s, read_only
                return False
            case GtidAdvanced(name, gtid):
                if (state := cluster.servers.get(name)) is not None:
                    state.gtid_position = merge_mariadb(state.gtid_position, gtid)
                return False
            case ServerError(name, error):
                if (state := cluster.servers.get(name)) is not None:
                    state.last_error = error
                return False
            case ServerConfigured(server, _):
                current = cluster.servers.get(server.name)
                if current is None:
                    cluster.add(ServerState(server, HostStatus(server.status)))
                else:
                    current.configure(server)
                return True
            case ServerRemoved(name):
                if cluster.writer == name:  # never left naming a server that is gone
                    cluster.writer = None
                    cluster.writer_reason = f"the writer {name} was removed from the config"
                return cluster.remove(name)
        return False  # pragma: no cover - the match is exhaustive
