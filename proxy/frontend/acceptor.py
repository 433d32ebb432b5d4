"""Accepting client connections only as fast as handshakes make room for them."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

# Out of file descriptors or kernel memory: accepting again at once would spin.
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
RESOURCES_PAUSE_S = 1.0
# uvloop's timers count whole milliseconds and run shorter delays at once: a shorter wait
# would poll make_room() every loop iteration.
MIN_WAIT_S = 0.001


async def listen_sockets(
    host: str, port: int, reuse_port: bool, backlog: int
) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address host resolves to (a family
    this kernel lacks, such as IPv6 turned off, is skipped, as asyncio's servers do)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    lacking: OSError | None = None
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as exc:
                lacking = exc
                continue
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # one socket per family, as asyncio's servers
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise lacking or OSError(f"{host} has no address to listen on")
    return sockets


class Acceptor:
    """Takes connections off the listening sockets while make_room() says there is room.

    When there is none, the listening sockets are not read: newer connections wait in the
    kernel's listen queue (a client sees a slow connect, not a dropped one), and at most one
    accepted connection is held here until room is made. room_made() (a handshake ended) and
    a timer at the delay make_room() returned take up accepting again; after running out of
    file descriptors, only the timer does.
    """

    def __init__(
        self,
        sockets: list[socket.socket],
        make_room: Callable[[], float],
        start: Callable[[socket.socket], None],
    ) -> None:
        """make_room(): 0 when one more connection may start now (it may drop an older
        handshake to make that room), else the seconds until there may be room; start(conn):
        serve an accepted connection."""
        self.sockets = sockets
        self._make_room = make_room
        self._start = start
        self._loop = asyncio.get_running_loop()
        self._held: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reading = False
        self._starved = False  # paused for RESOURCES_PAUSE_S: accept() failed for want of fds
        self._closed = False
        self._resume()

    def room_made(self) -> None:
        """A handshake ended: a connection waiting for room may start."""
        if not self._reading and not self._starved and not self._closed:
            if self._timer is not None:
                self._timer.cancel()
            self._resume()

    def close(self) -> None:
        """Accept nothing more; the listening sockets and a held connection are closed."""
        self._closed = True
        self._pause()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._held is not None:
            self._held.close()
            self._held = None
        for sock in self.sockets:
            sock.close()

    def _resume(self) -> None:
        self._timer = None
        self._starved = False
        if self._closed:
            return
        held, self._held = self._held, None
        if held is not None and not self._try_start(held):
            return
        if not self._reading:
            for sock in self.sockets:
                self._loop.add_reader(sock.fileno(), self._accept, sock)
            self._reading = True

    def _pause(self, delay: float | None = None) -> None:
        if self._reading:
            for sock in self.sockets:
                self._loop.remove_reader(sock.fileno())
            self._reading = False
        if delay is not None and self._timer is None and not self._closed:
            self._timer = self._loop.call_later(delay, self._resume)

    def _accept(self, sock: socket.socket) -> None:
        while self._reading:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # gone before it was accepted
                continue
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                log.warning("cannot accept connections: %s; pausing", exc)
                self._pause(RESOURCES_PAUSE_S)
                self._starved = True
                return
            self._try_start(conn)

    def _try_start(self, conn: socket.socket) -> bool:
        """Start conn if make_room() finds room, else hold it and stop reading. The transport
        makes conn non-blocking and sets TCP_NODELAY."""
        try:
            delay = self._make_room()
            if delay <= 0:
                self._start(conn)
                return True
        except Exception:  # a bug: this connection is lost, accepting goes on
            log.exception("cannot start a client connection")
            conn.close()
            return True
        self._held = conn
        self._pause(max(delay, MIN_WAIT_S))
        return False
