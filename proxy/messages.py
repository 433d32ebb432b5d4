"""What the topology process and the workers tell each other over their channel."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.cluster import Cluster
from proxy.config import Config
from proxy.topology import Event


# -- topology process -> worker ---------------------------------------------------------------
@dataclass(frozen=True)
class Start:
    """Everything a new worker needs: the config, the cluster as it is now, its id range."""

    index: int
    workers: int
    config: Config
    cluster: Cluster
    server_version: str
    port: int  # the MySQL port, already chosen (a config's port 0 is resolved once)
    first_id: int  # session ids first_id..last_id are this worker's
    last_id: int
    user_slots: dict[str, int]  # shared.SharedCounts slots
    watermark: int  # the shared high-water mark's fd (inherited): this worker writes row `index`


@dataclass(frozen=True)
class Events:
    """Topology events in the order applied; writer: the writer after them."""

    events: tuple[Event, ...]
    writer: str | None


@dataclass(frozen=True)
class Heartbeat:
    writer: str | None


@dataclass(frozen=True)
class Reload:
    config: Config
    user_slots: dict[str, int]


@dataclass(frozen=True)
class Drain:
    """Close the listener, let running statements finish within grace_s, exit."""

    grace_s: float


# -- calls to a worker (answered with a Reply) -------------------------------------------------
@dataclass(frozen=True)
class ReportRequest:
    """-> report.WorkerReport (reset_digests: and clear the digests, stats_*_reset; detail
    False: without digests and sessions, what /metrics reads, cheap to build and send)"""

    reset_digests: bool = False
    detail: bool = True


@dataclass(frozen=True)
class Sync:
    """-> True once every message sent before it is applied (the failover barrier)."""


@dataclass(frozen=True)
class BusyOn:
    """-> whether a statement or transaction is open on server."""

    server: str


@dataclass(frozen=True)
class Kill:
    """KILL [QUERY] id for user (None: the admin): -> None (done) or the Refused to answer.
    Also sent by a worker to the topology process for an id that is not its own."""

    target_id: int
    username: str | None
    query_only: bool


@dataclass(frozen=True)
class Refused:
    """The error a call answers with (not an ErrPacket: compiled by mypyc, a frozen native
    class does not unpickle)."""

    code: int
    message: str


# -- worker -> topology process ---------------------------------------------------------------
@dataclass(frozen=True)
class Ready:
    pid: int


@dataclass(frozen=True)
class Recheck:
    """The data path saw this server fail: check it now."""

    server: str
