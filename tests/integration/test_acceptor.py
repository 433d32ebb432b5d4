"""The acceptor on a real listening socket under uvloop: it accepts while there is room,
holds one connection and leaves the rest in the listen queue when there is none, and never
stalls, spins or leaks a socket; it leaves a connection to another worker holding fewer, for a
bounded while."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import uvloop

from proxy.frontend.acceptor import (
    BALANCE_WAIT_S,
    MIN_WAIT_S,
    Acceptor,
    Balance,
    listen_sockets,
)


class Room:
    """make_room() and start() for the acceptor: `free` connections may start, else wait."""

    def __init__(self, free: int, wait: float = 0.05) -> None:
        self.free = free
        self.wait = wait
        self.asked = 0
        self.started: list[socket.socket] = []
        self.fail: Exception | None = None

    def make_room(self) -> float:
        self.asked += 1
        if self.fail is not None:
            raise self.fail
        if self.free > 0:
            self.free -= 1
            return 0.0
        return self.wait

    def start(self, conn: socket.socket) -> None:
        self.started.append(conn)


def run(test: Callable[[], Awaitable[None]]) -> None:
    uvloop.run(test())


async def listening(room: Room, balance: Balance | None = None) -> tuple[Acceptor, int]:
    sockets = await listen_sockets("127.0.0.1", 0, backlog=64)
    acceptor = Acceptor(sockets, room.make_room, room.start, balance)
    return acceptor, sockets[0].getsockname()[1]


def close_all(acceptor: Acceptor, *socks: socket.socket) -> None:
    """A test's end: the acceptor closed, then every socket it opened or was handed."""
    acceptor.close()
    for sock in socks:
        sock.close()


async def connect(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def settle() -> None:
    await asyncio.sleep(0.02)


def test_accepts_while_there_is_room_and_queues_the_rest() -> None:
    async def test() -> None:
        room = Room(free=2, wait=10.0)  # the timer never fires within this test
        acceptor, port = await listening(room)
        clients = [await connect(port) for _ in range(5)]
        await settle()
        # Two started, one held, two left in the kernel's queue: asked three times, once
        # for the held one; nothing polls while there is no room.
        assert len(room.started) == 2
        assert room.asked == 3
        await asyncio.sleep(0.2)
        assert room.asked == 3
        # Room made: the held one starts first, then the queue, in the order they came.
        room.free = 3
        acceptor.room_made()
        await settle()
        assert [c.getpeername() for c in room.started] == [c.getsockname() for c in clients]
        close_all(acceptor, *clients, *room.started)

    run(test)


def test_a_timer_takes_up_accepting_without_a_busy_wait() -> None:
    async def test() -> None:
        room = Room(free=0, wait=0.0001)  # shorter than uvloop's timer resolution
        acceptor, port = await listening(room)
        client = await connect(port)
        await asyncio.sleep(0.1)
        asked = room.asked
        assert 2 <= asked <= 110, asked  # at most once a millisecond, not every iteration
        room.free = 1
        await settle()
        assert len(room.started) == 1
        close_all(acceptor, client, *room.started)

    run(test)


def test_close_closes_the_held_connection_and_stops_listening() -> None:
    async def test() -> None:
        room = Room(free=0, wait=10.0)
        acceptor, port = await listening(room)
        client = await connect(port)
        await settle()
        acceptor.close()
        acceptor.room_made()  # after close: nothing happens
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.sock_recv(client, 1), 2) == b""  # closed by us
        client.close()
        refused = socket.socket()
        assert refused.connect_ex(("127.0.0.1", port)) != 0
        refused.close()
        assert room.started == []

    run(test)


def test_a_failing_start_loses_that_connection_only() -> None:
    async def test() -> None:
        room = Room(free=5)
        room.fail = RuntimeError("a bug")
        acceptor, port = await listening(room)
        first = await connect(port)
        await settle()
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.sock_recv(first, 1), 2) == b""
        room.fail = None
        second = await connect(port)
        await settle()
        assert len(room.started) == 1
        close_all(acceptor, first, second, *room.started)

    run(test)


class Others:
    """The acceptor's Balance: other workers holding fewer while `fewer`, taking what
    their Room started (busy: always taking something, never stuck)."""

    def __init__(self, fewer: bool, room: Room | None = None, busy: bool = False) -> None:
        self.fewer = fewer
        self.room = room
        self.busy = busy
        self.asked = 0

    def crowded(self) -> bool:
        self.asked += 1
        return self.fewer

    def taken_elsewhere(self) -> int:
        if self.busy:
            return self.asked
        return 0 if self.room is None else len(self.room.started)


def test_a_worker_holding_more_leaves_connections_to_the_others() -> None:
    async def test() -> None:
        # The other worker, on the same listening socket (a descriptor of its own, as a worker
        # process inherits it), holding fewer: it takes them, however long it takes.
        other = Room(free=10)
        room = Room(free=10)
        others = Others(fewer=True, room=other)
        acceptor, port = await listening(room, others)
        shared = [s.dup() for s in acceptor.sockets]
        other_acceptor = Acceptor(shared, other.make_room, other.start)
        clients = []
        for _ in range(5):
            clients.append(await connect(port))
            await asyncio.sleep(BALANCE_WAIT_S * 2)
        await settle()
        assert len(other.started) == 5 and room.started == []
        assert others.asked >= 1
        # Nothing queued: it waits for readiness, it does not keep looking.
        asked = others.asked
        await asyncio.sleep(BALANCE_WAIT_S * 2)
        assert others.asked == asked
        # No longer crowded: it takes its turn again.
        others.fewer = False
        other_acceptor.close()
        clients.append(await connect(port))
        await settle()
        assert len(room.started) == 1
        close_all(acceptor, *clients, *other.started, *room.started)

    run(test)


def test_a_worker_no_longer_crowded_takes_its_turn_at_once() -> None:
    async def test() -> None:
        room = Room(free=10)
        others = Others(fewer=True, busy=True)  # the others take connections, not this one
        acceptor, port = await listening(room, others)
        client = await connect(port)
        await asyncio.sleep(BALANCE_WAIT_S * 4)
        assert room.started == []  # left to the others as long as they take theirs
        others.fewer = False
        await settle()
        assert len(room.started) == 1
        close_all(acceptor, client, *room.started)

    run(test)


def test_when_the_others_take_none_the_queue_is_taken_after_the_wait() -> None:
    async def test() -> None:
        room = Room(free=10)
        others = Others(fewer=True)  # they hold fewer but take nothing (stopped)
        acceptor, port = await listening(room, others)
        loop = asyncio.get_running_loop()
        began = loop.time()
        clients = [await connect(port) for _ in range(3)]
        while len(room.started) < 3 and loop.time() - began < 2:
            await asyncio.sleep(0.001)
        waited = loop.time() - began
        assert len(room.started) == 3 and waited >= BALANCE_WAIT_S * 0.9, waited
        # Looked at about once a millisecond meanwhile, not at every loop iteration.
        assert others.asked <= 2 * BALANCE_WAIT_S / MIN_WAIT_S + 5, others.asked
        close_all(acceptor, *clients, *room.started)

    run(test)


def test_a_connection_left_to_others_waits_for_no_handshake_to_end() -> None:
    async def test() -> None:
        room = Room(free=10)
        others = Others(fewer=True)
        acceptor, port = await listening(room, others)
        client = await connect(port)
        await asyncio.sleep(0.001)
        # Logins ending here must not make the wait start over, again and again: the
        # connection is taken when the first wait is over.
        for _ in range(20):
            acceptor.room_made()
            await asyncio.sleep(BALANCE_WAIT_S / 5)
        assert len(room.started) == 1
        close_all(acceptor, client, *room.started)

    run(test)
