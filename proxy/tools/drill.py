"""`pyproxy drill`: failure scenarios on a lab, end to end under load, with a timeline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from proxy.cluster import HostStatus
from proxy.config import Config
from proxy.lab.bootstrap import Flavor
from proxy.lab.lab import STATE_FILE, Lab, LabState
from proxy.testing import ProxyThread
from proxy.tools.load import DEFAULT_TABLE, LoadOptions, LoadRun
from proxy.tools.nodes import (
    ToolError,
    describe,
    free_listeners,
    proxy_endpoint,
    server_endpoints,
    with_proxy_port,
)
from proxy.tools.progress import Progress
from proxy.tools.verify import VerifyOptions, VerifyReport, verify

DRILLS = ("failover", "replica-loss", "broken-replica", "switchover")
BROKEN_TABLE = "pyproxy_drill_broken"


@dataclass(frozen=True)
class DrillOptions:
    rate: float = 100.0  # load during the drill, operations per second
    before: float = 3.0  # seconds of load before the fault
    after: float = 2.0  # seconds of load after recovery
    timeout: float = 15.0  # for each step to happen


@dataclass
class DrillResult:
    kind: str
    t0: float = 0.0
    events: list[tuple[str, float, str]] = field(default_factory=list)  # (label, time, text)
    errors: list[tuple[float, str, str]] = field(default_factory=list)
    acknowledged: int = 0
    rows_lost: int = 0
    semisync: bool = False
    load_lines: list[str] = field(default_factory=list)
    verify: VerifyReport | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def at(self, label: str) -> float | None:
        return next((t - self.t0 for lab, t, _ in self.events if lab == label), None)

    def timeline(self) -> list[str]:
        ordered = sorted(self.events, key=lambda e: e[1])
        return [f"  {label:<3} {t - self.t0:+8.3f} s  {text}" for label, t, text in ordered]

    def lines(self) -> list[str]:
        out = [f"drill {self.kind}: timeline (seconds from t0)", *self.timeline()]
        out.append(f"client errors after t0: {len(self.errors)}")
        out += [f"  {at - self.t0:+.3f} s {kind}: {text}" for at, kind, text in self.errors[:10]]
        sync = " (semisync)" if self.semisync else " (no semisync: acknowledged rows may be lost)"
        out.append(f"rows lost: {self.rows_lost} of {self.acknowledged} acknowledged inserts{sync}")
        out += self.load_lines
        if self.verify is not None:
            out += self.verify.lines()
        out.append("result: " + ("OK" if self.ok else "PROBLEMS: " + "; ".join(self.problems)))
        return out


def find_lab(config_path: str | Path, config: Config) -> Lab:
    """The lab a config was written for: `pyproxy lab up` puts pyproxy.yaml next to lab.json."""
    root = Path(config_path).resolve().parent
    lab = Lab(root)
    if not (root / STATE_FILE).exists():
        raise ToolError(
            f"drills run on a lab topology (they kill and restart servers): no {STATE_FILE} "
            f"next to {config_path}; use the pyproxy.yaml that `pyproxy lab up` wrote"
        )
    state = lab.load()
    assert state is not None
    names = {n.name for n in state.nodes}
    unknown = [s.name for s in config.servers if s.name not in names]
    if unknown:
        raise ToolError(f"servers {', '.join(unknown)} in {config_path} are not in the lab {root}")
    return lab


def run_drill(
    kind: str,
    lab: Lab,
    config: Config,
    options: DrillOptions,
    progress: Progress,
    proxy: ProxyThread | None = None,
) -> DrillResult:
    """Run one scenario under load on the lab, through `proxy` or a proxy of its own."""
    state = lab.load()
    if state is None:
        raise ToolError(f"no lab in {lab.root}")
    _check_shape(kind, state, lab)
    progress.note(f"drill {kind}: making sure every node of the lab in {lab.root} is up")
    lab.up(masters=state.masters, replicas=state.replicas, semisync=state.semisync)
    own = proxy is None
    if proxy is None:
        proxy = ProxyThread(free_listeners(config)).start()
    result = DrillResult(kind, semisync=state.semisync)
    try:
        endpoint = proxy_endpoint(with_proxy_port(config, proxy.port))
        schema = endpoint.database or "demo_db"
        load = LoadRun(
            endpoint,
            server_endpoints(config),
            LoadOptions(rate=options.rate, table=DEFAULT_TABLE),
            schema,
            DEFAULT_TABLE,
        )
        load.prepare()
        load.start()
        steps = _Steps(load, progress, options.timeout)
        try:
            steps.run_for(options.before)
            scenario = {
                "failover": _failover,
                "replica-loss": _replica_loss,
                "broken-replica": _broken_replica,
                "switchover": _switchover,
            }[kind]
            scenario(lab, state, proxy, load, steps, result)
            steps.run_for(options.after)
        finally:
            load.stop()
            load.settle(5.0)
            load.finish()
            progress.done()
        writer = proxy.server.cluster.writer
        result.errors = load.errors_since(result.t0)
        result.acknowledged = load.counts.inserts
        if writer is not None:
            result.rows_lost = load.watch(writer).unseen()
        else:
            result.problems.append("pyproxy has no writer at the end of the drill")
        result.load_lines = load.summary()
    finally:
        if own:
            proxy.stop()
    if result.rows_lost and state.semisync:
        result.problems.append(f"{result.rows_lost} acknowledged rows lost")
    progress.note(f"drill {kind}: verifying every node against the writer")
    result.verify = verify(server_endpoints(config), VerifyOptions(wait=options.timeout))
    if not result.verify.ok:
        result.problems.append("verify: " + result.verify.verdict())
    return result


def _check_shape(kind: str, state: LabState, lab: Lab) -> None:
    if kind in ("failover", "switchover") and state.masters < 2:
        raise ToolError(f"drill {kind} needs 2 masters; the lab in {lab.root} has {state.masters}")
    if kind in ("replica-loss", "broken-replica") and state.replicas < 1:
        raise ToolError(f"drill {kind} needs a replica; the lab in {lab.root} has none")


class _Steps:
    """Waiting for things to happen while the load runs and the progress line moves."""

    def __init__(self, load: LoadRun, progress: Progress, timeout: float) -> None:
        self.load = load
        self.progress = progress
        self.timeout = timeout

    def tick(self) -> None:
        if self.progress.due():
            self.progress.show(self.load.progress_line())

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.tick()
            time.sleep(0.02)

    def until(self, cond: Callable[[], float | bool | None], what: str) -> float:
        """When `cond` became true (or the time it returns); ToolError after the timeout."""
        deadline = time.monotonic() + self.timeout
        while True:
            value = cond()
            if value is not None and value is not False:
                return time.monotonic() if value is True else float(value)
            if time.monotonic() > deadline:
                raise _StepTimeout(f"{what} did not happen within {self.timeout:g} s")
            self.tick()
            time.sleep(0.005)

    def event(self, result: DrillResult, label: str, at: float, text: str) -> None:
        result.events.append((label, at, text))
        self.progress.note(f"  {label:<3} {at - result.t0:+8.3f} s  {text}")


class _StepTimeout(ToolError):
    pass


def _restart(lab: Lab, state: LabState) -> float:
    lab.up(masters=state.masters, replicas=state.replicas, semisync=state.semisync)
    return time.monotonic()


def _failover(
    lab: Lab, state: LabState, proxy: ProxyThread, load: LoadRun, steps: _Steps, r: DrillResult
) -> None:
    old = proxy.server.cluster.writer
    if old is None:
        raise ToolError("pyproxy sees no writer: nothing to fail over from")
    seen = len(proxy.server.failovers)
    r.t0 = time.monotonic()
    pid = lab.kill(old)
    mark = load.mark()  # writes that start after this cannot reach the dead server
    steps.event(r, "t0", r.t0, f"killed {old} (the writer, pid {pid})")
    try:
        steps.until(lambda: len(proxy.server.failovers) > seen, "the failover")
        ev = proxy.server.failovers[seen]
        steps.event(r, "t1", ev.detected_at, f"pyproxy detected {old} down")
        steps.event(r, "t2", ev.promoted_at, f"pyproxy promoted {ev.new_writer} (read_only OFF)")
        t3 = steps.until(lambda: mark.first_write, "a successful write after the kill")
        steps.event(r, "t3", t3, "first successful write after the kill")
    except _StepTimeout as exc:
        r.problems.append(str(exc))
    back = _restart(lab, state)
    ro = _read_only(lab, old)
    steps.event(r, "", back, f"{old} restarted" + (", fenced (read_only ON)" if ro else ""))
    if not ro:
        r.problems.append(f"{old} came back writable")


def _replica_loss(
    lab: Lab, state: LabState, proxy: ProxyThread, load: LoadRun, steps: _Steps, r: DrillResult
) -> None:
    victim = next(s.name for s in proxy.config.replicas)
    server = proxy.server.cluster.server(victim)
    r.t0 = time.monotonic()
    pid = lab.kill(victim)
    mark = load.mark()
    steps.event(r, "t0", r.t0, f"killed {victim} (a replica, pid {pid})")
    try:
        # Reads keep working at once (a read on the dead replica is retried elsewhere), while
        # the health checks need a few failures before they mark it DOWN.
        t1 = steps.until(lambda: mark.first_read, "a successful read after the kill")
        steps.event(r, "t1", t1, "first successful read after the kill")
        t2 = steps.until(lambda: server.status is HostStatus.DOWN, f"{victim} marked DOWN")
        steps.event(r, "t2", t2, f"pyproxy marked {victim} DOWN; reads go to the others")
        steps.run_for(1.0)  # let the load notice the replica is gone
        t3 = _restart(lab, state)
        steps.event(r, "t3", t3, f"{victim} restarted")
        watch = load.watch(victim)
        t4 = steps.until(lambda: watch.pending_before(t3) == 0, f"{victim} to catch up")
        steps.event(r, "t4", t4, f"{victim} caught up: every row written meanwhile is there")
        t5 = steps.until(lambda: server.status is HostStatus.ONLINE, f"{victim} back ONLINE")
        steps.event(r, "t5", t5, f"pyproxy put {victim} back in the read pool")
    except _StepTimeout as exc:
        r.problems.append(str(exc))
        _restart(lab, state)


def _broken_replica(
    lab: Lab, state: LabState, proxy: ProxyThread, load: LoadRun, steps: _Steps, r: DrillResult
) -> None:
    victim = proxy.config.replicas[-1].name
    server = proxy.server.cluster.server(victim)
    fq = f"`{load.schema}`.`{BROKEN_TABLE}`"
    _through_proxy(
        load,
        f"DROP TABLE IF EXISTS {fq}",
        f"CREATE TABLE {fq} (id INT PRIMARY KEY, a VARCHAR(20), b INT, c TIMESTAMP(6) NULL)",
    )
    steps.until(
        lambda: _has_table(lab, victim, load.schema, BROKEN_TABLE), "the table to replicate"
    )
    # Our users' test: drop a column on a replica only, then write to the table. (Row-based
    # replication tolerates a missing last column, so a middle one goes; the table is empty,
    # so putting the column back restores identical data.)
    _as_root(lab, victim, "SET SESSION sql_log_bin = 0", f"ALTER TABLE {fq} DROP COLUMN b")
    r.t0 = time.monotonic()
    _through_proxy(load, f"INSERT INTO {fq} (id, a, b, c) VALUES (1, 'x', 7, NOW(6))")
    steps.event(r, "t0", r.t0, f"dropped column b on {victim} only, then wrote to the table")
    stop, start = _replication_verbs(lab)
    try:
        t1 = steps.until(lambda: server.status is HostStatus.SHUNNED, f"{victim} SHUNNED")
        steps.event(r, "t1", t1, f"pyproxy shunned {victim}: {server.reason or 'replication'}")
        steps.run_for(1.0)
    except _StepTimeout as exc:
        r.problems.append(str(exc))
    _as_root(
        lab,
        victim,
        "SET SESSION sql_log_bin = 0",
        stop,
        f"ALTER TABLE {fq} ADD COLUMN b INT AFTER a",
        start,
    )
    t2 = time.monotonic()
    steps.event(r, "t2", t2, f"repaired {victim}: column restored, replication restarted")
    try:
        watch = load.watch(victim)
        t3 = steps.until(lambda: watch.pending_before(t2) == 0, f"{victim} to catch up")
        steps.event(r, "t3", t3, f"{victim} caught up")
        t4 = steps.until(lambda: server.status is HostStatus.ONLINE, f"{victim} back ONLINE")
        steps.event(r, "t4", t4, f"pyproxy put {victim} back in the read pool")
    except _StepTimeout as exc:
        r.problems.append(str(exc))


def _switchover(
    lab: Lab, state: LabState, proxy: ProxyThread, load: LoadRun, steps: _Steps, r: DrillResult
) -> None:
    old = proxy.server.cluster.writer
    if old is None:
        raise ToolError("pyproxy sees no writer: nothing to switch over from")
    new = next(m.name for m in proxy.config.masters if m.name != old)
    seen = len(proxy.server.failovers)
    mark = load.mark()
    r.t0 = mark.at
    steps.event(r, "t0", r.t0, f"switchover {old} -> {new} requested; new writes held")
    try:
        proxy.call(proxy.server.switchover(new), timeout=steps.timeout)
    except (RuntimeError, ValueError, TimeoutError) as exc:
        r.problems.append(f"switchover failed: {exc}")
        return
    events = proxy.server.failovers[seen:]
    done = events[0].promoted_at if events else time.monotonic()
    steps.event(r, "t2", done, f"{new} is the writer (read_only OFF), {old} read_only ON")
    try:
        t3 = steps.until(lambda: mark.first_write, "a successful write after the switchover")
        steps.event(r, "t3", t3, "first successful write after the switchover")
    except _StepTimeout as exc:
        r.problems.append(str(exc))
    errors = load.errors_since(r.t0)
    if errors:
        r.problems.append(f"{len(errors)} client errors during a planned switchover")


def _through_proxy(load: LoadRun, *statements: str) -> None:
    conn = load.proxy.connect(timeout=5.0)
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    except pymysql.MySQLError as exc:
        raise ToolError(f"through pyproxy: {describe(exc)}") from None
    finally:
        conn.close()


def _as_root(lab: Lab, node: str, *statements: str) -> None:
    conn = lab.connect_root(node)
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    except pymysql.MySQLError as exc:
        raise ToolError(f"{node}: {describe(exc)}") from None
    finally:
        conn.close()


def _root_value(lab: Lab, node: str, sql: str, args: object = None) -> object:
    """The first column of the first row, as root on a lab node."""
    conn = lab.connect_root(node)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            row = cur.fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    values = list(row.values()) if isinstance(row, dict) else list(row)
    return values[0] if values else None


def _has_table(lab: Lab, node: str, schema: str, tbl: str) -> bool:
    n = _root_value(
        lab,
        node,
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
        "AND TABLE_NAME = %s",
        (schema, tbl),
    )
    return bool(int(str(n)))


def _read_only(lab: Lab, node: str) -> bool:
    return bool(int(str(_root_value(lab, node, "SELECT @@GLOBAL.read_only"))))


def _replication_verbs(lab: Lab) -> tuple[str, str]:
    if lab.flavor is Flavor.MARIADB:
        return "STOP SLAVE", "START SLAVE"
    return "STOP REPLICA", "START REPLICA"
