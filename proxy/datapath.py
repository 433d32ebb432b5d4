"""One data path: the MySQL listener, its backend pool and counters over a topology (the
deciding one in-process, a follower copy in a worker process)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Protocol

from proxy.backend.pool import BackendPool
from proxy.cluster import HostStatus
from proxy.config import Config
from proxy.frontend.listener import FIRST_SESSION_ID, LAST_SESSION_ID, KillElsewhere, ProxyServer
from proxy.metrics import Metrics
from proxy.protocol.packets import ErrPacket
from proxy.report import WorkerReport, build_report
from proxy.shared import SharedCounts
from proxy.topology import (
    Event,
    ServerConfigured,
    ServerRemoved,
    ServerStatusChanged,
    SwitchoverEnded,
    Topology,
    WriterChanged,
)
from proxy.view import Snapshot
from proxy.watermark import Watermark


class DataPlane(Protocol):
    """Where client traffic is served, as the topology process drives it: in this process
    (DataPath) or in worker processes (supervisor.Workers)."""

    @property
    def port(self) -> int: ...
    @property
    def watermark(self) -> Watermark: ...
    async def start(self, server_version: str) -> None: ...
    async def stop(self, grace_s: float) -> None: ...
    def apply_config(self, config: Config) -> None: ...
    async def settled(self) -> None: ...
    async def report(self, reset_digests: bool = False, detail: bool = True) -> WorkerReport: ...
    async def busy_on(self, server: str) -> bool: ...
    async def barrier(self) -> None: ...
    async def kill(self, target_id: int, query_only: bool) -> ErrPacket | None: ...


class DataPath:
    """Listener + pool + metrics; in-process it is the DataPlane itself."""

    def __init__(
        self,
        config: Config,
        topology: Topology,
        recheck: Callable[[str], None],
        *,
        index: int = 0,
        id_range: tuple[int, int] = (FIRST_SESSION_ID, LAST_SESSION_ID),
        sockets: list[socket.socket] | None = None,
        shared: SharedCounts | None = None,
        kill_elsewhere: KillElsewhere | None = None,
        watermark: Watermark | None = None,
    ) -> None:
        """sockets: the MySQL port's listening sockets, shared with the other workers; None:
        the config's port, this process alone. shared: the client counts of every worker
        (None: alone)."""
        self.index = index
        self.topology = topology
        self._sockets = sockets
        self.metrics = Metrics()
        workers = shared.workers if shared is not None else 1
        self.pool = BackendPool(lambda: self.listener.snapshot.config.pool, workers)
        # The pool hears of a change first, so sessions retrying elsewhere find no stale
        # connections to a server that went away.
        topology.subscribe(self._drop_connections)
        self.listener = ProxyServer(
            Snapshot.build(config, topology.cluster),
            topology,
            self.pool,
            self.metrics,
            recheck,
            watermark,
            id_range,
            shared,
            kill_elsewhere,
        )

    @property
    def port(self) -> int:
        return self.listener.port

    @property
    def watermark(self) -> Watermark:
        return self.listener.watermark

    async def start(self, server_version: str) -> None:
        self.listener.server_version = server_version
        listen = self.listener.config.listeners.mysql
        await self.listener.start(listen.host, listen.port, self._sockets)
        self.pool.start()

    async def stop(self, grace_s: float) -> None:
        self.listener.close()
        await self.listener.stop(grace_s)
        await self.pool.close()

    def apply_config(self, config: Config) -> None:
        # Config, router and rules change together, in one assignment: a session reads
        # either the old snapshot or the new one, never half of each.
        self.listener.snapshot = Snapshot.build(config, self.topology.cluster)

    async def report(self, reset_digests: bool = False, detail: bool = True) -> WorkerReport:
        return build_report(self.listener, self.index, reset_digests, detail)

    async def busy_on(self, server: str) -> bool:
        return server in self.topology.cluster.servers and self.listener.busy_on(server)

    async def barrier(self) -> None:
        """Nothing to wait for: this data path follows the deciding topology directly."""

    async def settled(self) -> None:
        """Nothing to wait for: apply_config took effect here at once."""

    async def kill(self, target_id: int, query_only: bool) -> ErrPacket | None:
        return await self.listener.kill_for(target_id, None, query_only)

    def _drop_connections(self, event: Event) -> None:
        """Idle connections to a server that went down, was drained, removed or moved, or
        stopped being the writer are of no use; those in use are closed when given back."""
        match event:
            case WriterChanged(old=old) if old is not None:
                self.pool.drop_server(old)
            case SwitchoverEnded(old=old, done=True):
                self.pool.drop_server(old)
            case ServerStatusChanged(name=name, status=HostStatus.DOWN | HostStatus.OFFLINE_SOFT):
                self.pool.drop_server(name)
            case ServerConfigured(server=server, moved=moved):
                self.pool.stats[server.name]  # create the entry
                if moved:
                    self.pool.drop_server(server.name)
            case ServerRemoved(name=name):
                self.pool.drop_server(name)
