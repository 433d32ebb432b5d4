"""ClientConnection's input side, driven as the event loop drives it (no socket)."""

from __future__ import annotations

import asyncio

import pytest

from proxy.frontend.client import AFTER_HANGUP_COMMANDS, ClientConnection, ClientGone
from proxy.metrics import Metrics
from proxy.protocol.packets import build_command

PING = build_command(0x0E)


def _received(data: bytes, hangup: Exception | None) -> ClientConnection:
    client = ClientConnection(1 << 20, Metrics())
    client.logged_in()
    client.data_received(data)
    client.connection_lost(hangup)
    return client


async def _commands_run(client: ClientConnection) -> int:
    run = 0
    with pytest.raises(ClientGone):
        while True:
            await client.read_packet()
            run += 1
    return run


def test_clean_hangup_runs_only_the_next_commands() -> None:
    """10,000 pings pipelined, then a clean close: as on MySQL, which stops when it cannot
    write the second answer, only the next AFTER_HANGUP_COMMANDS run."""
    client = _received(PING * 10_000, None)
    assert asyncio.run(_commands_run(client)) == AFTER_HANGUP_COMMANDS == 2


def test_insert_then_quit_then_hangup_is_kept() -> None:
    """The fire-and-forget client: its statement and its COM_QUIT are both still read."""
    client = _received(build_command(0x03, b"INSERT INTO t VALUES (1)") + build_command(0x01), None)
    assert asyncio.run(_commands_run(client)) == 2


def test_commands_without_an_answer_do_not_count() -> None:
    """MySQL stops at a failed write: COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA write none,
    so the INSERT behind two of them still runs, as the two pings after it."""
    close = build_command(0x19, (1).to_bytes(4, "little"))
    insert = build_command(0x03, b"INSERT INTO t VALUES (1)")
    client = _received(close * 2 + insert + PING * 5, None)
    assert asyncio.run(_commands_run(client)) == 2 + AFTER_HANGUP_COMMANDS


def test_reset_drops_what_was_buffered() -> None:
    client = _received(PING * 3, ConnectionResetError())
    assert asyncio.run(_commands_run(client)) == 0
