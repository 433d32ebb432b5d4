"""ClientConnection's input side, driven as the event loop drives it (no socket)."""

from __future__ import annotations

import asyncio
from typing import cast

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


class _Transport:
    """What the event loop's transport does for the reader side: pause and resume reading."""

    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def test_data_while_waiting_for_a_command_goes_to_the_session_first() -> None:
    """read_command's wait: bytes go to on_command_data, which may take and run a command
    without the task; what it gives back is what the task reads next, before the rest."""

    async def scenario() -> list[bytes]:
        client = ClientConnection(1 << 20, Metrics())
        client.logged_in()
        offered: list[int] = []

        def on_data() -> None:
            offered.append(client.reader.buffered)
            packet = client.take_packet()
            assert packet is not None
            client.give_back(packet)
            client.wake_task()

        client.on_command_data = on_data
        task = asyncio.ensure_future(client.read_command())
        await asyncio.sleep(0)
        client.data_received(build_command(0x03, b"SELECT 1") + PING)
        first = await task
        second = await client.read_command()
        assert offered == [len(build_command(0x03, b"SELECT 1") + PING)]
        assert first is not None and second is not None
        return [first.payload, second.payload]

    assert asyncio.run(scenario()) == [b"\x03SELECT 1", b"\x0e"]


def test_a_held_task_reads_nothing_until_the_work_is_handed_over() -> None:
    """While a command the session started runs (task_held), neither more data nor the
    client's hang-up makes the task read a command; wake_task(handover=True) returns None."""

    async def scenario() -> tuple[bool, object]:
        client = ClientConnection(1 << 20, Metrics())
        client.logged_in()
        client.on_command_data = lambda: None  # busy: buffers only
        client.task_held = True
        task = asyncio.ensure_future(client.read_command())
        await asyncio.sleep(0)
        client.data_received(PING)
        client.connection_lost(None)
        for _ in range(3):
            await asyncio.sleep(0)
        waiting = not task.done()
        client.wake_task(handover=True)
        return waiting, await task

    assert asyncio.run(scenario()) == (True, None)


def test_taking_a_fragment_of_a_big_packet_resumes_reading() -> None:
    """A packet over INPUT_LIMIT in 16 MiB fragments: reading pauses once a whole fragment
    is buffered, and take_packet (which consumes it, returning no packet yet) resumes it, or
    the rest of the packet would never come."""
    client = ClientConnection(1 << 30, Metrics())
    transport = _Transport()
    client.transport = cast(asyncio.Transport, transport)
    client.logged_in()
    frame = build_command(0x03, b"x" * ((1 << 24) + 10))
    first_fragment = 4 + (1 << 24) - 1
    client.data_received(frame[: first_fragment + 4])
    assert not transport.reading
    assert client.take_packet() is None
    assert transport.reading
    client.data_received(frame[first_fragment + 4 :])
    packet = client.take_packet()
    assert packet is not None and len(packet.payload) == (1 << 24) + 10 + 1


def test_a_packet_given_back_is_dropped_by_a_reset() -> None:
    """A command taken by the session and given back to its task is still the client's
    input: a reset drops it with the rest, as the kernel drops a server's unread input."""

    async def scenario() -> int:
        client = ClientConnection(1 << 20, Metrics())
        client.logged_in()
        client.data_received(PING * 2)
        packet = client.take_packet()
        assert packet is not None
        client.give_back(packet)
        client.connection_lost(ConnectionResetError())
        run = 0
        with pytest.raises(ClientGone):
            while await client.read_command() is not None:
                run += 1
        return run

    assert asyncio.run(scenario()) == 0
