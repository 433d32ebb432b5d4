"""Connection-phase packets: greeting, handshake response, SSL request, auth switch, change user."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from proxy.protocol.constants import (
    DEFAULT_COLLATION,
    AuthPlugin,
    Capability,
    Command,
    PacketHeader,
    ServerStatus,
)
from proxy.protocol.packets import (
    Buffer,
    MalformedPacket,
    decode_text,
    encode_lenenc_bytes,
    encode_nul_bytes,
    encode_text,
    read_lenenc_bytes,
    read_lenenc_int,
    read_nul_bytes,
    read_u16,
    read_u32,
)

_AUTH_MORE_DATA_HEADER: Final = int(PacketHeader.AUTH_MORE_DATA)
_AUTH_SWITCH_HEADER: Final = int(PacketHeader.AUTH_SWITCH)

# Fixed head shared by HandshakeResponse41 and SSLRequest: caps, max packet, charset, filler.
_RESPONSE_HEAD = struct.Struct("<IIB19sI")  # 19 filler bytes + 4 (MariaDB extended caps)
SSL_REQUEST_LENGTH: Final = _RESPONSE_HEAD.size  # 32
_GREETING_MIDDLE = struct.Struct("<BHH")  # charset, status, upper capabilities
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")

DEFAULT_MAX_PACKET_SIZE: Final = 1 << 24

# Largest packet a client may send before it has logged in. The biggest legitimate one is a
# handshake response with MySQL's maximum of 64 KiB of connection attributes (the server
# refuses more) plus the user name, auth data, schema and plugin name; everything else
# (SSLRequest, auth switch / RSA replies) is smaller.
MAX_HANDSHAKE_PAYLOAD: Final = 72 * 1024
_FILLER_19 = bytes(19)

_SECURE = Capability.CLIENT_SECURE_CONNECTION
_PLUGIN = Capability.CLIENT_PLUGIN_AUTH
_LENENC_DATA = Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
_ATTRS = Capability.CLIENT_CONNECT_ATTRS
_WITH_DB = Capability.CLIENT_CONNECT_WITH_DB
# MariaDB servers/clients clear this bit ("CLIENT_MYSQL") to say the reserved bytes
# carry MariaDB's extended capabilities.
_CLIENT_MYSQL = Capability.CLIENT_LONG_PASSWORD


def _parse_attrs(data: bytes, pos: int) -> tuple[dict[str, str], int]:
    total, pos = read_lenenc_int(data, pos)
    end = pos + total
    if end > len(data):
        raise MalformedPacket("connection attributes overrun the packet")
    attrs: dict[str, str] = {}
    while pos < end:
        key, pos = read_lenenc_bytes(data, pos)
        value, pos = read_lenenc_bytes(data, pos)
        attrs[decode_text(key)] = decode_text(value)
    if pos != end:
        raise MalformedPacket("connection attributes length mismatch")
    return attrs, end


def _encode_attrs(attrs: Mapping[str, str]) -> bytes:
    body = b"".join(
        encode_lenenc_bytes(encode_text(k)) + encode_lenenc_bytes(encode_text(v))
        for k, v in attrs.items()
    )
    return encode_lenenc_bytes(body)


def _read_len1_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    """An auth response prefixed by a one-byte length (CLIENT_SECURE_CONNECTION)."""
    if pos >= len(data):
        raise MalformedPacket("missing auth response length")
    end = pos + 1 + data[pos]
    if end > len(data):
        raise MalformedPacket("truncated auth response")
    return data[pos + 1 : end], end


def _read_trailing_nul_str(data: bytes, pos: int) -> tuple[str, int]:
    # Some clients and old servers omit the final NUL of the last string.
    end = data.find(b"\0", pos)
    if end < 0:
        return decode_text(data[pos:]), len(data)
    return decode_text(data[pos:end]), end + 1


# --------------------------------------------------------------------------- greeting


@dataclass(frozen=True, slots=True)
class HandshakeV10:
    """Initial handshake packet sent by the server (protocol version 10)."""

    server_version: str
    connection_id: int
    auth_plugin_data: bytes  # the scramble, without the trailing NUL
    capabilities: int
    charset: int = DEFAULT_COLLATION
    status: int = ServerStatus.AUTOCOMMIT
    auth_plugin_name: str = AuthPlugin.CACHING_SHA2_PASSWORD
    mariadb_capabilities: int = 0
    protocol_version: int = 10

    @property
    def is_mariadb(self) -> bool:
        """The server identifies as MariaDB."""
        return "MariaDB" in self.server_version or not self.capabilities & _CLIENT_MYSQL


def parse_handshake_v10(payload: Buffer) -> HandshakeV10:
    """Parse the server greeting (check for an ERR packet first: servers send one instead)."""
    data = bytes(payload)
    if not data or data[0] != 10:
        raise MalformedPacket("not a protocol-10 handshake")
    version, pos = read_nul_bytes(data, 1)
    conn_id = read_u32(data, pos)
    pos += 4
    if pos + 11 > len(data):
        raise MalformedPacket("truncated handshake")
    part1 = data[pos : pos + 8]
    pos += 9  # 8 bytes of scramble and a filler byte
    caps = read_u16(data, pos)
    pos += 2
    charset = 0
    status = 0
    mariadb_caps = 0
    part2 = b""
    plugin = ""
    if pos < len(data):
        if pos + 16 > len(data):
            raise MalformedPacket("truncated handshake")
        charset, status, caps_hi = _GREETING_MIDDLE.unpack_from(data, pos)
        caps |= caps_hi << 16
        auth_len = data[pos + 5]
        reserved = pos + 6
        pos = reserved + 10
        if not caps & _CLIENT_MYSQL:
            mariadb_caps = read_u32(data, reserved + 6)
        if caps & _SECURE:
            size = max(13, auth_len - 8)
            part2 = data[pos : pos + size]
            pos += len(part2)
            if part2.endswith(b"\0"):
                part2 = part2[:-1]
        if caps & _PLUGIN:
            plugin, pos = _read_trailing_nul_str(data, pos)
    return HandshakeV10(
        server_version=decode_text(version),
        connection_id=conn_id,
        auth_plugin_data=part1 + part2,
        capabilities=caps,
        charset=charset,
        status=status,
        auth_plugin_name=plugin,
        mariadb_capabilities=mariadb_caps,
        protocol_version=data[0],
    )


def encode_handshake_v10(hs: HandshakeV10) -> bytes:
    """Server greeting payload."""
    scramble = hs.auth_plugin_data
    if len(scramble) < 8:
        raise ValueError("auth plugin data must be at least 8 bytes")
    caps = hs.capabilities
    part2 = (scramble[8:] + b"\0").ljust(13, b"\0")
    reserved = bytes(6) + _U32.pack(hs.mariadb_capabilities)
    parts = [
        bytes((hs.protocol_version,)),
        encode_nul_bytes(encode_text(hs.server_version)),
        _U32.pack(hs.connection_id),
        scramble[:8],
        b"\0",
        _U16.pack(caps & 0xFFFF),
        _GREETING_MIDDLE.pack(hs.charset & 0xFF, hs.status, caps >> 16 & 0xFFFF),
        bytes((len(scramble) + 1 if caps & _PLUGIN else 0,)),
        reserved,
    ]
    if caps & _SECURE:
        parts.append(part2)
    if caps & _PLUGIN:
        parts.append(encode_nul_bytes(encode_text(hs.auth_plugin_name)))
    return b"".join(parts)


# --------------------------------------------------------------------------- client response


@dataclass(frozen=True, slots=True)
class HandshakeResponse41:
    """The client's answer to the greeting."""

    capabilities: int
    username: str
    auth_response: bytes = b""
    database: str | None = None
    auth_plugin_name: str | None = None
    connect_attrs: dict[str, str] = field(default_factory=dict)
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    charset: int = DEFAULT_COLLATION
    mariadb_capabilities: int = 0


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """The 32-byte short handshake response asking to switch to TLS."""

    capabilities: int
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    charset: int = DEFAULT_COLLATION
    mariadb_capabilities: int = 0


def is_ssl_request(payload: Buffer) -> bool:
    """The payload is an SSLRequest rather than a full handshake response."""
    return len(payload) == SSL_REQUEST_LENGTH and bool(read_u32(payload, 0) & Capability.CLIENT_SSL)


def _parse_head(data: bytes) -> tuple[int, int, int, int]:
    if len(data) < SSL_REQUEST_LENGTH:
        raise MalformedPacket("handshake response too short")
    caps, max_packet, charset, _, ext = _RESPONSE_HEAD.unpack_from(data, 0)
    if not caps & Capability.CLIENT_PROTOCOL_41:
        raise MalformedPacket("pre-4.1 handshake responses are not supported")
    return caps, max_packet, charset, 0 if caps & _CLIENT_MYSQL else ext


def _encode_head(caps: int, max_packet: int, charset: int, mariadb_caps: int) -> bytes:
    if mariadb_caps:
        caps &= ~_CLIENT_MYSQL  # otherwise the peer would not look at the extended caps
    return _RESPONSE_HEAD.pack(caps, max_packet, charset & 0xFF, _FILLER_19, mariadb_caps)


def encode_ssl_request(req: SSLRequest) -> bytes:
    """SSLRequest payload (CLIENT_SSL is always set)."""
    caps = req.capabilities | Capability.CLIENT_SSL
    return _encode_head(caps, req.max_packet_size, req.charset, req.mariadb_capabilities)


def parse_handshake_response(payload: Buffer) -> HandshakeResponse41:
    """Parse HandshakeResponse41 (the caller must rule out an SSLRequest first)."""
    data = bytes(payload)
    caps, max_packet, charset, mariadb_caps = _parse_head(data)
    username, pos = read_nul_bytes(data, SSL_REQUEST_LENGTH)
    if caps & _LENENC_DATA:
        auth, pos = read_lenenc_bytes(data, pos)
    elif caps & _SECURE:
        auth, pos = _read_len1_bytes(data, pos)
    else:
        auth, pos = read_nul_bytes(data, pos)
    database: str | None = None
    if caps & _WITH_DB and pos < len(data):
        database, pos = _read_trailing_nul_str(data, pos)
    plugin: str | None = None
    if caps & _PLUGIN and pos < len(data):
        plugin, pos = _read_trailing_nul_str(data, pos)
    attrs: dict[str, str] = {}
    if caps & _ATTRS and pos < len(data):
        attrs, pos = _parse_attrs(data, pos)
    return HandshakeResponse41(
        capabilities=caps,
        username=decode_text(username),
        auth_response=auth,
        database=database,
        auth_plugin_name=plugin,
        connect_attrs=attrs,
        max_packet_size=max_packet,
        charset=charset,
        mariadb_capabilities=mariadb_caps,
    )


def encode_handshake_response(resp: HandshakeResponse41) -> bytes:
    """HandshakeResponse41 payload; optional fields are written as the flags say."""
    caps = resp.capabilities
    parts = [
        _encode_head(caps, resp.max_packet_size, resp.charset, resp.mariadb_capabilities),
        encode_nul_bytes(encode_text(resp.username)),
    ]
    auth = resp.auth_response
    if caps & _LENENC_DATA:
        parts.append(encode_lenenc_bytes(auth))
    elif caps & _SECURE:
        if len(auth) > 0xFF:
            raise ValueError("auth response longer than 255 bytes needs LENENC_CLIENT_DATA")
        parts.append(bytes((len(auth),)) + auth)
    else:
        parts.append(encode_nul_bytes(auth))
    if caps & _WITH_DB:
        parts.append(encode_nul_bytes(encode_text(resp.database or "")))
    if caps & _PLUGIN:
        parts.append(encode_nul_bytes(encode_text(resp.auth_plugin_name or "")))
    if caps & _ATTRS:
        parts.append(_encode_attrs(resp.connect_attrs))
    return b"".join(parts)


# --------------------------------------------------------------------------- auth exchange


@dataclass(frozen=True, slots=True)
class AuthSwitchRequest:
    """Server asks the client to authenticate with another plugin."""

    plugin_name: str
    plugin_data: bytes  # for the scramble-based plugins: 20-byte scramble + NUL


def parse_auth_switch_request(payload: Buffer) -> AuthSwitchRequest:
    """Parse AuthSwitchRequest (a lone 0xFE is the old-password switch of 4.1 servers)."""
    data = bytes(payload)
    if not data or data[0] != _AUTH_SWITCH_HEADER:
        raise MalformedPacket("not an AuthSwitchRequest")
    if len(data) == 1:
        return AuthSwitchRequest("mysql_old_password", b"")
    name, pos = _read_trailing_nul_str(data, 1)
    return AuthSwitchRequest(name, data[pos:])


def encode_auth_switch_request(req: AuthSwitchRequest) -> bytes:
    """AuthSwitchRequest payload."""
    return b"\xfe" + encode_nul_bytes(encode_text(req.plugin_name)) + req.plugin_data


def encode_auth_more_data(data: bytes) -> bytes:
    """AuthMoreData payload."""
    return b"\x01" + data


# --------------------------------------------------------------------------- COM_CHANGE_USER


@dataclass(frozen=True, slots=True)
class ChangeUser:
    """COM_CHANGE_USER request."""

    username: str
    auth_response: bytes = b""
    database: str = ""
    charset: int = DEFAULT_COLLATION
    auth_plugin_name: str | None = None
    connect_attrs: dict[str, str] = field(default_factory=dict)


def parse_change_user(payload: Buffer, caps: int) -> ChangeUser:
    """Parse a COM_CHANGE_USER payload sent on a connection that negotiated *caps*."""
    data = bytes(payload)
    if not data or data[0] != Command.COM_CHANGE_USER:
        raise MalformedPacket("not a COM_CHANGE_USER packet")
    username, pos = read_nul_bytes(data, 1)
    if caps & _SECURE:
        # A one-byte length even when LENENC_CLIENT_DATA was negotiated.
        auth, pos = _read_len1_bytes(data, pos)
    else:
        auth, pos = read_nul_bytes(data, pos)
    database, pos = _read_trailing_nul_str(data, pos)
    charset: int = DEFAULT_COLLATION
    plugin: str | None = None
    attrs: dict[str, str] = {}
    if pos + 2 <= len(data):
        charset = read_u16(data, pos)
        pos += 2
        if caps & _PLUGIN and pos < len(data):
            plugin, pos = _read_trailing_nul_str(data, pos)
        if caps & _ATTRS and pos < len(data):
            attrs, pos = _parse_attrs(data, pos)
    return ChangeUser(decode_text(username), auth, database, charset, plugin, attrs)


def encode_change_user(req: ChangeUser, caps: int) -> bytes:
    """COM_CHANGE_USER payload for a connection that negotiated *caps*."""
    parts = [bytes((Command.COM_CHANGE_USER,)), encode_nul_bytes(encode_text(req.username))]
    if caps & _SECURE:
        if len(req.auth_response) > 0xFF:
            raise ValueError("COM_CHANGE_USER auth response longer than 255 bytes")
        parts.append(bytes((len(req.auth_response),)) + req.auth_response)
    else:
        parts.append(encode_nul_bytes(req.auth_response))
    parts.append(encode_nul_bytes(encode_text(req.database)))
    parts.append(_U16.pack(req.charset))
    if caps & _PLUGIN:
        parts.append(encode_nul_bytes(encode_text(req.auth_plugin_name or "")))
    if caps & _ATTRS:
        parts.append(_encode_attrs(req.connect_attrs))
    return b"".join(parts)
