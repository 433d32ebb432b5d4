"""Choosing the server a classified statement runs on: writer, weighted replicas, rules."""

from __future__ import annotations

from typing import Final

from proxy.cluster import Cluster, HostStatus, ServerState
from proxy.config import Config, Consistency
from proxy.routing.causal import PositionCache
from proxy.routing.classifier import Classification, StatementKind
from proxy.routing.rules import QueryRules

# Final: C globals in the compiled module (an enum member otherwise is an attribute lookup).
_ONLINE: Final = HostStatus.ONLINE
_WRITE: Final = StatementKind.WRITE


def _usable(server: ServerState) -> bool:
    """ServerState.usable without calling the property (interpreted: ~1,000 instructions,
    several times per statement)."""
    return server.status is _ONLINE


class Router:
    """Maps a statement to a server of the cluster, given the session's situation."""

    def __init__(self, cluster: Cluster, config: Config) -> None:
        self.cluster = cluster
        self.config = config
        # The routing settings read for every statement, as native attributes (a pydantic
        # model's attribute costs ~430 instructions): a reload builds a new Router.
        routing = config.routing
        self.consistency: Consistency = routing.consistency
        self.monotonic_reads = routing.monotonic_reads
        self.writer_serves_reads = routing.writer_serves_reads
        self.reads_fallback_to_writer = routing.reads_fallback_to_writer
        self.rules = QueryRules(config.query_rules)
        self.has_rules = bool(config.query_rules)  # QueryRules.__bool__ runs interpreted
        self.positions = PositionCache()  # servers' GTID positions as marks (causal reads)

    def writer(self) -> ServerState | None:
        name = self.cluster.writer
        if name is None:
            return None
        server = self.cluster.servers[name]
        return server if _usable(server) else None

    def readers(self) -> list[ServerState]:
        """Every replica that may take reads now."""
        return [
            s for s in self.cluster.servers.values() if _usable(s) and s.replica and s.weight > 0
        ]

    def reader(self) -> ServerState | None:
        """A healthy replica by weight (smooth weighted round-robin), fewest in flight on ties."""
        best: ServerState | None = None
        best_cur = 0
        total = 0
        for server in self.cluster.members:
            if server.status is not _ONLINE:
                continue
            if server.replica:
                weight = server.weight
            elif self.writer_serves_reads and server.name == self.cluster.writer:
                weight = max(server.weight, 1)
            else:
                continue
            if weight <= 0:
                continue
            cur = server.turn + weight
            server.turn = cur
            total += weight
            if (
                best is None
                or cur > best_cur
                or (cur == best_cur and server.outstanding < best.outstanding)
            ):
                best, best_cur = server, cur
        if best is not None:
            best.turn -= total
            return best
        return self.writer() if self.reads_fallback_to_writer else None

    def choose(
        self,
        stmt: Classification,
        *,
        autocommit: bool = True,
        wrote: bool = False,
        consistency: Consistency | None = None,
        override: str | None = None,
    ) -> ServerState | None:
        """The server for stmt; None when no server can take it."""
        route = override or stmt.hint_route
        if route is not None:
            if route == "writer":
                return self.writer()
            if route == "reader":
                return self.reader()
            named = self.cluster.servers.get(route)
            if named is not None and _usable(named):
                return named
            # An unknown or unhealthy server named in a hint: route by the statement instead.
        if stmt.kind is _WRITE or not autocommit:
            return self.writer()
        level = stmt.hint_consistency or consistency or self.consistency
        if level == "strong" or (level == "read_your_writes" and wrote):
            return self.writer()
        return self.reader()
