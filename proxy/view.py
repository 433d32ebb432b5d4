"""What the parts of the proxy share: the running snapshot (config and routing), and the
narrow view of the proxy that the admin interface and the metrics read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from proxy.cluster import Cluster
from proxy.config import Config
from proxy.routing.router import Router

if TYPE_CHECKING:
    from proxy.health.monitor import CheckStats
    from proxy.health.monitorlog import MonitorLog
    from proxy.protocol.packets import ErrPacket
    from proxy.report import WorkerReport
    from proxy.topology import FailoverEvent
    from proxy.watermark import Watermark


@dataclass(frozen=True)
class Snapshot:
    """The config and what is built from it (router, query rules; users are in the config):
    a reload builds a new one and swaps it in with one assignment."""

    config: Config
    router: Router

    @classmethod
    def build(cls, config: Config, cluster: Cluster) -> Snapshot:
        return cls(config, Router(cluster, config))


class ProxyView(Protocol):
    """The running proxy as the admin interface and the metrics see it: read-only state (the
    data path's as a report, fetched from the workers), and the few commands an operator
    may issue."""

    config_path: str | None

    @property
    def config(self) -> Config: ...
    @property
    def router(self) -> Router: ...
    @property
    def cluster(self) -> Cluster: ...
    async def report(self, reset_digests: bool = False, detail: bool = True) -> WorkerReport: ...
    @property
    def check_stats(self) -> Mapping[str, CheckStats]: ...
    @property
    def monitor_log(self) -> MonitorLog: ...
    @property
    def failovers(self) -> Sequence[FailoverEvent]: ...
    @property
    def conflicts(self) -> int: ...
    @property
    def server_version(self) -> str: ...
    @property
    def watermark(self) -> Watermark: ...
    async def switchover(self, target: str) -> None: ...
    def set_server_offline(self, name: str, offline: bool) -> None: ...
    async def reload(self) -> tuple[bool, str]: ...
    async def apply_config(self, new: Config) -> None: ...
    async def kill(self, target_id: int, query_only: bool) -> ErrPacket | None: ...
