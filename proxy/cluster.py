"""Runtime view of the backend servers: which one is the writer, which may take reads."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from proxy.config import Config, Server


class HostStatus(enum.Enum):
    ONLINE = "ONLINE"
    SHUNNED = "SHUNNED"  # unhealthy or lagging: no new statements
    OFFLINE_SOFT = "OFFLINE_SOFT"  # drained by an operator: running statements finish
    DOWN = "DOWN"


@dataclass
class ServerState:
    config: Server
    status: HostStatus = HostStatus.ONLINE
    read_only: bool | None = None
    lag_s: float | None = None
    last_error: str = ""
    reason: str = ""  # why the status is what it is (shunned: lag, stopped thread...)
    gtid_position: str = ""
    outstanding: int = 0  # statements in flight, for least-outstanding balancing

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def usable(self) -> bool:
        return self.status is HostStatus.ONLINE


@dataclass
class Cluster:
    """Server states plus the current writer; the health checker is the one that changes it."""

    servers: dict[str, ServerState] = field(default_factory=dict)
    writer: str | None = None

    @classmethod
    def from_config(cls, config: Config) -> Cluster:
        cluster = cls({s.name: ServerState(s) for s in config.servers})
        masters = config.masters
        cluster.writer = masters[0].name if masters else None
        return cluster

    def server(self, name: str) -> ServerState:
        return self.servers[name]

    def set_writer(self, name: str | None) -> None:
        self.writer = name

    def replicas(self) -> list[ServerState]:
        return [s for s in self.servers.values() if s.config.role == "replica"]
