"""One client session: authentication, the command loop, and forwarding to backends."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from proxy.authio import drive_auth
from proxy.backend.connection import INTERNAL_TIMEOUT_S, BackendConnection, BackendError, Sink
from proxy.backend.sync import SessionState, in_sync, sync_steps
from proxy.cluster import Cluster, ServerState
from proxy.config import Consistency, User
from proxy.frontend.client import ClientConnection, ClientGone
from proxy.frontend.positions import Asker
from proxy.frontend.prepared import ClientStmt
from proxy.metrics import CommandCounts, Count, Histogram, Metrics
from proxy.protocol.auth import (
    DEFAULT_SERVER_CAPABILITIES,
    AuthDone,
    AuthFailed,
    AuthWait,
    ServerAuth,
)
from proxy.protocol.constants import Capability, Command, ErrorCode, ServerStatus
from proxy.protocol.handshake import ChangeUser
from proxy.protocol.packets import (
    ErrPacket,
    Packet,
    PacketTooLarge,
    ProtocolError,
    build_command,
    build_err,
    build_ok,
    build_packet,
    encode_end_of_result,
    log_text,
    parse_ok,
)
from proxy.protocol.response import ResponseScanner, ValueReply
from proxy.routing.causal import (
    CAUSAL_LEVELS,
    Candidate,
    Outcome,
    applied_mark,
    caught_up,
    commit_mark,
    covers,
    decide,
    merge,
    wait_gtid,
    wait_query,
)
from proxy.routing.classifier import VALUE_PINS, Classification, StatementKind
from proxy.routing.digest import Digest, reported_digest
from proxy.routing.gtid import contains as gtid_contains
from proxy.routing.gtid import is_mariadb as gtid_is_mariadb
from proxy.routing.gtid import merge_mariadb
from proxy.routing.router import Router
from proxy.routing.stats import QueryDigests
from proxy.topology import GtidAdvanced

# Classification, Digest and ClientStmt are imported at run time, not only for type checking:
# compiled (mypyc) classes check their attributes' types, which must be loaded first.
if TYPE_CHECKING:
    from proxy.frontend.listener import ProxyServer

log = logging.getLogger(__name__)


# After KILL QUERY for a statement over routing.query_timeout_ms, how long the server gets to
# stop it before the backend connection is dropped.
KILL_GRACE_S = 5.0

# Beyond pool.idle_timeout_s, the pool's reaper closes an idle connection within this long.
POOL_SLACK_S = 10.0

# Statements whose OK's affected-rows count says whether they changed anything.
_ROW_DML: Final = frozenset({"insert", "update", "delete", "replace"})

# Final: C globals in the compiled module. An imported name is looked up in the module's
# dict at every use (about 130 instructions): these are used for every statement.
monotonic: Final = time.monotonic

# Plain ints for the per-statement status checks: C globals, no enum attribute lookup.
_AUTOCOMMIT: Final = int(ServerStatus.AUTOCOMMIT)
_STATE_CHANGED: Final = int(ServerStatus.SESSION_STATE_CHANGED)
_IN_TRANS: Final = int(ServerStatus.IN_TRANS)


class SessionPhase(enum.Enum):
    HANDSHAKE = "handshake"
    IDLE = "idle"  # waiting for the client's next command
    EXECUTING = "executing"
    CLOSED = "closed"


# The phases of every statement as C globals (an Enum member read is a class attribute lookup).
_IDLE: Final = SessionPhase.IDLE
_EXECUTING: Final = SessionPhase.EXECUTING
_COM_QUERY: Final = int(Command.COM_QUERY)
_EXECUTE: Final = int(Command.COM_STMT_EXECUTE)


class Starter:
    """Starts a command without the session's task (Session.on_command_data): a class, so
    that the compiled session calls it natively (commands.py has the one in use)."""

    def start(self, session: Session, packet: Packet) -> bool:
        """True when the command was started (start_statement) or answered, False when the
        task is to run it."""
        return False


@dataclass
class Pins:
    """Why the session must keep using the backend connection it has."""

    reasons: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.reasons)


@dataclass
class GtidGate:
    """A bounded GTID wait that routing (causal, read-your-writes) chose for a read on a
    replica: forward()
    sends it just ahead of the read on the same connection, in one round trip, and relays the
    read's response only when the wait says the replica caught up."""

    server: str
    gtid: str
    causal: bool  # counted as a causal read's outcome, else as a read-your-writes wait
    caught_up: bool | None = None  # the wait's answer, once it came
    interrupted: bool = False  # the wait was KILLed (KILL QUERY, query_timeout_ms)
    started: float = 0.0  # perf_counter() when the wait was sent
    waited_s: float = 0.0


# Where a gated read's response goes when the wait timed out: scanned and dropped.
_DISCARD: Final = Sink()

# forward(resend=...): the connection and framed command to run a gated read on the writer
# instead, when the command is bound to the replica's connection (a prepared statement's id).
Resend = Callable[[ServerState], Awaitable[tuple[BackendConnection, bytes] | None]]


class ClientSink(Sink):
    """A statement's response, relayed to the session's client: a commit's GTID is published
    before its last bytes go (_before_reply), and the end of one start_statement sent is
    finished by _started_done."""

    def __init__(self, session: Session, hold_errors: bool = False) -> None:
        super().__init__(hold_errors)
        self.discards = False
        self._session = session
        self._client = session.client

    def write(self, data: bytes) -> None:
        self._client.write(data)

    def before_end(self, scanner: ResponseScanner) -> None:
        self._session._before_reply(scanner)

    def relay_done(self, exc: BaseException | None) -> None:
        self._session._started_done(exc)


class _Started:
    """A statement start_statement sent without the session's task: what forward() would
    hold for it, and what its command (com_query, com_stmt_execute: cs) accounts at its end."""

    __slots__ = (
        "conn", "cs", "digest", "frame", "override", "retry", "scanner", "sink", "sql",
        "started", "stmt", "stmt_id", "target",
    )  # fmt: skip

    def __init__(self, scanner: ResponseScanner) -> None:
        self.scanner = scanner  # the rest is set by fill(), before any use

    def fill(
        self,
        conn: BackendConnection,
        target: ServerState,
        sink: Sink,
        retry: Classification | None,
        frame: bytes,
        sql: str,
        digest: Digest,
        stmt: Classification,
        override: str | None,
        cs: ClientStmt | None,
        stmt_id: int,
        started: float,
    ) -> None:
        """The statement this record is for (a session reuses its record and scanner from
        one statement to the next: no objects built and freed per statement)."""
        self.conn = conn
        self.cs = cs
        self.stmt_id = stmt_id
        self.target = target
        self.sink = sink
        self.retry = retry
        self.frame = frame
        self.sql = sql
        self.digest = digest
        self.stmt = stmt
        self.override = override
        self.started = started  # monotonic(), as the session's exec_started


class Session:
    """Everything about one client: who it is, its state, the backends it currently holds."""

    def __init__(self, server: ProxyServer, client: ClientConnection, session_id: int) -> None:
        self.server = server
        self.client = client
        self.id = session_id
        # The server's parts account() uses for every statement, read once (the objects live
        # as long as the server; a reload changes what is in them, not them).
        self._cluster: Cluster = server.cluster
        self._metrics: Metrics = server.metrics
        self._digests: QueryDigests = server.digests
        # account()'s counters for the last statement and server it counted.
        # (Placeholders until the first statement: never counted in, as nothing matches None.)
        self._counted_stmt: Classification | None = None
        self._command_counter: CommandCounts = self._metrics.command_counts[0]
        self._counted_target: ServerState | None = None
        self._server_counter = Count()
        self.phase = SessionPhase.HANDSHAKE
        self.phase_since = time.monotonic()  # idle time, and SHOW PROCESSLIST's Time
        self.command = b""  # the payload of the command running now (or run last)
        self.wait_timeout: int | None = None  # seconds, once the client sets wait_timeout
        self.user: User | None = None
        # The user's fields read for every statement, as plain attributes (a pydantic
        # model's attribute costs ~430 instructions): set with user by _set_user.
        self.username = ""
        self.user_consistency: Consistency | None = None
        self.caps = 0
        self.state = SessionState()
        self.status = int(ServerStatus.AUTOCOMMIT)
        self.attached: dict[str, BackendConnection] = {}  # server name -> connection
        # attached's connections as a list, for the per-statement loops (a compiled loop over
        # a dict's values makes a generic call per item); changed with it, in _attach, detach.
        self._conns: list[BackendConnection] = []
        self.current: BackendConnection | None = None  # the one a statement runs on now
        self._paused: BackendConnection | None = None  # not read from: the client's is full
        self.last_server: str | None = None  # where the last statement ran
        self.pinned_server: str | None = None  # where session-bound state lives
        self.wrote = False  # changed data: later reads must see it (read-your-writes)
        self.gtid_pending = False  # a write whose commit GTID is not known yet
        self.gtid_conn: BackendConnection | None = None  # to ask for the last commit's GTID
        self.last_gtid: str | None = None  # GTID of the session's last committed write
        self.read_floor: str | None = None  # monotonic reads: the newest state read so far
        self.pins = Pins()
        self.stmts: dict[int, ClientStmt] = {}
        self.next_stmt_id = 1
        self.sink = ClientSink(self)
        self._writes = False  # the statement routed last may change data (for _before_reply)
        self._may_write = False  # ... and it is the running command's (for _client_gone)
        self._row_dml = False  # ... and is one INSERT/UPDATE/DELETE/REPLACE (0 rows: no change)
        self.exec_started = 0.0  # monotonic time the running statement was sent
        self.command_at = 0.0  # monotonic time the running command came (start_command)
        self.running_read = False  # the running statement is a retryable read
        self.kill_sent: BackendConnection | None = None  # KILL QUERY sent for its statement
        self.killed = False  # by KILL [CONNECTION]: nothing more runs for it
        self._routed: ServerState | None = None  # route()'s choice, for route_wait
        self._gate: GtidGate | None = None  # route_wait's GTID wait for forward() to send
        # The command fast path (on_command_data): the command's starter, the statement it
        # sent, and the work left to the task when it could not finish it here.
        self._starter: Starter | None = None
        self._started: _Started | None = None
        # A _Started done with (its scanner too), for start_statement to reuse.
        self._spare: _Started | None = None
        self._handover: Coroutine[Any, Any, bool] | None = None
        client.on_pause = self._pause_backend
        client.on_resume = self._resume_backend
        client.on_lost = self._client_gone

    # -- state changes in one place ------------------------------------------------------------
    def change_phase(self, phase: SessionPhase, now: float = -1.0) -> None:
        """now: monotonic() when the caller has just read it (one clock read per moment)."""
        if phase is not self.phase:
            self.phase = phase
            self.phase_since = monotonic() if now < 0.0 else now

    def start_command(self, payload: bytes) -> None:
        """A client command begins: busy until it is answered (not idle, not swept)."""
        self.command = payload
        self._may_write = False  # until route() says otherwise
        self.command_at = now = monotonic()
        self.change_phase(_EXECUTING, now)

    @property
    def is_executing(self) -> bool:
        return self.phase is _EXECUTING

    def _set_user(self, user: User) -> None:
        self.user = user
        self.username = user.username
        self.user_consistency = user.consistency

    # -- the loop ------------------------------------------------------------------------------
    async def run(
        self,
        dispatch: Callable[[Session, Packet], Awaitable[bool]],
        starter: Starter | None = None,
    ) -> None:
        """Log in, then run the client's commands until it quits or goes. A command that
        starter can start from the client's data_received runs without this task (one
        wake-up less per statement, see on_command_data); the rest run here."""
        client = self.client
        try:
            if await self.authenticate():
                self.change_phase(_IDLE)
                if starter is not None:
                    self._starter = starter
                    client.on_command_data = self.on_command_data
                while True:
                    packet = await client.read_command()
                    if packet is None:
                        work, self._handover = self._handover, None
                        assert work is not None
                        go_on = await work
                    elif self.server.draining:
                        break  # shutting down: what ran was answered, nothing more starts
                    else:
                        go_on = await dispatch(self, packet)
                    if not go_on:
                        break
                    self.change_phase(_IDLE)
        except ClientGone:
            pass
        except PacketTooLarge as big:
            if self.phase is SessionPhase.HANDSHAKE:
                self.server.metrics.refused["handshake_too_large"] += 1
                log.info(
                    "session %d (%s): packet too large before login, closing",
                    self.id,
                    self.client.peer[0],
                )
            self.send_error(
                ErrorCode.ER_NET_PACKET_TOO_LARGE,
                "Got a packet bigger than 'max_allowed_packet' bytes",
                seq=(big.seq + 1) & 0xFF,  # after the fragment that went over, as a client expects
            )
        except ProtocolError as bad:
            log.info(
                "session %d (%s): malformed packet: %s",
                self.id,
                self.client.peer[0],
                log_text(str(bad)),
            )
            self.send_error(ErrorCode.ER_MALFORMED_PACKET, "Malformed communication packet", 1)
        except SessionLost as lost:
            self._refuse_recovery(lost)
        except BackendError as exc:
            log.warning("session %d: backend lost mid-statement: %s", self.id, log_text(str(exc)))
        except Exception:
            log.exception("session %d: internal error", self.id)
            self.send_error(ErrorCode.ER_UNKNOWN_ERROR, "pyproxy internal error", 1)
        finally:
            client.on_command_data = None
            if self._handover is not None:  # cancelled before running it
                self._handover.close()
                self._handover = None
            self.close()

    # -- commands run without the task -----------------------------------------------------------
    def on_command_data(self) -> None:
        """Client bytes came while the task waits for a command: a command the starter can
        start (a plain statement on a ready backend connection) is sent from here and
        finished by _started_done; anything else wakes the task to run it. An error here is
        raised in the task, where run() handles it."""
        client = self.client
        if client.task_held:
            return  # a statement started here still runs: its end reads what is buffered
        if client.closed or client.paused or self.server.draining:
            # After a hang-up, to wait for the client to drain, or to end the session.
            client.wake_task()
            return
        try:
            packet = client.take_packet()
            if packet is None:
                return  # not whole yet
            assert self._starter is not None
            if not self._starter.start(self, packet):
                client.give_back(packet)
                client.wake_task()
            elif self._started is None and self._handover is None:
                self.change_phase(_IDLE)  # answered here (a query rule blocked it)
                client.wake_task()  # the task runs the rest: one at a time from here
        except Exception as exc:
            self.hand_over(_raise(exc))

    def hand_over(self, work: Coroutine[Any, Any, bool]) -> None:
        """Leave a command begun without the task to the task (it awaits work as a command's
        handler)."""
        if self.phase is SessionPhase.CLOSED:
            work.close()  # the task is gone
            return
        self._handover = work
        self.client.task_held = False
        self.client.wake_task(handover=True)

    def start_statement(
        self,
        target: ServerState,
        conn: BackendConnection,
        frame: bytes,
        sql: str,
        digest: Digest,
        stmt: Classification,
        override: str | None,
        cs: ClientStmt | None = None,
        stmt_id: int = 0,
    ) -> None:
        """forward()'s first try of a text statement (or of cs's execute, framed, with the
        client's stmt_id) on a ready connection, without the task: sent now, finished by
        _started_done when the response ended. An execute runs once, as forward() runs one."""
        retry = stmt if cs is None and not self.pins and not self._in_transaction() else None
        command = _COM_QUERY if cs is None else _EXECUTE
        run = self._spare
        if run is None:
            run = _Started(ResponseScanner(command, conn.caps))
        else:
            self._spare = None  # in use until _started_done gives it back
            run.scanner.restart(command, conn.caps)
        scanner = run.scanner
        sink = self._sink_for(retry)
        # Sent first: the rest is bookkeeping that no callback needs before this one returns
        # (the response is read in a later one), kept off the statement's round trip.
        failed = conn.start(frame, scanner, sink)
        # Sent in the callback start_command began the command in: its clock read serves.
        self._begin(conn, target, retry is not None and retry.is_read, self.command_at)
        run.fill(
            conn, target, sink, retry, frame, sql, digest, stmt, override, cs, stmt_id,
            self.command_at,
        )  # fmt: skip
        self._started = run
        self.client.task_held = True
        if failed is not None:
            self._started_done(failed)

    def _started_done(self, exc: BaseException | None) -> None:
        """The response to start_statement's statement ended (exc None) or its connection
        failed (exc). The usual end is finished here, as forward() and com_query would, and
        the next buffered command started; a failure, a retry or a LOCAL INFILE request is
        left to the task (_finish_started)."""
        run = self._started
        if run is None:
            return
        scanner = run.scanner
        if exc is not None or scanner.infile:
            # _started is kept until _finish_started runs: close() ends it if it never does.
            self.hand_over(self._finish_started(run, exc))
            return
        self._started = None
        try:
            try:
                result = self._answered(
                    run.conn, run.target, scanner, run.sink, run.retry, run.override
                )
            finally:
                self._end(run.target)
            if result is _RETRY:
                self.hand_over(self._started_result(run, result))
                return
            now = monotonic()  # the statement's end and the session's idle start
            self._account_started(run, scanner, now - run.started)
        except Exception as error:
            self.hand_over(_raise(error))
            return
        # Nothing else kept it or its scanner: the next statement's. What may be big is let go
        # now, not at the next statement (an idle session holds little).
        run.frame = b""
        run.sql = ""
        run.cs = None
        self._spare = run
        self.change_phase(_IDLE, now)
        self.client.task_held = False
        if self.client.reader.buffered or self.client.closed:
            self.on_command_data()  # the next command (pipelined), or the hang-up

    async def _finish_started(self, run: _Started, exc: BaseException | None) -> bool:
        """forward()'s end of a started statement, in the task: the connection failed under
        it, or the server asked for a LOCAL INFILE."""
        self._started = None
        conn, target, scanner = run.conn, run.target, run.scanner
        result: ResponseScanner | _Retry | None
        try:
            if exc is not None:
                raise exc
            while scanner.infile:
                await self._relay_infile(conn, scanner)
        except BackendError as lost:
            result = self._lost(conn, target, None, scanner, lost)
        else:
            result = self._answered(conn, target, scanner, run.sink, run.retry, run.override)
        finally:
            self._end(target)
        return await self._started_result(run, result)

    async def _started_result(self, run: _Started, result: ResponseScanner | _Retry | None) -> bool:
        """A started statement's outcome: run once more elsewhere (_RETRY, as forward()
        does), then accounted as com_query accounts it."""
        if isinstance(result, _Retry):
            assert run.retry is not None  # _RETRY only comes when a retry is allowed
            new = await self.route_wait(
                run.retry, run.override, exclude=run.target.name, gated=True
            )
            result = None
            if new is not None:
                result = await self.forward(new, _COM_QUERY, run.frame, override=run.override)
        self._account_started(run, result, monotonic() - run.started)
        return True

    def _account_started(
        self, run: _Started, scanner: ResponseScanner | None, elapsed: float
    ) -> None:
        if run.cs is None:
            self.finish_query(run.target, run.digest, run.stmt, run.sql, scanner, elapsed)
        else:
            run.cs.executed(self, run.target, run.stmt_id, scanner, elapsed)

    def finish_query(
        self,
        target: ServerState,
        digest: Digest,
        stmt: Classification,
        sql: str,
        scanner: ResponseScanner | None,
        elapsed: float,
    ) -> None:
        """A text statement ended, elapsed seconds after it was sent: counted and learnt from."""
        self.account(target, digest, stmt, scanner, elapsed)
        if scanner is not None:
            self.note_statement(stmt, sql, scanner)

    # -- authentication ------------------------------------------------------------------------
    async def authenticate(self) -> bool:
        """Log the client in; False when it was refused (it got the error) or gave up."""
        timeout = self.server.config.limits.connect_timeout_s
        try:
            # One deadline over the whole exchange with the client (TLS included), like
            # MySQL's connect_timeout: a silent or trickling client cannot hold a slot.
            async with asyncio.timeout(timeout):
                action, auth = await self._client_auth()
        except TimeoutError:
            self.server.metrics.refused["connect_timeout"] += 1
            log.info(
                "session %d (%s): no login within connect_timeout_s (%gs), closing",
                self.id,
                self.client.peer[0],
                timeout,
            )
            return False
        if action is None:
            return False
        return await self._logged_in(action, auth)

    async def _client_auth(self) -> tuple[AuthDone | None, ServerAuth]:
        """The handshake with the client up to its verified credentials (AuthDone), or None
        after the client got an access-denied error."""
        cfg = self.server.config
        auth = ServerAuth(
            lambda name: u.password if (u := cfg.user(name)) else None,
            connection_id=self.id,
            server_version=self.server.server_version,
            default_plugin=cfg.auth_plugin,
            # LOAD DATA LOCAL INFILE is relayed: the client's file goes to the backend.
            capabilities=DEFAULT_SERVER_CAPABILITIES | Capability.CLIENT_LOCAL_FILES,
            tls_available=self.server.tls is not None,
            rsa_key=self.server.rsa_key,
            client_host=self.client.peer[0],
        )
        self.scramble = auth.scramble
        action = await drive_auth(
            auth.start(), auth.feed, self.client.read_packet, self.client.write, self._start_tls
        )
        if isinstance(action, AuthFailed):
            self._auth_refused(action)
            return None, auth
        return action, auth

    def _auth_refused(self, action: AuthFailed) -> None:
        self.server.metrics.refused["auth"] += 1
        log.info(
            "session %d: %s from %s",
            self.id,
            log_text(action.error.message),
            self.client.peer[0],
        )

    async def _logged_in(self, action: AuthDone, auth: ServerAuth) -> bool:
        """Admit the authenticated client (connection limits), check its schema, send OK."""
        cfg = self.server.config
        user = cfg.user(auth.username)
        assert user is not None
        refusal = self.server.admit(self, user)
        if refusal is not None:
            self.send_err_packet(refusal, auth_seq(action))
            return False
        self.client.logged_in()
        self._set_user(user)
        self.caps = auth.capabilities
        assert auth.response is not None
        self.state = SessionState(
            schema=auth.database or user.default_schema,
            collation=auth.response.charset,
            multi_statements=bool(self.caps & Capability.CLIENT_MULTI_STATEMENTS),
        )
        if auth.database:
            # MySQL refuses the login when the schema does not exist; check it on a backend.
            err = await self._check_schema(auth.database)
            if err is not None:
                self.send_err_packet(err, auth_seq(action))
                return False
        if action.data:
            self.client.write(action.data)
        return True

    async def _check_schema(self, schema: str) -> ErrPacket | None:
        """Does the schema exist for this user? Asked of the writer (or, during a failover,
        any server), like a direct login; recently confirmed schemas are not asked again."""
        if self.server.schema_confirmed(self.username, schema):
            return None
        hold = self.server.config.health.failover_hold_ms / 1000
        deadline = time.monotonic() + hold
        last = "no server is available"
        while True:
            for target in (self.server.writer(), self.server.router.reader()):
                if target is None:
                    continue
                try:
                    await self.backend_for(target)
                except StateSyncError as refused:
                    return refused.err
                except BackendError as exc:
                    if exc.err is not None:
                        return exc.err
                    self.server.note_backend_error(target, exc)
                    last = str(exc)
                    continue
                self.server.confirm_schema(self.username, schema)
                self.release_unpinned()  # an idle login holds no backend connection
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ErrPacket(ErrorCode.PROXY_NO_BACKEND, f"pyproxy: {last}", "HY000")
            await self.server.topology_changed(remaining)

    def _client_gone(self, clean: bool) -> None:
        """The client hung up. A result still being relayed to it is abandoned at once: its
        backend connection is aborted (and never pooled) rather than drained. A statement
        that may change data is left to finish after a clean hang-up, as MySQL finishes it
        (the client's "INSERT ...; QUIT" is kept however soon it closes)."""
        conn = self.current
        if (
            conn is None
            or self.phase is not SessionPhase.EXECUTING
            or (clean and self._may_write and not self.killed)
        ):
            return
        log.info(
            "session %d (%s): client went away mid-result; backend connection to %s aborted",
            self.id,
            self.client.peer[0],
            conn.server_name,
        )
        conn.abort("its client went away", ClientGone())

    async def _start_tls(self) -> AuthWait:
        assert self.server.tls is not None
        await self.client.start_tls(self.server.tls)
        return AuthWait()

    # -- backends --------------------------------------------------------------------------------
    def ready_backend(self, target: ServerState) -> BackendConnection | None:
        """The attached connection to target when it can run a command as it is, else None
        (backend_for then gets or syncs one). The per-statement fast path: no coroutine."""
        conn = self.attached.get(target.name)
        if (
            conn is None
            or conn.broken
            or conn.kills_in_flight
            or not in_sync(self.state, conn.session)
        ):
            return None
        return conn

    async def backend_for(self, target: ServerState) -> BackendConnection:
        """A connection to target in this session's state: the attached one, or from the pool."""
        conn = self.attached.get(target.name)
        if conn is not None and conn.kills_in_flight:
            await conn.kills_answered()
        if conn is None or conn.broken:
            if conn is not None:
                self.detach(conn, broken=True)
                self._carry_over(conn)
            assert self.user is not None
            conn = await self.server.pool.acquire(
                target.config, self.user, self.caps, self.state.collation, self.state.schema
            )
            self._attach(target.name, conn)
        steps = sync_steps(self.state, conn.session, conn.mariadb)
        if steps:
            err = await conn.apply(steps, self.state)
            if err is not None:
                # The session's own state is refused by the server (e.g. a dropped schema):
                # say so to the client rather than run its statement elsewhere.
                raise StateSyncError(err)
        return conn

    def _held_on(self, conn: BackendConnection) -> str | None:
        """What the session would lose with this backend connection, or None (nothing)."""
        if conn.in_transaction:
            return "transaction"
        if self.pins and conn.server_name == self.pinned_server:
            return self._held_on_pins()
        for cs in self.stmts.values():
            if cs.pinned_conn is conn:
                return "open cursor or long data of a prepared statement"
        return None

    def _held_on_pins(self) -> str:
        return ", ".join(sorted(r for r in self.pins.reasons if ":" not in r)) or "pinned state"

    def _carry_over(self, conn: BackendConnection, seq: int | None = 1) -> None:
        """A backend connection the session had is gone: go on with a new one only when
        nothing was lost with it (session settings are replayed); else SessionLost."""
        held = self._held_on(conn)
        outcome = "refused" if held else "carried_over"
        reason = held or "nothing held"
        self.server.metrics.backend_lost[(outcome, reason.split(",")[0])] += 1
        if held:
            raise SessionLost(held, seq)
        log.info(
            "session %d: backend connection to %s lost; carried over (nothing held)",
            self.id,
            conn.server_name,
        )

    def _refuse_recovery(self, exc: SessionLost) -> None:
        log.info(
            "session %d: backend connection lost with the session's %s; closing the client",
            self.id,
            exc.held,
        )
        if exc.seq is None:
            return  # the client's stream was cut mid-packet: closing it is all that is left
        self.client.write(
            build_err(
                exc.seq,
                ErrorCode.ER_CONNECTION_KILLED,
                f"pyproxy: the backend connection holding this session's {exc.held} was lost;"
                " reconnect and retry",
                "70100",
            )
        )

    def _in_transaction(self) -> bool:
        for conn in self._conns:  # noqa: SIM110 - a loop: no generator per statement
            if conn.in_transaction:
                return True
        return False

    def _attach(self, name: str, conn: BackendConnection) -> None:
        self.attached[name] = conn
        self._conns = list(self.attached.values())

    def detach(self, conn: BackendConnection, broken: bool = False) -> None:
        if self.attached.get(conn.server_name) is conn:
            del self.attached[conn.server_name]
            self._conns = list(self.attached.values())
        if broken or conn.broken or self.keeps_backends:
            self.server.pool.discard(conn)
        else:
            self.server.pool.release(conn)

    @property
    def keeps_backends(self) -> bool:
        """The client set a wait_timeout short enough for its server to close an idle pooled
        connection carrying it: the session keeps its connections and they close with it."""
        limit = self.wait_timeout
        return limit is not None and limit < self.server.config.pool.idle_timeout_s + POOL_SLACK_S

    def release_unpinned(self) -> None:
        """Give back connections the session does not need between statements."""
        if self.pins:
            return
        for conn in list(self.attached.values()):
            # The one that committed the last write stays until its GTID is asked.
            if not conn.in_transaction and conn is not self.gtid_conn:
                self.detach(conn)

    def _pause_backend(self) -> None:
        conn = self.current
        if conn is not None and conn.transport is not None:
            conn.transport.pause_reading()
            self._paused = conn

    def _resume_backend(self) -> None:
        conn, self._paused = self._paused, None
        if conn is not None and conn.transport is not None:
            conn.transport.resume_reading()

    # -- running one command on a backend --------------------------------------------------------
    async def forward(
        self,
        target: ServerState,
        command: int,
        packet: bytes,
        *,
        cursor: bool = False,
        conn: BackendConnection | None = None,
        stmt: Classification | None = None,
        override: str | None = None,
        resend: Resend | None = None,
    ) -> ResponseScanner | None:
        """Send a framed client command to target and relay the response to the client.

        Returns the finished scanner, or None when the client already got an error. A text
        statement (stmt given) outside a transaction and pins runs again elsewhere, once,
        when the first try failed in a way that is safe to retry (_RETRY from _connect,
        _lost_mid_statement or _answered): nothing ran, nothing reached the client. A read
        (causal, read-your-writes) for which route_wait chose a GTID wait (self._gate) has
        the wait sent just ahead of it (_relay_gated); when the replica did not catch up, the
        read goes to the writer (resend gives the connection and command for it when packet
        is bound to conn).
        """
        retry = stmt if stmt is not None and not self.pins and not self._in_transaction() else None
        while True:
            if self.killed:
                # KILLed while the statement waited for a server: it must not run. (A client
                # that merely hung up still has the commands it sent run, as on a server.)
                raise ClientGone()
            gate, self._gate = self._gate, None
            if gate is not None and gate.server != target.name:
                gate = None
            got = conn or self.ready_backend(target) or await self._connect(target, retry)
            result: ResponseScanner | _Retry | None
            if isinstance(got, BackendConnection):
                conn = got
                scanner = ResponseScanner(command, conn.caps, cursor=cursor)
                sink = self._sink_for(retry)
                self._begin(conn, target, retry is not None and retry.is_read, monotonic())
                try:
                    if gate is None:
                        await conn.relay(packet, scanner, sink)
                    else:
                        await self._relay_gated(conn, gate, packet, scanner, sink)
                    while scanner.infile:
                        await self._relay_infile(conn, scanner)
                except BackendError as exc:
                    result = self._lost(conn, target, gate, scanner, exc)
                else:
                    if gate is not None and not gate.caught_up:
                        result = None if self._gated_not_run(conn, gate, scanner) else _FALLBACK
                    else:
                        result = self._answered(conn, target, scanner, sink, retry, override)
                finally:
                    self._end(target)
                if gate is not None and gate.caught_up is not None:
                    self._gate_answered(target, gate)
            else:
                result = got  # could not get a connection: None (error sent) or _RETRY
            if result is _FALLBACK:
                moved = await self._to_writer(resend, packet)
                if moved is None:
                    return None
                target, conn, packet = moved
                continue
            if not isinstance(result, _Retry):
                return result
            assert retry is not None  # _RETRY only comes when a retry is allowed
            new = await self.route_wait(retry, override, exclude=target.name, gated=True)
            if new is None:
                return None
            target, conn, retry = new, None, None  # at most one retry

    def _sink_for(self, retry: Classification | None) -> Sink:
        """A write that may run elsewhere has a lone ERR held back (not sent) for the retry."""
        if retry is not None and retry.kind is StatementKind.WRITE:
            return ClientSink(self, hold_errors=True)
        return self.sink

    def _lost(
        self,
        conn: BackendConnection,
        target: ServerState,
        gate: GtidGate | None,
        scanner: ResponseScanner,
        exc: BackendError,
    ) -> _Retry | None:
        """forward()'s backend connection died under the statement."""
        if gate is None or gate.caught_up:
            return self._lost_mid_statement(conn, target, scanner, exc)
        # Lost during the wait or while dropping a stale response: the client got none of
        # it; the writer has what the read must see, unless the statement was being KILLed.
        result = self._lost_gated(conn, target, gate, exc)
        return None if self._gated_not_run(conn, gate, scanner) else result

    async def _to_writer(
        self, resend: Resend | None, packet: bytes
    ) -> tuple[ServerState, BackendConnection | None, bytes] | None:
        """A read whose replica did not catch up goes to the writer: its target, connection
        and command (resend rebinds a prepared statement there); None when the client got
        an error."""
        writer = self.server.writer()
        if writer is None:
            self.send_error(ErrorCode.PROXY_NO_BACKEND, _NO_CAUSAL_SERVER)
            return None
        if resend is None:
            return writer, None, packet
        again = await resend(writer)
        if again is None:
            return None
        return writer, again[0], again[1]

    def _gated_not_run(
        self, conn: BackendConnection, gate: GtidGate, scanner: ResponseScanner
    ) -> bool:
        """Was a gated read whose wait did not catch up KILLed (KILL QUERY, query_timeout_ms)
        during the wait or the dropped read? Then it must not run again on the writer: the
        client gets the interruption (none of the dropped response reached it: sequence 1)."""
        err = scanner.error
        killed = err is not None and err.code == ErrorCode.ER_QUERY_INTERRUPTED
        if not (killed or gate.interrupted or self.kill_sent is conn):
            return False
        self.send_error(ErrorCode.ER_QUERY_INTERRUPTED, "Query execution was interrupted")
        return True

    async def _relay_gated(
        self,
        conn: BackendConnection,
        gate: GtidGate,
        packet: bytes,
        scanner: ResponseScanner,
        sink: Sink,
    ) -> None:
        """The read with its GTID wait just ahead, in one write: the server runs the read
        once the wait returned. Caught up: the read's response goes to sink as usual; else it
        is scanned and dropped (it may be stale), and forward() sends the read to the writer."""
        wait_ms = self._gate_wait_ms(gate)
        sql = wait_query(gate.gtid, wait_ms, conn.mariadb)
        gate.started = time.perf_counter()

        def choose(reply: ValueReply) -> Sink:
            gate.caught_up = caught_up(reply.value)
            err = reply.scanner.error
            gate.interrupted = err is not None and err.code == ErrorCode.ER_QUERY_INTERRUPTED
            gate.waited_s = time.perf_counter() - gate.started
            return sink if gate.caught_up else _DISCARD

        await conn.relay_gated(
            build_command(Command.COM_QUERY, sql.encode()),
            ValueReply(conn.caps),
            choose,
            packet,
            scanner,
            wait_ms / 1000 + INTERNAL_TIMEOUT_S,
        )

    def gate_pending(self, target: ServerState) -> bool:
        """Did route_wait choose a GTID wait on target for forward() to send?"""
        return self._gate is not None and self._gate.server == target.name

    async def settle_gate(self, target: ServerState) -> ServerState | None:
        """Run route_wait's GTID wait for target now, on its own (a statement that must first
        be prepared there): target if it caught up, else the writer (None: there is none,
        the client got the error)."""
        gate, self._gate = self._gate, None
        if gate is None or gate.server != target.name:
            return target
        metrics = self.server.metrics
        waited = metrics.causal_wait_seconds if gate.causal else metrics.gtid_wait_seconds
        reached = await self._wait_for_gtid(target, gate.gtid, self._gate_wait_ms(gate), waited)
        self._count_gate(gate, reached)
        if reached:
            return target
        writer = self.server.writer()
        if writer is None:
            self.send_error(ErrorCode.PROXY_NO_BACKEND, _NO_CAUSAL_SERVER)
        return writer

    def _gate_wait_ms(self, gate: GtidGate) -> int:
        routing = self.server.config.routing
        return routing.causal_wait_ms if gate.causal else routing.read_your_writes_wait_ms

    def _count_gate(self, gate: GtidGate, reached: bool) -> None:
        """A gated read's outcome, in its level's metrics."""
        metrics = self.server.metrics
        if gate.causal:
            outcome = Outcome.REPLICA_AFTER_WAIT if reached else Outcome.WRITER_FALLBACK
            metrics.causal_reads[outcome.value] += 1
            return
        metrics.gtid_waits["caught_up" if reached else "timed_out"] += 1
        if not reached:
            metrics.consistency_reads_to_writer += 1

    def _gate_answered(self, target: ServerState, gate: GtidGate) -> None:
        """Count a gated read's outcome; a MariaDB position reached is learnt (later reads
        find the replica fresh without a wait)."""
        metrics = self.server.metrics
        waited = metrics.causal_wait_seconds if gate.causal else metrics.gtid_wait_seconds
        waited.observe(gate.waited_s)
        self._count_gate(gate, bool(gate.caught_up))
        if gate.caught_up and gtid_is_mariadb(gate.gtid):
            self.server.topology.apply(GtidAdvanced(target.name, gate.gtid))

    def _lost_gated(
        self, conn: BackendConnection, target: ServerState, gate: GtidGate, exc: BackendError
    ) -> _Retry:
        """The connection died during the wait sent ahead of a read, or while its stale
        response was dropped: nothing reached the client, so the read goes to the writer, as
        after a wait that timed out (unless state went with the connection: SessionLost)."""
        if gate.caught_up is None:
            gate.caught_up = False
            gate.waited_s = time.perf_counter() - gate.started
        self.detach(conn, broken=True)
        self.server.note_backend_error(target, exc)
        self._carry_over(conn)  # raises SessionLost when state went with it
        return _FALLBACK

    async def _connect(
        self, target: ServerState, retry: Classification | None
    ) -> BackendConnection | _Retry | None:
        """A backend connection for forward() (none attached and ready): _RETRY when the
        server cannot be reached and the statement may run elsewhere; None: error sent."""
        try:
            return await self.backend_for(target)
        except StateSyncError as refused:
            self.send_err_packet(refused.err)
            return None
        except BackendError as exc:
            self.server.note_backend_error(target, exc)
            errno = exc.err.code if exc.err is not None else ErrorCode.CR_CONN_HOST_ERROR
            self._count_error(target, errno, str(exc))
            if retry is not None and exc.err is None:
                return _RETRY
            self.send_error(ErrorCode.PROXY_NO_BACKEND, f"pyproxy: {exc}")
            return None

    def _answered(
        self,
        conn: BackendConnection,
        target: ServerState,
        scanner: ResponseScanner,
        sink: Sink,
        retry: Classification | None,
        override: str | None,
    ) -> ResponseScanner | _Retry:
        """The server answered: the session learns from it. A write the writer refused as
        read-only (held back, not sent) asks the health checker for a prompt recheck; only
        when its own observation already moved the writer elsewhere is it _RETRY (it did not
        run); else the client gets the error. A client's error never changes the topology."""
        self._after_response(conn, scanner)
        self.server.metrics.bytes_out += scanner.consumed
        if sink.held is not None:
            assert retry is not None
            if _refused_read_only(scanner, retry, override):
                self.server.recheck(target.name)
                writer = self.server.cluster.writer
                if writer is not None and writer != target.name:
                    return _RETRY
            self.client.write(sink.held)
        return scanner

    def _begin(self, conn: BackendConnection, target: ServerState, read: bool, now: float) -> None:
        """conn runs a statement for target from now (monotonic())."""
        self.current = conn
        self.last_server = conn.server_name
        self.exec_started = now
        self.kill_sent = None  # a KILL QUERY is for the statement it was sent for
        self.running_read = read
        target.outstanding += 1
        self.change_phase(_EXECUTING)
        if self.client.paused:
            self._pause_backend()

    def _end(self, target: ServerState) -> None:
        target.outstanding -= 1
        self.current = None
        self.running_read = False
        if self._paused is not None:
            # Its response ended while the client's buffer was full: nothing more to hold
            # back, and a connection left paused would never read its next answer.
            self._resume_backend()

    def _lost_mid_statement(
        self,
        conn: BackendConnection,
        target: ServerState,
        scanner: ResponseScanner,
        exc: BackendError,
    ) -> _Retry:
        """The backend connection died while running the statement: _RETRY for a read that
        sent nothing yet (unless KILL QUERY stopped it); else the client gets the error and
        the session ends (SessionLost when state went with the connection, else exc)."""
        self.detach(conn, broken=True)
        self.server.note_backend_error(target, exc)
        seq = _error_seq(scanner)
        self._carry_over(conn, seq)  # raises SessionLost when state went with it
        if scanner.consumed == 0 and self.running_read and self.kill_sent is not conn:
            return _RETRY
        # A write's outcome is unknown (it may have committed), or the client has part of a
        # result: as when a server dies under a direct connection, the client connection
        # ends. The error is server-range: libmariadb turns a client-range one (2013) in an
        # ERR packet into 2027 "malformed packet".
        if seq is not None:
            self.send_error(
                ErrorCode.ER_CONNECTION_KILLED,
                f"pyproxy: lost connection to backend {target.name} during the query"
                f" ({exc}); its outcome is unknown",
                seq,
            )
        raise exc

    def server_down(self, name: str) -> None:
        """The health checker marked a server DOWN: a read running there is dropped, so that
        forward() retries it elsewhere at once (or, if it already sent rows, fails it)."""
        conn = self.current
        if conn is not None and conn.server_name == name and self.running_read:
            self.server.metrics.reads_retried_on_down += 1
            conn.abort(f"{name} was marked DOWN")

    def server_demoted(self, name: str) -> None:
        """name stopped being the writer: every connection to it closes at once, so that a
        statement in flight there gets an error (never an OK acknowledged after another
        master was promoted) and nothing more reaches it from this session."""
        for conn in list(self.attached.values()):
            if conn.server_name == name and not conn.broken:
                conn.abort(f"{name} is no longer the writer")

    def check_deadline(self, now: float, timeout_s: float) -> None:
        """routing.query_timeout_ms: KILL QUERY on the server once the statement ran too long;
        if the server does not stop it within KILL_GRACE_S, drop the backend connection."""
        conn = self.current
        if conn is None:
            return
        running = now - self.exec_started
        if self.kill_sent is conn:
            if running > timeout_s + KILL_GRACE_S:
                conn.abort(f"statement still running {KILL_GRACE_S:.0f}s after KILL QUERY")
        elif running > timeout_s:
            self.kill_sent = conn
            self.server.metrics.query_timeouts += 1
            log.info(
                "session %d: statement on %s ran %.1fs, over query_timeout_ms: KILL QUERY",
                self.id,
                conn.server_name,
                running,
            )
            self.server.kill_backend_query(self, conn)

    async def _relay_infile(self, conn: BackendConnection, scanner: ResponseScanner) -> None:
        """LOAD DATA LOCAL INFILE: the client sends the file, then the server answers."""
        while True:
            packet = await self.client.read_packet()
            conn.write(build_packet(packet.seq, packet.payload))
            if not packet.payload:
                break
        await conn.resume_relay(scanner, self.sink)

    def _after_response(self, conn: BackendConnection, scanner: ResponseScanner) -> None:
        """The session's side of a response (the connection recorded its own)."""
        if scanner.status is not None:
            self.status = scanner.status
            self.state.autocommit = bool(scanner.status & _AUTOCOMMIT)
            if scanner.status & _STATE_CHANGED and scanner.ok_payload:
                self._learn_session_state(conn, scanner.ok_payload)

    def _learn_session_state(self, conn: BackendConnection, ok_payload: bytes) -> None:
        try:
            ok = parse_ok(ok_payload, conn.caps)
        except ProtocolError:
            return
        if ok.schema is not None:
            self.state.schema = ok.schema
            conn.note_session(schema=ok.schema)

    # -- query rules -------------------------------------------------------------------------------
    def apply_rules(
        self, sql: str, digest: Digest, stmt: Classification
    ) -> tuple[str, Digest, Classification, str | None] | None:
        """The query rules (mysql_query_rules) for a statement, text or prepared: None when
        one blocks it (the client got its error); else the SQL to run (rewritten or as
        sent), its digest and classification, and the route a rule asks for. The digest
        reported in the statistics never keeps a literal, whatever the session's sql_mode."""
        server = self.server
        override = None
        router = server.snapshot.router  # snapshot: ProxyServer.router is a property call
        if router.has_rules:
            action = router.rules.decide(
                sql,
                digest.text,
                self.username,
                self.state.schema,
                multi=stmt.is_multi_statement,
                backslash_escapes=self.state.backslash_escapes() if "\\" in sql else True,
            )
            if action is not None:
                if action.block is not None:
                    self.send_error(ErrorCode.ER_NOT_ALLOWED_COMMAND, action.block)
                    return None
                if action.rewritten_sql is not None:
                    sql = action.rewritten_sql
                    digest, stmt = server.classifier.classify(sql)
                override = action.route
        if "\\" in sql:
            digest = reported_digest(sql, digest, self.state.backslash_escapes())
        return sql, digest, stmt, override

    # -- routing: one entry point ----------------------------------------------------------------
    def route(self, stmt: Classification, override: str | None = None) -> ServerState | None:
        """Where stmt runs, when that is known at once: the per-statement fast path, with no
        coroutine. None means "await route_wait(stmt, override)": a failover to wait out, or
        a replica to check for what the session must see. Callers write
        `session.route(stmt, o) or await session.route_wait(stmt, o)`."""
        self._writes = self._may_write = stmt.changes_data
        # Read only when the statement changes data (_before_reply): reads skip the set lookup.
        self._row_dml = stmt.changes_data and stmt.verb in _ROW_DML and not stmt.is_multi_statement
        router = self.server.snapshot.router  # once per statement (a reload swaps it)
        target = self._choose(stmt, override, router)
        if target is None or self._must_check(stmt, target, override, router):
            self._routed = target  # route_wait starts from it (asking again would advance
            return None  # the replica rotation)
        self._routed = None  # never left for a later route_wait (a retry's) to start from
        return target

    async def route_wait(
        self,
        stmt: Classification,
        override: str | None = None,
        *,
        exclude: str | None = None,
        silent: bool = False,
        gated: bool = False,
    ) -> ServerState | None:
        """route(), waiting out a failover (statements needing the writer are held up to
        failover_hold_ms until one is elected) and checking a replica has the session's
        writes. None: no server can take it, and the client got the error (unless silent:
        for commands that get no response). exclude: a server that just failed it. gated: the
        caller sends the statement with forward(), which runs a GTID wait chosen here just
        ahead of it (one round trip) instead of here."""
        target, self._routed = self._routed, None
        if target is None or target.name == exclude:
            target = self._choose(stmt, override)
        if target is None or target.name == exclude:
            hold = self.server.config.health.failover_hold_ms / 1000
            deadline = time.monotonic() + hold
            while (remaining := deadline - time.monotonic()) > 0:
                await self.server.topology_changed(remaining)
                target = self._choose(stmt, override)
                if target is not None and target.name != exclude:
                    break
            else:
                if not silent:
                    cluster = self.server.cluster
                    why = "" if cluster.writer else f"; no writer: {cluster.writer_reason}"
                    self.send_error(
                        ErrorCode.PROXY_NO_BACKEND,
                        "pyproxy: no backend server is available for this statement "
                        f"(waited {hold * 1000:.0f} ms for a failover{why})",
                    )
                return None
        if self._must_check(stmt, target, override):
            if self.consistency(stmt) in CAUSAL_LEVELS:
                causal = await self._causal_target(target, stmt, gated)
                if causal is None and not silent:
                    self.send_error(ErrorCode.PROXY_NO_BACKEND, _NO_CAUSAL_SERVER)
                return causal
            target = await self._fresh_target(target, stmt, gated)
        return target

    def _choose(
        self, stmt: Classification, override: str | None, router: Router | None = None
    ) -> ServerState | None:
        """The server for stmt given the session's situation; None when none is usable.
        router: the snapshot's, when the caller has it already."""
        for conn in self._conns:
            if conn.in_transaction:  # a transaction stays where it began
                return self.target_of(conn)
        if self.pinned_server is not None and self.pins:
            pinned = self.attached.get(self.pinned_server)
            if pinned is None:
                raise SessionLost(self._held_on_pins())
            return self.target_of(pinned)
        if (
            stmt.needs_previous_backend
            and self.last_server in self.attached
            and (stmt.is_read or self.last_server == self._cluster.writer)
        ):
            return self._cluster.server(self.last_server)
        return (router or self.server.snapshot.router).choose(
            stmt,
            autocommit=self.state.autocommit,
            # With the last write's GTID known, route_wait checks the replica instead.
            wrote=self.wrote and self.last_gtid is None,
            consistency=self.user_consistency,
            override=override,
        )

    def _must_check(
        self,
        stmt: Classification,
        target: ServerState,
        override: str | None,
        router: Router | None = None,
    ) -> bool:
        """Must a read routed to target first check the replica has what it must see: the
        session's writes, or (causal) the high-water mark it does not cover yet? Not a read
        sent to a server by name (hint or rule): it runs there, as that server has it."""
        if not stmt.is_read:
            return False
        level = self.consistency(stmt, router)
        # level in CAUSAL_LEVELS as two string compares: cheaper than the set lookup.
        if not (self.last_gtid or self.read_floor or level == "causal" or level == "causal_global"):
            return False  # read_your_writes (the default) with no write to see yet, eventual
        if target.name == self.server.cluster.writer:
            return False
        if (override or stmt.hint_route) not in (None, "reader"):
            return False
        if level == "causal" and not (
            self.read_floor and self.server.snapshot.router.monotonic_reads
        ):
            want = self.server.watermark.mark()
            if want is not None and covers(
                self.server.snapshot.router.positions.mark(target.gtid_position), want
            ):
                self.server.metrics.causal_reads["replica_fresh"] += 1
                return False
            return True
        return level == "causal_global" or bool(self.last_gtid or self.read_floor)

    async def _fresh_target(
        self, first: ServerState, stmt: Classification, gated: bool
    ) -> ServerState:
        """Read-your-writes: the chosen replica if it has what the session must see, else
        another replica that has, else one not known to lag after a bounded wait there,
        else the writer. gated: the wait is left to forward() (self._gate), just ahead of the
        read in one round trip; it counts the outcome and sends the read to the writer if
        the replica did not catch up."""
        need = self._must_see(stmt)
        if need is None:
            return first
        candidates = [first] + [r for r in self.server.router.readers() if r is not first]
        for replica in candidates:
            if gtid_contains(replica.gtid_position, need):
                return replica
        for replica in candidates:
            if replica.lag_s:
                continue  # a replica known to lag is not worth a wait
            if gated:
                self._gate = GtidGate(replica.name, need, causal=False)
                return replica
            if await self._waited_for(replica, need):
                return replica
        writer = self.server.writer()
        if writer is None:
            return first
        self.server.metrics.consistency_reads_to_writer += 1
        return writer

    async def _causal_target(
        self, first: ServerState, stmt: Classification, gated: bool
    ) -> ServerState | None:
        """Causal reads: a replica that has applied the high-water mark (causal_global: and
        the writer's position, asked after the read arrived), else one that reaches it within
        causal_wait_ms, else the writer (None when there is none). gated: the wait is left
        to forward() (self._gate), which counts its outcome."""
        server = self.server
        want = server.watermark.mark()
        if want is None or self.consistency(stmt) == "causal_global":
            # The mark is unknown (a commit's GTID not learnt yet) or not enough (commits
            # through other pyproxy instances): the writer's position, asked after this read
            # arrived, holds every commit acknowledged before it.
            assert self.user is not None
            asker = Asker(self.user, self.caps, self.state.collation)
            position = await server.positions.position(time.monotonic_ns(), asker)
            want = None if position is None else merge(want or {}, position)
        if want is not None and self.read_floor and server.config.routing.monotonic_reads:
            want = merge(want, applied_mark(self.read_floor))
        replicas = [first] + [r for r in server.router.readers() if r is not first]
        positions = server.router.positions
        decision = decide(
            want, [Candidate(r.name, positions.mark(r.gtid_position), r.lag_s) for r in replicas]
        )
        outcome = Outcome.WRITER_FALLBACK
        target: ServerState | None = None
        if decision.fresh is not None:
            outcome, target = Outcome.REPLICA_FRESH, server.cluster.server(decision.fresh)
        elif decision.wait_on is not None and want is not None:
            replica = server.cluster.server(decision.wait_on)
            if gated:
                self._gate = GtidGate(replica.name, wait_gtid(want), causal=True)
                return replica
            routing = server.config.routing
            waited = server.metrics.causal_wait_seconds
            if await self._wait_for_gtid(replica, wait_gtid(want), routing.causal_wait_ms, waited):
                outcome, target = Outcome.REPLICA_AFTER_WAIT, replica
        if target is None:
            target = server.writer()
        server.metrics.causal_reads[outcome.value] += 1
        return target

    def _before_reply(self, scanner: ResponseScanner) -> None:
        """Called by the relay just before a response's last bytes go to the client: a
        commit's GTID joins the high-water mark first, so that any read the client (or one
        it told) sends after this OK, on any connection or worker, is routed knowing it."""
        status = scanner.status
        if scanner.error is not None or status is None or status & _IN_TRANS:
            return
        # A GTID tracked in the OK is a commit, whatever the statement looked like.
        gtid = self._tracked_gtid(self.current, scanner) if status & _STATE_CHANGED else None
        if gtid:
            self.server.watermark.advance(commit_mark(gtid))
            return
        if not (
            self.gtid_pending
            or (
                self._writes
                # One DML statement's OK saying it touched no row: it committed nothing. A
                # result set (RETURNING) reports no rows affected, whatever it changed.
                and not (self._row_dml and not scanner.affected_rows and not scanner.result_sets)
            )
        ):
            return
        if self.user is not None:
            # Not in the OK (not tracked: MariaDB without last_gtid in
            # session_track_system_variables, a client without CLIENT_SESSION_TRACK): until
            # the writer's position,
            # which holds this commit, is learnt, causal reads ask the writer for it.
            self.server.learn_commit_soon(Asker(self.user, self.caps, self.state.collation))

    @staticmethod
    def _tracked_gtid(conn: BackendConnection | None, scanner: ResponseScanner) -> str | None:
        """The GTID a statement committed, from its final OK's session tracking (MariaDB's
        last_gtid, MySQL's session_track_gtids); None when not there."""
        if (
            conn is None
            or scanner.ok_payload is None
            or not conn.caps & Capability.CLIENT_SESSION_TRACK
        ):
            return None
        with contextlib.suppress(ProtocolError):
            return parse_ok(scanner.ok_payload, conn.caps).committed_gtid
        return None

    def sticky_target(self) -> ServerState:
        """Where session-level commands go: the server the session already uses, or the writer."""
        for conn in self.attached.values():
            return self.target_of(conn)
        writer = self.server.writer()
        if writer is None:
            raise BackendError("no writer is available")
        return writer

    def target_of(self, conn: BackendConnection) -> ServerState:
        return self._cluster.server(conn.server_name)

    def account(
        self,
        target: ServerState,
        digest: Digest,
        stmt: Classification,
        scanner: ResponseScanner | None,
        elapsed: float,
    ) -> None:
        """Count one executed statement: the query metrics and its digest's statistics."""
        name = target.name
        hostgroup = self._cluster.hostgroup_of(target)
        ok = scanner is not None and scanner.error is None
        metrics = self._metrics
        # The counters of the last statement and server, kept: a session mostly repeats them.
        if stmt is not self._counted_stmt:
            self._command_counter = metrics.command_counter(stmt.verb)
            self._counted_stmt = stmt
        if target is not self._counted_target:
            self._server_counter = metrics.server_counter(name)
            self._counted_target = target
        metrics.count(
            hostgroup == 0, stmt.is_read, ok, elapsed, self._command_counter, self._server_counter
        )
        if scanner is None:
            return
        error = scanner.error
        if error is not None:
            self._count_error(target, error.code, error.message)
        us = int(elapsed * 1e6)
        schema = self.state.schema or ""
        digests = self._digests
        if not digests.count(
            digest.id, hostgroup, name, self.username, schema, us, scanner.rows,
            scanner.affected_rows,
        ):  # fmt: skip
            digests.record(
                digest.id, digest.text, hostgroup, name, self.username, schema, us,
                scanner.rows, scanner.affected_rows,
                self.server.config.limits.query_digests_max_digest_length,
            )  # fmt: skip

    def _count_error(self, target: ServerState, errno: int, message: str) -> None:
        """stats_mysql_errors: an error a server answered, or a failed connection to it."""
        self.server.metrics.record_error(
            (self.server.cluster.hostgroup(target.name), target.config.host, target.config.port,
             self.username, self.client.peer[0], self.state.schema or "", errno),
            message,
        )  # fmt: skip

    def note_statement(self, stmt: Classification, sql: str, scanner: ResponseScanner) -> None:
        """Learn what a successful statement changed in the session."""
        if scanner.error is not None:
            return
        if stmt.changes_data or (
            scanner.status is not None
            and scanner.status & _STATE_CHANGED
            and self._tracked_gtid(self.attached.get(self.last_server or ""), scanner)
        ):
            # May have committed (a GTID tracked in the OK: did commit): later reads must
            # see it.
            self.wrote = True
            self.gtid_pending = True
        self._note_state(stmt, sql)
        if self.gtid_pending and not self.status & _IN_TRANS:
            # The write is committed now (autocommit, COMMIT, or DDL's implicit commit).
            self._note_commit(scanner)

    def _note_state(self, stmt: Classification, sql: str) -> None:
        if self.server.snapshot.router.monotonic_reads and self.last_server and stmt.is_read:
            served = self.server.cluster.server(self.last_server)
            if served.replica and gtid_is_mariadb(served.gtid_position):
                # What this replica had applied is the least the next read may see.
                self.read_floor = merge_mariadb(self.read_floor or "", served.gtid_position)
        if stmt.pins_session:
            if self.last_server == self.server.cluster.writer:
                # Only the writer holds state across statements: pinning to a replica would
                # send the session's later writes there.
                self.pins.reasons.add(stmt.pin_reason or "session state")
                self.pinned_server = self.last_server
            elif self.last_server in self.attached:
                # Sent elsewhere by a hint or rule: whatever state it left there (a lock, a
                # temporary table) is not kept, and must neither reach nor block anyone else.
                self.detach(self.attached[self.last_server], broken=True)
        if not stmt.changes_session_state or stmt.next_transaction_only or not stmt.replay_sql:
            return
        conn = self.attached.get(self.last_server) if self.last_server else None
        names = stmt.session_vars
        if names == ("database",):
            schema = _use_target(stmt.replay_sql)
            self.state.schema = schema
            if conn is not None:
                conn.note_session(schema=schema)
            return
        if names == ("autocommit",):
            return  # followed through the status flags of every response
        key = "names" if "character_set_client" in names else ",".join(names) or sql
        # Re-inserting moves the key last, so replay keeps the client's order.
        self.state.variables.pop(key, None)
        self.state.variables[key] = stmt.replay_sql
        if conn is not None:
            conn.note_session(variable=(key, stmt.replay_sql))

    # -- read your writes ------------------------------------------------------------------------
    def _note_commit(self, scanner: ResponseScanner) -> None:
        """The GTID of the session's commit, from the OK packet's session tracking when the
        client negotiated it; else it is asked of the same backend connection (ask_gtid)
        before the next statement that does not report on this one (ROW_COUNT(), SHOW
        WARNINGS... must still see this statement, not the proxy's question)."""
        self.gtid_pending = False
        conn = self.attached.get(self.last_server) if self.last_server else None
        gtid = self._tracked_gtid(conn, scanner)
        # Unknown: reads go to the writer until a GTID is known again (the safe side).
        self.last_gtid = gtid
        self.gtid_conn = conn if gtid is None else None

    async def ask_gtid(self) -> None:
        """Ask the connection that committed the session's last write for its GTID."""
        conn, self.gtid_conn = self.gtid_conn, None
        if conn is None or conn.broken or self.attached.get(conn.server_name) is not conn:
            return  # given back meanwhile: the GTID stays unknown
        sql = "SELECT @@last_gtid" if conn.mariadb else "SELECT @@GLOBAL.gtid_executed"
        try:
            value = await conn.query_scalar(sql)
        except BackendError:
            return
        self.last_gtid = value.decode() if value else None

    async def learn_wait_timeout(self) -> None:
        """The client set wait_timeout: read back the value the server made of it (clamped,
        expressions evaluated), after which the proxy closes this client when idle."""
        conn = self.attached.get(self.last_server) if self.last_server else None
        if conn is None or conn.broken:
            return
        try:
            value = await conn.query_scalar("SELECT @@session.wait_timeout")
        except BackendError:
            return
        if value is not None and value.isdigit():
            self.wait_timeout = int(value)

    def consistency(self, stmt: Classification, router: Router | None = None) -> str:
        return (
            stmt.hint_consistency
            or self.user_consistency
            or (router or self.server.snapshot.router).consistency
        )

    def _must_see(self, stmt: Classification) -> str | None:
        """What a replica must have applied to serve the session's read: its last write
        (read-your-writes) and, with monotonic_reads, what it read before (MariaDB: one
        position for both); None: nothing."""
        last = self.last_gtid if self.consistency(stmt) == "read_your_writes" else None
        floor = self.read_floor if self.server.config.routing.monotonic_reads else None
        if last and floor:
            return merge_mariadb(last, floor)  # read_floor is MariaDB-only, so is the cluster
        return last or floor

    async def _waited_for(self, target: ServerState, gtid: str) -> bool:
        """A bounded read-your-writes wait on target for gtid, on its own (not gated)."""
        metrics = self.server.metrics
        wait_ms = self.server.config.routing.read_your_writes_wait_ms
        reached = await self._wait_for_gtid(target, gtid, wait_ms, metrics.gtid_wait_seconds)
        metrics.gtid_waits["caught_up" if reached else "timed_out"] += 1
        return reached

    async def _wait_for_gtid(
        self, target: ServerState, gtid: str, wait_ms: int, waited: Histogram
    ) -> bool:
        """A bounded wait on the replica for the GTID (MASTER_GTID_WAIT on MariaDB,
        WAIT_FOR_EXECUTED_GTID_SET on MySQL), on the connection the read then uses. A MariaDB
        position reached is learnt: later reads find the replica fresh without asking."""
        try:
            conn = await self.backend_for(target)
        except (BackendError, StateSyncError):
            return False
        started = time.perf_counter()
        try:
            value = await conn.query_scalar(wait_query(gtid, wait_ms, conn.mariadb))
        except BackendError:
            self.detach(conn, broken=True)
            return False
        waited.observe(time.perf_counter() - started)
        applied = caught_up(value)
        if applied and gtid_is_mariadb(gtid):
            self.server.topology.apply(GtidAdvanced(target.name, gtid))
        return applied

    def report_backend_failure(self, target: ServerState, exc: BackendError) -> None:
        self.server.note_backend_error(target, exc)
        if exc.err is not None:
            self.send_error(exc.err.code, exc.err.message)
        else:
            self.send_error(ErrorCode.PROXY_NO_BACKEND, f"pyproxy: {exc}")

    # -- resets ------------------------------------------------------------------------------------
    def reset(self, state: SessionState) -> None:
        """Forget everything session-bound (COM_RESET_CONNECTION, COM_CHANGE_USER)."""
        self._give_back_all()
        self.state = state
        self.pins.reasons.clear()
        self.pinned_server = None
        self.stmts.clear()
        self.wait_timeout = None

    def _give_back_all(self) -> None:
        """The session ends (or starts afresh): the next session to get one of its connections
        finds it reset (COM_RESET_CONNECTION). The pinned one is closed instead when it may
        hold what others wait for (a lock, a procedure's or function's state), not left to
        block them while it idles in the pool."""
        holds = any(r not in VALUE_PINS and ":" not in r for r in self.pins.reasons)
        for conn in list(self.attached.values()):
            conn.note_session(tainted=True)
            self.detach(conn, broken=holds and conn.server_name == self.pinned_server)

    async def change_user(self, request: ChangeUser) -> bool:
        """COM_CHANGE_USER from the client: authenticated like a login (same plugins), then a
        reset; a refused one closes the connection, as MySQL does."""
        cfg = self.server.config
        auth = ServerAuth(
            lambda name: u.password if (u := cfg.user(name)) else None,
            connection_id=self.id,
            default_plugin=cfg.auth_plugin,
            capabilities=self.caps,
            status=int(ServerStatus.AUTOCOMMIT),
            secure_transport=self.client.tls,
            rsa_key=self.server.rsa_key,
            client_host=self.client.peer[0],
            scramble=self.scramble,
        )
        action = await drive_auth(
            auth.start_change_user(request), auth.feed, self.client.read_packet, self.client.write
        )
        if isinstance(action, AuthFailed):
            self._auth_refused(action)
            return False
        seq = auth_seq(action)
        user = cfg.user(auth.username)
        assert user is not None
        refusal = self.server.switch_user(self, user)
        if refusal is not None:
            self.send_err_packet(refusal, seq)
            return False
        self._set_user(user)
        self.reset(
            SessionState(
                schema=request.database or user.default_schema,
                collation=request.charset or self.state.collation,
                multi_statements=self.state.multi_statements,
            )
        )
        self.status = int(ServerStatus.AUTOCOMMIT)
        if request.database:
            try:
                await self.backend_for(self.sticky_target())
            except StateSyncError as refused:
                self.send_err_packet(refused.err, seq)
                return True
            except BackendError as exc:
                self.report_backend_failure(self.sticky_target(), exc)
                return True
        self.client.write(action.data)
        return True

    # -- replies made by the proxy itself ----------------------------------------------------------
    def send_ok(self, seq: int = 1, affected_rows: int = 0) -> None:
        self.client.write(
            build_ok(seq, affected_rows=affected_rows, status=self.status, caps=self.caps)
        )

    def send_eof_or_ok(self, seq: int = 1) -> None:
        payload = encode_end_of_result(self.caps, status=self.status)
        self.client.write(build_packet(seq, payload))

    def send_error(self, code: int, message: str, seq: int = 1) -> None:
        self.client.write(build_err(seq, code, message))

    def send_err_packet(self, err: ErrPacket, seq: int = 1) -> None:
        """A server's (or the proxy's) ERR packet, as it is."""
        self.client.write(build_err(seq, err.code, err.message, err.sqlstate))

    # -- teardown --------------------------------------------------------------------------------
    def kill(self) -> None:
        """KILL [CONNECTION] of this session: its client is closed and nothing more it sent
        runs, not even a statement still waiting for a server."""
        self.killed = True
        self.client.close()

    def close(self) -> None:
        if self.phase is SessionPhase.CLOSED:
            return
        self.change_phase(SessionPhase.CLOSED)
        run, self._started = self._started, None
        if run is not None:
            self._end(run.target)  # its connection is dropped with the others
        self._give_back_all()
        self.client.close()
        self.server.session_closed(self)


async def _raise(exc: BaseException) -> bool:
    """Work handed to the task that raises exc there (where Session.run handles it)."""
    raise exc


def _error_seq(scanner: ResponseScanner) -> int | None:
    """Sequence id for an ERR replacing the rest of a response; None when the relayed part
    ends mid-packet (no packet can follow that the client would parse)."""
    if not scanner.consumed:
        return 1
    return (scanner.last_seq + 1) & 0xFF if scanner.at_packet_boundary else None


def _use_target(replay_sql: str) -> str:
    """The schema of a `USE db` statement."""
    name = replay_sql.strip().rstrip(";").split(None, 1)[1].strip()
    if name.startswith("`") and name.endswith("`"):
        name = name[1:-1].replace("``", "`")
    return name


class _Retry(enum.Enum):
    """The answer of forward()'s steps when the statement may run again elsewhere."""

    RETRY = "retry"
    FALLBACK = "fallback"  # a gated read whose replica did not catch up: to the writer


_RETRY: Final = _Retry.RETRY
_FALLBACK: Final = _Retry.FALLBACK

_NO_CAUSAL_SERVER = (
    "pyproxy: no writer is available and no replica has every write this read must see "
    "(causal or read-your-writes consistency)"
)


def _refused_read_only(
    scanner: ResponseScanner, stmt: Classification, override: str | None
) -> bool:
    """A write routed to the writer was refused as read-only. A server named by a hint or
    rule answers for itself (its 1290 stands, no recheck)."""
    err = scanner.error
    return (
        err is not None
        and err.code == ErrorCode.ER_OPTION_PREVENTS_STATEMENT
        and (override or stmt.hint_route) in (None, "writer")
    )


class SessionLost(Exception):
    """The backend connection a session depended on is gone with state the client had built
    (a transaction, user variables, ...): the client gets a lost-connection error."""

    def __init__(self, held: str, seq: int | None = 1) -> None:
        super().__init__(held)
        self.held = held
        self.seq = seq


class StateSyncError(Exception):
    def __init__(self, err: ErrPacket) -> None:
        super().__init__(err.message)
        self.err = err


def auth_seq(action: object) -> int:
    """Sequence id for a packet replacing the final OK of an authentication exchange."""
    data = getattr(action, "data", b"")
    return data[3] if len(data) >= 4 else 2
