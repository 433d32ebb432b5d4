"""Prometheus metrics: plain counters on the hot path, turned into metric families at scrape."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from proxy.report import WorkerReport
    from proxy.view import ProxyView

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

# Final tuple[int, ...]: a Python tuple; a fixed-length tuple type would be a C struct in the
# compiled module, boxed into a new tuple each time _bucket_us is passed it.
COMMAND_BUCKETS_US: Final[tuple[int, ...]] = (
    100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000, 10_000_000,
)  # fmt: skip
"""stats_mysql_commands_counters' cnt_100us ... cnt_10s bounds; a last slot counts the rest."""
COMMANDS = (
    "ALTER", "ANALYZE", "BEGIN", "CALL", "CHANGE", "CHECK", "COMMIT", "CREATE", "DEALLOCATE",
    "DELETE", "DESCRIBE", "DO", "DROP", "EXECUTE", "EXPLAIN", "FLUSH", "GRANT", "HANDLER",
    "INSERT", "KILL", "LOAD", "LOCK", "OPTIMIZE", "PREPARE", "PURGE", "RELEASE", "RENAME",
    "REPLACE", "RESET", "REVOKE", "ROLLBACK", "SAVEPOINT", "SELECT", "SET", "SHOW", "START",
    "TRUNCATE", "UNLOCK", "UPDATE", "USE", "WITH", "XA", "UNKNOWN",
)  # fmt: skip
"""The commands counted apart (a statement's first keyword); any other verb is UNKNOWN."""
MAX_ERROR_KEYS: Final = 10_000
"""Distinct (hostgroup, server, user, client, schema, errno) rows stats_mysql_errors keeps."""

ErrorKey = tuple[int, str, int, str, str, str, int]
"""(hostgroup, hostname, port, username, client_address, schemaname, errno)."""


@dataclass(slots=True)
class ErrorCount:
    """One stats_mysql_errors row's counters (times: Unix seconds)."""

    count: int
    first_seen: int
    last_seen: int
    last_error: str

    def __add__(self, other: ErrorCount) -> ErrorCount:
        newer = other if other.last_seen >= self.last_seen else self
        return ErrorCount(
            self.count + other.count,
            min(self.first_seen, other.first_seen),
            max(self.last_seen, other.last_seen),
            newer.last_error,
        )


@dataclass(slots=True)
class Count:
    """A counter bumped in place (no int boxed per bump): the values of dicts and lists of
    counters."""

    n: int = 0

    def add(self, other: Count) -> None:
        self.n += other.n


@dataclass(slots=True)
class Histogram:
    """A histogram cheap enough for every statement: a scan of its bounds, three additions."""

    buckets: tuple[float, ...]
    # Per bucket, then above the last: Count objects bumped in place (a list of ints boxes a
    # new int, through a generic add, at every bump past 256).
    slots: list[Count] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.slots:
            self.slots = [Count() for _ in range(len(self.buckets) + 1)]

    @property
    def counts(self) -> list[int]:
        """Observations per bucket, then above the last."""
        return [slot.n for slot in self.slots]

    def observe(self, value: float) -> None:
        self.slots[_bucket(self.buckets, value)].n += 1
        self.sum += value
        self.count += 1

    def add(self, other: Histogram) -> None:
        for mine, theirs in zip(self.slots, other.slots, strict=True):
            mine.n += theirs.n
        self.sum += other.sum
        self.count += other.count

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            total += n
            out.append((repr(bound), float(total)))
        out.append(("+Inf", float(self.count)))
        return out


@dataclass(slots=True)
class RouteQueries:
    """One route's statements (pyproxy_queries by class and outcome) and their latency: native
    integer attributes, so that counting a statement allocates nothing."""

    read_ok: int = 0
    read_error: int = 0
    write_ok: int = 0
    write_error: int = 0
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))

    def add(self, other: RouteQueries) -> None:
        self.read_ok += other.read_ok
        self.read_error += other.read_error
        self.write_ok += other.write_ok
        self.write_error += other.write_error
        self.latency.add(other.latency)

    def by_outcome(self) -> tuple[tuple[str, str, int], ...]:
        """(class, outcome, count) for every pair."""
        return (
            ("read", "ok", self.read_ok),
            ("read", "error", self.read_error),
            ("write", "ok", self.write_ok),
            ("write", "error", self.write_error),
        )


@dataclass(slots=True)
class CommandCounts:
    """One stats_mysql_commands_counters row: total time (us), count, counts per bucket."""

    total_us: int = 0
    count: int = 0
    # Per COMMAND_BUCKETS_US bound, then above the last: bumped in place, as Histogram.slots.
    buckets: list[Count] = field(
        default_factory=lambda: [Count() for _ in range(len(COMMAND_BUCKETS_US) + 1)]
    )

    def add(self, other: CommandCounts) -> None:
        self.total_us += other.total_us
        self.count += other.count
        for mine, theirs in zip(self.buckets, other.buckets, strict=True):
            mine.n += theirs.n

    def row(self) -> list[int]:
        """[total_time_us, total_cnt, cnt_100us..cnt_INFs]"""
        return [self.total_us, self.count, *(bucket.n for bucket in self.buckets)]


_UNKNOWN: Final = COMMANDS.index("UNKNOWN")
# A statement's verb (as the classifier gives it, lower-case) -> its index in COMMANDS: the
# verb strings are the cached Classifications' own, so the lookup reuses their hashes. Never
# changed: another verb (any word may start a statement the server rejects) is upper-cased.
_COMMAND_INDEX: Final[dict[str, int]] = {
    **{c.lower(): i for i, c in enumerate(COMMANDS)},
    **{c: i for i, c in enumerate(COMMANDS)},
}


def _command_index(verb: str) -> int:
    index = _COMMAND_INDEX.get(verb)
    if index is None:
        index = _COMMAND_INDEX.get(verb.upper(), _UNKNOWN)
    return index


def _bucket(bounds: tuple[float, ...], value: float) -> int:
    """bisect.bisect_left(bounds, value) as a loop the compiled module runs natively (a dozen
    bounds: cheaper than the call out to bisect)."""
    i = 0
    for bound in bounds:
        if not bound < value:
            return i
        i += 1
    return i


def _bucket_us(bounds: tuple[int, ...], value: int) -> int:
    """_bucket for integer bounds (microseconds)."""
    i = 0
    for bound in bounds:
        if not bound < value:
            return i
        i += 1
    return i


@dataclass
class Metrics:
    """Counters the data path bumps; everything else is read from live state at scrape."""

    # pyproxy_queries and the query latency, per route: count (count_query, by name) bumps
    # them (and command_counts, servers) for every statement, as native attributes where it can.
    writer_queries: RouteQueries = field(default_factory=RouteQueries)
    reader_queries: RouteQueries = field(default_factory=RouteQueries)
    accepted: int = 0
    refused: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    backend_errors: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    bytes_in: int = 0
    bytes_out: int = 0
    # (outcome, reason): a session's backend connection was lost; carried over or refused
    backend_lost: defaultdict[tuple[str, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    query_timeouts: int = 0
    reads_retried_on_down: int = 0
    # read-your-writes
    consistency_reads_to_writer: int = 0
    gtid_waits: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    gtid_wait_seconds: Histogram = field(default_factory=lambda: Histogram(WAIT_BUCKETS))
    # stats_mysql_commands_counters, one row per COMMANDS entry (commands: as a dict)
    command_counts: list[CommandCounts] = field(
        default_factory=lambda: [CommandCounts() for _ in COMMANDS]
    )
    # server -> statements it ran (server_queries: as a dict of ints)
    servers: dict[str, Count] = field(default_factory=dict)
    # stats_mysql_errors: errors the servers answered, by where, who and errno
    errors: dict[ErrorKey, ErrorCount] = field(default_factory=dict)
    # Unix time; ProxySQL_Uptime (summed over workers: the earliest start)
    started: float = field(default_factory=time.time, metadata={"merge": min})
    # causal reads: outcome (replica_fresh, replica_after_wait, writer_fallback) -> reads
    causal_reads: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    causal_wait_seconds: Histogram = field(default_factory=lambda: Histogram(WAIT_BUCKETS))
    # causal_global: writer position queries sent, and reads that shared or reused one
    causal_positions: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))

    def count_query(
        self, writer: bool, read: bool, ok: bool, seconds: float, verb: str, server: str
    ) -> None:
        """One statement run: on the writer or a reader, a read or a write, its outcome,
        latency, verb and server."""
        self.count(
            writer, read, ok, seconds, self.command_counter(verb), self.server_counter(server)
        )

    def command_counter(self, verb: str) -> CommandCounts:
        """The stats_mysql_commands_counters row of a statement's verb."""
        return self.command_counts[_command_index(verb)]

    def server_counter(self, server: str) -> Count:
        """The statement count of a server (made at its first statement)."""
        count = self.servers.get(server)
        if count is None:
            count = self.servers[server] = Count()
        return count

    def count(
        self,
        writer: bool,
        read: bool,
        ok: bool,
        seconds: float,
        command: CommandCounts,
        server: Count,
    ) -> None:
        """count_query with the verb's and server's counters found already: a session keeps
        them from one statement to the next (no dict lookup per statement)."""
        route = self.writer_queries if writer else self.reader_queries
        if read:
            if ok:
                route.read_ok += 1
            else:
                route.read_error += 1
        elif ok:
            route.write_ok += 1
        else:
            route.write_error += 1
        route.latency.observe(seconds)
        server.n += 1
        us = int(seconds * 1e6)
        command.total_us += us
        command.count += 1
        command.buckets[_bucket_us(COMMAND_BUCKETS_US, us)].n += 1

    @property
    def queries(self) -> dict[tuple[str, str, str], int]:
        """(route, class, outcome) -> statements, for the pairs counted at least once."""
        return {
            (route, klass, outcome): n
            for route, counts in (("writer", self.writer_queries), ("reader", self.reader_queries))
            for klass, outcome, n in counts.by_outcome()
            if n
        }

    @property
    def latency(self) -> dict[str, Histogram]:
        return {"writer": self.writer_queries.latency, "reader": self.reader_queries.latency}

    @property
    def commands(self) -> dict[str, list[int]]:
        """command -> [total_time_us, total_cnt, cnt_100us..cnt_INFs], the commands counted."""
        rows = zip(COMMANDS, self.command_counts, strict=True)
        return {command: counts.row() for command, counts in rows if counts.count}

    @property
    def server_queries(self) -> dict[str, int]:
        return {name: count.n for name, count in self.servers.items()}

    def record_error(self, key: ErrorKey, message: str) -> None:
        """Count an error a server answered (a new key is dropped when the table is full)."""
        now = int(time.time())
        entry = self.errors.get(key)
        if entry is None:
            if len(self.errors) < MAX_ERROR_KEYS:
                self.errors[key] = ErrorCount(1, now, now, message)
            return
        entry.count += 1
        entry.last_seen = now
        entry.last_error = message

    def add(self, other: Metrics) -> None:
        """Add another worker's counters to these (every field: numbers, dicts of numbers,
        histograms, counters with an add() and dicts or lists of them, so that a new counter
        sums with no code here)."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if "merge" in f.metadata:
                setattr(self, f.name, f.metadata["merge"](mine, theirs))
            elif isinstance(mine, (Histogram, RouteQueries)):
                mine.add(theirs)
            elif isinstance(mine, list):  # command_counts: one row per command
                for row, other_row in zip(mine, theirs, strict=True):
                    row.add(other_row)
            elif isinstance(mine, dict):
                for key, value in theirs.items():
                    if isinstance(value, Histogram):
                        mine.setdefault(key, Histogram(value.buckets)).add(value)
                    elif isinstance(value, Count):
                        mine.setdefault(key, Count()).add(value)
                    elif key not in mine:
                        mine[key] = value
                    else:
                        mine[key] = mine.get(key, 0) + value
            else:
                setattr(self, f.name, mine + theirs)


class ProxyCollector:
    """Builds the exposition from the proxy's state and the data plane's report, summed over
    the workers (prometheus-client custom collector)."""

    def __init__(self, server: ProxyView, report: WorkerReport) -> None:
        self.server = server
        self.report = report

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families vary with the servers configured

    def collect(self) -> Iterator[Metric]:
        s, r = self.server, self.report
        m = r.metrics
        yield _gauge("pyproxy_client_connections", "Client connections open now", r.connections)
        yield _counter(
            "pyproxy_client_connections_accepted", "Client connections accepted", m.accepted
        )
        refused = CounterMetricFamily(
            "pyproxy_client_connections_refused",
            "Client connections refused, by reason",
            labels=["reason"],
        )
        for reason in (
            "max_connections",
            "max_user_connections",
            "auth",
            "connect_timeout",
            "handshake_evicted",
            "handshake_too_large",
        ):
            refused.add_metric([reason], m.refused.get(reason, 0))
        yield refused
        lost = CounterMetricFamily(
            "pyproxy_backend_connection_lost",
            "Backend connections lost under a session: carried over (nothing was lost) or "
            "refused (the client got a lost-connection error), by what the session held",
            labels=["outcome", "reason"],
        )
        for (outcome, reason), n in sorted(m.backend_lost.items()):
            lost.add_metric([outcome, reason], n)
        yield lost
        yield _counter(
            "pyproxy_query_timeouts",
            "Statements that ran past routing.query_timeout_ms (KILL QUERY sent)",
            m.query_timeouts,
        )
        yield _counter(
            "pyproxy_reads_retried_on_down",
            "Reads moved to another server because theirs was marked DOWN mid-statement",
            m.reads_retried_on_down,
        )
        yield _counter("pyproxy_client_received_bytes", "Bytes received from clients", m.bytes_in)
        yield _counter("pyproxy_client_sent_bytes", "Bytes relayed to clients", m.bytes_out)

        queries = CounterMetricFamily(
            "pyproxy_queries",
            "Statements by route, class, outcome",
            labels=["route", "class", "outcome"],
        )
        for (route, klass, outcome), n in sorted(m.queries.items()):
            queries.add_metric([route, klass, outcome], n)
        yield queries
        hist = HistogramMetricFamily(
            "pyproxy_query_duration_seconds",
            "Statement latency through the proxy, by route",
            labels=["route"],
        )
        for route, h in m.latency.items():
            hist.add_metric([route], h.cumulative(), sum_value=h.sum)
        yield hist

        conns = GaugeMetricFamily(
            "pyproxy_backend_connections",
            "Backend connections per server and state",
            labels=["server", "state"],
        )
        errors = CounterMetricFamily(
            "pyproxy_backend_errors", "Backend connection errors", labels=["server"]
        )
        checks = CounterMetricFamily(
            "pyproxy_health_checks", "Health checks by result", labels=["server", "result"]
        )
        check_lat = GaugeMetricFamily(
            "pyproxy_health_check_duration_seconds",
            "Duration of the last successful health check",
            labels=["server"],
        )
        state = GaugeMetricFamily(
            "pyproxy_server_state",
            "1 for the state each server is in (writer, reader, standby, shunned, offline, down)",
            labels=["server", "state"],
        )
        lag = GaugeMetricFamily(
            "pyproxy_replication_lag_seconds",
            "Replication lag reported by each replica (absent: unknown)",
            labels=["server"],
        )
        for name, st in s.cluster.servers.items():
            numbers = r.pools.get(name)
            conns.add_metric([name, "in_use"], numbers.in_use if numbers else 0)
            conns.add_metric([name, "idle"], numbers.idle if numbers else 0)
            errors.add_metric([name], m.backend_errors.get(name, 0))
            cs = s.check_stats.get(name)
            if cs is not None:
                checks.add_metric([name, "ok"], cs.checks_ok)
                checks.add_metric([name, "failed"], cs.checks_failed)
                checks.add_metric([name, "unknown"], cs.checks_unknown)
                check_lat.add_metric([name], cs.last_latency_s)
            current = s.cluster.role(name)
            for label in ("writer", "reader", "standby", "shunned", "offline", "down"):
                state.add_metric([name, label], 1.0 if label == current else 0.0)
            if st.lag_s is not None:
                lag.add_metric([name], st.lag_s)
        yield from (conns, errors, checks, check_lat, state, lag)
        by_errno: defaultdict[int, int] = defaultdict(int)
        for key, entry in m.errors.items():
            by_errno[key[-1]] += entry.count
        errnos = CounterMetricFamily(
            "pyproxy_server_errors",
            "Errors the servers answered and failed backend connections, by errno "
            "(stats_mysql_errors summed)",
            labels=["errno"],
        )
        for errno, n in sorted(by_errno.items()):
            errnos.add_metric([str(errno)], n)
        yield errnos

        events = s.failovers
        yield _counter(
            "pyproxy_failovers", "Writer changes (failovers and switchovers)", len(events)
        )
        last = events[-1] if events else None
        yield _gauge(
            "pyproxy_last_failover_duration_seconds",
            "From the old writer going DOWN to the new writer taking writes",
            (last.promoted_at - last.detected_at) if last else 0.0,
        )
        yield _counter(
            "pyproxy_writer_conflicts",
            "Times two masters were writable at once",
            s.conflicts,
        )
        hits = CounterMetricFamily("pyproxy_query_rule_hits", "Query rule matches", labels=["rule"])
        rules = s.router.rules.rules
        for i, rule in enumerate(rules):
            n = r.rule_hits[i] if i < len(r.rule_hits) else 0
            hits.add_metric([rule.name or f"rule{i + 1}"], n)
        yield hits

        yield _counter(
            "pyproxy_consistency_reads_to_writer",
            "Reads sent to the writer to keep read-your-writes",
            m.consistency_reads_to_writer,
        )
        waits = CounterMetricFamily(
            "pyproxy_gtid_waits", "GTID waits on replicas by outcome", labels=["outcome"]
        )
        for outcome in ("caught_up", "timed_out"):
            waits.add_metric([outcome], m.gtid_waits.get(outcome, 0))
        yield waits
        wait_hist = HistogramMetricFamily(
            "pyproxy_gtid_wait_seconds", "Time spent waiting for a replica to catch up"
        )
        wait_hist.add_metric(
            [], m.gtid_wait_seconds.cumulative(), sum_value=m.gtid_wait_seconds.sum
        )
        yield wait_hist
        causal = CounterMetricFamily(
            "pyproxy_causal_reads",
            "Causal reads by outcome: on a replica that had the high-water mark, on one after "
            "a wait for it, or on the writer",
            labels=["outcome"],
        )
        for outcome in ("replica_fresh", "replica_after_wait", "writer_fallback"):
            causal.add_metric([outcome], m.causal_reads.get(outcome, 0))
        yield causal
        causal_hist = HistogramMetricFamily(
            "pyproxy_causal_wait_seconds",
            "Time causal reads waited for a replica to reach the high-water mark",
        )
        causal_hist.add_metric(
            [], m.causal_wait_seconds.cumulative(), sum_value=m.causal_wait_seconds.sum
        )
        yield causal_hist
        positions = CounterMetricFamily(
            "pyproxy_causal_position_queries",
            "causal_global: writer position queries sent, and reads that shared or reused one",
            labels=["kind"],
        )
        for kind in ("queries", "shared", "reused"):
            positions.add_metric([kind], m.causal_positions.get(kind, 0))
        yield positions
        age = s.watermark.age_s()
        if age is not None:
            yield _gauge(
                "pyproxy_causal_mark_age_seconds",
                "Since the high-water mark of acknowledged commits last advanced",
                age,
            )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def exposition(server: ProxyView, report: WorkerReport) -> bytes:
    """The text exposition of this proxy (collected from the workers' report: one /metrics for
    the whole proxy, with the project's own collector, which prometheus_client's
    multiprocess mode could not serve)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(server, report))
    return generate_latest(registry)
