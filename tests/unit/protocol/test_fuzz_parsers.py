"""Fuzzing the packet parsers: random and mutated bytes may only raise ProtocolError."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.protocol.auth import AuthDone, AuthFailed, ServerAuth
from proxy.protocol.constants import Capability, Command
from proxy.protocol.handshake import (
    MAX_HANDSHAKE_PAYLOAD,
    ChangeUser,
    HandshakeResponse41,
    encode_change_user,
    encode_handshake_response,
    parse_auth_switch_request,
    parse_change_user,
    parse_handshake_response,
    parse_handshake_v10,
)
from proxy.protocol.packets import (
    OkPacket,
    PacketReader,
    PacketTooLarge,
    ProtocolError,
    build_packet,
    encode_eof,
    encode_err,
    encode_lenenc_bytes,
    encode_ok,
    parse_eof,
    parse_err,
    parse_ok,
    parse_prepare_ok,
    parse_session_state,
    parse_text_row,
)
from proxy.protocol.response import ResponseScanner
from tests.unit.protocol.test_handshake import MARIADB_10_11_GREETING

# Bounded: the whole file runs in a few seconds. No deadline: shared CI machines are slow at
# times, and a hang is caught by the timeout below instead.
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.timeout(120)

ALL_CAPS = int(
    Capability.CLIENT_PROTOCOL_41
    | Capability.CLIENT_SECURE_CONNECTION
    | Capability.CLIENT_PLUGIN_AUTH
    | Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.CLIENT_CONNECT_WITH_DB
    | Capability.CLIENT_CONNECT_ATTRS
    | Capability.CLIENT_SESSION_TRACK
    | Capability.CLIENT_DEPRECATE_EOF
    | Capability.CLIENT_TRANSACTIONS
)
CAPS = st.sampled_from([0, int(Capability.CLIENT_PROTOCOL_41), ALL_CAPS])

SEEDS = [
    encode_handshake_response(
        HandshakeResponse41(
            ALL_CAPS,
            "app",
            b"\x01" * 20,
            database="demo_db",
            auth_plugin_name="mysql_native_password",
            connect_attrs={"_client_name": "fuzz", "program": "x" * 40},
        )
    ),
    encode_change_user(ChangeUser("app", b"\x02" * 20, "demo_db", 45, "x", {"a": "b"}), ALL_CAPS),
    encode_ok(OkPacket(affected_rows=3, last_insert_id=7, info="Rows matched"), ALL_CAPS),
    encode_err(1064, "You have an error", "42000"),
    encode_eof(),
    MARIADB_10_11_GREETING,
    b"\x03def\x07demo_db\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x03B\x00\x00\x00",
    encode_lenenc_bytes(b"42") + b"\xfb" + encode_lenenc_bytes(b"x" * 300),
    b"\x00\x01\x00\x00\x00\x02\x00\x01\x00\x00\x00",
]


def _mutate(seed: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    data = bytearray(seed)
    for kind, pos, value in edits:
        if not data:
            data.append(value)
            continue
        pos %= len(data)
        if kind == 0:
            data[pos] = value  # flip a byte
        elif kind == 1:
            data.insert(pos, value)
        elif kind == 2:
            del data[pos:]  # truncate
        else:
            data[pos : pos + 1] = b"\xfc\xff\xff" if value & 1 else b"\xfe" + b"\xff" * 8
    return bytes(data)


EDITS = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6
)
PAYLOADS = st.one_of(
    st.binary(max_size=400),
    st.builds(_mutate, st.sampled_from(SEEDS), EDITS),
)


def only_protocol_errors(parse: Callable[[], object]) -> None:
    with contextlib.suppress(ProtocolError):
        parse()


PARSERS: list[tuple[str, Callable[[bytes, int], object]]] = [
    ("handshake_response", lambda p, c: parse_handshake_response(p)),
    ("change_user", parse_change_user),
    ("greeting", lambda p, c: parse_handshake_v10(p)),
    ("auth_switch", lambda p, c: parse_auth_switch_request(p)),
    ("ok", parse_ok),
    ("err", lambda p, c: parse_err(p)),
    ("eof", lambda p, c: parse_eof(p)),
    ("text_row", lambda p, c: parse_text_row(p, 1 + c % 5)),
    ("prepare_ok", lambda p, c: parse_prepare_ok(p)),
    ("session_state", lambda p, c: parse_session_state(p)),
]


@pytest.mark.parametrize(("name", "parse"), PARSERS, ids=[n for n, _ in PARSERS])
def test_payload_parsers(name: str, parse: Callable[[bytes, int], object]) -> None:
    @FUZZ
    @given(payload=PAYLOADS, caps=CAPS)
    def run(payload: bytes, caps: int) -> None:
        only_protocol_errors(lambda: parse(payload, caps))

    run()


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=2000),
        st.builds(
            lambda seeds, edits: _mutate(b"".join(build_packet(i, s) for i, s in seeds), edits),
            st.lists(st.tuples(st.integers(0, 255), st.sampled_from(SEEDS)), max_size=4),
            EDITS,
        ),
    ),
    cuts=st.lists(st.integers(1, 64), max_size=10),
    limit=st.sampled_from([16, 1024, MAX_HANDSHAKE_PAYLOAD]),
)
def test_packet_reader(data: bytes, cuts: list[int], limit: int) -> None:
    reader = PacketReader(max_payload=limit)
    pos = 0
    pieces = []
    for cut in cuts:
        pieces.append(data[pos : pos + cut])
        pos += cut
    pieces.append(data[pos:])
    try:
        for piece in pieces:
            reader.feed(piece)
            while (packet := reader.read()) is not None:
                assert len(packet.payload) <= limit
    except ProtocolError:
        pass
    assert reader.buffered <= len(data)


def test_packet_reader_refuses_on_the_header() -> None:
    """An announced payload over the limit fails before any of it is buffered."""
    reader = PacketReader(max_payload=MAX_HANDSHAKE_PAYLOAD)
    reader.feed(struct.pack("<I", 0xFFFFFF | 1 << 24))
    with pytest.raises(PacketTooLarge):
        reader.read()


RESPONSE_COMMANDS = st.sampled_from(
    [Command.COM_QUERY, Command.COM_STMT_PREPARE, Command.COM_STMT_EXECUTE, Command.COM_PING]
)


@FUZZ
@given(
    command=RESPONSE_COMMANDS,
    caps=CAPS,
    packets=st.lists(PAYLOADS, max_size=8),
    edits=EDITS,
    cut=st.integers(1, 300),
)
def test_response_scanner(
    command: int, caps: int, packets: list[bytes], edits: list[tuple[int, int, int]], cut: int
) -> None:
    stream = _mutate(b"".join(build_packet(i + 1, p) for i, p in enumerate(packets)), edits)
    scanner = ResponseScanner(command, caps)
    try:
        for pos in range(0, len(stream), cut):
            chunk = stream[pos : pos + cut]
            used = scanner.feed(chunk)
            assert 0 <= used <= len(chunk)
            if scanner.done:
                break
    except ProtocolError:
        pass


@FUZZ
@given(packets=st.lists(st.tuples(PAYLOADS, st.integers(0, 255)), max_size=5))
def test_server_auth_state_machine(packets: list[tuple[bytes, int]]) -> None:
    """What a client sends before login reaches ServerAuth.feed: garbage is refused, never
    an exception other than ProtocolError."""
    auth = ServerAuth(lambda name: "pw" if name == "app" else None, connection_id=1)
    action = auth.start()
    try:
        for payload, seq in packets:
            if isinstance(action, (AuthDone, AuthFailed)):
                break  # the session stops feeding here
            action = auth.feed(payload, seq)
    except ProtocolError:
        pass
