"""drive_auth: ClientAuth and ServerAuth driven against each other through in-memory pipes."""

from __future__ import annotations

import asyncio

import pytest

from proxy.authio import drive_auth
from proxy.protocol.auth import AuthAction, AuthDone, AuthFailed, AuthWait, ClientAuth, ServerAuth
from proxy.protocol.handshake import parse_handshake_v10
from proxy.protocol.packets import Packet, PacketReader

USERS = {"alice": "s3cret!"}


class Pipe:
    """One direction of a connection: written bytes come out as packets."""

    def __init__(self) -> None:
        self.reader = PacketReader()
        self.ready: asyncio.Queue[Packet] = asyncio.Queue()
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)
        self.reader.feed(data)
        for packet in self.reader:
            self.ready.put_nowait(packet)

    async def read(self) -> Packet:
        return await asyncio.wait_for(self.ready.get(), 5)


async def _run(
    password: str, *, tls: bool, plugin: str
) -> tuple[AuthDone | AuthFailed, AuthDone | AuthFailed, list[str]]:
    to_client, to_server = Pipe(), Pipe()
    events: list[str] = []
    server = ServerAuth(USERS.get, connection_id=1, tls_available=tls, default_plugin=plugin)
    to_client.write(server.start().data)
    greeting = parse_handshake_v10((await to_client.read()).payload)
    client = ClientAuth(greeting, "alice", password, tls=tls)

    async def server_tls() -> AuthAction:
        events.append("server tls")
        return AuthWait()

    async def client_tls() -> AuthAction:
        events.append("client tls")
        return client.tls_established()

    async def serve() -> AuthDone | AuthFailed:
        end = await drive_auth(AuthWait(), server.feed, to_server.read, to_client.write, server_tls)
        if isinstance(end, AuthDone):
            to_client.write(end.data)  # the final OK is the caller's to send
        return end

    s_end, c_end = await asyncio.gather(
        serve(),
        drive_auth(client.start(), client.feed, to_client.read, to_server.write, client_tls),
    )
    return s_end, c_end, events


@pytest.mark.parametrize("plugin", ["mysql_native_password", "caching_sha2_password"])
@pytest.mark.parametrize("tls", [False, True])
def test_login(plugin: str, tls: bool) -> None:
    s_end, c_end, events = asyncio.run(_run("s3cret!", tls=tls, plugin=plugin))
    assert isinstance(s_end, AuthDone) and isinstance(c_end, AuthDone)
    assert events == (["client tls", "server tls"] if tls else [])


def test_refused_login_sends_the_error() -> None:
    s_end, c_end, _ = asyncio.run(_run("wrong", tls=False, plugin="caching_sha2_password"))
    assert isinstance(s_end, AuthFailed) and isinstance(c_end, AuthFailed)
    assert c_end.error == s_end.error and s_end.error.code == 1045


def test_tls_without_a_way_to_start_it_is_an_error() -> None:
    async def run() -> None:
        greeting = ServerAuth(USERS.get, connection_id=1, tls_available=True).greeting()
        client = ClientAuth(greeting, "alice", "s3cret!", tls=True)
        await drive_auth(client.start(), client.feed, Pipe().read, Pipe().write)

    with pytest.raises(RuntimeError):
        asyncio.run(run())
