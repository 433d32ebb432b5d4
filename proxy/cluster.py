"""Runtime view of the backend servers (changed only by proxy.topology, but for counters)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from proxy.config import Config, Server

# Final: constants in the compiled module, not module dict lookups (hostgroup_of: per statement).
WRITER_HOSTGROUP: Final = 0  # ProxySQL's usual writer hostgroup
READER_HOSTGROUP: Final = 1
STANDBY_HOSTGROUP: Final = 2  # masters that are not the writer (ProxySQL's backup writers)


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
    # The data path's counters (not proxy.topology's): statements in flight, for
    # least-outstanding balancing (the sessions'), and the router's smooth weighted
    # round-robin counter (Router.reader's alone).
    outstanding: int = 0
    turn: int = field(default=0, repr=False, compare=False)
    # config's fields the data path reads for every statement, as plain attributes: a
    # pydantic model's attribute costs ~430 instructions (its __getattr__ hook), these (a
    # compiled module's native attributes) a few.
    name: str = field(init=False, repr=False, compare=False)
    replica: bool = field(init=False, repr=False, compare=False)
    weight: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.configure(self.config)

    def configure(self, config: Server) -> None:
        """A new config for this server (same name): config and its copies change together."""
        self.config = config
        self.name = config.name
        self.replica = config.role == "replica"
        self.weight = config.weight

    @property
    def usable(self) -> bool:
        return self.status is HostStatus.ONLINE


@dataclass
class Cluster:
    """Server states plus the current writer, and what they mean (role, hostgroup)."""

    servers: dict[str, ServerState] = field(default_factory=dict)
    writer: str | None = None
    writer_reason: str = "no writer elected yet (the first health checks are running)"
    # servers' values, for the loop over them per statement (a tuple is walked without the
    # dict iteration protocol): add() and remove() keep it.
    members: tuple[ServerState, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.members = tuple(self.servers.values())

    def add(self, state: ServerState) -> None:
        self.servers[state.name] = state
        self.members = tuple(self.servers.values())

    def remove(self, name: str) -> bool:
        """Whether there was such a server."""
        if self.servers.pop(name, None) is None:
            return False
        self.members = tuple(self.servers.values())
        return True

    @classmethod
    def from_config(cls, config: Config, writer: str | None = None) -> Cluster:
        """The servers of a config, with no writer: the health checker elects one from what
        the servers say (writer: one known already, e.g. in tests)."""
        return cls({s.name: ServerState(s, HostStatus(s.status)) for s in config.servers}, writer)

    def server(self, name: str) -> ServerState:
        return self.servers[name]

    def role(self, name: str) -> str:
        """writer / reader / standby / shunned / offline / down, for metrics and the admin."""
        st = self.servers[name]
        if st.status is HostStatus.DOWN:
            return "down"
        if st.status is HostStatus.OFFLINE_SOFT:
            return "offline"
        if st.status is HostStatus.SHUNNED:
            return "shunned"
        if name == self.writer:
            return "writer"
        return "reader" if st.replica else "standby"

    def hostgroup(self, name: str) -> int:
        """ProxySQL's hostgroup of a server: writer 0, replicas 1, other masters 2."""
        return self.hostgroup_of(self.servers[name])

    def hostgroup_of(self, server: ServerState) -> int:
        """hostgroup() of a server in hand (no lookup by name: once per statement)."""
        if server.name == self.writer:
            return WRITER_HOSTGROUP
        return READER_HOSTGROUP if server.replica else STANDBY_HOSTGROUP
