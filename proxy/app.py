"""Wiring: builds the topology, the health checker, the data plane (this process, or worker
processes), admin and HTTP servers, runs them, and carries out the operator's commands
(switchover, OFFLINE/ONLINE, reload)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Mapping, Sequence

from proxy.admin.http import HttpServer
from proxy.admin.layers import plan_start
from proxy.admin.sql import AdminServer
from proxy.backend.connection import BackendError, read_greeting
from proxy.backend.pool import BackendPool
from proxy.cluster import Cluster, HostStatus
from proxy.config import Config, ConfigError, Listen, load_config
from proxy.datapath import DataPath, DataPlane
from proxy.frontend.listener import FALLBACK_VERSION, ProxyServer
from proxy.frontend.session import Session
from proxy.health.monitor import CheckStats, Monitor
from proxy.health.monitorlog import MonitorLog
from proxy.metrics import Metrics
from proxy.protocol.packets import ErrPacket, ProtocolError
from proxy.report import WorkerReport
from proxy.routing.router import Router
from proxy.routing.stats import QueryDigests
from proxy.supervisor import Workers
from proxy.topology import (
    FailoverEvent,
    ServerConfigured,
    ServerRemoved,
    ServerStatusChanged,
    SwitchoverEnded,
    SwitchoverStarted,
    Topology,
    WriterChanged,
)
from proxy.view import Snapshot
from proxy.watermark import Watermark

log = logging.getLogger(__name__)


class Proxy:
    """One running pyproxy as the topology process sees it: the parts, wired; what the admin
    and the metrics see (ProxyView). workers=None: the data path runs in this process (tests,
    tools); N: in N worker processes."""

    def __init__(
        self, config: Config, config_path: str | None = None, workers: int | None = None
    ) -> None:
        self.config_path = config_path
        self.topology = Topology(Cluster.from_config(config))
        self.snapshot = Snapshot.build(config, self.topology.cluster)
        self._server_version = config.server_version or FALLBACK_VERSION
        self.plane: DataPlane
        if workers is None:
            self.plane = DataPath(config, self.topology, lambda name: self.monitor.recheck(name))
        else:
            self.plane = Workers(
                workers, lambda: self.snapshot.config, self.topology, self._recheck
            )
        self.monitor = Monitor(
            lambda: self.snapshot.config, self.topology, self.switchover, self.plane.barrier
        )
        self.admin = AdminServer(self)
        self.http = HttpServer(self)

    def _recheck(self, name: str) -> None:
        self.monitor.recheck(name)

    # -- what the admin and the metrics read -------------------------------------------------------
    @property
    def config(self) -> Config:
        return self.snapshot.config

    @property
    def router(self) -> Router:
        return self.snapshot.router

    @property
    def cluster(self) -> Cluster:
        return self.topology.cluster

    async def report(self, reset_digests: bool = False, detail: bool = True) -> WorkerReport:
        """Counters, digests, pools and sessions of the data plane (all workers summed);
        reset_digests: and clear the digests (stats_mysql_query_digest_reset); detail False:
        no digests nor sessions (the metrics)."""
        return await self.plane.report(reset_digests, detail)

    @property
    def check_stats(self) -> Mapping[str, CheckStats]:
        return self.monitor.stats

    @property
    def monitor_log(self) -> MonitorLog:
        return self.monitor.log

    @property
    def failovers(self) -> Sequence[FailoverEvent]:
        return self.topology.failovers

    @property
    def conflicts(self) -> int:
        return self.monitor.conflicts

    @property
    def server_version(self) -> str:
        return self._server_version

    @property
    def watermark(self) -> Watermark:
        return self.plane.watermark

    @property
    def port(self) -> int:
        return self.plane.port

    # -- the in-process data path (tests and tools look inside it) -------------------------------
    @property
    def local(self) -> DataPath:
        if not isinstance(self.plane, DataPath):
            raise RuntimeError("the data path runs in worker processes")
        return self.plane

    @property
    def listener(self) -> ProxyServer:
        return self.local.listener

    @property
    def pool(self) -> BackendPool:
        return self.local.pool

    @property
    def metrics(self) -> Metrics:
        return self.local.metrics

    @property
    def sessions(self) -> Mapping[int, Session]:
        return self.local.listener.sessions

    @property
    def digests(self) -> QueryDigests:
        return self.local.listener.digests

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        self._server_version = config.server_version or await self._backend_version()
        if config.health.enabled:
            # The first round of checks elects the writer before any client is accepted.
            await self.monitor.start()
        elif config.masters:
            # Nothing to elect from: the config's first master is declared the writer.
            first = config.masters[0].name
            self.topology.apply(WriterChanged(None, first, "configured (health checks off)"))
        mysql, admin, http = config.listeners.mysql, config.listeners.admin, config.listeners.http
        await _listening("mysql", mysql, self.plane.start(self._server_version))
        if admin.port >= 0:
            await _listening("admin", admin, self.admin.start(admin.host, admin.port))
        if http.port >= 0:
            await _listening("http", http, self.http.start(http.host, http.port))

    async def _backend_version(self) -> str:
        timeout = self.config.pool.connect_timeout_ms / 1000
        for server in self.config.masters + self.config.replicas:
            try:
                greeting = await read_greeting(server.host, server.port, timeout)
            except (OSError, TimeoutError, BackendError, ProtocolError) as exc:
                log.warning("cannot read %s's version: %s", server.name, exc)
                continue
            return greeting.server_version
        log.warning("no backend answered; announcing version %s", FALLBACK_VERSION)
        return FALLBACK_VERSION

    async def stop(self, grace_s: float = 5.0) -> None:
        await self.admin.stop()
        await self.http.stop()
        await self.plane.stop(grace_s)
        await self.monitor.stop()
        await asyncio.sleep(0.05)  # let the COM_QUITs and closes reach the servers

    # -- operator commands -----------------------------------------------------------------------
    def set_server_offline(self, name: str, offline: bool) -> None:
        """Drain (OFFLINE_SOFT: running statements finish, nothing new) or bring back."""
        if name not in self.cluster.servers:
            raise ValueError(f"no server named {name!r}")
        if offline:
            reason = "set OFFLINE by an operator"
            self.topology.apply(ServerStatusChanged(name, HostStatus.OFFLINE_SOFT, reason))
        elif self.cluster.server(name).status is HostStatus.OFFLINE_SOFT:
            self.topology.apply(ServerStatusChanged(name, HostStatus.ONLINE, ""))
            self.monitor.recheck(name)  # it earns its real status at the next check
        log.warning("server %s set %s by the admin", name, "OFFLINE" if offline else "ONLINE")

    async def reload(self) -> tuple[bool, str]:
        """Apply what a restart would start with, without dropping clients (SIGHUP, admin's
        RELOAD): the config file, or the disk database when admin.database names one (it
        wins over the file, as at a start; LOAD ... FROM CONFIG takes the file's)."""
        if self.config_path is None:
            return False, "no config file to reload (the proxy was started without one)"
        try:
            new = plan_start(load_config(self.config_path), self.config_path, False).config
        except ConfigError as exc:
            log.error("config reload refused, keeping the running config: %s", exc)
            return False, f"config reload refused: {exc}"
        refused = await self._writer_leaves(new)
        if refused is None:
            try:
                await self.apply_config(new)
            except ConfigError as exc:  # the writer changed again meanwhile
                refused = str(exc)
        if refused is not None:
            log.error("config reload refused, keeping the running config: %s", refused)
            return False, f"config reload refused: {refused}"
        log.warning("config reloaded from %s", self.config_path)
        return True, f"reloaded {self.config_path}"

    async def _writer_leaves(self, new: Config) -> str | None:
        """A new config without the current writer among its masters (removed, renamed or
        made a replica): switch over first to a master both configs have, so that there is
        never a second writer nor a writer nobody checks. Why the reload is refused, or None."""
        writer = self.cluster.writer
        if writer is None or writer in {m.name for m in new.masters}:
            return None
        candidates = [
            m.name
            for m in new.masters
            if m.name in self.cluster.servers
            and self.cluster.server(m.name).status is HostStatus.ONLINE
            and self.cluster.server(m.name).config.role == "master"
        ]
        if not candidates:
            return (
                f"it removes {writer}, the current writer, and no master of the new config is "
                "online here to take over; add one or run a switchover first"
            )
        target = candidates[0]
        log.warning("config reload removes the writer %s: switchover to %s first", writer, target)
        try:
            await self.switchover(target)
        except (RuntimeError, ValueError) as exc:
            return f"it removes the writer {writer}; the switchover to {target} failed: {exc}"
        return None

    async def apply_config(self, new: Config) -> None:
        """Apply a config, in force for every new statement when this returns (the writer
        must be one of its masters: reload() switches over first when it is not)."""
        old = self.config
        writer = self.cluster.writer
        if writer is not None and writer not in {m.name for m in new.masters}:
            raise ConfigError(f"the new config does not have the current writer {writer}")
        if new.listeners != old.listeners:
            log.warning("listener changes take effect at the next restart")
            new = new.model_copy(update={"listeners": old.listeners})
        # Servers are added (or moved) before the config that may route to them reaches the
        # data path, and removed after it: no rule or route ever names an unknown server.
        names = {s.name for s in new.servers}
        was = {s.name: s.status for s in old.servers}
        for server in new.servers:
            state = self.cluster.servers.get(server.name)
            moved = state is not None and (state.config.host, state.config.port) != (
                server.host,
                server.port,
            )
            self.topology.apply(ServerConfigured(server, moved))
            # A status the config changes (mysql_servers.status) is applied; one set by SET
            # SERVER ... OFFLINE stays while the config's status for that server stays.
            if state is not None and was.get(server.name, server.status) != server.status:
                self.set_server_offline(server.name, server.status == "OFFLINE_SOFT")
        self.snapshot = Snapshot.build(new, self.cluster)
        self.plane.apply_config(new)
        for name in [n for n in self.cluster.servers if n not in names]:
            self.topology.apply(ServerRemoved(name))
        await self.plane.settled()

    async def kill(self, target_id: int, query_only: bool) -> ErrPacket | None:
        """The admin's KILL [QUERY] id: a session in any worker, whoever its user."""
        return await self.plane.kill(target_id, query_only)

    async def switchover(self, target: str) -> None:
        """Planned writer change with no client error: hold new writes, let running ones and
        open transactions on the old writer finish, swap read_only, resume on the new one."""
        old = self.cluster.writer
        if target == old:
            return
        if target not in {m.name for m in self.config.masters}:
            raise ValueError(f"{target} is not a master")
        if old is None:
            raise RuntimeError("no current writer to switch over from")
        self.topology.apply(SwitchoverStarted(old, target))
        done = False
        try:
            deadline = time.monotonic() + self.config.health.failover_hold_ms / 1000
            while time.monotonic() < deadline and await self.plane.busy_on(old):
                await asyncio.sleep(0.005)
            await self.monitor.swap_writer(old, target)
            done = True
        finally:
            self.topology.apply(SwitchoverEnded(old, target, done))


async def _listening(key: str, listen: Listen, start: Awaitable[None]) -> None:
    """Await a listener's start: an address it cannot bind (in use, not this host's) is a
    ConfigError that names the listener, as the admin's port taken by a ProxySQL still
    running must not read as the MySQL port's fault."""
    try:
        await start
    except OSError as exc:
        # os.strerror: uvloop's own text repeats the address
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(
            f"listeners.{key}: cannot listen on {listen.host}:{listen.port}: {reason}"
        ) from None
