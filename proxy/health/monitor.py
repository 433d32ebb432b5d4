"""Health checker: one task per backend; what it sees and decides (states, writer election,
fencing, promotion) goes to the topology as events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncmy
from asyncmy.cursors import DictCursor

from proxy.backend.pool import tls_context
from proxy.cluster import HostStatus
from proxy.config import Account, Config, MonitorAccount, Server
from proxy.health.monitorlog import CheckRecord, MonitorLog
from proxy.health.policy import (
    CheckResult,
    Election,
    LoopStalls,
    MasterView,
    elect,
    held_position,
    ready_for_failback,
    replica_problem,
    timeout_is_failure,
)
from proxy.health.replstatus import normalize_replica_status
from proxy.topology import (
    Event,
    PositionObserved,
    ServerConfigured,
    ServerError,
    ServerRemoved,
    ServerStatusChanged,
    Topology,
    WriterChanged,
)

log = logging.getLogger(__name__)

ER_CON_COUNT_ERROR = 1040
# After a failed check the next ones come quickly, so a dead server reaches the failure
# threshold in a fraction of the interval instead of several intervals.
FAST_RECHECK_S = 0.1
# The stall ticker's period: how often the monitor notes whether its event loop runs on time.
TICK_S = 0.05
# asyncmy's own connect timeout, above every caller's deadline (asyncio.timeout), so that a
# slow connect ends as a timeout the stall accounting can judge, never as a connect error.
CONNECT_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0  # at shutdown, the longest a check in flight may take to end


@dataclass
class CheckStats:
    """Per-server counters for metrics and the admin interface."""

    checks_ok: int = 0
    checks_failed: int = 0
    checks_unknown: int = 0  # timed out while the loop was stalled: not counted as failed
    last_latency_s: float = 0.0
    consecutive_failures: int = 0
    overloaded: bool = False
    unsure: bool = False  # the latest check's outcome is unknown (it could not run)


class Monitor:
    """Checks every backend with the monitor account and tells the topology what it found."""

    def __init__(
        self,
        settings: Callable[[], Config],
        topology: Topology,
        switchover: Callable[[str], Coroutine[Any, Any, None]] | None = None,
        barrier: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        """settings: the running config; switchover(master): a planned switchover that holds
        its clients' writes meanwhile (failback: after_catchup uses it); barrier(): awaited
        before a promotion, returns once no data path writes anywhere (worker processes)."""
        self._settings = settings
        self.topology = topology
        self.cluster = topology.cluster  # read only: changes go through topology.apply
        self._switchover = switchover
        self._barrier = barrier
        self.stats: dict[str, CheckStats] = {s.name: CheckStats() for s in settings().servers}
        self.results: dict[str, CheckResult] = {}
        self.conflicts = 0  # times two masters were writable together
        self.log = MonitorLog(lambda: self.config.health.log_history)
        self._wake: dict[str, asyncio.Event] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self.stalls = LoopStalls()
        self._tick_due = math.inf
        self._ticker: asyncio.TimerHandle | None = None
        # Masters demoted by a failover while unreachable: fenced as soon as they answer.
        self.fence_pending: set[str] = set()
        # server name -> (connection, what it was opened with: server and monitor account)
        self._conns: dict[str, tuple[Any, tuple[Server, Account]]] = {}
        self.mariadb: dict[str, bool] = {}
        self._elect_lock = asyncio.Lock()
        self._down_since: dict[str, float] = {}
        self.semisync_suspended: set[str] = set()
        self._failback_task: asyncio.Task[None] | None = None
        topology.subscribe(self._topology_event)

    @property
    def config(self) -> Config:
        return self._settings()

    # -- lifecycle -------------------------------------------------------------------------------
    async def check_all(self) -> None:
        """One round of checks of every server, in parallel (no election)."""
        await asyncio.gather(*(self._check_once(s) for s in self.config.servers))

    def writable_masters(self) -> list[str]:
        return [
            m.name
            for m in self.config.masters
            if m.name in self.results and not self.results[m.name].read_only
        ]

    async def start(self) -> None:
        """Check every server once and hold the first election (the writer is elected from
        what the servers say before clients arrive, when they all answer), then watch."""
        self._tick()
        await self.check_all()
        await self.evaluate()
        for server in self.config.servers:
            self.add_server(server)

    def _tick(self) -> None:
        """The stall ticker: how late it runs is how long the loop could run no check."""
        now = time.monotonic()
        self.stalls.record(self._tick_due, now)
        self._tick_due = now + TICK_S
        self._ticker = asyncio.get_running_loop().call_later(TICK_S, self._tick)

    def _topology_event(self, event: Event) -> None:
        """Servers added or removed by a config reload are watched or forgotten."""
        if isinstance(event, ServerConfigured):
            self.add_server(event.server)
        elif isinstance(event, ServerRemoved):
            self._drop_conn(event.name)
            self.results.pop(event.name, None)
            self.fence_pending.discard(event.name)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        tasks = list(self._watchers.values())
        for task in tasks:
            task.cancel()
        # A check in flight ends at its own timeout at the latest; past that, say so and go
        # on rather than hold the shutdown (3.11's wait_for could swallow a cancel this way).
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
            for task in pending:
                log.error("health check of %s did not stop within %.0fs", task.get_name(),
                          STOP_TIMEOUT_S)  # fmt: skip
        for name in list(self._conns):
            self._drop_conn(name)

    def add_server(self, server: Server) -> None:
        """Watch a server (at start, or added by a config reload). One watcher per name: a
        server removed and added back before its watcher noticed keeps the running one."""
        self.stats.setdefault(server.name, CheckStats())
        self._wake.setdefault(server.name, asyncio.Event())
        task = self._watchers.get(server.name)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(
                self._watch(server.name), name=server.name
            )
            self._watchers[server.name] = task

    def recheck(self, name: str) -> None:
        """Passive detection: the data path saw an error on this server; check it now."""
        event = self._wake.get(name)
        if event is not None:
            event.set()

    # -- checking --------------------------------------------------------------------------------
    async def _watch(self, name: str) -> None:
        wake = self._wake[name]
        while True:
            interval = self.config.health.check_interval_ms / 1000
            stats = self.stats[name]
            if stats.consecutive_failures > 0 or stats.unsure or name in self.fence_pending:
                # Failing, unknown or to be fenced: check again soon, but never back to back,
                # so that a burst of data-path errors cannot reach the failure threshold
                # within a blip.
                await asyncio.sleep(FAST_RECHECK_S)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await wake.wait()
            wake.clear()
            # The current config's server of that name: a reload may have changed its address.
            server = next((s for s in self.config.servers if s.name == name), None)
            if server is None or name not in self.cluster.servers:  # removed by a reload
                return
            try:
                await self._check_once(server)
                await self.evaluate()
            except Exception:
                # One bad round (a reload racing a check) must not end the watching for good.
                log.exception("health check of %s failed unexpectedly", name)

    async def _check_once(self, server: Server) -> None:
        stats = self.stats[server.name]
        state = self.cluster.servers.get(server.name)
        if state is None:  # removed by a reload meanwhile
            return
        started = time.monotonic()
        started_us = int(time.time() * 1e6)
        timeout = self.config.health.check_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout):
                result = await self._query(server)
        except Exception as exc:
            self._drop_conn(server.name)
            if isinstance(exc, TimeoutError):
                stalled = self.stalls.stalled(started, time.monotonic(), self._tick_due)
                if not timeout_is_failure(stalled, timeout):
                    # A check that could not run is not a failed check: unknown, retried soon.
                    stats.checks_unknown += 1
                    stats.unsure = True
                    log.info(
                        "check of %s timed out while the loop was stalled %.0f ms: unknown",
                        server.name,
                        stalled * 1000,
                    )
                    return
            stats.unsure = False
            self._log_check(server, started_us, None, _describe(exc, timeout))
            code = _error_code(exc)
            if code == ER_CON_COUNT_ERROR:
                # Overloaded is not dead: keep its state, just note it.
                stats.overloaded = True
                self.topology.apply(ServerError(server.name, "too many connections (overloaded)"))
                return
            stats.checks_failed += 1
            stats.consecutive_failures += 1
            error = _describe(exc, timeout)
            self.topology.apply(ServerError(server.name, error))
            if stats.consecutive_failures >= self.config.health.failure_threshold and (
                state.status not in (HostStatus.DOWN, HostStatus.OFFLINE_SOFT)
            ):
                self._down_since[server.name] = time.monotonic()
                self.topology.apply(ServerStatusChanged(server.name, HostStatus.DOWN, error))
            return
        stats.overloaded = False
        stats.unsure = False
        stats.checks_ok += 1
        stats.consecutive_failures = 0
        stats.last_latency_s = time.monotonic() - started
        self.results[server.name] = result
        self._log_check(server, started_us, result, None)
        if result.read_only:
            self.fence_pending.discard(server.name)  # fenced (by us or anyone): a candidate again
        rs = result.replica
        lag = None if rs is None or rs.seconds_behind is None else float(rs.seconds_behind)
        self.topology.apply(
            PositionObserved(server.name, result.gtid_position, lag, result.read_only)
        )
        if server.role == "replica":
            problem = replica_problem(
                result, self.config.health.max_replication_lag_s, state.status is HostStatus.SHUNNED
            )
            if state.status is not HostStatus.OFFLINE_SOFT:
                new = HostStatus.SHUNNED if problem else HostStatus.ONLINE
                self.topology.apply(ServerStatusChanged(server.name, new, problem or ""))
        elif state.status is HostStatus.DOWN:
            # A master coming back: the election (run next) fences it before it gets anything.
            self.topology.apply(
                ServerStatusChanged(server.name, HostStatus.ONLINE, "reachable again")
            )

    def _log_check(
        self, server: Server, started_us: int, result: CheckResult | None, error: str | None
    ) -> None:
        rs = result.replica if result is not None else None
        self.log.record(
            server.name,
            CheckRecord(
                server.host,
                server.port,
                started_us,
                int(result.latency_s * 1e6) if result is not None else None,
                int(result.read_only) if result is not None else None,
                rs.seconds_behind if rs is not None else None,
                server.role == "replica" or rs is not None,
                error,
            ),
        )

    async def _query(self, server: Server) -> CheckResult:
        started = time.monotonic()
        opened_with = (server, self.config.monitor)
        conn, key = self._conns.get(server.name, (None, None))
        if conn is not None and key != opened_with:
            # A reload moved the server or changed the monitor account: check with the new.
            self._drop_conn(server.name)
            conn = None
        if conn is None:
            conn = await asyncmy.connect(**self.connect_args(*opened_with))
            self._conns[server.name] = (conn, opened_with)
            self.mariadb[server.name] = "MariaDB" in str(conn.get_server_info())
        mariadb = self.mariadb[server.name]
        async with conn.cursor(DictCursor) as cur:
            if mariadb:
                await cur.execute("SELECT @@GLOBAL.read_only AS ro, @@GLOBAL.gtid_current_pos AS g")
            else:
                await cur.execute(
                    "SELECT @@GLOBAL.read_only OR @@GLOBAL.super_read_only AS ro, "
                    "@@GLOBAL.gtid_executed AS g"
                )
            row = await cur.fetchone()
            await cur.execute("SHOW SLAVE STATUS" if mariadb else "SHOW REPLICA STATUS")
            status = await cur.fetchone()
        replica = normalize_replica_status(status) if status else None
        gtid = str(row["g"] or "").replace("\n", "")
        return CheckResult(bool(int(row["ro"])), replica, gtid, time.monotonic() - started)

    def _drop_conn(self, name: str) -> None:
        conn, _ = self._conns.pop(name, (None, None))
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def connect_args(self, server: Server, account: Account) -> dict[str, Any]:
        """asyncmy.connect's arguments for a server, with TLS as servers[].tls says (the same
        context as the data path's), so a backend that requires TLS is checked over TLS."""
        use_tls = server.tls.enabled and (not isinstance(account, MonitorAccount) or account.ssl)
        tls: ssl.SSLContext | None = tls_context(server) if use_tls else None
        return {
            "host": server.host,
            "port": server.port,
            "user": account.username,
            "password": account.password,
            "connect_timeout": CONNECT_TIMEOUT_S,
            "autocommit": True,
            "ssl": tls,
        }

    # -- the writer ------------------------------------------------------------------------------
    async def evaluate(self) -> None:
        """Run the election on the latest results and carry out what it decides."""
        if self.topology.switching is not None:
            return
        async with self._elect_lock:
            decision = elect(self.cluster.writer, self._views())
            if decision.conflict:
                # Act on two writable masters only after fresh checks of both.
                for name in decision.conflict:
                    await self._check_once(self._server(name))
                decision = elect(self.cluster.writer, self._views())
            old = self.cluster.writer
            if decision.conflict:
                self.conflicts += 1
                log.error(
                    "masters writable at once: %s; %s",
                    ", ".join(decision.conflict),
                    f"keeping {decision.writer} ({decision.why}), fencing "
                    f"{', '.join(n for n in decision.fence if n in decision.conflict)}"
                    if decision.writer
                    else f"no writer: {decision.why}",
                )
            for name in decision.fence:
                if await self._set_read_only(name, True):
                    self.fence_pending.discard(name)
            if decision.promote is not None:
                if old is not None and old != decision.promote:
                    # Demote first: every session stops writing to the old writer and its
                    # connections close before the new one takes a write; it is fenced as
                    # soon as it answers again.
                    self.fence_pending.add(old)
                    self.topology.apply(WriterChanged(old, None, f"demoted: {old} is down"))
                if self._barrier is not None:
                    await self._barrier()  # every worker has stopped writing to the old one
                if not await self._promote(decision.promote):
                    return
            if decision.writer != self.cluster.writer:
                self._change_writer(old, decision.writer, decision)
            elif decision.writer is None and decision.why:
                # No writer still: say why (clients waiting for one get it in their error).
                self.topology.apply(WriterChanged(None, None, decision.why))
            await self._resume_semisync()
            self._maybe_failback()

    def _maybe_failback(self) -> None:
        """failback: after_catchup — hand the writer back to the preferred master once it has
        applied everything from the current one (as a planned switchover)."""
        if self.config.health.failback != "after_catchup" or self._switchover is None:
            return
        writer = self.cluster.writer
        preferred = self.config.masters[0]
        if writer is None or writer == preferred.name or self._failback_task is not None:
            return
        if self.cluster.server(preferred.name).status is HostStatus.DOWN:
            return
        writer_port = self._server(writer).port
        if ready_for_failback(
            self.results.get(preferred.name), self.results.get(writer), writer_port
        ):
            log.warning("failback: %s caught up with %s", preferred.name, writer)
            task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
                self._switchover(preferred.name)
            )
            self._failback_task = task
            task.add_done_callback(self._failback_done)

    def _failback_done(self, task: asyncio.Task[None]) -> None:
        self._failback_task = None
        if not task.cancelled() and task.exception() is not None:
            log.error("failback failed: %s", task.exception())

    def _views(self) -> list[MasterView]:
        views = []
        for m in self.config.masters:
            state = self.cluster.servers.get(m.name)
            if state is None:  # a reload is adding it
                continue
            result = self.results.get(m.name)
            down = state.status is HostStatus.DOWN
            up = not down and result is not None and self.stats[m.name].consecutive_failures == 0
            views.append(
                MasterView(
                    m.name,
                    up=up,
                    down=down,
                    read_only=result.read_only if result is not None else None,
                    gtid=held_position(result) if result is not None else "",
                    fence_pending=m.name in self.fence_pending,
                )
            )
        return views

    def _server(self, name: str) -> Server:
        return next(s for s in self.config.servers if s.name == name)

    def _change_writer(self, old: str | None, new: str | None, decision: Election) -> None:
        now = time.monotonic()
        detected = self._down_since.get(old, now) if old else now
        why = "promoted" if decision.promote is not None else "followed"
        if new is None:
            why = decision.why or "no writer"
        self.topology.apply(WriterChanged(old, new, why, detected))

    async def _promote(self, name: str) -> bool:
        """Make a master the writer: let it apply what it received, then read_only OFF."""
        started = time.monotonic()
        deadline = started + self.config.health.failover_hold_ms / 1000
        server = self._server(name)
        result = self.results.get(name)
        # First: the last transactions from its dead peer commit on it through its own binlog,
        # each waiting out the semisync timeout for an acknowledgement the peer cannot send.
        await self._suspend_semisync(name)
        # Semisync-acknowledged writes sit in its relay log: apply them before new writes.
        while result is not None and result.replica is not None:
            if result.replica.applied_all_received or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
            await self._check_once(server)
            result = self.results.get(name)
        if not await self._set_read_only(name, False):
            return False
        log.warning("%s promoted in %.0f ms", name, (time.monotonic() - started) * 1000)
        return True

    def _semisync_var(self, name: str) -> str:
        return (
            "rpl_semi_sync_master_enabled"
            if self.mariadb.get(name, True)
            else "rpl_semi_sync_source_enabled"
        )

    async def _suspend_semisync(self, name: str) -> None:
        """A master promoted because its peer died has nobody to acknowledge its writes: each
        would wait out the semisync timeout and then count as asynchronous anyway. Turn the
        wait off until the peer replicates again (then _resume_semisync turns it back on)."""
        var = self._semisync_var(name)
        enabled = await self._admin_fetch(name, f"SELECT @@GLOBAL.{var}") in (1, "1")
        if enabled and await self._admin_query(name, f"SET GLOBAL {var} = OFF"):
            self.semisync_suspended.add(name)
            log.warning("%s: semi-sync suspended while its peer is down", name)

    async def _resume_semisync(self) -> None:
        writer = self.cluster.writer
        if writer not in self.semisync_suspended:
            return
        for m in self.config.masters:
            result = self.results.get(m.name)
            if (
                m.name != writer
                and result is not None
                and result.replica is not None
                and result.replica.healthy
                and self.cluster.server(m.name).status is not HostStatus.DOWN
            ):
                var = self._semisync_var(writer)
                if await self._admin_query(writer, f"SET GLOBAL {var} = ON"):
                    self.semisync_suspended.discard(writer)
                    log.warning("%s: semi-sync resumed (%s replicates again)", writer, m.name)
                return

    async def _set_read_only(self, name: str, on: bool) -> bool:
        ok = await self._admin_query(name, f"SET GLOBAL read_only = {'ON' if on else 'OFF'}")
        if ok:
            log.warning("%s: read_only=%s", name, "ON" if on else "OFF")
            result = self.results.get(name)
            if result is not None:
                self.results[name] = CheckResult(
                    on, result.replica, result.gtid_position, result.latency_s
                )
        return ok

    async def _admin_query(self, name: str, sql: str) -> bool:
        return (await self._admin_fetch(name, sql)) is not _FAILED

    async def _admin_fetch(self, name: str, sql: str) -> object:
        """Run one statement as backend_admin; its first value, None, or _FAILED."""
        acct: Account | None = self.config.backend_admin
        if acct is None:
            log.error("%s: cannot run %r: no backend_admin account in the config", name, sql)
            return _FAILED
        server = self._server(name)
        timeout = max(self.config.health.failover_hold_ms / 1000, 1.0) + 1.0
        try:
            async with asyncio.timeout(timeout):
                conn = await asyncmy.connect(**self.connect_args(server, acct))
        except Exception as exc:
            log.error("%s: cannot connect as %s: %s", name, acct.username, exc)
            return _FAILED
        try:
            async with conn.cursor() as cur:
                async with asyncio.timeout(timeout):
                    await cur.execute(sql)
                row = None
                with contextlib.suppress(Exception):
                    row = await cur.fetchone()
            return row[0] if row else None
        except Exception as exc:
            log.error("%s: %s failed: %s", name, sql, exc)
            return _FAILED
        finally:
            conn.close()

    # -- planned switchover ----------------------------------------------------------------------
    async def swap_writer(self, old: str, new: str) -> None:
        """Planned switchover on the servers: old read-only, new catches up, new writable.

        Raises RuntimeError (after putting old back) when a step fails.
        """
        hold = max(self.config.health.failover_hold_ms / 1000, 1.0)
        if not await self._set_read_only(old, True):
            raise RuntimeError(f"could not set read_only=ON on {old}")
        mariadb = self.mariadb.get(old, True)
        pos = await self._admin_fetch(
            old, "SELECT @@GLOBAL.gtid_binlog_pos" if mariadb else "SELECT @@GLOBAL.gtid_executed"
        )
        wait = "MASTER_GTID_WAIT" if mariadb else "WAIT_FOR_EXECUTED_GTID_SET"
        waited = _FAILED
        if pos is not _FAILED:
            gtid = str(pos or "").replace("\n", "")
            waited = await self._admin_fetch(new, f"SELECT {wait}('{gtid}', {hold:.3f})")
        if waited is _FAILED or waited not in (0, "0"):
            await self._set_read_only(old, False)
            raise RuntimeError(f"{new} did not catch up with {old} within {hold:.1f}s")
        if not await self._set_read_only(new, False):
            await self._set_read_only(old, False)
            raise RuntimeError(f"could not set read_only=OFF on {new}")


_FAILED = object()


def _error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"check timed out after {timeout * 1000:.0f} ms"
    return str(exc) or type(exc).__name__
