"""What a data path reports to the admin and the metrics, as plain picklable data (a worker
process sends it over its channel), and the sum of several such reports."""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from proxy.frontend.processlist import backend_of, command_of
from proxy.metrics import Metrics
from proxy.routing.stats import DigestStats, StatsKey

if TYPE_CHECKING:
    from proxy.frontend.listener import ProxyServer

Row = dict[str, Any]
# A statement's text in stats_mysql_processlist, cut here (ProxySQL cuts digests at 2048 by
# default): a report of thousands of sessions running multi-MB statements stays small.
INFO_MAX_CHARS = 2048


@dataclass(frozen=True)
class PoolNumbers:
    """A server's backend connections as one data path sees them."""

    created: int = 0
    errors: int = 0
    reused: int = 0
    idle: int = 0
    in_use: int = 0
    outstanding: int = 0  # statements in flight

    def __add__(self, other: PoolNumbers) -> PoolNumbers:
        return PoolNumbers(
            self.created + other.created,
            self.errors + other.errors,
            self.reused + other.reused,
            self.idle + other.idle,
            self.in_use + other.in_use,
            self.outstanding + other.outstanding,
        )


@dataclass(frozen=True)
class WorkerShare:
    """One worker's part: for the admin's and the benchmark's per-worker figures."""

    index: int
    pid: int
    connections: int
    statements: int


@dataclass(frozen=True)
class WorkerReport:
    """Counters, digests, pools and sessions of one data path (or of all, merged)."""

    workers: tuple[WorkerShare, ...]
    connections: int  # client sessions open
    metrics: Metrics
    digests: dict[StatsKey, DigestStats]
    pools: dict[str, PoolNumbers]
    processlist: tuple[Row, ...]  # stats_mysql_processlist rows
    rule_hits: tuple[int, ...]
    taken_at: float = field(default_factory=time.time)


def build_report(
    listener: ProxyServer, index: int = 0, reset_digests: bool = False, detail: bool = True
) -> WorkerReport:
    """A copy of the data path's state now (copied: the report outlives this moment);
    reset_digests: the digests are cleared once copied (nothing counted between is lost);
    detail False: no digests nor processlist (the metrics read neither: a scrape stays cheap
    for the worker's clients however many digests it keeps)."""
    in_use = listener.backend_in_use()
    pools = {
        name: PoolNumbers(
            stats.created,
            stats.errors,
            stats.reused,
            listener.pool.idle_count(name),
            in_use.get(name, 0),
            st.outstanding,
        )
        for name, st in listener.cluster.servers.items()
        for stats in (listener.pool.stats[name],)
    }
    metrics = copy.deepcopy(listener.metrics)
    statements = sum(metrics.queries.values())
    report = WorkerReport(
        workers=(WorkerShare(index, os.getpid(), len(listener.sessions), statements),),
        connections=len(listener.sessions),
        metrics=metrics,
        digests={k: copy.copy(e) for k, e in listener.digests.entries.items()} if detail else {},
        pools=pools,
        processlist=tuple(_processlist(listener, index)) if detail else (),
        rule_hits=tuple(listener.router.rules.hits),
    )
    if reset_digests:
        listener.digests.reset()
    return report


def _processlist(listener: ProxyServer, index: int) -> list[Row]:
    rows = []
    now = time.monotonic()
    cluster = listener.cluster
    for session in sorted(listener.sessions.values(), key=lambda s: s.id):
        if session.user is None:
            continue  # still logging in
        command, info = command_of(session, session.is_executing)
        conn = backend_of(session)
        server = cluster.servers.get(conn.server_name) if conn is not None else None
        rows.append({
            "ThreadID": index,  # the worker process serving the session
            "SessionID": session.id,
            "user": session.username,
            "db": session.state.schema or None,
            "cli_host": session.client.peer[0],
            "cli_port": session.client.peer[1],
            "hostgroup": cluster.hostgroup(server.name) if server is not None else None,
            "srv_host": server.config.host if server is not None else None,
            "srv_port": server.config.port if server is not None else None,
            "command": command,
            "time_ms": int((now - session.phase_since) * 1000),
            "info": info if info is None or len(info) <= INFO_MAX_CHARS else info[:INFO_MAX_CHARS],
            "server": conn.server_name if conn is not None else None,
            "backend_thread_id": conn.thread_id if conn is not None else None,
        })  # fmt: skip
    return rows


def merge(reports: list[WorkerReport]) -> WorkerReport:
    """The whole proxy: counters, histograms, pools and digests summed, sessions together."""
    metrics = Metrics()
    digests: dict[StatsKey, DigestStats] = {}
    pools: dict[str, PoolNumbers] = {}
    hits: list[int] = []
    for report in reports:
        metrics.add(report.metrics)
        for key, entry in report.digests.items():
            mine = digests.get(key)
            digests[key] = copy.copy(entry) if mine is None else _add_digest(mine, entry)
        for name, numbers in report.pools.items():
            pools[name] = pools.get(name, PoolNumbers()) + numbers
        if len(report.rule_hits) > len(hits):
            hits += [0] * (len(report.rule_hits) - len(hits))
        for i, n in enumerate(report.rule_hits):
            hits[i] += n
    return WorkerReport(
        workers=tuple(w for r in reports for w in r.workers),
        connections=sum(r.connections for r in reports),
        metrics=metrics,
        digests=digests,
        pools=pools,
        processlist=tuple(sorted((row for r in reports for row in r.processlist),
                                 key=lambda row: int(row["SessionID"]))),
        rule_hits=tuple(hits),
    )  # fmt: skip


def _add_digest(a: DigestStats, b: DigestStats) -> DigestStats:
    return replace(
        a,
        count_star=a.count_star + b.count_star,
        first_seen=min(a.first_seen, b.first_seen),
        last_seen=max(a.last_seen, b.last_seen),
        sum_time_us=a.sum_time_us + b.sum_time_us,
        min_time_us=min(a.min_time_us, b.min_time_us),
        max_time_us=max(a.max_time_us, b.max_time_us),
        sum_rows_sent=a.sum_rows_sent + b.sum_rows_sent,
        sum_rows_affected=a.sum_rows_affected + b.sum_rows_affected,
    )
