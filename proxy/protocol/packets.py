"""Packet framing, length-encoded values and the generic OK/ERR/EOF/result-set packets."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from mypy_extensions import i64

from proxy.protocol.constants import (
    DEFAULT_COLLATION,
    MAX_PACKET_PAYLOAD,
    Capability,
    ColumnType,
    LenencPrefix,
    PacketHeader,
    ServerStatus,
    SessionTrackType,
    sqlstate_for,
)

_OK_HEADER: Final = int(PacketHeader.OK)
_EOF_HEADER: Final = int(PacketHeader.EOF)
_ERR_HEADER: Final = int(PacketHeader.ERR)
_LENENC_NULL: Final = int(LenencPrefix.NULL)
_LENENC_2: Final = int(LenencPrefix.INT2)
_LENENC_3: Final = int(LenencPrefix.INT3)
_LENENC_8: Final = int(LenencPrefix.INT8)

Buffer: TypeAlias = bytes | bytearray | memoryview

# Largest max_allowed_packet MySQL/MariaDB accept; a sane default ceiling for one payload.
DEFAULT_MAX_PAYLOAD: Final = 1 << 30

# Offset of the 4-byte statement id inside COM_STMT_* payloads and the prepare-OK payload.
STMT_ID_OFFSET: Final = 1

# MariaDB sends progress reports as ERR packets with this code; they never end a response.
PROGRESS_REPORT_CODE: Final = 0xFFFF

_HEADER: Final = struct.Struct("<I")  # 3-byte length and 1-byte sequence id read as one integer
_U16: Final = struct.Struct("<H")
_U64: Final = struct.Struct("<Q")
_STATUS_WARNINGS: Final = struct.Struct("<HH")
_EOF: Final = struct.Struct("<BHH")
_ERR_HEAD: Final = struct.Struct("<BH")
_COLDEF_FIXED: Final = struct.Struct("<HIBHB")  # charset, length, type, flags, decimals

_P41: Final = Capability.CLIENT_PROTOCOL_41
_TRANSACTIONS: Final = Capability.CLIENT_TRANSACTIONS
_SESSION_TRACK: Final = Capability.CLIENT_SESSION_TRACK
_DEPRECATE_EOF: Final = Capability.CLIENT_DEPRECATE_EOF


class ProtocolError(Exception):
    """The peer sent bytes that do not follow the MySQL protocol."""


class MalformedPacket(ProtocolError):
    """A payload is truncated or has an impossible field."""


class PacketTooLarge(ProtocolError):
    """A logical packet exceeds the configured maximum payload size."""

    def __init__(self, message: str, seq: int = 0) -> None:
        super().__init__(message)
        self.seq = seq  # sequence id of the fragment that went over: the answer is seq + 1


class PacketOutOfOrder(ProtocolError):
    """A packet arrived with an unexpected sequence id."""


# --------------------------------------------------------------------------- text helpers


def decode_text(data: Buffer) -> str:
    """Bytes to str without ever failing; surrogateescape keeps the round trip lossless."""
    return bytes(data).decode("utf-8", "surrogateescape")


def encode_text(text: str) -> bytes:
    """Inverse of decode_text."""
    return text.encode("utf-8", "surrogateescape")


# Control characters (C0, DEL, C1, Unicode line/paragraph separators), undecodable bytes kept
# as surrogates, and the backslash itself (so an escape in the input cannot pass as ours).
# The surrogate range is spelled with chr(): mypyc rejects surrogates in string literals.
_UNSAFE_FOR_LOG = re.compile(
    "[\x00-\x1f\x7f-\x9f\\\\\u2028\u2029" + chr(0xD800) + "-" + chr(0xDFFF) + "]"
)

# Client-supplied text in one log line is cut to this many characters.
LOG_TEXT_LIMIT: Final = 200


def _escape_for_log(m: re.Match[str]) -> str:
    ch = m.group()
    if ch == "\\":
        return "\\\\"
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def log_text(value: str | Buffer) -> str:
    """Client-supplied text made safe for one log line: control characters escaped (no forged
    lines, no terminal escapes) and cut to LOG_TEXT_LIMIT characters with the size left out."""
    text = value if isinstance(value, str) else decode_text(value)
    extra = len(text) - LOG_TEXT_LIMIT
    if extra > 0:
        text = text[:LOG_TEXT_LIMIT]
    text = _UNSAFE_FOR_LOG.sub(_escape_for_log, text)
    return f"{text}...[{extra} more characters]" if extra > 0 else text


# --------------------------------------------------------------------------- primitives


def read_lenenc_int_or_null(buf: Buffer, pos: int) -> tuple[int | None, int]:
    """Read a length-encoded integer at *pos*; the NULL marker 0xFB gives None."""
    try:
        first = buf[pos]
    except IndexError:
        raise MalformedPacket("truncated length-encoded integer") from None
    if first < _LENENC_NULL:
        return first, pos + 1
    if first == _LENENC_NULL:
        return None, pos + 1
    if first == _LENENC_2:
        size = 2
    elif first == _LENENC_3:
        size = 3
    elif first == _LENENC_8:
        size = 8
    else:
        raise MalformedPacket(f"invalid length-encoded integer prefix 0x{first:02X}")
    end = pos + 1 + size
    if end > len(buf):
        raise MalformedPacket("truncated length-encoded integer")
    return int.from_bytes(buf[pos + 1 : end], "little"), end


def read_lenenc_int(buf: Buffer, pos: int) -> tuple[int, int]:
    """Read a length-encoded integer at *pos*, returning (value, offset after it)."""
    value, end = read_lenenc_int_or_null(buf, pos)
    if value is None:
        raise MalformedPacket("unexpected NULL where an integer was expected")
    return value, end


def encode_lenenc_int(value: int) -> bytes:
    """Length-encoded integer (1, 3, 4 or 9 bytes)."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"{value} does not fit a length-encoded integer")
    if value < _LENENC_NULL:
        return bytes((value,))
    if value <= 0xFFFF:
        return b"\xfc" + _U16.pack(value)
    if value <= 0xFFFFFF:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + _U64.pack(value)


def read_lenenc_bytes_or_null(buf: Buffer, pos: int) -> tuple[bytes | None, int]:
    """Read a length-encoded string (None for the NULL marker)."""
    length, pos = read_lenenc_int_or_null(buf, pos)
    if length is None:
        return None, pos
    end = pos + length
    if end > len(buf):
        raise MalformedPacket("truncated length-encoded string")
    return bytes(buf[pos:end]), end


def read_lenenc_bytes(buf: Buffer, pos: int) -> tuple[bytes, int]:
    """Read a length-encoded string at *pos*, returning (bytes, offset after it)."""
    value, end = read_lenenc_bytes_or_null(buf, pos)
    if value is None:
        raise MalformedPacket("unexpected NULL where a string was expected")
    return value, end


def encode_lenenc_bytes(data: Buffer) -> bytes:
    """Length-encoded string."""
    return encode_lenenc_int(len(data)) + data


def read_nul_bytes(buf: Buffer, pos: int) -> tuple[bytes, int]:
    """Read a NUL-terminated string; returns the bytes without the NUL and the offset after it."""
    data = buf.tobytes() if isinstance(buf, memoryview) else buf
    end = data.find(b"\0", pos)
    if end < 0:
        raise MalformedPacket("missing NUL terminator")
    return bytes(data[pos:end]), end + 1


def encode_nul_bytes(data: bytes) -> bytes:
    """NUL-terminated string; the value itself must not contain NUL."""
    if b"\0" in data:
        raise ValueError("NUL-terminated string contains a NUL byte")
    return data + b"\0"


def read_u16(buf: Buffer, pos: int) -> int:
    """Little-endian 2-byte integer."""
    try:
        return int(_U16.unpack_from(buf, pos)[0])
    except struct.error:
        raise MalformedPacket("truncated 2-byte integer") from None


def read_u32(buf: Buffer, pos: int) -> int:
    """Little-endian 4-byte integer."""
    if pos < 0 or len(buf) < pos + 4:
        raise MalformedPacket("truncated 4-byte integer")
    # Byte by byte: no struct call and no exception frame (statement ids, per statement).
    return buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16 | buf[pos + 3] << 24


# --------------------------------------------------------------------------- framing


def packet_count(payload_len: int) -> int:
    """Number of wire packets (sequence ids) a payload of this length occupies."""
    # An exact multiple of 0xFFFFFF needs a trailing empty packet to mark the end.
    return payload_len // MAX_PACKET_PAYLOAD + 1


def next_seq(seq: int, payload_len: int) -> int:
    """Sequence id following a payload of this length sent starting at *seq*."""
    return (seq + packet_count(payload_len)) & 0xFF


def build_packet(seq: int, payload: Buffer) -> bytes:
    """Frame *payload* with headers, splitting it into 16 MiB fragments when needed."""
    size = len(payload)
    if size < MAX_PACKET_PAYLOAD:
        return _HEADER.pack(size | (seq & 0xFF) << 24) + payload
    view = memoryview(payload)
    parts: list[Buffer] = []
    pos = 0
    while True:
        chunk = view[pos : pos + MAX_PACKET_PAYLOAD]
        parts.append(_HEADER.pack(len(chunk) | (seq & 0xFF) << 24))
        parts.append(chunk)
        seq += 1
        pos += MAX_PACKET_PAYLOAD
        if len(chunk) < MAX_PACKET_PAYLOAD:
            return b"".join(parts)


class Packet:
    """One logical packet: its payload joined from all fragments."""

    # A plain class: mypyc compiles its __init__ (one per client command); a dataclass's is
    # generated at run time and interpreted (~1,400 instructions a packet).
    __slots__ = ("last_seq", "payload", "seq", "wire")

    def __init__(self, seq: int, payload: bytes, last_seq: int, wire: bytes | None = None) -> None:
        self.seq = seq
        self.payload = payload
        self.last_seq = last_seq  # sequence id of the last fragment (== seq unless split)
        # The packet's bytes as received (header included) when they were one whole received
        # chunk of one fragment: forwarded as they came, without framing the payload again.
        self.wire = wire


class PacketReader:
    """Reassembles logical packets from a byte stream fed in arbitrary pieces.

    The usual case, a chunk holding whole packets fed to an empty reader, is kept as the
    chunk itself and sliced (no copy into a buffer); anything else goes through a bytearray.
    """

    __slots__ = (
        "_buf",
        "_chunk",
        "_first_seq",
        "_last_seq",
        "_parts",
        "_pos",
        "_split_len",
        "max_payload",
    )

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        # Unread bytes: _chunk[_pos:] followed by _buf; one of the two is always empty.
        self._chunk = b""
        self._pos: i64 = 0
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._split_len: i64 = 0
        self._first_seq = 0
        self._last_seq = 0

    def feed(self, data: Buffer) -> None:
        """Append received bytes."""
        if not self._buf and self._pos == len(self._chunk) and isinstance(data, bytes):
            self._chunk = data
            self._pos = 0
            return
        self._spill()
        self._buf += data

    def _spill(self) -> None:
        """Move the unread rest of the kept chunk into the buffer."""
        if self._pos < len(self._chunk):
            self._buf += self._chunk[self._pos :]
        self._chunk = b""
        self._pos = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a packet."""
        return len(self._chunk) - self._pos + len(self._buf) + self._split_len

    @property
    def ready(self) -> bool:
        """Is the next fragment complete in the buffer (read() makes progress without more
        bytes)?"""
        if self._pos < len(self._chunk):
            data: Buffer = self._chunk
            pos = self._pos
        else:
            data = self._buf
            pos = 0
        if len(data) < pos + 4:
            return False
        length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
        return len(data) >= pos + 4 + length

    def take_buffered(self) -> bytes:
        """Remove and return the raw bytes not yet read as packets (e.g. the start of a TLS
        handshake that arrived right behind an SSLRequest)."""
        self._spill()
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def clear(self) -> None:
        """Drop everything received and not yet read (the peer is gone)."""
        self._chunk = b""
        self._pos = 0
        self._buf = bytearray()
        self._parts = []
        self._split_len = 0

    def read(self) -> Packet | None:
        """Next complete logical packet, or None until more bytes arrive."""
        chunk = self._chunk
        pos = self._pos
        size: i64 = len(chunk)
        if size - pos >= 4 and not self._parts:
            # Fast path: a whole single-fragment packet inside the kept chunk.
            length: i64 = chunk[pos] | chunk[pos + 1] << 8 | chunk[pos + 2] << 16
            end = pos + 4 + length
            if end <= size and length < MAX_PACKET_PAYLOAD and length <= self.max_payload:
                seq = chunk[pos + 3]
                if end == size:
                    self._chunk = b""
                    self._pos = 0
                    if pos == 0:
                        return Packet(seq, chunk[4:], seq, chunk)
                else:
                    self._pos = end
                return Packet(seq, chunk[pos + 4 : end], seq)
        if pos < size:
            self._spill()
        return self._read_buffered()

    def _read_buffered(self) -> Packet | None:
        buf = self._buf
        while len(buf) >= 4:
            length = buf[0] | buf[1] << 8 | buf[2] << 16
            seq = buf[3]
            in_split = bool(self._parts)
            if in_split and seq != (self._last_seq + 1) & 0xFF:
                raise PacketOutOfOrder(
                    f"fragment seq {seq} after {self._last_seq} inside a split payload"
                )
            if self._split_len + length > self.max_payload:
                raise PacketTooLarge(
                    f"payload of at least {self._split_len + length} bytes exceeds "
                    f"{self.max_payload}",
                    seq,
                )
            end = 4 + length
            if len(buf) < end:
                return None
            with memoryview(buf) as view:
                chunk = view[4:end].tobytes()
            del buf[:end]  # bytearray drops a prefix without moving the rest
            if not in_split:
                self._first_seq = seq
            self._last_seq = seq
            if length == MAX_PACKET_PAYLOAD:
                self._parts.append(chunk)
                self._split_len += length
                continue
            if in_split:
                self._parts.append(chunk)
                chunk = b"".join(self._parts)
                self._parts = []
                self._split_len = 0
            return Packet(self._first_seq, chunk, seq)
        return None

    def __iter__(self) -> Iterator[Packet]:
        while (packet := self.read()) is not None:
            yield packet


# --------------------------------------------------------------------------- commands


def encode_command(command: int, body: Buffer = b"") -> bytes:
    """Command payload: the command byte followed by its argument bytes."""
    return bytes((command,)) + body


def build_command(command: int, body: Buffer = b"") -> bytes:
    """Framed command packet (commands start a new exchange at seq 0)."""
    return build_packet(0, encode_command(command, body))


# --------------------------------------------------------------------------- OK / ERR / EOF


@dataclass(frozen=True, slots=True)
class SessionStateChange:
    """One entry of an OK packet's session-state block.

    For SYSTEM_VARIABLES *name* is the variable; for the other kinds only *value* is set
    (schema name, "1" for STATE_CHANGE, GTID set, transaction characteristics/state).
    Unknown kinds keep their raw data in *value*.
    """

    kind: int
    value: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class OkPacket:
    """OK packet (also the 0xFE-headed end-of-result marker under CLIENT_DEPRECATE_EOF)."""

    affected_rows: int = 0
    last_insert_id: int = 0
    status: int = ServerStatus.AUTOCOMMIT
    warnings: int = 0
    info: str = ""
    session_state: tuple[SessionStateChange, ...] = ()

    @property
    def system_variables(self) -> dict[str, str]:
        """Tracked system variables changed by the statement."""
        return {
            c.name: c.value
            for c in self.session_state
            if c.kind == SessionTrackType.SYSTEM_VARIABLES
        }

    @property
    def committed_gtid(self) -> str | None:
        """The GTID(s) the statement committed, as the server tracks them: MariaDB's
        last_gtid system variable (session_track_system_variables=...,last_gtid), or MySQL's
        SESSION_TRACK_GTIDS entry (session_track_gtids=OWN_GTID: a GTID set such as
        'uuid:23', several transactions' when one request committed more)."""
        for change in self.session_state:
            if change.value and (
                change.kind == SessionTrackType.GTIDS
                or (change.kind == SessionTrackType.SYSTEM_VARIABLES and change.name == "last_gtid")
            ):
                return change.value
        return None

    @property
    def schema(self) -> str | None:
        """New default schema, if the statement changed it."""
        for change in self.session_state:
            if change.kind == SessionTrackType.SCHEMA:
                return change.value
        return None


@dataclass(frozen=True, slots=True)
class ErrPacket:
    """ERR packet."""

    code: int
    message: str
    sqlstate: str = "HY000"


@dataclass(frozen=True, slots=True)
class EofPacket:
    """Classic EOF packet."""

    warnings: int = 0
    status: int = ServerStatus.AUTOCOMMIT


def _decode_session_entry(kind: int, data: bytes, out: list[SessionStateChange]) -> None:
    if kind == SessionTrackType.SYSTEM_VARIABLES:
        pos = 0
        while pos < len(data):  # tolerate several name/value pairs in one entry
            name, pos = read_lenenc_bytes(data, pos)
            value, pos = read_lenenc_bytes(data, pos)
            out.append(SessionStateChange(kind, decode_text(value), decode_text(name)))
    elif kind == SessionTrackType.GTIDS:
        # An encoding specification (a length-encoded int), then the data: spec 0, the only
        # one MySQL defines, is the GTID set as a length-encoded string. Another spec's
        # data is not understood: an empty value (the GTID counts as not reported).
        spec, pos = read_lenenc_int(data, 0)
        value = read_lenenc_bytes(data, pos)[0] if spec == 0 else b""
        out.append(SessionStateChange(kind, decode_text(value)))
    elif kind in (
        SessionTrackType.SCHEMA,
        SessionTrackType.STATE_CHANGE,
        SessionTrackType.TRANSACTION_CHARACTERISTICS,
        SessionTrackType.TRANSACTION_STATE,
    ):
        value, _ = read_lenenc_bytes(data, 0)
        out.append(SessionStateChange(kind, decode_text(value)))
    else:
        out.append(SessionStateChange(kind, decode_text(data)))


def parse_session_state(block: Buffer) -> tuple[SessionStateChange, ...]:
    """Decode the session-state-change block (without its outer length prefix)."""
    out: list[SessionStateChange] = []
    pos = 0
    while pos < len(block):
        kind = block[pos]
        data, pos = read_lenenc_bytes(block, pos + 1)
        _decode_session_entry(kind, data, out)
    return tuple(out)


def encode_session_state(changes: Iterable[SessionStateChange]) -> bytes:
    """Encode session-state entries (without the outer length prefix)."""
    parts: list[bytes] = []
    for change in changes:
        value = encode_text(change.value)
        if change.kind == SessionTrackType.SYSTEM_VARIABLES:
            data = encode_lenenc_bytes(encode_text(change.name)) + encode_lenenc_bytes(value)
        elif change.kind == SessionTrackType.GTIDS:
            data = b"\x00" + encode_lenenc_bytes(value)
        elif change.kind in (
            SessionTrackType.SCHEMA,
            SessionTrackType.STATE_CHANGE,
            SessionTrackType.TRANSACTION_CHARACTERISTICS,
            SessionTrackType.TRANSACTION_STATE,
        ):
            data = encode_lenenc_bytes(value)
        else:
            data = value
        parts.append(bytes((change.kind,)) + encode_lenenc_bytes(data))
    return b"".join(parts)


def parse_ok(payload: Buffer, caps: int) -> OkPacket:
    """Parse an OK packet (header 0x00, or 0xFE when it ends a result set)."""
    data = bytes(payload)
    if not data or data[0] not in (_OK_HEADER, _EOF_HEADER):
        raise MalformedPacket("not an OK packet")
    affected, pos = read_lenenc_int(data, 1)
    insert_id, pos = read_lenenc_int(data, pos)
    status = warnings = 0
    # Be lenient with short packets: old servers omit trailing fields.
    if caps & _P41:
        if pos + 4 <= len(data):
            status, warnings = _STATUS_WARNINGS.unpack_from(data, pos)
            pos += 4
    elif caps & _TRANSACTIONS and pos + 2 <= len(data):
        status = _U16.unpack_from(data, pos)[0]
        pos += 2
    info = b""
    changes: tuple[SessionStateChange, ...] = ()
    if caps & _SESSION_TRACK:
        if pos < len(data):
            info, pos = read_lenenc_bytes(data, pos)
            if status & ServerStatus.SESSION_STATE_CHANGED and pos < len(data):
                block, pos = read_lenenc_bytes(data, pos)
                changes = parse_session_state(block)
    else:
        info = data[pos:]
    return OkPacket(affected, insert_id, status, warnings, decode_text(info), changes)


def encode_ok(ok: OkPacket, caps: int, *, eof_header: bool = False) -> bytes:
    """OK packet payload; *eof_header* gives the 0xFE form that ends a result set."""
    parts = [
        b"\xfe" if eof_header else b"\x00",
        encode_lenenc_int(ok.affected_rows),
        encode_lenenc_int(ok.last_insert_id),
    ]
    status = ok.status
    track = bool(caps & _SESSION_TRACK) and bool(ok.session_state)
    if track:
        status |= ServerStatus.SESSION_STATE_CHANGED
    if caps & _P41:
        parts.append(_STATUS_WARNINGS.pack(status, ok.warnings))
    elif caps & _TRANSACTIONS:
        parts.append(_U16.pack(status))
    info = encode_text(ok.info)
    if caps & _SESSION_TRACK:
        if info or track:
            parts.append(encode_lenenc_bytes(info))
        if track:
            parts.append(encode_lenenc_bytes(encode_session_state(ok.session_state)))
    else:
        parts.append(info)
    return b"".join(parts)


def build_ok(
    seq: int,
    caps: int,
    *,
    affected_rows: int = 0,
    status: int = ServerStatus.AUTOCOMMIT,
    info: str = "",
) -> bytes:
    """Framed OK packet."""
    ok = OkPacket(affected_rows=affected_rows, status=status, info=info)
    return build_packet(seq, encode_ok(ok, caps))


def parse_err(payload: Buffer) -> ErrPacket:
    """Parse an ERR packet; the SQLSTATE marker is optional (absent before 4.1 handshakes)."""
    data = bytes(payload)
    if len(data) < 3 or data[0] != _ERR_HEADER:
        raise MalformedPacket("not an ERR packet")
    code = _U16.unpack_from(data, 1)[0]
    if len(data) >= 9 and data[3] == 0x23:  # '#'
        return ErrPacket(code, decode_text(data[9:]), data[4:9].decode("ascii", "replace"))
    return ErrPacket(code, decode_text(data[3:]), "HY000")


def encode_err(code: int, message: str, sqlstate: str | None = None) -> bytes:
    """ERR packet payload; SQLSTATE defaults to the one MySQL uses for *code*."""
    head = _ERR_HEAD.pack(_ERR_HEADER, code)
    state = sqlstate_for(code) if sqlstate is None else sqlstate
    if len(state) != 5 or not state.isascii():
        raise ValueError(f"invalid SQLSTATE {state!r}")
    return head + b"#" + state.encode("ascii") + encode_text(message)


def build_err(seq: int, code: int, message: str, sqlstate: str | None = None) -> bytes:
    """Framed ERR packet."""
    return build_packet(seq, encode_err(code, message, sqlstate))


def parse_eof(payload: Buffer) -> EofPacket:
    """Parse a classic EOF packet (5 bytes; a bare 0xFE from pre-4.1 servers is accepted)."""
    return EofPacket(*parse_eof_fields(payload))


def parse_eof_fields(payload: Buffer) -> tuple[int, int]:
    """parse_eof as (warnings, status), building no object."""
    if not payload or payload[0] != _EOF_HEADER or len(payload) >= 9:
        raise MalformedPacket("not an EOF packet")
    if len(payload) < 5:
        return 0, 0
    return payload[1] | payload[2] << 8, payload[3] | payload[4] << 8


def eof_status_at(data: bytes, pos: i64, length: i64) -> int:
    """The server status of the classic EOF packet whose *length* payload bytes start at
    *pos* in *data*: native arithmetic, no slice, tuple or struct (the end of every result
    set's definitions and rows)."""
    if length == 0 or length >= 9 or data[pos] != _EOF_HEADER:
        raise MalformedPacket("not an EOF packet")
    if length < 5:
        return 0
    return data[pos + 3] | data[pos + 4] << 8


def encode_eof(warnings: int = 0, status: int = ServerStatus.AUTOCOMMIT) -> bytes:
    """Classic EOF packet payload."""
    return _EOF.pack(_EOF_HEADER, warnings, status)


def is_ok(payload: Buffer) -> bool:
    """Payload is an OK packet (0x00 header)."""
    return len(payload) > 0 and payload[0] == _OK_HEADER


def is_err(payload: Buffer) -> bool:
    """Payload is an ERR packet."""
    return len(payload) > 0 and payload[0] == _ERR_HEADER


def encode_end_of_result(caps: int, status: int = ServerStatus.AUTOCOMMIT) -> bytes:
    """Payload that ends a result set for a peer with *caps*."""
    if caps & _DEPRECATE_EOF:
        return encode_ok(OkPacket(status=status), caps, eof_header=True)
    return encode_eof(0, status)


# --------------------------------------------------------------------------- columns & rows


@dataclass(frozen=True, slots=True)
class ColumnDefinition:
    """ColumnDefinition41."""

    name: str
    column_type: int = ColumnType.VAR_STRING
    schema: str = ""
    table: str = ""
    org_table: str = ""
    org_name: str = ""
    catalog: str = "def"
    charset: int = DEFAULT_COLLATION
    column_length: int = 0
    flags: int = 0
    decimals: int = 0


def encode_column_definition(col: ColumnDefinition) -> bytes:
    """ColumnDefinition41 payload."""
    parts = [
        encode_lenenc_bytes(encode_text(text))
        for text in (col.catalog, col.schema, col.table, col.org_table, col.name, col.org_name)
    ]
    parts.append(b"\x0c")
    parts.append(
        _COLDEF_FIXED.pack(col.charset, col.column_length, col.column_type, col.flags, col.decimals)
    )
    parts.append(b"\x00\x00")
    return b"".join(parts)


def encode_text_value(value: object) -> bytes:
    """One text-protocol cell: None is NULL, bytes go verbatim, bool is 1/0, else str()."""
    if value is None:
        return b"\xfb"
    if isinstance(value, bytes | bytearray | memoryview):
        return encode_lenenc_bytes(value)
    if isinstance(value, bool):
        return b"\x011" if value else b"\x010"
    if isinstance(value, str):
        return encode_lenenc_bytes(encode_text(value))
    return encode_lenenc_bytes(str(value).encode("utf-8"))


def encode_text_row(values: Iterable[object]) -> bytes:
    """Text-protocol row payload."""
    return b"".join(encode_text_value(v) for v in values)


def parse_text_row(payload: Buffer, column_count: int) -> list[bytes | None]:
    """Split a text-protocol row into its cells (None for NULL)."""
    out: list[bytes | None] = []
    pos = 0
    for _ in range(column_count):
        cell, pos = read_lenenc_bytes_or_null(payload, pos)
        out.append(cell)
    if pos != len(payload):
        raise MalformedPacket("trailing bytes after the last column of a row")
    return out


def _as_column(col: ColumnDefinition | str) -> ColumnDefinition:
    return ColumnDefinition(name=col, org_name=col) if isinstance(col, str) else col


def encode_column_count(count: int, caps: int) -> bytes:
    """Result-set header payload (column count, plus 'metadata follows' when negotiated)."""
    out = encode_lenenc_int(count)
    if caps & Capability.CLIENT_OPTIONAL_RESULTSET_METADATA:
        out += b"\x01"  # RESULTSET_METADATA_FULL: we always send column definitions
    return out


def encode_result_set(
    columns: Sequence[ColumnDefinition | str],
    rows: Iterable[Sequence[object]],
    caps: int,
    *,
    status: int = ServerStatus.AUTOCOMMIT,
) -> list[bytes]:
    """Payloads of a complete text result set, one per logical packet."""
    if not columns:
        raise ValueError("a result set needs at least one column")
    payloads = [encode_column_count(len(columns), caps)]
    payloads.extend(encode_column_definition(_as_column(c)) for c in columns)
    if not caps & _DEPRECATE_EOF:
        payloads.append(encode_eof(0, status))
    width = len(columns)
    for row in rows:
        if len(row) != width:
            raise ValueError(f"row has {len(row)} values, expected {width}")
        payloads.append(encode_text_row(row))
    payloads.append(encode_end_of_result(caps, status))
    return payloads


def build_payloads(start_seq: int, payloads: Iterable[Buffer]) -> bytes:
    """Frame consecutive payloads with consecutive sequence ids."""
    parts: list[bytes] = []
    seq = start_seq
    for payload in payloads:
        parts.append(build_packet(seq, payload))
        seq = next_seq(seq, len(payload))
    return b"".join(parts)


def build_result_set(
    columns: Sequence[ColumnDefinition | str],
    rows: Iterable[Sequence[object]],
    caps: int,
    *,
    status: int = ServerStatus.AUTOCOMMIT,
) -> bytes:
    """Framed text result set answering a command (sequence ids from 1); a column given as a
    plain name becomes a utf8mb4 VARCHAR."""
    return build_payloads(1, encode_result_set(columns, rows, caps, status=status))


# --------------------------------------------------------------------------- prepared statements


@dataclass(frozen=True, slots=True)
class PrepareOk:
    """COM_STMT_PREPARE_OK."""

    stmt_id: int
    num_columns: int
    num_params: int
    warnings: int = 0


def parse_prepare_ok(payload: Buffer) -> PrepareOk:
    """Parse the first packet of a successful COM_STMT_PREPARE response."""
    if len(payload) < 9 or payload[0] != _OK_HEADER:
        raise MalformedPacket("not a COM_STMT_PREPARE_OK packet")
    stmt_id = read_u32(payload, 1)
    num_columns = read_u16(payload, 5)
    num_params = read_u16(payload, 7)
    warnings = read_u16(payload, 10) if len(payload) >= 12 else 0
    return PrepareOk(stmt_id, num_columns, num_params, warnings)


def read_stmt_id(payload: bytes) -> int:
    """Statement id of a COM_STMT_* (or prepare-OK) payload (bytes, indexed natively when
    compiled: once per COM_STMT_EXECUTE)."""
    if len(payload) < STMT_ID_OFFSET + 4:
        raise MalformedPacket("truncated statement id")
    return payload[1] | payload[2] << 8 | payload[3] << 16 | payload[4] << 24
