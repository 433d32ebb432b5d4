"""Backend connection pools per (server, user, capability profile): reuse, bounds, timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

from proxy.backend.connection import (
    PROFILE_CAPS,
    BackendConnection,
    BackendError,
    ConnState,
)
from proxy.config import Pool as PoolConfig
from proxy.config import Server, User

log = logging.getLogger(__name__)

PoolKey = tuple[str, str, int]  # server name, user name, profile caps


@dataclass
class PoolStats:
    """Counters the admin interface and metrics read."""

    created: int = 0
    reused: int = 0
    closed: int = 0
    errors: int = 0


class BackendPool:
    """Idle connections kept for reuse; a bounded number of connections per server."""

    def __init__(self, settings: Callable[[], PoolConfig], share: int = 1) -> None:
        """share: the number of worker processes, each with a pool: pool.max_idle_per_server
        is the proxy's, each pool keeps its part. (A server's max_connections holds per pool:
        a statement never waits for a connection another worker holds idle.)"""
        self._settings = settings  # the running config's pool section (a reload swaps it)
        self._share = share
        self._idle: dict[PoolKey, deque[BackendConnection]] = defaultdict(deque)
        self._open: dict[str, int] = defaultdict(int)  # per server: idle + in use
        self._freed: dict[str, asyncio.Condition] = {}
        self.stats: dict[str, PoolStats] = defaultdict(PoolStats)
        # Per server, bumped by drop_server: connections of an older generation (in use when
        # the server went down, was removed, moved or stopped being the writer) are closed
        # when given back, never pooled again.
        self._generation: dict[str, int] = defaultdict(int)
        # Connections still logging in, per server: drop_server aborts them (a login to a
        # frozen server would otherwise hold its statement for the whole connect timeout).
        self._connecting: dict[str, set[BackendConnection]] = defaultdict(set)
        self._reaper: asyncio.Task[None] | None = None

    @property
    def config(self) -> PoolConfig:
        return self._settings()

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    def idle_count(self, server: str) -> int:
        return sum(len(q) for (s, _, _), q in self._idle.items() if s == server)

    def open_count(self, server: str) -> int:
        return self._open[server]

    async def acquire(
        self,
        server: Server,
        user: User,
        client_caps: int,
        collation: int,
        database: str | None,
    ) -> BackendConnection:
        key = (server.name, user.username, client_caps & PROFILE_CAPS)
        queue = self._idle.get(key)
        while queue:
            conn = queue.pop()  # most recently used first: warm, and lets the rest idle out
            if conn.broken or conn.state is not ConnState.IDLE:
                self._close(conn)
                continue
            self.stats[server.name].reused += 1
            conn.last_used = time.monotonic()
            return conn
        await self._reserve(server)
        try:
            conn = await self._connect(server, user, client_caps, collation, database)
        except BaseException:
            self._unreserve(server.name)
            raise
        conn.counted = True
        conn.generation = self._generation[server.name]
        self.stats[server.name].created += 1
        return conn

    async def _reserve(self, server: Server) -> None:
        cond = self._freed.setdefault(server.name, asyncio.Condition())
        # At the limit: take an idle connection of another user/profile out, or wait.
        if self._open[server.name] >= server.max_connections and not self._evict_one(server.name):
            timeout = self.config.connect_timeout_ms / 1000
            limit = server.max_connections
            async with cond:
                try:
                    async with asyncio.timeout(timeout):
                        await cond.wait_for(lambda: self._open[server.name] < limit)
                except TimeoutError:
                    raise BackendError(
                        f"{server.name}: all {limit} backend connections are busy (max_connections)"
                    ) from None
        self._open[server.name] += 1

    def _unreserve(self, server: str) -> None:
        self._open[server] -= 1
        cond = self._freed.get(server)
        if cond is not None:
            asyncio.get_running_loop().create_task(self._notify(cond))

    @staticmethod
    async def _notify(cond: asyncio.Condition) -> None:
        async with cond:
            cond.notify()

    def _evict_one(self, server: str) -> bool:
        for (s, _, _), queue in self._idle.items():
            if s == server and queue:
                conn = queue.popleft()
                self._close(conn)
                return True
        return False

    async def _connect(
        self, server: Server, user: User, client_caps: int, collation: int, database: str | None
    ) -> BackendConnection:
        loop = asyncio.get_running_loop()
        timeout = self.config.connect_timeout_ms / 1000
        conn = BackendConnection(server.name, client_caps & PROFILE_CAPS, user.username)
        tls = tls_context(server) if server.tls.enabled else None
        connecting = self._connecting[server.name]
        connecting.add(conn)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: conn, server.host, server.port)
                await conn.handshake(user.password, client_caps, collation, database, tls)
        except TimeoutError:
            conn.close()
            self.stats[server.name].errors += 1
            raise BackendError(
                f"{server.name} ({server.host}:{server.port}): connect timed out after "
                f"{self.config.connect_timeout_ms} ms"
            ) from None
        except OSError as exc:
            conn.close()
            self.stats[server.name].errors += 1
            raise BackendError(
                f"{server.name} ({server.host}:{server.port}): cannot connect: "
                f"{exc.strerror or exc}"
            ) from None
        except BackendError:
            conn.close()
            self.stats[server.name].errors += 1
            raise
        finally:
            connecting.discard(conn)
        return conn

    def release(self, conn: BackendConnection) -> None:
        """Give a connection back after a session used it; keep it only if it is clean."""
        if (
            conn.broken
            or conn.state is not ConnState.IDLE
            or conn.in_transaction
            or conn.kills_in_flight  # a late KILL QUERY would stop the next user's statement
            or conn.generation != self._generation[conn.server_name]
            or len(self._idle[(conn.server_name, conn.user, conn.profile)])
            >= -(-self.config.max_idle_per_server // self._share)
        ):
            self._close(conn)
            return
        conn.last_used = time.monotonic()
        self._idle[(conn.server_name, conn.user, conn.profile)].append(conn)

    def discard(self, conn: BackendConnection) -> None:
        self._close(conn)

    def _close(self, conn: BackendConnection) -> None:
        conn.close()
        if conn.counted:  # each connection gives its slot back exactly once
            conn.counted = False
            self.stats[conn.server_name].closed += 1
            self._unreserve(conn.server_name)

    def drop_server(self, server: str) -> None:
        """Close every idle connection to a server (it went down, was removed or moved, or
        stopped being the writer) and abort those still logging in (their statements go
        elsewhere); those in use are closed when given back."""
        self._generation[server] += 1
        for conn in list(self._connecting.get(server, ())):
            conn.abort(f"{server} was dropped while connecting (down, drained, moved or demoted)")
        for (name, _, _), queue in list(self._idle.items()):
            if name == server:
                while queue:
                    self._close(queue.popleft())

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(self.config.idle_timeout_s / 4, 5.0))
            cutoff = time.monotonic() - self.config.idle_timeout_s
            for queue in self._idle.values():
                while queue and queue[0].last_used < cutoff:
                    self._close(queue.popleft())
                for conn in [c for c in queue if c.broken]:
                    queue.remove(conn)
                    self._close(conn)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for queue in self._idle.values():
            while queue:
                self._close(queue.popleft())


def tls_context(server: Server) -> ssl.SSLContext:
    """The client-side TLS context for a backend (servers[].tls): data path and health checks."""
    ctx = ssl.create_default_context(cafile=server.tls.ca)
    if not server.tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
