"""Accepting client connections only as fast as handshakes make room for them, and in the
worker process holding the fewest."""

from __future__ import annotations

import asyncio
import errno
import logging
import select
import socket
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

# Out of file descriptors or kernel memory: accepting again at once would spin.
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
RESOURCES_PAUSE_S = 1.0
# The kernel caps it at net.core.somaxconn (4096 since Linux 5.4, 128 before).
LISTEN_BACKLOG = 1024
# uvloop's timers count whole milliseconds and run shorter delays at once: a shorter wait
# would poll make_room() every loop iteration.
MIN_WAIT_S = 0.001
# A worker holding more connections than another leaves new ones to it (woken by the same
# connection), looking again every millisecond: it takes them itself once it is no longer
# crowded, or once the others have taken none for this long (stopped or busy).
BALANCE_WAIT_S = 0.05


async def listen_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address host resolves to (a family
    this kernel lacks, such as IPv6 turned off, is skipped, as asyncio's servers do); port 0
    is chosen once, for all of them. Worker processes inherit them: one listen queue that
    every worker takes connections from."""
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
            if family == socket.AF_INET6:  # one socket per family, as asyncio's servers
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
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


class Balance(Protocol):
    """The other worker processes taking connections from the same listening sockets."""

    def crowded(self) -> bool:
        """Another one holds fewer client connections than this one."""
        ...

    def taken_elsewhere(self) -> int:
        """The connections the others have taken so far: a change says one took one."""
        ...


class Acceptor:
    """Takes connections off the listening sockets while make_room() says there is room,
    leaving them to another worker process while balance says that one holds fewer.

    When there is no room, the listening sockets are not read: newer connections wait in the
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
        balance: Balance | None = None,
    ) -> None:
        """make_room(): 0 when one more connection may start now (it may drop an older
        handshake to make that room), else the seconds until there may be room; start(conn):
        serve an accepted connection; balance: the other processes reading the same sockets
        (None: no other)."""
        self.sockets = sockets
        self._make_room = make_room
        self._start = start
        self._balance = balance
        self._balancing = False  # paused: queued connections are left to the others
        self._taken_before = 0  # the others' taken_elsewhere() when they last took one
        self._taken_at = 0.0  # ... and when that was seen
        self._left_too_long = False  # the others took none for BALANCE_WAIT_S: take the queue
        self._loop = asyncio.get_running_loop()
        self._held: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reading = False
        self._starved = False  # paused for RESOURCES_PAUSE_S: accept() failed for want of fds
        self.closed = False
        self._resume()

    def room_made(self) -> None:
        """A handshake ended: a connection waiting for room may start (not one left to
        another worker: that wait ends on its own timer)."""
        if not self._reading and not self._starved and not self._balancing and not self.closed:
            if self._timer is not None:
                self._timer.cancel()
            self._resume()

    def close(self) -> None:
        """Accept nothing more; the listening sockets and a held connection are closed."""
        self.closed = True
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
        if self.closed:
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
        if delay is not None and self._timer is None and not self.closed:
            self._timer = self._loop.call_later(delay, self._resume)

    def _accept(self, sock: socket.socket) -> None:
        while self._reading:
            if self._leave_to_others():
                assert self._balance is not None
                self._pause()
                self._balancing = True
                self._taken_before = self._balance.taken_elsewhere()
                self._taken_at = self._loop.time()
                self._timer = self._loop.call_later(MIN_WAIT_S, self._look_again)
                return
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

    def _leave_to_others(self) -> bool:
        return self._balance is not None and not self._left_too_long and self._balance.crowded()

    def _look_again(self) -> None:
        """While connections are left to the others: accepting as usual once none is queued
        or this worker is no longer crowded; the queue taken once the others have taken none
        for BALANCE_WAIT_S."""
        assert self._balance is not None
        self._timer = None
        taken = self._balance.taken_elsewhere()
        now = self._loop.time()
        if taken != self._taken_before:
            self._taken_before, self._taken_at = taken, now
        self._balancing = False
        if not _queued(self.sockets):
            self._resume()  # readiness reports the next connection
            return
        if self._balance.crowded():
            if now - self._taken_at < BALANCE_WAIT_S:
                self._balancing = True
                self._timer = self._loop.call_later(MIN_WAIT_S, self._look_again)
                return
            self._left_too_long = True
        try:
            self._resume()
            for sock in self.sockets:
                self._accept(sock)
        finally:
            self._left_too_long = False

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


def _queued(sockets: list[socket.socket]) -> bool:
    """A connection waits on one of these listening sockets (poll(), not select(): the
    descriptors may be above FD_SETSIZE)."""
    poller = select.poll()
    for sock in sockets:
        poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))
