"""Client connection handling: packets in, bytes out, flow control towards the backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from proxy.protocol.packets import Packet, PacketReader


class ClientGone(Exception):
    """The client closed its connection (or it broke)."""


class ClientConnection(asyncio.Protocol):
    """The transport side of one client: a packet reader and a writer that can pause."""

    def __init__(self, max_payload: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = PacketReader(max_payload=max_payload)
        self.peer = ("?", 0)
        self.closed = False
        self.last_active = time.monotonic()
        self.bytes_in = 0
        self._waiter: asyncio.Future[None] | None = None
        # Set by the session: called when our send buffer is full / drained, so the backend
        # being relayed stops or resumes reading (the proxy never buffers a whole result).
        self.on_pause: Callable[[], None] | None = None
        self.on_resume: Callable[[], None] | None = None
        self.paused = False
        self.on_connected: Callable[[ClientConnection], None] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = (str(peer[0]), int(peer[1]))
        if self.on_connected is not None:
            self.on_connected(self)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.last_active = time.monotonic()
        self.reader.feed(data)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def eof_received(self) -> bool:
        return False  # close our side too: a half-closed client is gone

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        if self.paused and self.on_resume is not None:
            self.paused = False
            self.on_resume()

    def pause_writing(self) -> None:
        self.paused = True
        if self.on_pause is not None:
            self.on_pause()

    def resume_writing(self) -> None:
        self.paused = False
        if self.on_resume is not None:
            self.on_resume()

    # -- used by the session -------------------------------------------------------------------
    async def read_packet(self) -> Packet:
        """Next packet from the client; raises ClientGone, or the reader's ProtocolError."""
        while True:
            packet = self.reader.read()
            if packet is not None:
                return packet
            if self.closed:
                raise ClientGone()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.closed = True
