"""The MySQL port: client limits, the session registry, services for sessions, KILL."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.backend.connection import BackendConnection, BackendError
from proxy.backend.pool import BackendPool
from proxy.cluster import HostStatus, ServerState
from proxy.config import Config, User
from proxy.frontend import commands
from proxy.frontend.acceptor import LISTEN_BACKLOG, Acceptor, listen_sockets
from proxy.frontend.client import ClientConnection
from proxy.frontend.positions import Asker, WriterPositions
from proxy.frontend.processlist import kill_target
from proxy.frontend.session import Session, SessionPhase
from proxy.metrics import Metrics
from proxy.protocol.auth import RsaKeyPair, generate_rsa_key_pair
from proxy.protocol.constants import ErrorCode
from proxy.protocol.packets import ErrPacket, build_err
from proxy.routing.classifier import Classifier
from proxy.routing.router import Router
from proxy.routing.stats import QueryDigests
from proxy.shared import SharedCounts
from proxy.topology import (
    Event,
    ServerError,
    ServerStatusChanged,
    SwitchoverEnded,
    Topology,
    WriterChanged,
)
from proxy.view import Snapshot
from proxy.watermark import Watermark

log = logging.getLogger(__name__)

# A session idle this long gives back backend connections it does not need (multiplexing).
RELEASE_IDLE_S = 1.0
# How often idle sessions are looked at: a client's wait_timeout of 1 s closes it within 1.25 s.
SWEEP_INTERVAL_S = 0.25
FALLBACK_VERSION = "8.0.36-pyproxy"
# A schema confirmed to exist at a login is not asked of a backend again for this long.
SCHEMA_CACHE_S = 5.0
# Under a flood, each connection gets this long to log in (TLS and auth exchange included)
# before a newer one may take its place; newer ones wait in the kernel's listen queue
# meanwhile. A client on a LAN logs in within milliseconds.
HANDSHAKE_CHANCE_S = 0.25
# Session ids (the handshake's connection id, SHOW PROCESSLIST's Id) live far above the
# backends' thread ids (what CONNECTION_ID() returns), so a KILL id names one or the other;
# below 2**31 for clients that keep the id in a signed 32-bit int.
FIRST_SESSION_ID = 1_000_000_000
LAST_SESSION_ID = 2**31 - 1


class ProxyServer:
    """The MySQL-facing listener: sessions, their limits and services (routing, pool, KILL)."""

    def __init__(
        self,
        snapshot: Snapshot,
        topology: Topology,
        pool: BackendPool,
        metrics: Metrics,
        recheck: Callable[[str], None],
        watermark: Watermark | None = None,
        id_range: tuple[int, int] = (FIRST_SESSION_ID, LAST_SESSION_ID),
        shared: SharedCounts | None = None,
        kill_elsewhere: KillElsewhere | None = None,
    ) -> None:
        """snapshot: the running config and router (a reload assigns a new one); recheck(server):
        ask the health checker to look at a server now (the data path saw it fail); watermark:
        this worker's row of the shared high-water mark (default: a private one, one process).
        With worker processes: id_range, the session ids of this worker; shared, the client
        counts of all workers (the limits are the proxy's); kill_elsewhere, KILL of an id
        that no session here has."""
        self.snapshot = snapshot
        self.topology = topology
        self.cluster = topology.cluster  # read only: changes go through topology.apply
        self.pool = pool
        self.metrics = metrics
        self._recheck = recheck
        self.classifier = Classifier()
        self.digests = QueryDigests()
        self.sessions: dict[int, Session] = {}
        # Sessions still logging in, oldest first, and the logged-in ones per user: changed
        # only by _on_connected, _make_room, admit and session_closed.
        self._handshaking: dict[int, Session] = {}
        # Accepted, their session not made yet: they count as handshakes. Changed only by
        # _start_client, _on_connected and _client_started.
        self._starting: set[ClientConnection] = set()
        self._admitted: dict[int, str] = {}  # session id -> user name
        self._per_user: Counter[str] = Counter()
        self.tls = _frontend_tls(self.config)
        # caching_sha2_password clients without TLS may ask for our RSA key (full auth).
        self.rsa_key: RsaKeyPair = generate_rsa_key_pair()
        self._first_id, self._last_id = id_range
        self._next_id = 0
        # stop(): statements running finish and are answered, no session starts another.
        self.draining = False
        self.shared = shared
        self._kill_elsewhere = kill_elsewhere
        self.server_version = self.config.server_version or FALLBACK_VERSION
        self._tasks: set[asyncio.Task[Any]] = set()
        self._acceptor: Acceptor | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._schemas: dict[tuple[str, str], float] = {}  # (user, schema) -> last confirmed
        self.watermark = watermark or Watermark()
        self.positions = WriterPositions(
            pool,
            metrics,
            self.writer,
            lambda: self.config.routing.causal_position_max_age_us,
            self.watermark.covered,
        )
        topology.subscribe(self._topology_event)

    @property
    def config(self) -> Config:
        return self.snapshot.config

    @property
    def router(self) -> Router:
        return self.snapshot.router

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self, host: str, port: int, sockets: list[socket.socket] | None = None) -> None:
        """sockets: the listening sockets every worker process takes connections from (None:
        this process alone listens, on host and port)."""
        if sockets is None:
            sockets = await listen_sockets(host, port, LISTEN_BACKLOG)
        self._acceptor = Acceptor(sockets, self._make_room, self._start_client, self.shared)
        self._publish_open()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    @property
    def port(self) -> int:
        assert self._acceptor is not None
        return int(self._acceptor.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop accepting clients."""
        if self._acceptor is not None:
            self._acceptor.close()
            self._publish_open()

    async def stop(self, grace_s: float) -> None:
        """Let running statements finish (up to grace_s), then close every session."""
        self.draining = True
        self.close()
        deadline = time.monotonic() + grace_s
        while any(s.phase is SessionPhase.EXECUTING for s in self.sessions.values()):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        for session in list(self.sessions.values()):
            session.client.close()
        self.positions.close()
        for task in list(self._tasks):
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- clients ---------------------------------------------------------------------------------
    def _make_room(self) -> float:
        """The acceptor asks before it starts a connection: 0 when there is room for one more
        handshake in this worker's share (made by dropping the oldest, if it has had its
        HANDSHAKE_CHANCE_S to log in), else the seconds until the oldest has had them."""
        if len(self._handshaking) + len(self._starting) < self._handshake_share():
            return 0.0
        oldest = next(iter(self._handshaking.values()), None)
        if oldest is None:  # all still starting: asked again then, or when one fails
            return HANDSHAKE_CHANCE_S
        wait = oldest.phase_since + HANDSHAKE_CHANCE_S - time.monotonic()
        if wait > 0:
            return wait
        self._handshaking.pop(oldest.id)
        self.metrics.refused["handshake_evicted"] += 1
        log.info(
            "session %d (%s): evicted, %d connections are logging in",
            oldest.id,
            oldest.client.peer[0],
            len(self._handshaking) + len(self._starting) + 1,
        )
        oldest.client.close()
        return 0.0

    def _open(self) -> int:
        return len(self._starting) + len(self.sessions)

    def _publish_open(self) -> None:
        """Tell the other workers how many client connections this one holds (after every
        change): a new connection goes to the worker holding the fewest."""
        if self.shared is not None:
            closed = self._acceptor is None or self._acceptor.closed
            self.shared.set_open(-1 if closed else self._open())  # -1: leave none to it

    def _start_client(self, conn: socket.socket) -> None:
        client = ClientConnection(self.config.limits.max_allowed_packet, self.metrics)
        client.on_connected = self._on_connected
        self._starting.add(client)
        if self.shared is not None:
            self.shared.took_one()
        self._publish_open()
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.connect_accepted_socket(lambda: client, conn))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._client_started(t, client, conn))

    def _client_started(
        self, task: asyncio.Task[Any], client: ClientConnection, conn: socket.socket
    ) -> None:
        self._tasks.discard(task)
        if client in self._starting:  # it never got to _on_connected
            self._starting.discard(client)
            self._publish_open()
            conn.close()
            if not task.cancelled():
                log.info("a client connection could not start: %r", task.exception())
            self._room_made()

    def _room_made(self) -> None:
        if self._acceptor is not None:
            self._acceptor.room_made()

    def _on_connected(self, client: ClientConnection) -> None:
        self._starting.discard(client)
        limits = self.config.limits
        if len(self._admitted) >= limits.max_client_connections:
            self.metrics.refused["max_connections"] += 1
            client.write(build_err(0, ErrorCode.ER_CON_COUNT_ERROR, "Too many connections"))
            client.close()
            self._publish_open()
            self._room_made()
            return
        self.metrics.accepted += 1
        session = Session(self, client, self._new_session_id())
        self.sessions[session.id] = session
        self._handshaking[session.id] = session
        task = asyncio.get_running_loop().create_task(
            session.run(commands.dispatch, commands.FAST_START)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _handshake_share(self) -> int:
        """This worker's part of max_unauthenticated_connections. Each worker evicts only
        its own handshakes, so it counts only its own: against the proxy's total, a worker
        holding one young login while another holds a flood would drop that login."""
        workers = self.shared.workers if self.shared is not None else 1
        return max(1, self.config.limits.max_unauthenticated_connections // workers)

    def _new_session_id(self) -> int:
        while True:
            if self._first_id <= self._next_id < self._last_id:
                self._next_id += 1
            else:
                self._next_id = self._first_id
            if self._next_id not in self.sessions:  # after a wrap: skip ids still in use
                return self._next_id

    def admit(self, session: Session, user: User) -> ErrPacket | None:
        """A client has authenticated as user: it now counts against max_client_connections
        and the user's max_connections, or gets the error MySQL gives when one is full."""
        if self._handshaking.pop(session.id, None) is not None:
            self._room_made()
        if self._clients() >= self.config.limits.max_client_connections:
            self.metrics.refused["max_connections"] += 1
            return ErrPacket(ErrorCode.ER_CON_COUNT_ERROR, "Too many connections", "08004")
        if self._user_clients(user.username) >= user.max_connections:
            self.metrics.refused["max_user_connections"] += 1
            return _too_many_user_connections(user.username)
        self._admitted[session.id] = user.username
        self._per_user[user.username] += 1
        self.publish_counts()
        return None

    def _clients(self) -> int:
        return self.shared.total() if self.shared is not None else len(self._admitted)

    def _user_clients(self, name: str) -> int:
        total = self.shared.user_total(name) if self.shared is not None else None
        return self._per_user[name] if total is None else total

    def publish_counts(self) -> None:
        """Tell the other workers how many clients this one has (after every change)."""
        if self.shared is not None:
            self.shared.publish(len(self._admitted), self._per_user)

    def switch_user(self, session: Session, user: User) -> ErrPacket | None:
        """COM_CHANGE_USER to another user: it must have room under its max_connections."""
        old = self._admitted.get(session.id)
        if old == user.username:
            return None
        if self._user_clients(user.username) >= user.max_connections:
            self.metrics.refused["max_user_connections"] += 1
            return _too_many_user_connections(user.username)
        if old is not None:
            self._per_user[old] -= 1
            if not self._per_user[old]:
                del self._per_user[old]
        self._admitted[session.id] = user.username
        self._per_user[user.username] += 1
        self.publish_counts()
        return None

    def session_closed(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self._publish_open()
        if self._handshaking.pop(session.id, None) is not None:
            self._room_made()
        name = self._admitted.pop(session.id, None)
        if name is not None:
            self._per_user[name] -= 1
            if not self._per_user[name]:
                del self._per_user[name]
            self.publish_counts()

    async def _sweep(self) -> None:
        """Idle timeouts, giving back idle sessions' backend connections, and the digests'
        clock."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self.digests.tick(time.time())
            now = time.monotonic()
            default = self.config.limits.client_idle_timeout_s
            query_timeout = self.config.routing.query_timeout_ms / 1000
            for session in list(self.sessions.values()):
                if session.phase is not SessionPhase.IDLE:
                    if query_timeout and session.phase is SessionPhase.EXECUTING:
                        session.check_deadline(now, query_timeout)
                    continue
                idle = now - session.phase_since
                # The client's own wait_timeout applies, as on the server; the configured
                # limit stays the upper bound. Closed without a word, as MariaDB does.
                limit = default
                if session.wait_timeout is not None:
                    limit = min(default, session.wait_timeout)
                if idle > limit:
                    log.info("session %d: idle for %.0fs, closing", session.id, idle)
                    session.client.close()
                elif idle > RELEASE_IDLE_S and session.attached and not session.keeps_backends:
                    session.release_unpinned()

    # -- services for sessions ---------------------------------------------------------------------
    def schema_confirmed(self, user: str, schema: str) -> bool:
        seen = self._schemas.get((user, schema))
        return seen is not None and time.monotonic() - seen < SCHEMA_CACHE_S

    def confirm_schema(self, user: str, schema: str) -> None:
        if len(self._schemas) > 10_000:
            self._schemas.clear()
        self._schemas[(user, schema)] = time.monotonic()

    def backend_in_use(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for session in self.sessions.values():
            for name in session.attached:
                counts[name] = counts.get(name, 0) + 1
        return counts

    def writer(self) -> ServerState | None:
        return self.router.writer()

    def note_backend_error(self, target: ServerState, exc: BackendError) -> None:
        self.metrics.backend_errors[target.name] += 1
        self.topology.apply(ServerError(target.name, str(exc)))
        log.warning("backend %s: %s", target.name, exc)
        if exc.err is None:  # a network-level failure, not a refused login: check it now
            self._recheck(target.name)

    def recheck(self, name: str) -> None:
        """Ask the health checker to check a server now (its own observation decides)."""
        self._recheck(name)

    def busy_on(self, server: str) -> bool:
        """Whether a statement or a transaction is open on server (a switchover waits)."""
        if self.cluster.server(server).outstanding:
            return True
        return any(
            c.server_name == server and c.in_transaction
            for s in self.sessions.values()
            for c in s.attached.values()
        )

    async def topology_changed(self, timeout: float) -> None:
        """Wait until the writer or a server's status changes (or timeout)."""
        await self.topology.changed(timeout)

    def _topology_event(self, event: Event) -> None:
        """Reads running on a server marked DOWN move to another one; connections to a
        demoted writer close at once."""
        match event:
            case ServerStatusChanged(name=name, status=HostStatus.DOWN):
                for session in list(self.sessions.values()):
                    session.server_down(name)
            case WriterChanged(old=old, new=new) if old is not None and old != new:
                self._demoted(old)
            case SwitchoverEnded(old=old, done=True):
                self._demoted(old)

    def _demoted(self, name: str) -> None:
        for session in list(self.sessions.values()):
            session.server_demoted(name)

    async def kill(self, session: Session, target_id: int, query_only: bool) -> None:
        """KILL [QUERY] id (a session id or a pinned backend thread id, see kill_target): the
        session's running backend query is killed; KILL CONNECTION then closes its client
        without a word, as MariaDB does (the client sees the connection lost)."""
        target = kill_target(self, session.username, target_id)
        if (
            isinstance(target, ErrPacket)
            and target.code == ErrorCode.ER_NO_SUCH_THREAD
            and self._kill_elsewhere is not None
        ):
            # Not here: maybe a session of another worker process.
            assert session.username is not None
            elsewhere = await self._kill_elsewhere(target_id, session.username, query_only)
            if elsewhere is None:
                session.send_ok()
                return
            target = elsewhere
        if isinstance(target, ErrPacket):
            session.send_error(target.code, target.message)
            return
        running = target.current
        if running is not None and target is not session:
            await self.kill_backend_query(session, running)
        if query_only:
            session.send_ok()
            return
        if target is session:
            session.send_error(ErrorCode.ER_CONNECTION_KILLED, "Connection was killed")
        else:
            session.send_ok()
        target.kill()

    def learn_commit_soon(self, asker: Asker) -> None:
        """A commit was acknowledged whose GTID its OK did not carry: the high-water mark is
        unknown (causal reads ask the writer's position themselves) until the writer's
        position, asked after the commit and so holding it, is published."""
        self.watermark.begin_unknown()
        task = asyncio.get_running_loop().create_task(
            self._learn_commit(asker, time.monotonic_ns())
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _learn_commit(self, asker: Asker, committed_ns: int) -> None:
        try:
            mark = await self.positions.position(committed_ns, asker, max_age_us=0)
            if mark is None:
                log.warning("causal reads: a commit's GTID could not be learnt from the writer")
            else:
                self.watermark.advance(mark)
        finally:
            self.watermark.end_unknown()

    async def kill_for(
        self, target_id: int, username: str | None, query_only: bool
    ) -> ErrPacket | None:
        """KILL [QUERY] asked in another worker process by username (None: by the admin):
        None when done, or the error to answer."""
        target = kill_target(self, username, target_id)
        if isinstance(target, ErrPacket):
            return target
        running = target.current
        if running is not None:
            target.kill_sent = running  # the statement must not run again elsewhere
            await self.kill_backend_query(target, running)
        if not query_only:
            target.kill()
        return None

    def kill_backend_query(self, session: Session, target: BackendConnection) -> asyncio.Task[None]:
        """KILL QUERY target's thread, over another connection of the session's user, in a
        task: target runs nothing more until the task ended (BackendConnection.note_kill)."""
        target.note_kill(sent=True)
        state = self.cluster.server(target.server_name)
        task = asyncio.get_running_loop().create_task(
            self._send_kill(session, state, target.thread_id)
        )
        task.add_done_callback(lambda _: target.note_kill(sent=False))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _send_kill(self, session: Session, state: ServerState, thread_id: int) -> None:
        assert session.user is not None
        try:
            conn = await self.pool.acquire(
                state.config, session.user, session.caps, session.state.collation, None
            )
        except BackendError as exc:
            log.warning("KILL QUERY on %s failed: %s", state.name, exc)
            return
        try:
            await conn.query(f"KILL QUERY {thread_id}")
        except BackendError:
            self.pool.discard(conn)
            return
        self.pool.release(conn)


KillElsewhere = Callable[[int, str, bool], Awaitable[ErrPacket | None]]


def _too_many_user_connections(username: str) -> ErrPacket:
    return ErrPacket(
        ErrorCode.ER_TOO_MANY_USER_CONNECTIONS,
        f"User {username} already has more than 'max_user_connections' active connections",
        "42000",
    )


def _frontend_tls(config: Config) -> ssl.SSLContext | None:
    if config.frontend_tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.frontend_tls.cert, config.frontend_tls.key)
    if config.frontend_tls.ca:
        ctx.load_verify_locations(config.frontend_tls.ca)
    return ctx
