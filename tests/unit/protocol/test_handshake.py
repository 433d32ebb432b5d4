"""Tests of the connection-phase packets."""

from __future__ import annotations

import hashlib
import struct

import pytest

from proxy.protocol.constants import (
    AuthPlugin,
    Capability,
    MariaDBCapability,
    ServerStatus,
)
from proxy.protocol.handshake import (
    AuthSwitchRequest,
    ChangeUser,
    HandshakeResponse41,
    HandshakeV10,
    SSLRequest,
    encode_auth_more_data,
    encode_auth_switch_request,
    encode_change_user,
    encode_handshake_response,
    encode_handshake_v10,
    encode_ssl_request,
    is_ssl_request,
    parse_auth_switch_request,
    parse_change_user,
    parse_handshake_response,
    parse_handshake_v10,
)
from proxy.protocol.packets import MalformedPacket, PacketReader

# Greeting of a MariaDB 10.11 server (Debian package), modelled on a capture.
MARIADB_10_11_GREETING = bytes.fromhex(
    "71 00 00 00"  # payload length 113, seq 0
    "0a"  # protocol version 10
    # "5.5.5-10.11.6-MariaDB-1:10.11.6+maria~ubu2204\0"
    "35 2e 35 2e 35 2d 31 30 2e 31 31 2e 36 2d 4d 61 72 69 61 44 42 2d 31 3a 31 30"
    "2e 31 31 2e 36 2b 6d 61 72 69 61 7e 75 62 75 32 32 30 34 00"
    "0c 00 00 00"  # connection id 12
    "2f 5c 3e 4a 71 28 6b 55"  # scramble, part 1
    "00"  # filler
    "fe f7"  # capabilities, low half (CLIENT_MYSQL bit clear: MariaDB)
    "2d"  # utf8mb4_general_ci
    "02 00"  # SERVER_STATUS_AUTOCOMMIT
    "ff 81"  # capabilities, high half
    "15"  # auth plugin data length 21
    "00 00 00 00 00 00"  # filler
    "1d 00 00 00"  # MariaDB extended capabilities
    "4d 3a 60 7b 21 5e 39 6c 44 26 59 70 00"  # scramble, part 2 + NUL
    # "mysql_native_password\0"
    "6d 79 73 71 6c 5f 6e 61 74 69 76 65 5f 70 61 73 73 77 6f 72 64 00"
)
MARIADB_SCRAMBLE = bytes.fromhex("2f5c3e4a71286b55 4d3a607b215e396c44265970")

# HandshakeResponse41 of the mysql CLI (MariaDB client) answering that greeting as
# user 'app', password 'secret', database 'shop'.
MYSQL_CLI_RESPONSE = bytes.fromhex(
    "dd 00 00 01"  # payload length 221, seq 1
    "8c a6 bf 00"  # capabilities
    "00 00 00 01"  # max packet 16 MiB
    "2d"  # utf8mb4_general_ci
    "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"  # filler
    "05 00 00 00"  # MariaDB extended capabilities: progress, bulk operations
    "61 70 70 00"  # "app\0"
    "14 a7 ff f9 c8 fc ab 2e af 9d 3d 30 8d 2b 95 af d5 bd 9d 40 01"  # lenenc auth response
    "73 68 6f 70 00"  # "shop\0"
    "6d 79 73 71 6c 5f 6e 61 74 69 76 65 5f 70 61 73 73 77 6f 72 64 00"
    "88"  # attributes, 136 bytes
    "0c 5f 63 6c 69 65 6e 74 5f 6e 61 6d 65 0a 6c 69 62 6d 61 72 69 61 64 62"
    "0f 5f 63 6c 69 65 6e 74 5f 76 65 72 73 69 6f 6e 05 33 2e 33 2e 38"
    "03 5f 6f 73 10 64 65 62 69 61 6e 2d 6c 69 6e 75 78 2d 67 6e 75"
    "04 5f 70 69 64 04 34 32 34 32"
    "09 5f 70 6c 61 74 66 6f 72 6d 06 78 38 36 5f 36 34"
    "0c 5f 73 65 72 76 65 72 5f 68 6f 73 74 09 31 32 37 2e 30 2e 30 2e 31"
    "0c 70 72 6f 67 72 61 6d 5f 6e 61 6d 65 05 6d 79 73 71 6c"
)


def _payload(wire: bytes) -> bytes:
    reader = PacketReader()
    reader.feed(wire)
    packet = reader.read()
    assert packet is not None and reader.read() is None
    return packet.payload


def test_parse_mariadb_greeting() -> None:
    hs = parse_handshake_v10(_payload(MARIADB_10_11_GREETING))
    assert hs.protocol_version == 10
    assert hs.server_version == "5.5.5-10.11.6-MariaDB-1:10.11.6+maria~ubu2204"
    assert hs.connection_id == 12
    assert hs.auth_plugin_data == MARIADB_SCRAMBLE
    assert hs.capabilities == 0x81FFF7FE
    assert hs.capabilities & Capability.CLIENT_PLUGIN_AUTH
    assert hs.capabilities & Capability.CLIENT_DEPRECATE_EOF
    assert not hs.capabilities & Capability.CLIENT_SSL
    assert hs.charset == 45
    assert hs.status == ServerStatus.AUTOCOMMIT
    assert hs.auth_plugin_name == AuthPlugin.MYSQL_NATIVE_PASSWORD
    assert hs.mariadb_capabilities == 0x1D
    assert hs.mariadb_capabilities & MariaDBCapability.MARIADB_CLIENT_CACHE_METADATA
    assert hs.is_mariadb
    # Byte-exact round trip.
    assert encode_handshake_v10(hs) == _payload(MARIADB_10_11_GREETING)


def test_greeting_round_trip_mysql8() -> None:
    hs = HandshakeV10(
        server_version="8.0.36",
        connection_id=0xDEADBEEF,
        auth_plugin_data=bytes(range(1, 21)),
        capabilities=0xDFFFFFFF,
        charset=255,
        status=ServerStatus.AUTOCOMMIT,
        auth_plugin_name=AuthPlugin.CACHING_SHA2_PASSWORD,
    )
    raw = encode_handshake_v10(hs)
    assert parse_handshake_v10(raw) == hs
    assert not parse_handshake_v10(raw).is_mariadb


def test_greeting_without_plugin_auth_and_missing_final_nul() -> None:
    caps = Capability.CLIENT_PROTOCOL_41 | Capability.CLIENT_SECURE_CONNECTION
    hs = HandshakeV10("5.1.73", 1, b"abcdefghijklmnopqrst", caps, auth_plugin_name="")
    raw = encode_handshake_v10(hs)
    assert raw[-13:] == b"ijklmnopqrst\0"
    assert parse_handshake_v10(raw) == hs
    # MySQL 5.5.x forgot the NUL after the plugin name.
    full = HandshakeV10(
        "5.5.8",
        1,
        b"abcdefghijklmnopqrst",
        caps | Capability.CLIENT_PLUGIN_AUTH | Capability.CLIENT_LONG_PASSWORD,
        auth_plugin_name="mysql_native_password",
    )
    assert parse_handshake_v10(encode_handshake_v10(full)[:-1]) == full
    with pytest.raises(MalformedPacket):
        parse_handshake_v10(b"\x09abc")
    with pytest.raises(MalformedPacket):
        parse_handshake_v10(encode_handshake_v10(full)[:30])


def test_parse_mysql_cli_response() -> None:
    payload = _payload(MYSQL_CLI_RESPONSE)
    assert not is_ssl_request(payload)
    resp = parse_handshake_response(payload)
    assert resp.capabilities == 0x00BFA68C
    assert resp.max_packet_size == 1 << 24
    assert resp.charset == 45
    assert resp.mariadb_capabilities == 5
    assert resp.username == "app"
    assert resp.database == "shop"
    assert resp.auth_plugin_name == "mysql_native_password"
    assert resp.connect_attrs == {
        "_client_name": "libmariadb",
        "_client_version": "3.3.8",
        "_os": "debian-linux-gnu",
        "_pid": "4242",
        "_platform": "x86_64",
        "_server_host": "127.0.0.1",
        "program_name": "mysql",
    }
    # The auth response is the native scramble of 'secret' with the greeting's challenge.
    stage1 = hashlib.sha1(b"secret").digest()
    mask = hashlib.sha1(MARIADB_SCRAMBLE + hashlib.sha1(stage1).digest()).digest()
    assert resp.auth_response == bytes(a ^ b for a, b in zip(stage1, mask, strict=True))
    assert encode_handshake_response(resp) == payload


@pytest.mark.parametrize(
    "caps",
    [
        Capability.CLIENT_PROTOCOL_41
        | Capability.CLIENT_SECURE_CONNECTION
        | Capability.CLIENT_PLUGIN_AUTH
        | Capability.CLIENT_LONG_PASSWORD,
        Capability.CLIENT_PROTOCOL_41 | Capability.CLIENT_LONG_PASSWORD,
        Capability.CLIENT_PROTOCOL_41
        | Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | Capability.CLIENT_PLUGIN_AUTH
        | Capability.CLIENT_CONNECT_WITH_DB
        | Capability.CLIENT_CONNECT_ATTRS
        | Capability.CLIENT_LONG_PASSWORD,
    ],
)
def test_handshake_response_round_trip(caps: int) -> None:
    resp = HandshakeResponse41(
        capabilities=caps,
        username="bob",
        auth_response=b"\x01\x02\x03" * 10
        if caps & Capability.CLIENT_SECURE_CONNECTION
        or caps & Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        else b"plain",
        database="db" if caps & Capability.CLIENT_CONNECT_WITH_DB else None,
        auth_plugin_name="caching_sha2_password" if caps & Capability.CLIENT_PLUGIN_AUTH else None,
        connect_attrs={"k": "v"} if caps & Capability.CLIENT_CONNECT_ATTRS else {},
        charset=255,
    )
    assert parse_handshake_response(encode_handshake_response(resp)) == resp


def test_ssl_request() -> None:
    req = SSLRequest(Capability.CLIENT_PROTOCOL_41 | Capability.CLIENT_LONG_PASSWORD, 1 << 24, 45)
    raw = encode_ssl_request(req)
    assert len(raw) == 32 and is_ssl_request(raw)
    caps, max_packet, charset = struct.unpack_from("<IIB", raw)
    assert caps == req.capabilities | Capability.CLIENT_SSL
    assert (max_packet, charset) == (1 << 24, 45)
    assert raw[9:] == bytes(23)  # filler (no MariaDB extended capabilities)
    assert not is_ssl_request(raw[:31])
    # 32 bytes without CLIENT_SSL is not an SSLRequest.
    no_ssl = bytearray(raw)
    no_ssl[1] &= ~0x08
    assert not is_ssl_request(no_ssl)
    with pytest.raises(MalformedPacket):
        parse_handshake_response(raw)  # no user name after the 32-byte head


def test_auth_switch_and_more_data() -> None:
    raw = bytes.fromhex("fe") + b"mysql_native_password\0" + MARIADB_SCRAMBLE + b"\0"
    req = parse_auth_switch_request(raw)
    assert req == AuthSwitchRequest("mysql_native_password", MARIADB_SCRAMBLE + b"\0")
    assert encode_auth_switch_request(req) == raw
    assert parse_auth_switch_request(b"\xfe") == AuthSwitchRequest("mysql_old_password", b"")
    with pytest.raises(MalformedPacket):
        parse_auth_switch_request(b"\x01abc")

    assert encode_auth_more_data(b"\x03") == b"\x01\x03"


@pytest.mark.parametrize(
    "caps",
    [
        Capability.CLIENT_PROTOCOL_41
        | Capability.CLIENT_SECURE_CONNECTION
        | Capability.CLIENT_PLUGIN_AUTH
        | Capability.CLIENT_CONNECT_ATTRS,
        Capability.CLIENT_PROTOCOL_41 | Capability.CLIENT_SECURE_CONNECTION,
    ],
)
def test_change_user_round_trip(caps: int) -> None:
    req = ChangeUser(
        username="carol",
        auth_response=bytes(range(20)),
        database="shop",
        charset=255,
        auth_plugin_name="mysql_native_password" if caps & Capability.CLIENT_PLUGIN_AUTH else None,
        connect_attrs={"_pid": "1"} if caps & Capability.CLIENT_CONNECT_ATTRS else {},
    )
    raw = encode_change_user(req, caps)
    assert raw[0] == 0x11
    assert parse_change_user(raw, caps) == req


def test_change_user_minimal_legacy() -> None:
    # Old clients stop after the database name.
    raw = b"\x11dave\0\x00shop\0"
    req = parse_change_user(raw, Capability.CLIENT_SECURE_CONNECTION)
    assert (req.username, req.auth_response, req.database) == ("dave", b"", "shop")
    with pytest.raises(MalformedPacket):
        parse_change_user(b"\x03select", 0)
