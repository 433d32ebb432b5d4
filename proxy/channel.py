"""A message channel between two processes: length-prefixed pickles over a socketpair, with
bounded messages and buffers, and request/reply calls that have deadlines."""

from __future__ import annotations

import asyncio
import itertools
import pickle
import socket
from dataclasses import dataclass

# A report of a busy worker (digests, processlist) is the largest message.
MAX_MESSAGE = 64 << 20
# A peer that reads nothing while this much waits for it is stuck: the channel is closed.
MAX_BUFFERED = 128 << 20
_HEADER = 4


class ChannelClosed(Exception):
    """The peer went away (EOF), sent something malformed, or stopped reading."""


@dataclass(frozen=True)
class Call:
    """A request that wants a Reply with the same id."""

    id: int
    request: object


@dataclass(frozen=True)
class Reply:
    id: int
    value: object


class Channel:
    """One end of the pipe: send() never blocks (bounded buffer), recv() waits for a message."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[object]] = {}

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_MESSAGE + _HEADER)
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        return self._writer.is_closing()

    def send(self, message: object) -> None:
        if self._writer.is_closing():
            raise ChannelClosed("channel closed")
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        if len(data) > MAX_MESSAGE:
            raise ValueError(f"message of {len(data)} bytes is over {MAX_MESSAGE}")
        self._writer.write(len(data).to_bytes(_HEADER, "big") + data)
        if self._writer.transport.get_write_buffer_size() > MAX_BUFFERED:
            self.close()
            raise ChannelClosed("the peer reads nothing")

    async def recv(self) -> object:
        """The next message that is not a Reply (replies complete their call())."""
        while True:
            try:
                size = int.from_bytes(await self._reader.readexactly(_HEADER), "big")
                if size > MAX_MESSAGE:
                    raise ChannelClosed(f"message of {size} bytes is over {MAX_MESSAGE}")
                message = pickle.loads(await self._reader.readexactly(size))
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                self.close()
                raise ChannelClosed("the peer closed the channel") from exc
            if not isinstance(message, Reply):
                return message
            future = self._pending.pop(message.id, None)
            if future is not None and not future.done():
                future.set_result(message.value)

    async def call(self, request: object, timeout: float) -> object:
        """Send request and wait for its reply (TimeoutError after timeout). Someone must be
        running recv() on this channel for the reply to arrive."""
        call = Call(next(self._ids), request)
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._pending[call.id] = future
        try:
            self.send(call)
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(call.id, None)

    def reply(self, call: Call, value: object) -> None:
        self.send(Reply(call.id, value))

    def close(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ChannelClosed("channel closed"))
        self._pending.clear()
        self._writer.close()
