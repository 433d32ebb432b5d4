"""The I/O side of authentication: one loop that runs a sans-IO auth machine over a connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from proxy.protocol.auth import (
    AuthAction,
    AuthDone,
    AuthFailed,
    AuthSend,
    AuthStartTLS,
    AuthWait,
)
from proxy.protocol.packets import Packet


async def drive_auth(
    action: AuthAction,
    feed: Callable[[bytes, int], AuthAction],
    read: Callable[[], Awaitable[Packet]],
    write: Callable[[bytes], object],
    start_tls: Callable[[], Awaitable[AuthAction]] | None = None,
) -> AuthDone | AuthFailed:
    """Run an exchange from its first *action* until it ends, for ServerAuth and ClientAuth.

    The packets to send go through *write*, the peer's through *read* into *feed*. On
    AuthStartTLS *start_tls* runs the TLS handshake and gives the next action (AuthWait when
    the peer speaks next). A failure's ERR (server side) is sent here; a success's final
    packets are returned unsent in AuthDone.data, as the caller may still refuse the login.
    Deadlines are the caller's: wrap the call in its own asyncio.timeout.
    """
    while True:
        if isinstance(action, AuthDone):
            return action
        if isinstance(action, AuthFailed):
            if action.data:
                write(action.data)
            return action
        if isinstance(action, AuthStartTLS):
            if start_tls is None:
                raise RuntimeError("TLS requested on a connection that cannot start it")
            if action.data:
                write(action.data)
            action = await start_tls()
            if not isinstance(action, AuthWait):
                continue
        elif isinstance(action, AuthSend):
            write(action.data)
        packet = await read()
        action = feed(packet.payload, packet.seq)
