"""Client connection handling: packets in, bytes out, flow control towards the backend."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Final, cast

from proxy.metrics import Metrics
from proxy.protocol.handshake import MAX_HANDSHAKE_PAYLOAD
from proxy.protocol.packets import Packet, PacketReader

# A client with more unprocessed input than this (and a whole command among it) is not read
# from until the session catches up: a pipelining client cannot make the proxy buffer its
# flood. A single packet being assembled may be bigger (up to max_allowed_packet).
INPUT_LIMIT: Final = 1 << 20

# Commands already in the buffer are run back to back; every this many the session yields to
# the event loop so that one pipelining client cannot starve the others.
YIELD_EVERY: Final = 32

# Commands still run after the client hung up cleanly, of those it had sent: MySQL runs the
# next one, writes its answer (the client's reset comes back then), runs one more and stops
# when that answer cannot be written. So "INSERT ...; QUIT" sent before hanging up is kept,
# while a hung-up flood of pipelined commands is not run on for seconds.
AFTER_HANGUP_COMMANDS: Final = 2
# Commands that get no answer (COM_QUIT, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE): no failed
# write stops MySQL at them, so they do not count against AFTER_HANGUP_COMMANDS.
_UNANSWERED: Final = frozenset((0x01, 0x18, 0x19))


class ClientGone(Exception):
    """The client closed its connection (or it broke)."""


class ClientConnection(asyncio.Protocol):
    """The transport side of one client: a packet reader and a writer that can pause."""

    def __init__(self, max_payload: int, metrics: Metrics) -> None:
        self.metrics = metrics
        self.transport: asyncio.Transport | None = None
        self._send: Callable[[bytes], object] | None = None  # transport.write, looked up once
        # Before login only handshake-sized packets: a bigger header ends the connection
        # before any of its payload is buffered. logged_in() raises it to max_payload.
        self.max_payload = max_payload
        self.reader = PacketReader(max_payload=min(max_payload, MAX_HANDSHAKE_PAYLOAD))
        self.peer = ("?", 0)
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None
        # Set by the session: called when our send buffer is full / drained, so the backend
        # being relayed stops or resumes reading (the proxy never buffers a whole result).
        self.on_pause: Callable[[], None] | None = None
        self.on_resume: Callable[[], None] | None = None
        self.paused = False
        self._drained: asyncio.Future[None] | None = None  # resolved by resume_writing
        self.reading_paused = False  # we stopped reading: too much unprocessed input
        self._streak = 0  # packets returned in a row without waiting for the network
        self._after_hangup = AFTER_HANGUP_COMMANDS
        # Set by the session: the client went away (True: cleanly, with a FIN; False: reset).
        self.on_lost: Callable[[bool], None] | None = None
        # Set by the session: bytes came while its task waits in read_command. It may run the
        # command from here (no task wake-up per statement); the task is woken by wake_task.
        self.on_command_data: Callable[[], None] | None = None
        self._waiting_command = False  # the task waits in read_command
        self.task_held = False  # set by the session: a command it started is still running
        self._handed_over = False  # wake_task(handover=True): read_command returns None
        self._given_back: Packet | None = None  # take_packet's packet, not run after all
        self.on_connected: Callable[[ClientConnection], None] | None = None
        self._tls: ssl.SSLObject | None = None
        self._tls_in_bio = ssl.MemoryBIO()
        self._tls_out = ssl.MemoryBIO()
        self._handshake_waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send = self.transport.write
        # Looked up once: asyncio.get_running_loop() costs a getpid() call each time.
        self._loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = (str(peer[0]), int(peer[1]))
        if self.on_connected is not None:
            self.on_connected(self)

    def data_received(self, data: bytes) -> None:
        self.metrics.bytes_in += len(data)
        if self._handshake_waiter is not None:
            self._tls_in_bio.write(data)
            if not self._handshake_waiter.done():
                self._handshake_waiter.set_result(None)
            return
        if self._tls is not None:
            data = self._tls_in(data)
        reader = self.reader
        reader.feed(data)
        if (
            not self.reading_paused
            and reader.buffered > INPUT_LIMIT
            and reader.ready
            and self.transport is not None
        ):
            self.reading_paused = True
            self.transport.pause_reading()
        w = self._waiter
        if w is not None:
            if self._waiting_command and self.on_command_data is not None:
                self.on_command_data()  # the session runs what it can, wakes the task if not
                return
            self._waiter = None  # woken once: more data before read_packet resumes is buffered
            # Not w.done() first: a second method call per statement. Not contextlib.suppress:
            # mypyc runs a with-block's __enter__/__exit__ generically, try/except natively.
            try:  # noqa: SIM105
                w.set_result(None)
            except asyncio.InvalidStateError:
                pass  # cancelled: its task is woken by the cancellation

    def eof_received(self) -> bool:
        return False  # close our side too: a half-closed client is gone

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None:
            # Reset or broken: commands still buffered are dropped, as the kernel drops them
            # for a server on a reset (after a clean close, AFTER_HANGUP_COMMANDS still run).
            self.reader.clear()
            self._given_back = None
        hw = self._handshake_waiter
        if hw is not None and not hw.done():
            hw.set_result(None)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        d = self._drained
        if d is not None and not d.done():
            d.set_result(None)
        if self.paused and self.on_resume is not None:
            self.paused = False
            self.on_resume()
        if self.on_lost is not None:
            self.on_lost(exc is None)

    def pause_writing(self) -> None:
        self.paused = True
        if self.on_pause is not None:
            self.on_pause()

    def resume_writing(self) -> None:
        self.paused = False
        d = self._drained
        if d is not None and not d.done():
            d.set_result(None)
        if self.on_resume is not None:
            self.on_resume()

    # -- used by the session -------------------------------------------------------------------
    def logged_in(self) -> None:
        """The client authenticated: packets up to max_allowed_packet from now on."""
        self.reader.max_payload = self.max_payload

    async def read_packet(self) -> Packet:
        """Next packet from the client; raises ClientGone, or the reader's ProtocolError.

        Backpressure both ways: a client that does not read its answers gets no further
        command run until they drained, and one that sent more than INPUT_LIMIT ahead is
        not read from until the session caught up.
        """
        while True:
            if self.paused and not self.closed:
                await self._wait_drained()
            packet = self._next_packet()
            if packet is not None:
                if self._streak >= YIELD_EVERY:
                    self._streak = 0
                    await asyncio.sleep(0)
                return packet
            await self._wait_data(False)

    async def read_command(self) -> Packet | None:
        """read_packet() between commands. While it waits, bytes that come go to
        on_command_data instead of waking the task; None: woken by wake_task(handover=True),
        the session has work for its task. Nothing is read while task_held."""
        while True:
            if self._handed_over:
                self._handed_over = False
                return None
            if not self.task_held:
                if self.paused and not self.closed:
                    await self._wait_drained()
                    continue
                packet = self._next_packet()
                if packet is not None:
                    if self._streak >= YIELD_EVERY:
                        self._streak = 0
                        await asyncio.sleep(0)
                    return packet
            await self._wait_data(True)

    def _next_packet(self) -> Packet | None:
        """A whole packet if one is buffered (or given back); raises ClientGone once the
        client left and no more of what it sent is to run."""
        packet = self._given_back
        if packet is not None:
            self._given_back = None
        else:
            packet = self.reader.read()
        if packet is not None:
            if self.closed and (not packet.payload or packet.payload[0] not in _UNANSWERED):
                if self._after_hangup == 0:
                    self.reader.clear()
                    raise ClientGone()
                self._after_hangup -= 1
            if self.reading_paused:
                self._maybe_resume_reading()
            self._streak += 1
            return packet
        self._streak = 0
        if self.reading_paused:
            self._maybe_resume_reading()
        if self.closed:
            raise ClientGone()
        return None

    async def _wait_data(self, command: bool) -> None:
        self._waiter = (self._loop or asyncio.get_running_loop()).create_future()
        self._waiting_command = command
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._waiting_command = False

    def take_packet(self) -> Packet | None:
        """For on_command_data: the next whole packet, if one is buffered (give_back returns
        it unrun). Only while the client is connected."""
        packet = self.reader.read()
        if self.reading_paused:
            self._maybe_resume_reading()  # read() may have taken a fragment: room again
        return packet

    def give_back(self, packet: Packet) -> None:
        self._given_back = packet

    def wake_task(self, handover: bool = False) -> None:
        """Wake the task waiting in read_command: to read the buffered commands itself, or
        (handover) to run the work the session left it."""
        if handover:
            self._handed_over = True
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _maybe_resume_reading(self) -> None:
        reader = self.reader
        if (reader.buffered <= INPUT_LIMIT or not reader.ready) and self.transport is not None:
            self.reading_paused = False
            if not self.closed:
                self.transport.resume_reading()

    async def _wait_drained(self) -> None:
        self._drained = (self._loop or asyncio.get_running_loop()).create_future()
        try:
            await self._drained
        finally:
            self._drained = None

    def write(self, data: bytes) -> None:
        if not self.closed and self._send is not None:
            if self._tls is not None:
                self._tls.write(data)
                data = self._tls_out.read()
            self._send(data)

    # -- TLS ---------------------------------------------------------------------------------------
    # TLS runs over memory BIOs rather than loop.start_tls: a client sends its TLS ClientHello
    # right behind the SSLRequest, often in the same read, and those bytes must reach the TLS
    # engine, not be lost in the plain-text packet buffer.
    @property
    def tls(self) -> bool:
        """The connection runs over TLS."""
        return self._tls is not None

    async def start_tls(self, context: ssl.SSLContext, timeout: float = 10.0) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_side=True)
        incoming.write(self.reader.take_buffered())
        self._tls_in_bio, self._tls_out = incoming, outgoing
        deadline = time.monotonic() + timeout
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush_tls()
                if self.closed or time.monotonic() > deadline:
                    raise ClientGone() from None
                self._handshake_waiter = asyncio.get_running_loop().create_future()
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._handshake_waiter
                except TimeoutError:
                    raise ClientGone() from None
                finally:
                    self._handshake_waiter = None
            except ssl.SSLError:
                raise ClientGone() from None  # not TLS, or a broken handshake: like a hang-up
        self._flush_tls()
        self._tls = tls
        # Application data that came with the end of the handshake.
        self.reader.feed(self._tls_in(b""))

    def _flush_tls(self) -> None:
        pending = self._tls_out.read()
        if pending and self.transport is not None and not self.closed:
            self.transport.write(pending)

    def _tls_in(self, data: bytes) -> bytes:
        assert self._tls is not None
        if data:
            self._tls_in_bio.write(data)
        out = bytearray()
        while True:
            try:
                chunk = self._tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLError:
                self.close()  # a broken TLS stream: nothing more can be read from it
                break
            if not chunk:
                break
            out += chunk
        self._flush_tls()  # TLS may need to answer (key updates, alerts)
        return bytes(out)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.closed = True
