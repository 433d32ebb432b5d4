"""Handling of server connections: connect, authenticate, run commands, relay responses."""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

from proxy.authio import drive_auth
from proxy.backend.sync import SessionState, Step, StepKind, gtid_tracking_sql
from proxy.protocol.auth import (
    DEFAULT_CLIENT_CAPABILITIES,
    AuthAction,
    AuthFailed,
    ClientAuth,
)
from proxy.protocol.constants import Capability, Command, ErrorCode, ServerStatus
from proxy.protocol.handshake import HandshakeV10, parse_handshake_v10
from proxy.protocol.packets import (
    ErrPacket,
    Packet,
    PacketReader,
    ProtocolError,
    build_command,
    is_err,
    parse_err,
)
from proxy.protocol.response import ResponseScanner, ValueReply, first_value

log = logging.getLogger(__name__)

# Capabilities a backend connection may use: what pyproxy asks of any server, plus the two
# that depend on the client (schema at login, LOCAL INFILE). The client's own flags are
# intersected with this; compression, SSL (unless configured) and the rest stay off.
BACKEND_CAPS = (
    DEFAULT_CLIENT_CAPABILITIES | Capability.CLIENT_CONNECT_WITH_DB | Capability.CLIENT_LOCAL_FILES
)

# Flags that change what responses look like or mean: connections are pooled per value.
PROFILE_CAPS = (
    Capability.CLIENT_FOUND_ROWS
    | Capability.CLIENT_LOCAL_FILES
    | Capability.CLIENT_MULTI_RESULTS
    | Capability.CLIENT_PS_MULTI_RESULTS
    | Capability.CLIENT_SESSION_TRACK
    | Capability.CLIENT_DEPRECATE_EOF
)


# Plain ints. Final: compiled, a static, not an enum attribute lookup per use.
_IN_TRANS: Final = int(ServerStatus.IN_TRANS)
_AUTOCOMMIT: Final = int(ServerStatus.AUTOCOMMIT)

# Limit for the proxy's own commands on a backend connection (state sync, prepares, resets).
INTERNAL_TIMEOUT_S = 10.0
# relay_gated: how long a response chosen to be dropped (a read whose wait timed out) may
# take; past it the connection is aborted (the server stops the query when it notices)
# rather than have the client wait for an answer nobody reads.
DROP_TIMEOUT_S = 1.0


class BackendError(Exception):
    """The backend connection failed (network, protocol or auth); the connection is unusable."""

    def __init__(self, message: str, err: ErrPacket | None = None) -> None:
        super().__init__(message)
        self.err = err


class ConnState(enum.Enum):
    CONNECTING = "connecting"
    IDLE = "idle"  # ready for a command
    RELAYING = "relaying"  # a command is in flight; its response goes to a sink
    CLOSED = "closed"


# The members as module constants, compared by identity: loading one from its class is an
# attribute lookup, hashing one runs Python code (both twice per statement).
_CONNECTING: Final = ConnState.CONNECTING
_IDLE: Final = ConnState.IDLE
_RELAYING: Final = ConnState.RELAYING
_CLOSED: Final = ConnState.CLOSED


# Exception, not RuntimeError: mypyc compiles no subclass of most builtin types.
class ConnectionBusy(Exception):
    """A command was started on a backend connection that is not idle (a proxy bug)."""


@dataclass
class BackendStmt:
    """A statement prepared on this connection."""

    stmt_id: int
    num_params: int
    num_columns: int
    bound_types: bytes | None = None  # parameter types the server holds for it


class Sink:
    """Where relayed bytes go, and who hears that start()'s response ended: this class drops
    the bytes; a subclass's write sends them on. Methods, not stored callables: the compiled
    data path calls them natively, three times per statement.

    hold_errors: a response that is one ERR packet is kept in `held` instead of being sent,
    so the session may retry the statement elsewhere (a write refused as read-only).
    """

    def __init__(self, hold_errors: bool = False) -> None:
        self.hold_errors = hold_errors
        self.held: bytes | None = None
        self.discards = True  # write drops the bytes (relay_gated then bounds the drop)

    def write(self, data: bytes) -> None:
        """Relayed bytes, in order."""

    def before_end(self, scanner: ResponseScanner) -> None:
        """The response ended: called before its last bytes are written (a commit's GTID is
        published before its client can act on the OK)."""

    def relay_done(self, exc: BaseException | None) -> None:
        """start()'s response ended (exc None; also when the server asked for a LOCAL INFILE
        file: scanner.infile), or its connection failed (exc)."""


class BufferSink(Sink):
    """Relayed bytes kept in a buffer: a reply the proxy reads itself."""

    def __init__(self, buf: bytearray) -> None:
        super().__init__()
        self.buf = buf
        self.discards = False

    def write(self, data: bytes) -> None:
        self.buf += data


# relay_gated's response until its gate reply chose a sink (no byte of it can come earlier).
_NOWHERE: Final = Sink()


# relay_gated's first reply, what picks the sink of the response after it, the reply's timer.
_Gate = tuple[ValueReply, Callable[[ValueReply], Sink], asyncio.TimerHandle]


class BackendConnection(asyncio.Protocol):
    """One connection to a backend server, used by one session at a time."""

    def __init__(self, server_name: str, profile: int, user: str) -> None:
        self.server_name = server_name
        self.profile = profile
        self.user = user
        self.state = ConnState.CONNECTING
        self.transport: asyncio.Transport | None = None
        self._send: Callable[[bytes], object] | None = None  # transport.write, looked up once
        self.greeting: HandshakeV10 | None = None
        self.thread_id = 0
        self.caps = 0
        self.mariadb = True
        self.session = SessionState()
        self.status = int(ServerStatus.AUTOCOMMIT)
        self.stmts: OrderedDict[str, BackendStmt] = OrderedDict()
        # The statement last put or moved at the end of stmts (None, or one no longer in
        # it, when unknown): executing it again needs no move_to_end, a generic method call.
        self.last_stmt: BackendStmt | None = None
        self.last_used = time.monotonic()
        self.broken = False
        self.counted = False  # holds one of the pool's per-server slots
        self.generation = 0  # the pool's generation of its server when this was opened
        self._password = ""
        self._collation = 45
        self._reader = PacketReader(max_payload=1 << 30)
        self._waiter: asyncio.Future[None] | None = None
        # The response being relayed: its scanner, sink, and the future that ends with it (None
        # for start(): the sink start() was given hears instead, _done).
        self._relay: tuple[ResponseScanner, Sink, asyncio.Future[None] | None] | None = None
        self._done: Sink | None = None
        self._gate: _Gate | None = None
        self._dropping: asyncio.TimerHandle | None = None  # relay_gated drops a response
        self._lost: BackendError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.kills_in_flight = 0  # KILL QUERYs sent at this thread and not yet answered
        self._kills_answered: asyncio.Event | None = None

    # -- state: changed only here ----------------------------------------------------------------
    def _set_state(self, new: ConnState) -> None:
        # The moves a connection may make: CONNECTING -> IDLE <-> RELAYING, and CLOSED from
        # anywhere (see _fail/close).
        old = self.state
        if not (
            new is _CLOSED
            or (new is _IDLE and (old is _RELAYING or old is _CONNECTING))
            or (new is _RELAYING and old is _IDLE)
        ):
            raise ConnectionBusy(
                f"{self.server_name} connection: {self.state.value} -> {new.value} is not allowed"
            )
        self.state = new

    def note_session(
        self,
        *,
        schema: str | None = None,
        variable: tuple[str, str] | None = None,
        tainted: bool = False,
    ) -> None:
        """The session changed state on this connection (what sync_steps compares with): its
        schema, a session variable (key, statement to replay), or left it tainted (the next
        user resets it)."""
        if schema is not None:
            self.session.schema = schema
        if variable is not None:
            key, sql = variable
            # Re-inserting moves the key last, so replay keeps the client's order.
            self.session.variables.pop(key, None)
            self.session.variables[key] = sql
        if tainted:
            self.session.tainted = True

    @property
    def in_transaction(self) -> bool:
        return bool(self.status & _IN_TRANS)

    # -- KILL QUERY aimed at this connection ---------------------------------------------------
    def note_kill(self, sent: bool) -> None:
        """A KILL QUERY for this connection's thread was sent (True) or answered (False). It
        travels on another connection and may arrive after the statement it was meant for
        ended: until every one is answered this connection runs nothing more, else the late
        KILL stops whatever runs next (maybe another session's statement)."""
        self.kills_in_flight += 1 if sent else -1
        if self.kills_in_flight == 0 and self._kills_answered is not None:
            self._kills_answered.set()
            self._kills_answered = None

    async def kills_answered(self) -> None:
        """Wait until every KILL QUERY sent at this connection was answered; longer than
        INTERNAL_TIMEOUT_S leaves it broken (never used again)."""
        if self.kills_in_flight == 0:
            return
        if self._kills_answered is None:
            self._kills_answered = asyncio.Event()
        try:
            async with asyncio.timeout(INTERNAL_TIMEOUT_S):
                await self._kills_answered.wait()
        except TimeoutError:
            self.abort(f"a KILL QUERY for it was not answered within {INTERNAL_TIMEOUT_S:.0f}s")

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send = self.transport.write
        # Looked up once: asyncio.get_running_loop() costs a getpid() call each time.
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        if self._gate is not None:
            data = self._gate_received(data)
            if not data:
                return
        relay = self._relay
        if relay is not None:
            scanner, sink, fut = relay
            try:
                used = scanner.feed(data)
            except ProtocolError as exc:
                self._fail(BackendError(f"malformed response from {self.server_name}: {exc}"))
                return
            size = len(data)
            chunk = data if used == size else data[:used]
            done = scanner.done
            if done:
                sink.before_end(scanner)
            if (
                done
                and sink.hold_errors
                and scanner.error is not None
                and scanner.consumed == used  # the whole response is this one chunk
            ):
                sink.held = chunk
            else:
                sink.write(chunk)
            if done or scanner.infile:
                # infile: the server asked for the client's file; the session sends it and
                # resumes the relay for the server's final answer.
                self._relay = None
                if done:
                    self._response_done(scanner)
                if used < size:
                    self._reader.feed(data[used:])
                if fut is None:
                    self._call_done(None)
                    return
                # No fut.done() call first, no contextlib.suppress object: per statement.
                try:  # noqa: SIM105
                    fut.set_result(None)
                except asyncio.InvalidStateError:
                    pass  # cancelled along with its task
            return
        self._reader.feed(data)
        self._wake()

    def _gate_received(self, data: bytes) -> bytes:
        """Bytes of relay_gated's first reply; returns those after it (the next response)."""
        assert self._gate is not None and self._relay is not None
        reply, choose, timer = self._gate
        try:
            used = reply.feed(data)
        except ProtocolError as exc:
            self._fail(BackendError(f"malformed response from {self.server_name}: {exc}"))
            return b""
        if not reply.done:
            return b""
        timer.cancel()
        self._gate = None
        scanner, _, fut = self._relay
        sink = choose(reply)
        if sink.discards:
            loop = self._loop or asyncio.get_running_loop()
            self._dropping = loop.call_later(DROP_TIMEOUT_S, self._drop_expired)
        self._relay = (scanner, sink, fut)
        return data[used:]

    def _gate_expired(self) -> None:
        if self._gate is not None:
            self.abort("no answer to the query sent ahead of the statement in time")

    def _drop_expired(self) -> None:
        self._dropping = None
        self.abort(f"a response to drop still running after {DROP_TIMEOUT_S:.0f}s")

    def _response_done(self, scanner: ResponseScanner) -> None:
        """A response ended: record the server's status and be ready for the next command."""
        if self._dropping is not None:
            self._dropping.cancel()
            self._dropping = None
        status = scanner.status
        if status is not None:
            self.status = status
            self.session.autocommit = bool(status & _AUTOCOMMIT)
        self._set_state(_IDLE)

    def connection_lost(self, exc: Exception | None) -> None:
        detail = f": {exc}" if exc else ""
        self._fail(BackendError(f"connection to {self.server_name} lost{detail}"))

    def abort(self, reason: str, exc: Exception | None = None) -> None:
        """Drop the connection at once, mid-response or not (its client went away, its server
        was marked DOWN, a deadline passed); it is never pooled again. A relay in flight ends
        with exc, or a BackendError saying why."""
        relay, self._relay = self._relay, None
        lost = BackendError(f"connection to {self.server_name} aborted: {reason}")
        self._fail(lost)
        if relay is not None:
            fut = relay[2]
            if fut is None:
                self._call_done(exc or lost)
            elif not fut.done():
                fut.set_exception(exc or lost)

    def _fail(self, exc: BackendError) -> None:
        if self._gate is not None:
            self._gate[2].cancel()
            self._gate = None
        if self._dropping is not None:
            self._dropping.cancel()
            self._dropping = None
        self.broken = True
        self._lost = exc
        self._set_state(ConnState.CLOSED)
        if self.transport is not None:
            self.transport.abort()
        if self._relay is not None:
            fut = self._relay[2]
            self._relay = None
            if fut is None:
                self._call_done(exc)
            elif not fut.done():
                fut.set_exception(exc)
        self._wake()

    def _call_done(self, exc: BaseException | None) -> None:
        done, self._done = self._done, None
        if done is not None:
            done.relay_done(exc)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- packet mode ---------------------------------------------------------------------------
    async def read_packet(self) -> Packet:
        while True:
            try:
                packet = self._reader.read()
            except ProtocolError as exc:
                self._fail(BackendError(f"malformed packet from {self.server_name}: {exc}"))
                raise self._lost from None  # type: ignore[misc]
            if packet is not None:
                return packet
            if self._lost is not None:
                raise self._lost
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def write(self, data: bytes) -> None:
        if self._lost is not None:
            raise self._lost
        assert self._send is not None
        self._send(data)

    # -- connecting ----------------------------------------------------------------------------
    async def handshake(
        self,
        password: str,
        client_caps: int,
        collation: int,
        database: str | None,
        tls: ssl.SSLContext | None,
    ) -> None:
        first = await self.read_packet()
        if is_err(first.payload):
            err = parse_err(first.payload)
            raise BackendError(f"{self.server_name} refused the connection: {err.message}", err)
        self.greeting = greeting = parse_handshake_v10(first.payload)
        self.thread_id = greeting.connection_id
        self.mariadb = greeting.is_mariadb
        # Responses are forwarded untouched, so the backend must speak the client's dialect.
        caps = client_caps & BACKEND_CAPS
        auth = ClientAuth(
            greeting,
            self.user,
            password,
            database=database,
            capabilities=caps,
            charset=collation,
            tls=tls is not None,
        )

        async def start_tls() -> AuthAction:
            assert self.transport is not None
            loop = asyncio.get_running_loop()
            new = await loop.start_tls(self.transport, self, tls)  # type: ignore[arg-type]
            assert new is not None
            self.transport = new
            self._send = new.write
            return auth.tls_established()

        action = await drive_auth(auth.start(), auth.feed, self.read_packet, self.write, start_tls)
        if isinstance(action, AuthFailed):
            raise BackendError(
                f"{self.server_name} refused user {self.user!r}: {action.error.message}",
                action.error,
            )
        self.caps = auth.capabilities
        self._password = password
        self._collation = collation
        self.session = SessionState(schema=database, collation=collation)
        self._set_state(ConnState.IDLE)
        await self._track_gtids()

    async def _track_gtids(self) -> None:
        """Ask the server to put each commit's GTID in its OK packets (gtid_tracking_sql). A
        server that refuses (one without GTIDs) only leaves the GTID to be learnt the slow way
        (the writer's position), so its error is not the client's."""
        sql = gtid_tracking_sql(self.mariadb, bool(self.caps & Capability.CLIENT_SESSION_TRACK))
        if sql is not None:
            await self.query(sql)

    # -- commands ------------------------------------------------------------------------------
    def relay(self, command: bytes, scanner: ResponseScanner, sink: Sink) -> asyncio.Future[None]:
        """Send a framed command and forward its response to sink; the future ends with it."""
        fut: asyncio.Future[None] = (self._loop or asyncio.get_running_loop()).create_future()
        if self._lost is not None:
            fut.set_exception(self._lost)
            return fut
        if self._reader.buffered:
            # The server spoke out of turn (e.g. an idle-timeout ERR before closing).
            self._fail(BackendError(f"{self.server_name} sent data between commands"))
            assert self._lost is not None
            fut.set_exception(self._lost)
            return fut
        self._set_state(_RELAYING)  # raises ConnectionBusy if a command runs
        self._relay = (scanner, sink, fut)
        self.write(command)
        return fut

    def start(
        self,
        command: bytes,
        scanner: ResponseScanner,
        sink: Sink,
    ) -> BackendError | None:
        """relay() for a caller that is not a task: sink.relay_done(None) is called when the
        response ended (or the server asked for a LOCAL INFILE file: scanner.infile),
        sink.relay_done(error) when the connection failed under it. An error returned instead
        means nothing was sent (relay_done is not called)."""
        if self._lost is None and self._reader.buffered:
            # The server spoke out of turn (e.g. an idle-timeout ERR before closing).
            self._fail(BackendError(f"{self.server_name} sent data between commands"))
        if self._lost is not None:
            return self._lost
        self._set_state(_RELAYING)  # raises ConnectionBusy if a command runs
        self._relay = (scanner, sink, None)
        self._done = sink
        self.write(command)
        return None

    def relay_gated(
        self,
        gate: bytes,
        reply: ValueReply,
        choose: Callable[[ValueReply], Sink],
        command: bytes,
        scanner: ResponseScanner,
        timeout_s: float,
    ) -> asyncio.Future[None]:
        """Send gate (a one-value query, e.g. a bounded GTID wait) and command back to back in
        one write: the server runs them in order, so command runs once gate answered, in one
        round trip. When gate's reply is whole, choose(reply) gives the sink for command's
        response (the client's, or one that scans and drops it). No reply within timeout_s
        aborts the connection (the future then fails)."""
        fut = self.relay(gate + command, scanner, _NOWHERE)
        if not fut.done():
            loop = self._loop or asyncio.get_running_loop()
            self._gate = (reply, choose, loop.call_later(timeout_s, self._gate_expired))
        return fut

    def resume_relay(self, scanner: ResponseScanner, sink: Sink) -> asyncio.Future[None]:
        """Continue relaying a response after the client sent LOCAL INFILE data."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._lost is not None:
            fut.set_exception(self._lost)
            return fut
        if self._reader.buffered:
            # The server cannot answer before it has the whole file.
            self._fail(BackendError(f"{self.server_name} answered before the file was sent"))
            assert self._lost is not None
            fut.set_exception(self._lost)
            return fut
        if self.state is not ConnState.RELAYING or self._relay is not None:
            raise ConnectionBusy(f"{self.server_name}: no LOCAL INFILE request to answer")
        self._relay = (scanner, sink, fut)
        return fut

    async def run(self, command: bytes, scanner: ResponseScanner) -> ResponseScanner:
        """Run a command whose response the proxy itself consumes (state sync, probes).

        These are quick by nature; one that hangs means a connection gone bad, not a slow
        query, so it is abandoned rather than waited for forever.
        """
        try:
            async with asyncio.timeout(INTERNAL_TIMEOUT_S):
                await self.relay(command, scanner, Sink())
        except TimeoutError:
            self._fail(
                BackendError(f"{self.server_name} did not answer within {INTERNAL_TIMEOUT_S:.0f}s")
            )
            assert self._lost is not None
            raise self._lost from None
        return scanner

    async def query(self, sql: str) -> ResponseScanner:
        scanner = ResponseScanner(Command.COM_QUERY, self.caps)
        return await self.run(build_command(Command.COM_QUERY, sql.encode()), scanner)

    async def query_scalar(self, sql: str) -> bytes | None:
        """The first cell of a one-row query the proxy runs itself (e.g. SELECT @@last_gtid)."""
        buf = bytearray()
        scanner = ResponseScanner(Command.COM_QUERY, self.caps)
        try:
            async with asyncio.timeout(INTERNAL_TIMEOUT_S + 5):
                command = build_command(Command.COM_QUERY, sql.encode())
                await self.relay(command, scanner, BufferSink(buf))
        except TimeoutError:
            self._fail(BackendError(f"{self.server_name} did not answer {sql!r}"))
            assert self._lost is not None
            raise self._lost from None
        if scanner.error is not None or not scanner.is_result_set:
            return None
        return first_value(self.caps, bytes(buf))

    async def apply(self, steps: list[Step], want: SessionState) -> ErrPacket | None:
        """Bring this connection to the session state; the first server error is returned."""
        for step in steps:
            if step.kind is StepKind.RESET:
                sc = await self.run(
                    build_command(Command.COM_RESET_CONNECTION),
                    ResponseScanner(Command.COM_RESET_CONNECTION, self.caps),
                )
                if sc.error is not None and sc.error.code == ErrorCode.ER_UNKNOWN_COM_ERROR:
                    # A server without COM_RESET_CONNECTION: re-login does the same.
                    err = await self.change_user()
                    if err is not None:
                        return err
                    sc = ResponseScanner(Command.COM_PING, self.caps)
                self.stmts.clear()
                self.session = SessionState(
                    schema=self.session.schema,
                    multi_statements=self.session.multi_statements,
                    collation=-1,
                )
                if sc.error is None:
                    await self._track_gtids()  # the reset put session_track_gtids back
            elif step.kind is StepKind.INIT_DB:
                sc = await self.run(
                    build_command(Command.COM_INIT_DB, step.arg.encode()),
                    ResponseScanner(Command.COM_INIT_DB, self.caps),
                )
            elif step.kind is StepKind.SET_OPTION:
                opt = b"\x00\x00" if step.arg == "on" else b"\x01\x00"
                sc = await self.run(
                    build_command(Command.COM_SET_OPTION, opt),
                    ResponseScanner(Command.COM_SET_OPTION, self.caps),
                )
            else:
                sc = await self.query(step.arg)
            if sc.error is not None:
                return sc.error
        self.session = want.copy()
        self.session.autocommit = bool(self.status & ServerStatus.AUTOCOMMIT)
        return None

    async def change_user(self) -> ErrPacket | None:
        """COM_CHANGE_USER to the same user: resets the session like a fresh login."""
        assert self.greeting is not None
        auth = ClientAuth(
            self.greeting,
            self.user,
            self._password,
            database=self.session.schema,
            capabilities=self.caps,
            charset=self._collation,
        )
        action = await drive_auth(auth.start_change_user(), auth.feed, self.read_packet, self.write)
        return action.error if isinstance(action, AuthFailed) else None

    def close(self) -> None:
        if self.state is ConnState.CLOSED:
            return
        if self.transport is not None and not self.transport.is_closing():
            if not self.broken and self.state is ConnState.IDLE:
                self.transport.write(build_command(Command.COM_QUIT))
            self.transport.close()
        self._set_state(ConnState.CLOSED)


async def read_greeting(host: str, port: int, timeout: float) -> HandshakeV10:
    """Connect, read a server's greeting and hang up (no login): its version and flags."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
    try:
        async with asyncio.timeout(timeout):
            header = await reader.readexactly(4)
            payload = await reader.readexactly(int.from_bytes(header[:3], "little"))
    finally:
        writer.close()
    if is_err(payload):
        raise BackendError(f"{host}:{port} refused the connection: {parse_err(payload).message}")
    return parse_handshake_v10(payload)
