"""`pyproxy load`: paced reads and writes through the proxy, with a per-node replication check."""

from __future__ import annotations

import contextlib
import random
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import pymysql

from proxy.tools.nodes import Endpoint, ToolError, describe
from proxy.tools.progress import Progress
from proxy.tools.stats import Samples, ms, table

DEFAULT_TABLE = "pyproxy_load"
# Each node is asked for the rows it has not shown yet right after a write, then again after
# a pause that grows with how long the oldest one has been missing: fine resolution for
# millisecond delays, few queries for a node that is seconds behind.
POLL_SPACING_S = ((0.01, 0.001), (1.0, 0.005), (float("inf"), 0.02))  # (oldest age <, pause)
POLL_BATCH = 1000  # tokens per IN (...) list
POLL_MAX_BATCHES = 20  # per round; a node catching up after an outage is read in slices
MAX_PENDING = 1_000_000  # per node; beyond it the oldest rows stop being tracked
RECENT_IDS = 10_000  # rows updates and reads pick from
RECONNECT_PAUSE_S = 0.2
KEPT_ERRORS = 50
TABLE_NAME = re.compile(r"^[A-Za-z0-9_$]+(\.[A-Za-z0-9_$]+)?$")

_NOT_THERE_YET = {1146, 1049}  # the table/schema has not replicated to that node yet


@dataclass(frozen=True)
class LoadOptions:
    rate: float = 200.0  # operations per second in total; 0 = as fast as the threads go
    duration: float = 0.0  # seconds; 0 = until interrupted
    reads: int = 80
    writes: int = 20
    table: str = DEFAULT_TABLE  # "table" (in the user's default schema) or "schema.table"
    threads: int = 4
    settle: float = 5.0  # after the run, how long to wait for rows still unseen on a node


def parse_mix(text: str) -> tuple[int, int]:
    """'80:20' -> (80, 20): the share of reads and of writes."""
    parts = text.split(":")
    try:
        reads, writes = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r} is not READ:WRITE, e.g. 80:20") from None
    if reads < 0 or writes < 0 or reads + writes == 0:
        raise ValueError(f"{text!r}: shares must be >= 0 and not both 0")
    return reads, writes


def qualified_table(name: str, default_schema: str | None) -> tuple[str, str]:
    if not TABLE_NAME.match(name):
        raise ToolError(f"--table: {name!r} is not a table name (letters, digits, _ and $)")
    if "." in name:
        schema, tbl = name.split(".", 1)
        return schema, tbl
    return default_schema or "demo_db", name


@dataclass
class Mark:
    """The first successful write and read among the operations started at or after `at`."""

    at: float
    first_write: float | None = None
    first_read: float | None = None


class Recent:
    """The ids of the last rows written, for updates and reads to pick from."""

    def __init__(self, size: int = RECENT_IDS) -> None:
        self._ids: list[int] = []
        self._size = size
        self._pos = 0
        self._lock = threading.Lock()
        self._rng = random.Random()

    def add(self, row_id: int) -> None:
        with self._lock:
            if len(self._ids) < self._size:
                self._ids.append(row_id)
            else:
                self._ids[self._pos] = row_id
                self._pos = (self._pos + 1) % self._size

    def pick(self) -> int | None:
        with self._lock:
            return self._rng.choice(self._ids) if self._ids else None


class Scheduler:
    """Hands out operation slots at the target rate, reads and writes in the requested mix."""

    def __init__(self, rate: float, reads: int, writes: int) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._reads, self._writes = reads, writes
        self._lock = threading.Lock()
        self._next = time.monotonic()
        self._k = 0
        self._w = 0

    def take(self) -> tuple[float, str]:
        with self._lock:
            now = time.monotonic()
            # After a stall (failover hold, reconnects) make up at most a second of missed slots.
            self._next = max(self._next, now - 1.0)
            when = self._next
            self._next += self._interval
            k = self._k
            self._k += 1
            total = self._reads + self._writes
            if (k + 1) * self._writes // total > k * self._writes // total:
                self._w += 1
                kind = "update" if self._w % 3 == 0 else "insert"
            else:
                kind = "read"
        return when, kind


class NodeWatch:
    """Polls one server directly for the rows written through the proxy it has not shown yet."""

    def __init__(self, endpoint: Endpoint, schema: str, tbl: str, stop: threading.Event) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self._sql = f"SELECT token FROM `{schema}`.`{tbl}` WHERE token IN %s"
        self._stop = stop
        self._lock = threading.Lock()
        self.pending: dict[str, float] = {}  # token -> when its INSERT was acknowledged
        self.delays = Samples()
        self.untracked = 0
        self.reachable: bool | None = None  # None until the first connection attempt
        self.error = ""
        self.down_since: float | None = None
        self.outages: list[tuple[float, float | None]] = []
        self.table_missing = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def expect(self, token: str, acked: float) -> None:
        with self._lock:
            if len(self.pending) >= MAX_PENDING:
                self.pending.pop(next(iter(self.pending)))
                self.untracked += 1
            self.pending[token] = acked
        self._wake.set()

    def oldest_pending(self) -> float | None:
        """When the longest-missing row was acknowledged (rows are added in about ack order)."""
        with self._lock:
            return next(iter(self.pending.values()), None)

    def pending_before(self, at: float) -> int:
        with self._lock:
            return sum(1 for acked in self.pending.values() if acked < at)

    def unseen(self) -> int:
        with self._lock:
            return len(self.pending) + self.untracked

    def _mark_down(self, exc: BaseException) -> None:
        self.error = describe(exc)
        if self.reachable is not False:
            self.down_since = time.monotonic()
            self.outages.append((self.down_since, None))
        self.reachable = False

    def _mark_up(self) -> None:
        if self.reachable is False and self.outages:
            start, _ = self.outages[-1]
            self.outages[-1] = (start, time.monotonic())
        self.reachable = True
        self.down_since = None
        self.error = ""

    def _run(self) -> None:
        conn: pymysql.Connection | None = None
        last_sent = 0.0
        while not self._stop.is_set():
            if conn is None:
                try:
                    conn = self.endpoint.connect(timeout=1.0, read_timeout=5.0)
                except (pymysql.MySQLError, OSError) as exc:
                    self._mark_down(exc)
                    self._stop.wait(0.5)
                    continue
                self._mark_up()
                # Nothing was observable while it was away: visibility is bounded from now on.
                last_sent = time.monotonic()
            self._wake.clear()
            with self._lock:
                tokens = list(self.pending)[: POLL_BATCH * POLL_MAX_BATCHES]
            if not tokens:
                self._wake.wait(0.1)
                continue
            sent = time.monotonic()
            try:
                found = self._query(conn, tokens)
            except (pymysql.MySQLError, OSError) as exc:
                self._mark_down(exc)
                conn.close()
                conn = None
                continue
            with self._lock:
                for token in found:
                    acked = self.pending.pop(token, None)
                    if acked is None:
                        continue
                    # Not visible at the previous poll (or before the ack), visible at this one.
                    lower = max(acked, last_sent)
                    self.delays.add(max(0.0, (lower + sent) / 2 - acked))
                oldest = next(iter(self.pending.values()), sent)
            last_sent = sent
            age = time.monotonic() - oldest
            self._stop.wait(next(pause for limit, pause in POLL_SPACING_S if age < limit))
        if conn is not None:
            conn.close()

    def _query(self, conn: pymysql.Connection, tokens: list[str]) -> list[str]:
        found: list[str] = []
        with conn.cursor() as cur:
            for i in range(0, len(tokens), POLL_BATCH):
                try:
                    cur.execute(self._sql, (tokens[i : i + POLL_BATCH],))
                except pymysql.MySQLError as exc:
                    if exc.args and exc.args[0] in _NOT_THERE_YET:
                        self.table_missing = True
                        return found
                    raise
                found.extend(str(r[0]) for r in cur.fetchall())
        self.table_missing = False
        return found


@dataclass
class Counts:
    reads: int = 0
    inserts: int = 0
    updates: int = 0
    stale_reads: int = 0  # a read through the proxy missed a row acknowledged before it began
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    first_errors: list[tuple[float, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.reads + self.inserts + self.updates


class LoadRun:
    """Worker threads writing and reading through the proxy, and one NodeWatch per server."""

    def __init__(
        self,
        proxy: Endpoint,
        servers: list[Endpoint],
        options: LoadOptions,
        schema: str,
        tbl: str,
    ) -> None:
        self.proxy = proxy
        self.options = options
        self.schema, self.tbl = schema, tbl
        self.fq = f"`{schema}`.`{tbl}`"
        self._stop_work = threading.Event()
        self._stop_watch = threading.Event()
        self.watches = [NodeWatch(s, schema, tbl, self._stop_watch) for s in servers]
        self.scheduler = Scheduler(options.rate, options.reads, options.writes)
        self.recent = Recent()
        self.counts = Counts()
        self.latency = {"read": Samples(), "insert": Samples(), "update": Samples()}
        self._lock = threading.Lock()
        self._marks: list[Mark] = []
        self._workers: list[threading.Thread] = []
        self.started = 0.0
        self.ended: float | None = None

    # -- set-up ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the table through the proxy; one clear line if the proxy is not there."""
        try:
            conn = self.proxy.connect(timeout=3.0)
        except (pymysql.MySQLError, OSError) as exc:
            raise ToolError(
                f"cannot connect to pyproxy at {self.proxy.where} (listeners.mysql) as "
                f"{self.proxy.user}: {describe(exc)}"
            ) from None
        try:
            with conn.cursor() as cur:
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.fq} ("
                    "id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                    "token CHAR(32) NOT NULL, "
                    "payload VARCHAR(200) NOT NULL, "
                    "version INT NOT NULL DEFAULT 0, "
                    "written_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), "
                    "UNIQUE KEY uk_token (token)) ENGINE=InnoDB"
                )
                cur.execute(f"SHOW COLUMNS /* pyproxy:writer */ FROM {self.fq}")
                columns = {str(r[0]) for r in cur.fetchall()}
        except pymysql.MySQLError as exc:
            raise ToolError(f"cannot create {self.schema}.{self.tbl}: {describe(exc)}") from None
        finally:
            conn.close()
        missing = {"id", "token", "payload", "version"} - columns
        if missing:
            raise ToolError(
                f"--table {self.schema}.{self.tbl} exists without the load's columns "
                f"({', '.join(sorted(missing))}); choose another table"
            )

    # -- running -----------------------------------------------------------------------------
    def start(self) -> None:
        self.started = time.monotonic()
        for w in self.watches:
            w.start()
        for i in range(max(1, self.options.threads)):
            t = threading.Thread(target=self._work, name=f"load-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def stop(self) -> None:
        """Stop issuing operations (the node watches keep running until `finish`)."""
        self._stop_work.set()
        for t in self._workers:
            t.join(15)
        if self.ended is None:
            self.ended = time.monotonic()

    def settle(self, timeout: float) -> None:
        """Wait until every reachable node has shown every acknowledged row, or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(w.reachable is False or not w.unseen() for w in self.watches):
                return
            time.sleep(0.05)

    def finish(self) -> None:
        self._stop_watch.set()
        for w in self.watches:
            w.join(10)

    def mark(self, at: float | None = None) -> Mark:
        m = Mark(time.monotonic() if at is None else at)
        with self._lock:
            self._marks.append(m)
        return m

    def errors_since(self, at: float) -> list[tuple[float, str, str]]:
        with self._lock:
            return [e for e in self.counts.first_errors if e[0] >= at]

    def watch(self, name: str) -> NodeWatch:
        return next(w for w in self.watches if w.name == name)

    def _work(self) -> None:
        conns: dict[str, pymysql.Connection | None] = {"read": None, "write": None}
        rng = random.Random()
        while not self._stop_work.is_set():
            when, kind = self.scheduler.take()
            delay = when - time.monotonic()
            if delay > 0 and self._stop_work.wait(delay):
                break
            # Reads use a session of their own: a session that wrote reads from the writer.
            role = "read" if kind == "read" else "write"
            started = time.monotonic()
            try:
                conn = conns[role]
                if conn is None:
                    conn = conns[role] = self.proxy.connect(timeout=5.0, read_timeout=30.0)
                self._operation(conn, kind, started, rng)
            except (pymysql.MySQLError, OSError) as exc:
                self._error(kind, exc)
                stale = conns[role]
                conns[role] = None
                if stale is not None:
                    stale.close()
                self._stop_work.wait(RECONNECT_PAUSE_S)
        for conn in conns.values():
            if conn is not None:
                conn.close()

    def _operation(self, conn: pymysql.Connection, kind: str, started: float, rng: Any) -> None:
        row_id = self.recent.pick()
        if kind == "update" and row_id is None:
            kind = "insert"
        with conn.cursor() as cur:
            if kind == "insert":
                token = uuid.uuid4().hex
                cur.execute(
                    f"INSERT INTO {self.fq} (token, payload) VALUES (%s, %s)",
                    (token, f"load row {rng.random():.12f}"),
                )
                acked = time.monotonic()
                for w in self.watches:
                    w.expect(token, acked)
                self.recent.add(int(cur.lastrowid))
            elif kind == "update":
                cur.execute(
                    f"UPDATE {self.fq} SET version = version + 1, payload = %s WHERE id = %s",
                    (f"updated {rng.random():.12f}", row_id),
                )
            elif row_id is None:
                cur.execute(f"SELECT MAX(id) FROM {self.fq}")
                cur.fetchall()
            else:
                cur.execute(f"SELECT id, version FROM {self.fq} WHERE id = %s", (row_id,))
                if not cur.fetchall():
                    with self._lock:
                        self.counts.stale_reads += 1
        done = time.monotonic()
        with self._lock:
            self.latency[kind].add(done - started)
            if kind == "read":
                self.counts.reads += 1
            elif kind == "insert":
                self.counts.inserts += 1
            else:
                self.counts.updates += 1
            for m in self._marks:
                if started >= m.at:
                    if kind == "read" and m.first_read is None:
                        m.first_read = done
                    elif kind != "read" and m.first_write is None:
                        m.first_write = done

    def _error(self, kind: str, exc: BaseException) -> None:
        text = describe(exc)
        with self._lock:
            self.counts.errors += 1
            self.counts.error_kinds[f"{kind}: {text}"] += 1
            if len(self.counts.first_errors) < KEPT_ERRORS:
                self.counts.first_errors.append((time.monotonic(), kind, text))

    # -- reporting -----------------------------------------------------------------------------
    def elapsed(self) -> float:
        end = self.ended if self.ended is not None else time.monotonic()
        return max(1e-9, end - self.started)

    def progress_line(self) -> str:
        now = time.monotonic()
        c = self.counts
        lags = []
        for w in self.watches:
            if w.reachable is False:
                lags.append(f"{w.name} UNREACHABLE")
                continue
            oldest = w.oldest_pending()
            lags.append(f"{w.name} {ms(now - oldest) if oldest is not None else '0'}")
        return (
            f"+{now - self.started:.0f}s {c.ok} ops ({c.ok / self.elapsed():.0f}/s) "
            f"r {c.reads} w {c.inserts + c.updates} err {c.errors} | lag ms: " + " ".join(lags)
        )

    def problems(self) -> list[str]:
        """What went wrong, one phrase each; empty when the run was clean."""
        out = []
        if self.counts.errors:
            out.append(f"{self.counts.errors} client errors")
        for w in self.watches:
            unseen = w.unseen()
            if unseen:
                why = "unreachable" if w.reachable is False else "not visible yet"
                out.append(f"{unseen} rows not confirmed on {w.name} ({why})")
        if self.counts.ok == 0:
            out.append("no operation succeeded")
        return out

    def summary(self) -> list[str]:
        c, o = self.counts, self.options
        elapsed = self.elapsed()
        mix = f"{o.reads}:{o.writes}"
        rate = f"{o.rate:g}/s" if o.rate > 0 else "unpaced"
        lines = [
            f"load: {elapsed:.1f} s through pyproxy at {self.proxy.where} on "
            f"{self.schema}.{self.tbl} (rate {rate}, mix {mix}, {o.threads} threads)",
            f"operations: {c.ok} ok ({c.ok / elapsed:.0f}/s): {c.reads} reads, {c.inserts} "
            f"inserts, {c.updates} updates; {c.errors} errors; {c.stale_reads} stale reads",
        ]
        lat = []
        for kind, s in self.latency.items():
            if s.count:
                p50, p99 = s.percentiles(50, 99)
                lat.append(f"{kind} p50 {ms(p50)} p99 {ms(p99)} max {ms(s.max)}")
        if lat:
            lines.append("latency ms: " + "; ".join(lat))
        lines.append(
            f"replication delay of the {c.inserts} inserted rows, per node "
            "(ms from commit to visible; polled every 1-20 ms):"
        )
        rows = [["node", "role", "seen", "p50", "p95", "p99", "max", "status"]]
        for w in self.watches:
            p50, p95, p99 = w.delays.percentiles(50, 95, 99)
            seen = w.delays.count
            rows.append(
                [
                    w.name,
                    w.endpoint.role,
                    str(seen),
                    *(ms(v) if seen else "-" for v in (p50, p95, p99, w.delays.max)),
                    self._status(w),
                ]
            )
        lines += ["  " + line for line in table(rows)]
        if c.errors:
            lines.append(f"errors ({c.errors}):")
            for text, n in c.error_kinds.most_common(5):
                lines.append(f"  {n} x {text}")
            if c.first_errors:
                at, kind, text = c.first_errors[0]
                lines.append(f"  first at +{at - self.started:.2f} s ({kind}): {text}")
        return lines

    def _status(self, w: NodeWatch) -> str:
        unseen = w.unseen()
        down = w.reachable is False
        closed = w.outages[:-1] if down else w.outages
        past = "; ".join(
            f"unreachable from +{a - self.started:.1f}s to +{(b or a) - self.started:.1f}s"
            for a, b in closed
        )
        if down:
            since = w.down_since if w.down_since is not None else self.started
            status = (
                f"UNREACHABLE since +{since - self.started:.1f}s ({w.error}); "
                f"{unseen} rows not confirmed"
            )
            return f"{status}; earlier {past}" if past else status
        if unseen and w.table_missing:
            return f"TABLE MISSING: {unseen} rows not visible; {self.schema}.{self.tbl} not found"
        if unseen:
            return f"LAGGING: {unseen} rows not visible" + (f"; {past}" if past else "")
        return "ok" + (f" (caught up after {past})" if past else "")


def drive(load: LoadRun, duration: float, settle: float, progress: Progress) -> bool:
    """Run a started load for `duration` seconds (0: until Ctrl-C) with the live line, stop it
    and let the nodes catch up; True when it was interrupted."""
    interrupted = False
    try:
        with _sigterm_as_interrupt():
            deadline = load.started + duration if duration > 0 else None
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.05)
                if progress.due():
                    progress.show(load.progress_line())
    except KeyboardInterrupt:
        interrupted = True
    try:
        load.stop()
        progress.show(load.progress_line())
        load.settle(settle)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        load.finish()
        progress.done()
    return interrupted


def run(proxy: Endpoint, servers: list[Endpoint], options: LoadOptions, progress: Progress) -> int:
    """The `pyproxy load` command: run, show progress, print the summary; 0 when clean."""
    schema, tbl = qualified_table(options.table, proxy.database)
    load = LoadRun(proxy, servers, options, schema, tbl)
    load.prepare()
    load.start()
    interrupted = drive(load, options.duration, options.settle, progress)
    lines = load.summary()
    issues = load.problems()
    if interrupted:
        lines.append("(interrupted)")
    lines.append("result: " + ("OK" if not issues else "PROBLEMS: " + "; ".join(issues)))
    print("\n".join(lines), flush=True)
    return 0 if not issues else 1


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """`timeout 60 pyproxy load ...` should end with a summary, like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
