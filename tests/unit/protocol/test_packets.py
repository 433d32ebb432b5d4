"""Tests of framing, length-encoded values and the generic packets."""

from __future__ import annotations

import itertools

import pytest

from proxy.protocol.constants import (
    MAX_PACKET_PAYLOAD,
    Capability,
    ColumnFlag,
    ColumnType,
    Command,
    ErrorCode,
    ServerStatus,
    SessionTrackType,
    sqlstate_for,
)
from proxy.protocol.packets import (
    ColumnDefinition,
    EofPacket,
    ErrPacket,
    MalformedPacket,
    OkPacket,
    Packet,
    PacketOutOfOrder,
    PacketReader,
    PacketTooLarge,
    PrepareOk,
    SessionStateChange,
    build_command,
    build_err,
    build_ok,
    build_packet,
    build_result_set,
    encode_column_definition,
    encode_eof,
    encode_err,
    encode_lenenc_bytes,
    encode_lenenc_int,
    encode_nul_bytes,
    encode_ok,
    encode_session_state,
    encode_text_row,
    eof_status_at,
    is_err,
    is_ok,
    log_text,
    next_seq,
    packet_count,
    parse_eof,
    parse_eof_fields,
    parse_err,
    parse_ok,
    parse_prepare_ok,
    parse_session_state,
    parse_text_row,
    read_lenenc_bytes,
    read_lenenc_bytes_or_null,
    read_lenenc_int,
    read_lenenc_int_or_null,
    read_nul_bytes,
    read_stmt_id,
)
from tests.unit.protocol.wire import (
    byte_chunks,
    column_definition,
    end_of_result,
    header,
    header_offsets,
    random_chunks,
)

P41 = Capability.CLIENT_PROTOCOL_41 | Capability.CLIENT_TRANSACTIONS
TRACK = P41 | Capability.CLIENT_SESSION_TRACK
DEPRECATE = P41 | Capability.CLIENT_DEPRECATE_EOF


# --------------------------------------------------------------------------- lenenc


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (250, "fa"),
        (251, "fcfb00"),
        (252, "fcfc00"),
        (0xFFFF, "fcffff"),
        (0x10000, "fd000001"),
        (0xFFFFFF, "fdffffff"),
        (0x1000000, "fe0000000100000000"),
        (2**64 - 1, "feffffffffffffffff"),
    ],
)
def test_lenenc_int_boundaries(value: int, encoded: str) -> None:
    raw = bytes.fromhex(encoded)
    assert encode_lenenc_int(value) == raw
    # Read at an offset, from bytes and from a memoryview.
    buf = b"\xaa\xbb" + raw + b"\xcc"
    assert read_lenenc_int(buf, 2) == (value, 2 + len(raw))
    assert read_lenenc_int(memoryview(buf), 2) == (value, 2 + len(raw))


def test_lenenc_int_special_prefixes() -> None:
    assert read_lenenc_int_or_null(b"\xfb", 0) == (None, 1)
    with pytest.raises(MalformedPacket):
        read_lenenc_int(b"\xfb", 0)
    with pytest.raises(MalformedPacket):
        read_lenenc_int(b"\xff", 0)
    for truncated in (b"", b"\xfc\x01", b"\xfd\x01\x02", b"\xfe\x01\x02\x03\x04"):
        with pytest.raises(MalformedPacket):
            read_lenenc_int(truncated, 0)
    with pytest.raises(ValueError):
        encode_lenenc_int(-1)
    with pytest.raises(ValueError):
        encode_lenenc_int(2**64)


@pytest.mark.parametrize("size", [0, 1, 250, 251, 0xFFFF, 0x10000])
def test_lenenc_bytes_round_trip(size: int) -> None:
    data = bytes(i & 0xFF for i in range(size))
    raw = encode_lenenc_bytes(data)
    assert read_lenenc_bytes(b"x" + raw, 1) == (data, 1 + len(raw))
    assert read_lenenc_bytes(memoryview(raw), 0) == (data, len(raw))


def test_lenenc_bytes_null_and_truncation() -> None:
    assert read_lenenc_bytes_or_null(b"\xfb", 0) == (None, 1)
    with pytest.raises(MalformedPacket):
        read_lenenc_bytes(b"\xfb", 0)
    with pytest.raises(MalformedPacket):
        read_lenenc_bytes(b"\x05abc", 0)


def test_nul_strings() -> None:
    assert read_nul_bytes(b"ab\0cd\0", 0) == (b"ab", 3)
    assert read_nul_bytes(memoryview(b"ab\0cd\0"), 3) == (b"cd", 6)
    assert encode_nul_bytes(b"root") == b"root\0"
    with pytest.raises(MalformedPacket):
        read_nul_bytes(b"abc", 0)
    with pytest.raises(ValueError):
        encode_nul_bytes(b"a\0b")


# --------------------------------------------------------------------------- framing


def test_build_small_packet() -> None:
    assert build_packet(3, b"\x0e") == bytes.fromhex("010000030e")
    assert build_packet(0, b"") == bytes.fromhex("00000000")
    assert build_packet(256 + 7, b"x")[3] == 7
    assert (
        build_command(Command.COM_QUERY, b"SELECT 1") == bytes.fromhex("0900000003") + b"SELECT 1"
    )


def _fragments(wire: bytes) -> list[tuple[int, int]]:
    return [(int.from_bytes(wire[o : o + 3], "little"), wire[o + 3]) for o in header_offsets(wire)]


def test_split_exactly_max_payload() -> None:
    payload = b"\x03" + b"a" * (MAX_PACKET_PAYLOAD - 1)
    wire = build_packet(0, payload)
    # A payload of exactly 0xFFFFFF needs a trailing empty packet.
    assert _fragments(wire) == [(MAX_PACKET_PAYLOAD, 0), (0, 1)]
    assert len(wire) == MAX_PACKET_PAYLOAD + 8
    assert packet_count(len(payload)) == 2
    assert next_seq(0, len(payload)) == 2

    reader = PacketReader()
    for chunk in random_chunks(wire, seed=1):
        reader.feed(chunk)
    packet = reader.read()
    assert packet is not None
    assert (packet.seq, packet.last_seq) == (0, 1)
    assert packet.payload == payload
    assert reader.read() is None
    assert reader.buffered == 0


def test_split_two_max_plus_five() -> None:
    size = MAX_PACKET_PAYLOAD * 2 + 5
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    wire = build_packet(254, payload)
    # Sequence ids wrap from 255 to 0.
    assert _fragments(wire) == [(MAX_PACKET_PAYLOAD, 254), (MAX_PACKET_PAYLOAD, 255), (5, 0)]
    assert len(wire) == size + 12
    assert next_seq(254, size) == 1

    reader = PacketReader()
    # Feed so that every header straddles two chunks, followed by a small packet.
    small = build_packet(7, b"ping")
    stream = wire + small
    cuts = [0] + [o + 2 for o in header_offsets(wire)] + [len(wire) + 1, len(stream)]
    got: list[Packet] = []
    for start, end in itertools.pairwise(cuts):
        reader.feed(stream[start:end])
        got.extend(reader)
    assert [(p.seq, p.last_seq, len(p.payload)) for p in got] == [(254, 0, size), (7, 7, 4)]
    assert got[0].payload == payload
    assert got[1].payload == b"ping"


def test_reader_byte_by_byte() -> None:
    payloads = [b"", b"\x00\x00\x00\x02\x00\x00\x00", b"x" * 300, b"\xfe\x00\x00\x02\x00"]
    wire = b"".join(build_packet(i + 1, p) for i, p in enumerate(payloads))
    reader = PacketReader()
    got: list[Packet] = []
    for byte in byte_chunks(wire):
        reader.feed(byte)
        got.extend(reader)
    assert [p.payload for p in got] == payloads
    assert [p.seq for p in got] == [1, 2, 3, 4]


def test_reader_max_payload() -> None:
    reader = PacketReader(max_payload=100)
    reader.feed(build_packet(0, b"x" * 100))
    assert reader.read() is not None
    # Rejected as soon as the header is seen, before the payload arrives.
    reader.feed(bytes.fromhex("65000001"))
    with pytest.raises(PacketTooLarge):
        reader.read()


def test_reader_max_payload_counts_all_fragments() -> None:
    reader = PacketReader(max_payload=MAX_PACKET_PAYLOAD + 10)
    reader.feed(build_packet(0, b"y" * (MAX_PACKET_PAYLOAD + 10)))
    packet = reader.read()
    assert packet is not None and len(packet.payload) == MAX_PACKET_PAYLOAD + 10
    reader.feed(build_packet(0, b"y" * (MAX_PACKET_PAYLOAD + 11))[: MAX_PACKET_PAYLOAD + 8])
    with pytest.raises(PacketTooLarge) as big:
        reader.read()
    assert big.value.seq == 1  # the second fragment went over: the answer's seq is 2


def test_reader_ready_tells_whether_read_makes_progress() -> None:
    reader = PacketReader()
    assert not reader.ready
    wire = build_packet(0, b"abc") + build_packet(1, b"defg")
    reader.feed(wire[:5])
    assert not reader.ready  # a header and part of its payload
    reader.feed(wire[5:9])
    assert reader.ready
    assert reader.read() is not None
    assert not reader.ready  # two bytes of the next header
    reader.feed(wire[9:])
    assert reader.ready
    assert reader.read() is not None
    assert not reader.ready


def test_reader_clear_drops_partial_packets() -> None:
    reader = PacketReader()
    reader.feed(build_packet(0, b"z" * (MAX_PACKET_PAYLOAD + 5))[:-2])
    assert reader.read() is None and reader.buffered > MAX_PACKET_PAYLOAD
    reader.clear()
    assert reader.buffered == 0
    reader.feed(build_packet(0, b"ok"))
    packet = reader.read()
    assert packet is not None and packet.payload == b"ok"


def test_reader_rejects_out_of_order_fragment() -> None:
    wire = bytearray(build_packet(0, b"q" * (MAX_PACKET_PAYLOAD + 3)))
    wire[MAX_PACKET_PAYLOAD + 4 + 3] = 2  # continuation should be seq 1
    reader = PacketReader()
    reader.feed(wire)
    with pytest.raises(PacketOutOfOrder):
        reader.read()


_Q1 = build_packet(0, b"\x03SELECT 1")
_Q2 = build_packet(0, b"\x03SELECT c FROM sbtest1 WHERE id=42")
_PING = build_packet(0, b"\x0e")
_BIG = build_packet(0, b"\x03" + b"b" * MAX_PACKET_PAYLOAD)  # two fragments


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        # One whole packet per received chunk (the usual case): its frame is kept as it came.
        ([_Q1], [(b"\x03SELECT 1", True)]),
        ([_Q1, _Q2], [(b"\x03SELECT 1", True), (_Q2[4:], True)]),
        ([_PING], [(b"\x0e", True)]),
        # Pipelined packets in one chunk: sliced out, no frame kept.
        ([_Q1 + _Q2 + _PING], [(_Q1[4:], False), (_Q2[4:], False), (b"\x0e", False)]),
        # A packet cut across chunks, and a whole packet fed behind a partial one.
        ([_Q1 + _Q2[:7], _Q2[7:]], [(_Q1[4:], False), (_Q2[4:], False)]),
        ([_Q1[:2], _Q1[2:] + _PING], [(_Q1[4:], False), (b"\x0e", False)]),
        ([_Q1[:4], _Q1[4:], _Q2], [(_Q1[4:], False), (_Q2[4:], True)]),
    ],
)
def test_reader_chunks_table(chunks: list[bytes], expected: list[tuple[bytes, bool]]) -> None:
    reader = PacketReader()
    got: list[Packet] = []
    for chunk in chunks:
        reader.feed(chunk)
        got.extend(reader)
    assert reader.buffered == 0 and not reader.ready
    assert len(got) == len(expected)
    for packet, (payload, whole) in zip(got, expected, strict=True):
        assert (packet.seq, packet.payload, packet.last_seq) == (0, payload, 0)
        # The kept frame is exactly the received packet, header included.
        assert packet.wire == (build_packet(0, payload) if whole else None)


def test_reader_split_payload_in_one_chunk() -> None:
    reader = PacketReader()
    reader.feed(_BIG + _Q1)
    big = reader.read()
    assert big is not None and big.payload == _BIG[4 : 4 + MAX_PACKET_PAYLOAD] + _BIG[-1:]
    assert (big.seq, big.last_seq, big.wire) == (0, 1, None)
    query = reader.read()
    assert query is not None and query.payload == _Q1[4:]
    assert reader.read() is None


def test_reader_kept_chunk_counts_as_buffered() -> None:
    reader = PacketReader()
    reader.feed(_Q1 + _Q2[:6])
    assert reader.buffered == len(_Q1) + 6 and reader.ready
    assert reader.read() is not None
    assert reader.buffered == 6 and not reader.ready
    assert reader.read() is None
    reader.feed(_Q2[6:])
    assert reader.ready
    packet = reader.read()
    assert packet is not None and packet.payload == _Q2[4:]
    assert reader.buffered == 0


def test_reader_take_buffered_and_clear_include_the_kept_chunk() -> None:
    reader = PacketReader()
    reader.feed(_Q1 + b"\x16\x03\x01")  # a packet, then the start of a TLS ClientHello
    assert reader.read() is not None
    assert reader.take_buffered() == b"\x16\x03\x01"
    assert reader.buffered == 0
    reader.feed(_Q1 + _Q2)
    reader.clear()
    assert reader.buffered == 0 and reader.read() is None
    reader.feed(bytearray(_PING))  # not bytes: buffered, same packet
    packet = reader.read()
    assert packet is not None and (packet.payload, packet.wire) == (b"\x0e", None)


@pytest.mark.parametrize("pipelined", [False, True])
def test_reader_max_payload_in_a_kept_chunk(pipelined: bool) -> None:
    reader = PacketReader(max_payload=10)
    head = _PING if pipelined else b""
    reader.feed(head + build_packet(3, b"x" * 11))
    if pipelined:
        assert reader.read() is not None
    with pytest.raises(PacketTooLarge) as big:
        reader.read()
    assert big.value.seq == 3


def test_reader_out_of_order_behind_a_kept_chunk() -> None:
    wire = build_packet(0, b"q" * (MAX_PACKET_PAYLOAD + 3))
    reader = PacketReader()
    reader.feed(wire[: MAX_PACKET_PAYLOAD + 4])  # the whole first fragment
    assert reader.read() is None
    reader.feed(build_packet(5, b"qqq"))  # a whole packet, but seq 5 inside the split
    with pytest.raises(PacketOutOfOrder):
        reader.read()


# --------------------------------------------------------------------------- OK / ERR / EOF


def test_parse_ok_classic() -> None:
    ok = parse_ok(bytes.fromhex("00 01 2a 02 00 03 00"), P41)
    assert ok == OkPacket(affected_rows=1, last_insert_id=42, status=2, warnings=3)
    # Info string as the rest of the packet without CLIENT_SESSION_TRACK.
    info = b"Rows matched: 1  Changed: 1  Warnings: 0"
    ok = parse_ok(bytes.fromhex("00 01 00 02 00 00 00") + info, P41)
    assert ok.info == info.decode()
    assert is_ok(bytes.fromhex("00 00 00 02 00 00 00"))
    # Large lenenc values.
    ok = parse_ok(bytes.fromhex("00 fd 00 00 01 fe 00 00 00 00 01 00 00 00 02 00 00 00"), P41)
    assert (ok.affected_rows, ok.last_insert_id) == (0x10000, 1 << 32)


def test_parse_ok_session_track() -> None:
    entries = (
        # SYSTEM_VARIABLES: autocommit=OFF
        "00 0f 0a 61 75 74 6f 63 6f 6d 6d 69 74 03 4f 46 46"
        # SCHEMA: shop
        " 01 05 04 73 68 6f 70"
        # STATE_CHANGE: "1"
        " 02 02 01 31"
        # GTIDS: spec 0, "0-1-42"
        " 03 08 00 06 30 2d 31 2d 34 32"
        # TRANSACTION_STATE: "T_______"
        " 05 09 08 54 5f 5f 5f 5f 5f 5f 5f"
    )
    block = bytes.fromhex(entries)
    payload = (
        bytes.fromhex("00 00 00 02 40 00 00")  # status AUTOCOMMIT | SESSION_STATE_CHANGED
        + b"\x00"  # empty info
        + encode_lenenc_int(len(block))
        + block
    )
    ok = parse_ok(payload, TRACK)
    assert ok.status == ServerStatus.AUTOCOMMIT | ServerStatus.SESSION_STATE_CHANGED
    assert ok.info == ""
    assert ok.session_state == (
        SessionStateChange(SessionTrackType.SYSTEM_VARIABLES, "OFF", "autocommit"),
        SessionStateChange(SessionTrackType.SCHEMA, "shop"),
        SessionStateChange(SessionTrackType.STATE_CHANGE, "1"),
        SessionStateChange(SessionTrackType.GTIDS, "0-1-42"),
        SessionStateChange(SessionTrackType.TRANSACTION_STATE, "T_______"),
    )
    assert ok.system_variables == {"autocommit": "OFF"}
    assert ok.schema == "shop"
    assert encode_session_state(ok.session_state) == block
    assert encode_ok(ok, TRACK) == payload
    assert parse_session_state(block) == ok.session_state


# MySQL 8.0/8.4 with session_track_gtids=OWN_GTID, after an autocommitted INSERT of one row:
# header, 1 affected row, insert id 0, status AUTOCOMMIT | SESSION_STATE_CHANGED, 0 warnings,
# empty info, then the 43-byte session-state block: one SESSION_TRACK_GTIDS (3) entry of 41
# bytes: encoding specification 0, then the GTID set as a 39-byte length-encoded string.
MYSQL_GTID = "3E11FA47-71CA-11E1-9E33-C80AA9429562:23"
MYSQL_OWN_GTID_OK = bytes.fromhex("00 01 00 02 40 00 00 00 2b 03 29 00 27") + MYSQL_GTID.encode(
    "ascii"
)


def test_mysql_own_gtid_ok_packet() -> None:
    ok = parse_ok(MYSQL_OWN_GTID_OK, TRACK)
    assert (ok.affected_rows, ok.status, ok.info) == (
        1,
        ServerStatus.AUTOCOMMIT | ServerStatus.SESSION_STATE_CHANGED,
        "",
    )
    assert ok.session_state == (SessionStateChange(SessionTrackType.GTIDS, MYSQL_GTID),)
    assert ok.committed_gtid == MYSQL_GTID
    assert ok.system_variables == {}
    assert encode_ok(ok, TRACK) == MYSQL_OWN_GTID_OK
    # One request that committed several transactions reports them as one set.
    several = "3E11FA47-71CA-11E1-9E33-C80AA9429562:23-25"
    block = b"\x03" + encode_lenenc_bytes(b"\x00" + encode_lenenc_bytes(several.encode()))
    assert parse_session_state(block)[0].value == several


def test_committed_gtid_mariadb_last_gtid_and_what_is_not_one() -> None:
    last_gtid = encode_lenenc_bytes(b"last_gtid") + encode_lenenc_bytes(b"1-1-42")
    other = encode_lenenc_bytes(b"autocommit") + encode_lenenc_bytes(b"ON")
    block = b"\x00" + encode_lenenc_bytes(other) + b"\x00" + encode_lenenc_bytes(last_gtid)
    assert OkPacket(session_state=parse_session_state(block)).committed_gtid == "1-1-42"
    # MariaDB reports last_gtid empty after a statement that wrote no GTID.
    empty = b"\x00" + encode_lenenc_bytes(encode_lenenc_bytes(b"last_gtid") + b"\x00")
    assert OkPacket(session_state=parse_session_state(empty)).committed_gtid is None
    # A GTIDS entry of an encoding specification MySQL does not define is not understood.
    odd = b"\x03" + encode_lenenc_bytes(b"\x01" + encode_lenenc_bytes(MYSQL_GTID.encode()))
    assert OkPacket(session_state=parse_session_state(odd)).committed_gtid is None
    assert OkPacket().committed_gtid is None


def test_session_track_several_variables_in_one_entry_and_unknown_kind() -> None:
    pair = encode_lenenc_bytes(b"a") + encode_lenenc_bytes(b"1")
    pair2 = encode_lenenc_bytes(b"b") + encode_lenenc_bytes(b"2")
    block = b"\x00" + encode_lenenc_bytes(pair + pair2) + b"\x63" + encode_lenenc_bytes(b"raw")
    changes = parse_session_state(block)
    assert [(c.kind, c.name, c.value) for c in changes] == [
        (0, "a", "1"),
        (0, "b", "2"),
        (99, "", "raw"),
    ]


def test_ok_session_track_without_info() -> None:
    # With CLIENT_SESSION_TRACK a plain OK may end right after the warnings.
    ok = parse_ok(bytes.fromhex("00 00 00 02 00 00 00"), TRACK)
    assert ok == OkPacket()
    assert (
        encode_ok(OkPacket(info="hello"), TRACK)
        == bytes.fromhex("00 00 00 02 00 00 00 05") + b"hello"
    )
    assert parse_ok(encode_ok(OkPacket(info="hello"), TRACK), TRACK).info == "hello"


def test_build_ok_and_ok_as_eof() -> None:
    assert build_ok(2, P41, affected_rows=3, info="x") == bytes.fromhex(
        "08000002 00 03 00 02 00 00 00 78"
    )
    ok = OkPacket(affected_rows=3, status=ServerStatus.IN_TRANS)
    payload = encode_ok(ok, DEPRECATE, eof_header=True)
    assert payload == bytes.fromhex("fe 03 00 01 00 00 00")
    assert parse_ok(payload, DEPRECATE).affected_rows == 3
    assert end_of_result(payload, DEPRECATE).status == ServerStatus.IN_TRANS


def test_err_packets() -> None:
    raw = bytes.fromhex("ff 15 04 23 32 38 30 30 30") + b"Access denied for user 'x'@'h'"
    err = parse_err(raw)
    assert err == ErrPacket(1045, "Access denied for user 'x'@'h'", "28000")
    assert is_err(raw)
    assert encode_err(1045, "Access denied for user 'x'@'h'") == raw
    # Before the handshake completes servers omit the SQLSTATE marker.
    pre = bytes.fromhex("ff 69 04") + b"Host 'h' is not allowed to connect"
    assert parse_err(pre) == ErrPacket(1129, "Host 'h' is not allowed to connect", "HY000")
    wire = build_err(1, ErrorCode.ER_UNKNOWN_STMT_HANDLER, "Unknown prepared statement handler")
    assert header(wire) == (len(wire) - 4, 1)
    assert parse_err(wire[4:]).sqlstate == "HY000"
    assert parse_err(build_err(1, 1064, "syntax", "42000")[4:]).sqlstate == "42000"
    with pytest.raises(ValueError):
        encode_err(1045, "x", "2800")
    with pytest.raises(MalformedPacket):
        parse_err(b"\x00\x00")


def test_sqlstate_table() -> None:
    assert sqlstate_for(ErrorCode.ER_ACCESS_DENIED_ERROR) == "28000"
    assert sqlstate_for(ErrorCode.ER_CON_COUNT_ERROR) == "08004"
    assert sqlstate_for(ErrorCode.ER_QUERY_INTERRUPTED) == "70100"
    assert sqlstate_for(ErrorCode.ER_BAD_DB_ERROR) == "42000"
    assert sqlstate_for(ErrorCode.CR_SERVER_LOST) == "HY000"
    assert sqlstate_for(424242) == "HY000"


def test_eof_packets() -> None:
    raw = bytes.fromhex("fe 01 00 22 00")
    assert parse_eof(raw) == EofPacket(warnings=1, status=0x22)
    assert encode_eof(1, 0x22) == raw
    assert parse_eof(b"\xfe") == EofPacket(0, 0)
    # A 9-byte payload starting with 0xFE is a row (8-byte length prefix), not an EOF.
    with pytest.raises(MalformedPacket):
        parse_eof(b"\xfe" + bytes(8))


@pytest.mark.parametrize(
    ("payload", "status"),
    [(b"\xfe", 0), (b"\xfe\x01\x00", 0), (bytes.fromhex("fe 01 00 22 00"), 0x22)],
)
def test_eof_status_at_reads_in_place(payload: bytes, status: int) -> None:
    data = b"xyz" + payload + b"\x00\x00"
    assert eof_status_at(data, 3, len(payload)) == status
    assert parse_eof_fields(payload)[1] == status


@pytest.mark.parametrize("payload", [b"", b"\x00\x00\x00\x02\x00", b"\xfe" + bytes(8)])
def test_eof_status_at_refuses_what_is_not_an_eof(payload: bytes) -> None:
    with pytest.raises(MalformedPacket):
        eof_status_at(payload + b"\xfe" * 10, 0, len(payload))


# --------------------------------------------------------------------------- columns & rows


def test_column_definition_hex_and_round_trip() -> None:
    raw = bytes.fromhex(
        "03 64 65 66"  # catalog def
        " 04 73 68 6f 70"  # schema shop
        " 01 75"  # table alias u
        " 05 75 73 65 72 73"  # table users
        " 02 69 64"  # name id
        " 02 69 64"  # org name id
        " 0c 3f 00 0b 00 00 00 03 03 82 00 00 00"
    )
    col = ColumnDefinition(
        name="id",
        column_type=ColumnType.LONG,
        schema="shop",
        table="u",
        org_table="users",
        org_name="id",
        charset=63,
        column_length=11,
        flags=ColumnFlag.NOT_NULL | ColumnFlag.PRI_KEY | ColumnFlag.AUTO_INCREMENT | ColumnFlag.NUM,
        decimals=0,
    )
    assert encode_column_definition(col) == raw
    assert column_definition(raw) == col


def test_text_rows() -> None:
    row = encode_text_row([None, b"\x00bin", "é", 42, 1.5, True])
    assert row == b"\xfb\x04\x00bin\x02\xc3\xa9\x0242\x031.5\x011"
    assert parse_text_row(row, 6) == [None, b"\x00bin", "é".encode(), b"42", b"1.5", b"1"]
    with pytest.raises(MalformedPacket):
        parse_text_row(row + b"\x00", 6)


@pytest.mark.parametrize("caps", [P41, DEPRECATE])
def test_build_result_set(caps: int) -> None:
    cols: list[ColumnDefinition | str] = ["id", ColumnDefinition("name", charset=45)]
    rows = [(1, "alice"), (2, None)]
    wire = build_result_set(cols, rows, caps, status=ServerStatus.AUTOCOMMIT)
    reader = PacketReader()
    reader.feed(wire)
    packets = list(reader)
    assert [p.seq for p in packets] == list(range(1, len(packets) + 1))
    payloads = [p.payload for p in packets]
    assert payloads[0] == b"\x02"
    assert column_definition(payloads[1]) == ColumnDefinition("id", org_name="id")
    assert column_definition(payloads[2]) == cols[1]
    body = payloads[3:]
    if not caps & Capability.CLIENT_DEPRECATE_EOF:
        assert parse_eof(body[0]) == EofPacket(0, ServerStatus.AUTOCOMMIT)
        body = body[1:]
    assert [parse_text_row(p, 2) for p in body[:-1]] == [[b"1", b"alice"], [b"2", None]]
    assert end_of_result(body[-1], caps) == OkPacket(status=ServerStatus.AUTOCOMMIT)
    with pytest.raises(ValueError):
        build_result_set(cols, [(1,)], caps)
    with pytest.raises(ValueError):
        build_result_set([], [], caps)


# --------------------------------------------------------------------------- prepared statements


def test_prepare_ok() -> None:
    raw = bytes.fromhex("00 07 00 00 00 02 00 01 00 00 03 00")
    prep = parse_prepare_ok(raw)
    assert prep == PrepareOk(stmt_id=7, num_columns=2, num_params=1, warnings=3)
    assert parse_prepare_ok(raw[:9]) == PrepareOk(7, 2, 1, 0)
    with pytest.raises(MalformedPacket):
        parse_prepare_ok(b"\xff\x00")


def test_read_stmt_id() -> None:
    execute = bytes.fromhex("17 2a 00 00 00 01 01 00 00 00") + b"params"
    assert read_stmt_id(execute) == 42
    assert read_stmt_id(bytes.fromhex("19 04 03 02 01")) == 0x01020304
    with pytest.raises(MalformedPacket):
        read_stmt_id(b"\x19\x01")


# --------------------------------------------------------------------------- log text


@pytest.mark.parametrize(
    ("value", "logged"),
    [
        ("app", "app"),
        ("app\n2026-01-01 INFO forged", "app\\x0a2026-01-01 INFO forged"),
        ("a\r\tb\x1b[31m", "a\\x0d\\x09b\\x1b[31m"),
        ("back\\slash", "back\\\\slash"),  # our escapes cannot be forged either
        ("line\u2028sep\x85", "line\\u2028sep\\x85"),
        (b"caf\xc3\xa9 \xff", "caf\u00e9 \\udcff"),  # undecodable bytes stay visible
        ("x" * 205, "x" * 200 + "...[5 more characters]"),
    ],
)
def test_log_text(value: str | bytes, logged: str) -> None:
    assert log_text(value) == logged
