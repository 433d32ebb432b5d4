"""Thousands of idle, authenticated client connections, opened with pyproxy's own protocol code."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from proxy.protocol.auth import AuthDone, AuthFailed, AuthSend, AuthStartTLS, ClientAuth
from proxy.protocol.constants import Command
from proxy.protocol.handshake import parse_handshake_v10
from proxy.protocol.packets import (
    Packet,
    PacketReader,
    ProtocolError,
    build_command,
    is_err,
    is_ok,
    parse_err,
)

HANDSHAKE_CONCURRENCY = 64  # handshakes in flight at once (stays under the listen backlog)
CONNECT_TIMEOUT_S = 20.0


class _Refused(Exception):
    """The server answered the connection with an error."""


@dataclass
class Client:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    packets: PacketReader = field(default_factory=PacketReader)

    async def packet(self) -> Packet:
        while (p := self.packets.read()) is None:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionResetError("connection closed by the server")
            self.packets.feed(data)
        return p

    def close(self) -> None:
        self.writer.close()


async def connect(host: str, port: int, user: str, password: str) -> Client:
    """TCP connect and authenticate (mysql_native_password or caching_sha2 fast path)."""
    reader, writer = await asyncio.open_connection(host, port)
    client = Client(reader, writer)
    try:
        first = await client.packet()
        if is_err(first.payload):
            raise _Refused(parse_err(first.payload).message)
        auth = ClientAuth(parse_handshake_v10(first.payload), user, password)
        action = auth.start()
        while True:
            if isinstance(action, AuthDone):
                return client
            if isinstance(action, AuthFailed):
                raise _Refused(action.error.message)
            if isinstance(action, AuthStartTLS):
                raise _Refused("TLS requested")
            if isinstance(action, AuthSend):
                writer.write(action.data)
                await writer.drain()
            p = await client.packet()
            action = auth.feed(p.payload, p.seq)
    except BaseException:
        writer.close()
        raise


async def ping(client: Client) -> bool:
    client.writer.write(build_command(Command.COM_PING))
    await client.writer.drain()
    return is_ok((await client.packet()).payload)


@dataclass
class IdleResult:
    requested: int
    opened: int
    failures: dict[str, int]
    connect_s: float
    alive_after_hold: int  # answered COM_PING after the measurements
    measured: dict[str, object]  # whatever `measure` returned while they were held


async def _hold(
    host: str,
    port: int,
    user: str,
    password: str,
    count: int,
    settle_s: float,
    measure: Callable[[], Awaitable[dict[str, object]]],
) -> IdleResult:
    gate = asyncio.Semaphore(HANDSHAKE_CONCURRENCY)
    failures: Counter[str] = Counter()

    async def one() -> Client | None:
        async with gate:
            try:
                return await asyncio.wait_for(
                    connect(host, port, user, password), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError, _Refused, ProtocolError, ValueError) as exc:
                failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
                return None

    start = time.perf_counter()
    opened = [c for c in await asyncio.gather(*(one() for _ in range(count))) if c]
    connect_s = time.perf_counter() - start
    try:
        await asyncio.sleep(settle_s)  # sessions hand idle backend connections back
        measured = await measure()
        alive = 0
        for batch in range(0, len(opened), 500):
            results = await asyncio.gather(
                *(asyncio.wait_for(ping(c), 10) for c in opened[batch : batch + 500]),
                return_exceptions=True,
            )
            alive += sum(1 for r in results if r is True)
    finally:
        for c in opened:
            c.close()
        await asyncio.sleep(0)
    return IdleResult(
        requested=count,
        opened=len(opened),
        failures=dict(failures),
        connect_s=round(connect_s, 2),
        alive_after_hold=alive,
        measured=measured,
    )


def hold_idle_connections(
    host: str,
    port: int,
    user: str,
    password: str,
    count: int,
    settle_s: float,
    measure: Callable[[], dict[str, object]],
) -> IdleResult:
    """Open `count` connections, wait `settle_s`, call `measure()` while all are held, close."""

    async def measure_async() -> dict[str, object]:
        return await asyncio.to_thread(measure)

    return asyncio.run(_hold(host, port, user, password, count, settle_s, measure_async))
