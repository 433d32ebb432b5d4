"""Accepting client connections: limits, the session registry, KILL, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import Counter

from proxy.admin.http import HttpServer
from proxy.admin.sql import AdminServer
from proxy.backend.connection import BackendError, read_greeting
from proxy.backend.pool import BackendPool
from proxy.cluster import Cluster, HostStatus, ServerState
from proxy.config import Config, ConfigError, User, load_config
from proxy.frontend import commands
from proxy.frontend.client import ClientConnection
from proxy.frontend.processlist import kill_target
from proxy.frontend.session import Session, SessionPhase
from proxy.health.monitor import Monitor
from proxy.metrics import Metrics
from proxy.protocol.auth import RsaKeyPair, generate_rsa_key_pair
from proxy.protocol.constants import ErrorCode
from proxy.protocol.packets import ErrPacket, ProtocolError, build_err
from proxy.routing.classifier import Classifier
from proxy.routing.router import Router
from proxy.routing.rules import QueryRules
from proxy.routing.stats import READER_HOSTGROUP, WRITER_HOSTGROUP, QueryDigests

log = logging.getLogger(__name__)

# A session idle this long gives back backend connections it does not need (multiplexing).
RELEASE_IDLE_S = 1.0
# How often idle sessions are looked at: a client's wait_timeout of 1 s closes it within 1.25 s.
SWEEP_INTERVAL_S = 0.25
FALLBACK_VERSION = "8.0.36-pyproxy"
# A schema confirmed to exist at a login is not asked of a backend again for this long.
SCHEMA_CACHE_S = 5.0
# Session ids (the handshake's connection id, SHOW PROCESSLIST's Id) live far above the
# backends' thread ids (what CONNECTION_ID() returns), so a KILL id names one or the other;
# below 2**31 for clients that keep the id in a signed 32-bit int.
FIRST_SESSION_ID = 1_000_000_000
LAST_SESSION_ID = 2**31 - 1


class ProxyServer:
    """The MySQL-facing server: owns sessions, the pool, the cluster view and the classifier."""

    def __init__(
        self, config: Config, cluster: Cluster | None = None, config_path: str | None = None
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.cluster = cluster or Cluster.from_config(config)
        self.pool = BackendPool(config.pool)
        self.classifier = Classifier()
        self.router = Router(self.cluster, config)
        self.digests = QueryDigests()
        self.sessions: dict[int, Session] = {}
        # Sessions still logging in, oldest first, and the logged-in ones per user: changed
        # only by _on_connected, admit and session_closed.
        self._handshaking: dict[int, Session] = {}
        self._admitted: dict[int, str] = {}  # session id -> user name
        self._per_user: Counter[str] = Counter()
        self.metrics = Metrics()
        self.tls = _frontend_tls(config)
        # caching_sha2_password clients without TLS may ask for our RSA key (full auth).
        self.rsa_key: RsaKeyPair = generate_rsa_key_pair()
        self._next_id = 0
        self.server_version = config.server_version or FALLBACK_VERSION
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.monitor = Monitor(
            config,
            self.cluster,
            on_writer_change=self._writer_changed,
            on_server_down=self._server_down,
        )
        self.monitor.request_switchover = self.switchover
        self.admin = AdminServer(self)
        self.http = HttpServer(self)
        self._topology_event = asyncio.Event()
        self._schemas: dict[tuple[str, str], float] = {}  # (user, schema) -> last confirmed

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server_version = self.config.server_version or await self._backend_version()
        if self.config.health.enabled:
            # The first round of checks finds the writer before any client is accepted.
            await self.monitor.start()
        listen = self.config.listeners.mysql
        self._server = await loop.create_server(
            self._new_client, listen.host, listen.port, reuse_address=True, backlog=1024
        )
        self.pool.start()
        self._sweeper = loop.create_task(self._sweep())
        listeners = self.config.listeners
        if listeners.admin.port >= 0:
            await self.admin.start(listeners.admin.host, listeners.admin.port)
        if listeners.http.port >= 0:
            await self.http.start(listeners.http.host, listeners.http.port)

    async def _backend_version(self) -> str:
        timeout = self.config.pool.connect_timeout_ms / 1000
        for server in self.config.masters + self.config.replicas:
            try:
                greeting = await read_greeting(server.host, server.port, timeout)
            except (OSError, TimeoutError, BackendError, ProtocolError) as exc:
                log.warning("cannot read %s's version: %s", server.name, exc)
                continue
            return greeting.server_version
        log.warning("no backend answered; announcing version %s", FALLBACK_VERSION)
        return FALLBACK_VERSION

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, grace_s: float = 5.0) -> None:
        if self._server is not None:
            self._server.close()
        await self.admin.stop()
        await self.http.stop()
        deadline = time.monotonic() + grace_s
        while any(s.phase is SessionPhase.EXECUTING for s in self.sessions.values()):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        for session in list(self.sessions.values()):
            session.client.close()
        for task in list(self._tasks):
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.monitor.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pool.close()
        await asyncio.sleep(0.05)  # let the COM_QUITs and closes reach the servers

    # -- clients ---------------------------------------------------------------------------------
    def _new_client(self) -> ClientConnection:
        client = ClientConnection(self.config.limits.max_allowed_packet, self.metrics)
        client.on_connected = self._on_connected
        return client

    def _on_connected(self, client: ClientConnection) -> None:
        limits = self.config.limits
        if len(self._admitted) >= limits.max_client_connections:
            self.metrics.refused["max_connections"] += 1
            client.write(build_err(0, ErrorCode.ER_CON_COUNT_ERROR, "Too many connections"))
            client.close()
            return
        if len(self._handshaking) >= limits.max_unauthenticated_connections:
            # Make room by dropping the oldest handshake: a real client logs in within
            # milliseconds, so a flood of silent sockets only ever evicts itself.
            oldest = next(iter(self._handshaking.values()))
            self._handshaking.pop(oldest.id)
            self.metrics.refused["handshake_evicted"] += 1
            log.info(
                "session %d (%s): evicted, %d connections are logging in",
                oldest.id,
                oldest.client.peer[0],
                len(self._handshaking) + 1,
            )
            oldest.client.close()
        self.metrics.accepted += 1
        session = Session(self, client, self._new_session_id())
        self.sessions[session.id] = session
        self._handshaking[session.id] = session
        task = asyncio.get_running_loop().create_task(session.run(commands.dispatch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _new_session_id(self) -> int:
        while True:
            if FIRST_SESSION_ID <= self._next_id < LAST_SESSION_ID:
                self._next_id += 1
            else:
                self._next_id = FIRST_SESSION_ID
            if self._next_id not in self.sessions:  # after a wrap: skip ids still in use
                return self._next_id

    def admit(self, session: Session, user: User) -> ErrPacket | None:
        """A client has authenticated as user: it now counts against max_client_connections
        and the user's max_connections, or gets the error MySQL gives when one is full."""
        self._handshaking.pop(session.id, None)
        if len(self._admitted) >= self.config.limits.max_client_connections:
            self.metrics.refused["max_connections"] += 1
            return ErrPacket(ErrorCode.ER_CON_COUNT_ERROR, "Too many connections", "08004")
        if self._per_user[user.username] >= user.max_connections:
            self.metrics.refused["max_user_connections"] += 1
            return _too_many_user_connections(user.username)
        self._admitted[session.id] = user.username
        self._per_user[user.username] += 1
        return None

    def switch_user(self, session: Session, user: User) -> ErrPacket | None:
        """COM_CHANGE_USER to another user: it must have room under its max_connections."""
        old = self._admitted.get(session.id)
        if old == user.username:
            return None
        if self._per_user[user.username] >= user.max_connections:
            self.metrics.refused["max_user_connections"] += 1
            return _too_many_user_connections(user.username)
        if old is not None:
            self._per_user[old] -= 1
            if not self._per_user[old]:
                del self._per_user[old]
        self._admitted[session.id] = user.username
        self._per_user[user.username] += 1
        return None

    def session_closed(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self._handshaking.pop(session.id, None)
        name = self._admitted.pop(session.id, None)
        if name is not None:
            self._per_user[name] -= 1
            if not self._per_user[name]:
                del self._per_user[name]

    async def _sweep(self) -> None:
        """Idle timeouts, and giving back idle sessions' backend connections."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
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

    def server_role(self, name: str) -> str:
        """writer / reader / standby / shunned / offline / down, for metrics and the admin."""
        st = self.cluster.server(name)
        if st.status is HostStatus.DOWN:
            return "down"
        if st.status is HostStatus.OFFLINE_SOFT:
            return "offline"
        if st.status is HostStatus.SHUNNED:
            return "shunned"
        if name == self.cluster.writer:
            return "writer"
        return "reader" if st.config.role == "replica" else "standby"

    def hostgroup(self, server: str) -> int:
        return WRITER_HOSTGROUP if server == self.cluster.writer else READER_HOSTGROUP

    def writer(self) -> ServerState | None:
        return self.router.writer()

    def note_backend_error(self, target: ServerState, exc: BackendError) -> None:
        self.metrics.backend_errors[target.name] += 1
        target.last_error = str(exc)
        log.warning("backend %s: %s", target.name, exc)
        if exc.err is None:  # a network-level failure, not a refused login: check it now
            self.monitor.recheck(target.name)

    def note_read_only(self, target: ServerState) -> None:
        """The writer refused a write as read-only: it was demoted; re-check it now."""
        self.monitor.recheck(target.name)
        if target.name == self.cluster.writer:
            self.cluster.set_writer(None)
            self._writer_changed(target.name, None)

    def set_server_offline(self, name: str, offline: bool) -> None:
        """Drain (OFFLINE_SOFT: running statements finish, nothing new) or bring back."""
        if name not in self.cluster.servers:
            raise ValueError(f"no server named {name!r}")
        state = self.cluster.server(name)
        if offline:
            state.status = HostStatus.OFFLINE_SOFT
            state.reason = "set OFFLINE by an operator"
            self.pool.drop_server(name)
        elif state.status is HostStatus.OFFLINE_SOFT:
            state.status = HostStatus.ONLINE
            state.reason = ""
            self.monitor.recheck(name)  # it earns its real status at the next check
        log.warning("server %s set %s by the admin", name, "OFFLINE" if offline else "ONLINE")
        self._notify_topology()

    async def reload(self) -> tuple[bool, str]:
        """Re-read the config file and apply it without dropping clients (SIGHUP, admin)."""
        if self.config_path is None:
            return False, "no config file to reload (the proxy was started without one)"
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("config reload refused, keeping the running config: %s", exc)
            return False, f"config reload refused: {exc}"
        self.apply_config(new)
        log.warning("config reloaded from %s", self.config_path)
        return True, f"reloaded {self.config_path}"

    def apply_config(self, new: Config) -> None:
        old = self.config
        if new.listeners != old.listeners:
            log.warning("listener changes take effect at the next restart")
            new = new.model_copy(update={"listeners": old.listeners})
        names = {s.name for s in new.servers}
        for server in new.servers:
            state = self.cluster.servers.get(server.name)
            if state is None:
                self.cluster.servers[server.name] = ServerState(server)
                self.pool.stats[server.name]  # create the entry
            else:
                if (state.config.host, state.config.port) != (server.host, server.port):
                    self.pool.drop_server(server.name)
                state.config = server
        for name in [n for n in self.cluster.servers if n not in names]:
            self.pool.drop_server(name)
            self.monitor.remove_server(name)
            del self.cluster.servers[name]
        self.config = new
        self.pool.config = new.pool
        self.router.config = new
        self.router.rules = QueryRules(new.query_rules)
        self.monitor.config = new
        for server in new.servers:
            self.monitor.add_server(server)
        self._notify_topology()

    async def switchover(self, target: str) -> None:
        """Planned writer change with no client error: hold new writes, let running ones and
        open transactions on the old writer finish, swap read_only, resume on the new one."""
        old = self.cluster.writer
        if target == old:
            return
        if target not in {m.name for m in self.config.masters}:
            raise ValueError(f"{target} is not a master")
        if old is None:
            raise RuntimeError("no current writer to switch over from")
        monitor = self.monitor
        monitor.paused = True
        try:
            self.cluster.set_writer(None)
            self._notify_topology()
            deadline = time.monotonic() + self.config.health.failover_hold_ms / 1000
            while time.monotonic() < deadline and self._busy_on(old):
                await asyncio.sleep(0.005)
            try:
                await monitor.swap_writer(old, target)
            except RuntimeError:
                self.cluster.set_writer(old)
                raise
            self.cluster.set_writer(target)
            monitor.record_switchover(old, target)
        finally:
            monitor.paused = False
            self._writer_changed(old, self.cluster.writer)

    def _busy_on(self, server: str) -> bool:
        if self.cluster.server(server).outstanding:
            return True
        return any(
            c.server_name == server and c.in_transaction
            for s in self.sessions.values()
            for c in s.attached.values()
        )

    async def topology_changed(self, timeout: float) -> None:
        """Wait until the writer or a server's status changes (or timeout)."""
        event = self._topology_event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def _writer_changed(self, old: str | None, new: str | None) -> None:
        if old is not None and old != new:
            self.pool.drop_server(old)  # idle connections to a demoted writer are of no use
        self._notify_topology()

    def _server_down(self, name: str) -> None:
        self.pool.drop_server(name)
        for session in list(self.sessions.values()):
            session.server_down(name)
        self._notify_topology()

    def _notify_topology(self) -> None:
        event, self._topology_event = self._topology_event, asyncio.Event()
        event.set()

    async def kill(self, session: Session, target_id: int, query_only: bool) -> None:
        """KILL [QUERY] id (a session id or a pinned backend thread id, see kill_target): the
        session's running backend query is killed; KILL CONNECTION then closes its client
        without a word, as MariaDB does (the client sees the connection lost)."""
        target = kill_target(self, session, target_id)
        if isinstance(target, ErrPacket):
            session.send_error(target.code, target.message)
            return
        running = target.current
        if running is not None and target is not session:
            await self._kill_backend_query(session, running.server_name, running.thread_id)
        if query_only:
            session.send_ok()
            return
        if target is session:
            session.send_error(ErrorCode.ER_CONNECTION_KILLED, "Connection was killed")
        else:
            session.send_ok()
        target.kill()

    def kill_query_soon(self, session: Session, server: str, thread_id: int) -> None:
        """KILL QUERY on a backend, in the background (for the query deadline)."""
        task = asyncio.get_running_loop().create_task(
            self._kill_backend_query(session, server, thread_id)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _kill_backend_query(self, session: Session, server: str, thread_id: int) -> None:
        state = self.cluster.server(server)
        assert session.user is not None
        try:
            conn = await self.pool.acquire(
                state.config, session.user, session.caps, session.state.collation, None
            )
        except BackendError as exc:
            log.warning("KILL QUERY on %s failed: %s", server, exc)
            return
        try:
            await conn.query(f"KILL QUERY {thread_id}")
        except BackendError:
            self.pool.discard(conn)
            return
        self.pool.release(conn)


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


async def serve_forever(server: ProxyServer) -> None:
    await server.start()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
