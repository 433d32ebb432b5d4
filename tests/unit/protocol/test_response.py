"""Tests of the hot-path ResponseScanner over every response shape and chunking."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pytest

from proxy.protocol import response
from proxy.protocol.constants import (
    MAX_PACKET_PAYLOAD,
    Capability,
    Command,
    MariaDBCapability,
    PacketHeader,
    ServerStatus,
)
from proxy.protocol.packets import (
    Buffer,
    ColumnDefinition,
    MalformedPacket,
    OkPacket,
    PacketOutOfOrder,
    PrepareOk,
    SessionStateChange,
    build_payloads,
    encode_column_count,
    encode_column_definition,
    encode_eof,
    encode_err,
    encode_lenenc_bytes,
    encode_ok,
    encode_text_row,
    parse_ok,
)
from proxy.protocol.response import (
    VALUE_REPLY_LIMIT,
    ResponseScanner,
    ScanState,
    ValueReply,
    first_value,
)
from tests.unit.protocol.wire import byte_chunks, header_chunks, prepare_ok, random_chunks

BASE = (
    Capability.CLIENT_PROTOCOL_41
    | Capability.CLIENT_TRANSACTIONS
    | Capability.CLIENT_MULTI_RESULTS
    | Capability.CLIENT_PS_MULTI_RESULTS
    | Capability.CLIENT_SESSION_TRACK
)
CLASSIC = BASE
DEPRECATE = BASE | Capability.CLIENT_DEPRECATE_EOF
MODES = [pytest.param(CLASSIC, id="eof"), pytest.param(DEPRECATE, id="deprecate_eof")]

AC = ServerStatus.AUTOCOMMIT
MORE = ServerStatus.MORE_RESULTS_EXISTS
CURSOR = ServerStatus.CURSOR_EXISTS
TRAILER = bytes.fromhex("07000001 00 00 00 02 00 00 00")  # the next response, must not be eaten


# --------------------------------------------------------------------------- builders


def col(name: str) -> bytes:
    return encode_column_definition(ColumnDefinition(name, schema="db", table="t"))


def ok(caps: int, **kw: object) -> bytes:
    return encode_ok(OkPacket(**kw), caps)  # type: ignore[arg-type]


def end(caps: int, status: int = AC, warnings: int = 0) -> bytes:
    if caps & Capability.CLIENT_DEPRECATE_EOF:
        return encode_ok(OkPacket(status=status, warnings=warnings), caps, eof_header=True)
    return encode_eof(warnings, status)


def err(code: int = 1064, message: str = "You have an error in your SQL syntax") -> bytes:
    return encode_err(code, message)


def result_set(
    caps: int,
    ncols: int,
    rows: Sequence[bytes],
    status: int = AC,
    *,
    columns_eof_status: int | None = None,
    warnings: int = 0,
) -> list[bytes]:
    payloads = [encode_column_count(ncols, caps)]
    payloads += [col(f"c{i}") for i in range(ncols)]
    if not caps & Capability.CLIENT_DEPRECATE_EOF:
        payloads.append(encode_eof(0, AC if columns_eof_status is None else columns_eof_status))
    payloads += rows
    payloads.append(end(caps, status, warnings))
    return payloads


def text_rows(n: int, ncols: int = 3) -> list[bytes]:
    rows = []
    for i in range(n):
        cells: list[object] = [i, f"name-{i}", None if i % 3 == 0 else "x" * (i % 300)]
        if i % 7 == 0:
            cells[0] = None  # row starts with 0xFB
        if i % 11 == 0:
            cells[0] = ""  # row starts with 0x00
        rows.append(encode_text_row(cells[:ncols]))
    return rows


def binary_row(i: int) -> bytes:
    # 0x00 header, NULL bitmap for 2 columns (offset 2), an INT and a VARCHAR.
    return b"\x00\x00" + i.to_bytes(4, "little") + encode_lenenc_bytes(b"v" * (i % 50))


def prepare_response(caps: int, stmt_id: int, params: int, cols: int) -> list[bytes]:
    payloads = [prepare_ok(stmt_id, cols, params)]
    for count, prefix in ((params, "?"), (cols, "c")):
        if count:
            payloads += [col(f"{prefix}{i}") for i in range(count)]
            if not caps & Capability.CLIENT_DEPRECATE_EOF:
                payloads.append(encode_eof(0, AC))
    return payloads


# --------------------------------------------------------------------------- harness


Chunker = Callable[[bytes], Iterable[Buffer]]

CHUNKERS: dict[str, Chunker] = {
    "one": lambda w: [w],
    "bytes": byte_chunks,
    "random": lambda w: random_chunks(w, seed=len(w)),
    "random2": lambda w: random_chunks(w, seed=12345, max_size=7),
    "headers": header_chunks,
}


def scan(scanner: ResponseScanner, stream: bytes, chunker: Chunker) -> int:
    """Feed *stream* chunk by chunk until the scanner stops consuming; returns bytes used."""
    total = 0
    before = scanner.consumed
    for chunk in chunker(stream):
        used = scanner.feed(chunk)
        assert 0 <= used <= len(chunk)
        total += used
        if used < len(chunk):
            assert scanner.done
            assert scanner.feed(chunk[used:]) == 0
            break
    assert scanner.consumed - before == total
    return total


@dataclass
class Case:
    command: int
    caps: int
    payloads: list[bytes]
    expect: dict[str, object] = field(default_factory=dict)
    cursor: bool = False
    mariadb_caps: int = 0


def _cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for mode, caps in (("eof", CLASSIC), ("dep", DEPRECATE)):
        q = Command.COM_QUERY
        cases[f"ok-{mode}"] = Case(
            q,
            caps,
            [ok(caps, affected_rows=3, last_insert_id=70000, status=AC | 1, warnings=2)],
            {
                "affected_rows": 3,
                "status": AC | 1,
                "rows": 0,
                "result_sets": 0,
                "error": None,
            },
        )
        cases[f"err-{mode}"] = Case(q, caps, [err()], {"status": None, "rows": 0})
        cases[f"select-{mode}"] = Case(
            q,
            caps,
            result_set(caps, 3, text_rows(120), AC | ServerStatus.IN_TRANS, warnings=4),
            {
                "rows": 120,
                "result_sets": 1,
                "columns": 3,
                "status": AC | ServerStatus.IN_TRANS,
                "is_result_set": True,
            },
        )
        # A terminator carrying session-state changes is longer than 9 bytes.
        tracked = encode_ok(
            OkPacket(status=AC, session_state=(SessionStateChange(1, "shop"),)),
            caps,
            eof_header=True,
        )
        if caps & Capability.CLIENT_DEPRECATE_EOF:
            assert len(tracked) > 9
            cases["select-session-track-dep"] = Case(
                q,
                caps,
                [*result_set(caps, 3, text_rows(10))[:-1], tracked],
                {"rows": 10, "status": AC | ServerStatus.SESSION_STATE_CHANGED},
            )
        cases[f"empty-select-{mode}"] = Case(
            q, caps, result_set(caps, 1, []), {"rows": 0, "result_sets": 1}
        )
        cases[f"multi-{mode}"] = Case(
            q,
            caps,
            [
                *result_set(caps, 2, text_rows(5, 2), AC | MORE),
                ok(caps, affected_rows=1, status=AC | MORE),
                *result_set(caps, 3, text_rows(4), AC | MORE),
                ok(caps, affected_rows=9, last_insert_id=5, status=AC),
            ],
            {"rows": 9, "result_sets": 2, "affected_rows": 9, "status": AC},
        )
        # Counts over 250 take a multi-byte length-encoded integer: the one-byte fast paths
        # must hand them to the general decoder.
        cases[f"big-counts-{mode}"] = Case(
            q,
            caps,
            [ok(caps, affected_rows=70000, last_insert_id=1 << 40, status=AC | 1)],
            {"affected_rows": 70000, "status": AC | 1},
        )
        cases[f"wide-select-{mode}"] = Case(
            q,
            caps,
            result_set(caps, 251, [encode_text_row(list(range(251)))], AC, warnings=1),
            {"rows": 1, "columns": 251, "result_sets": 1, "status": AC},
        )
        cases[f"multi-err-{mode}"] = Case(
            q,
            caps,
            [*result_set(caps, 2, text_rows(5, 2), AC | MORE), err(1146, "Table doesn't exist")],
            {"rows": 5, "result_sets": 1},
        )
        cases[f"progress-{mode}"] = Case(
            q,
            caps,
            # MariaDB progress report (ERR 0xFFFF) before the real answer.
            [b"\xff\xff\xff\x01\x02\x00\x10\x00\x05stage", ok(caps, affected_rows=2)],
            {"affected_rows": 2, "error": None},
        )
        ex = Command.COM_STMT_EXECUTE
        cases[f"execute-{mode}"] = Case(
            ex,
            caps,
            result_set(caps, 2, [binary_row(i) for i in range(60)]),
            {"rows": 60, "result_sets": 1},
        )
        cases[f"execute-ok-{mode}"] = Case(
            ex, caps, [ok(caps, affected_rows=1)], {"affected_rows": 1}, cursor=True
        )
        if caps & Capability.CLIENT_DEPRECATE_EOF:
            cursor_payloads = [
                encode_column_count(2, caps),
                col("a"),
                col("b"),
                end(caps, AC | CURSOR),
            ]
        else:
            cursor_payloads = [
                encode_column_count(2, caps),
                col("a"),
                col("b"),
                encode_eof(0, AC | CURSOR),
            ]
        cases[f"execute-cursor-{mode}"] = Case(
            ex,
            caps,
            cursor_payloads,
            {"rows": 0, "result_sets": 1, "status": AC | CURSOR},
            cursor=True,
        )
        # Stored procedures may flag CURSOR_EXISTS though the client opened none: rows follow.
        cases[f"execute-proc-cursor-flag-{mode}"] = Case(
            ex,
            caps,
            [
                *result_set(
                    caps,
                    2,
                    [binary_row(i) for i in range(3)],
                    AC | MORE,
                    columns_eof_status=AC | CURSOR,
                ),
                ok(caps, status=AC),
            ],
            {"rows": 3, "result_sets": 1, "status": AC},
        )
        cases[f"fetch-{mode}"] = Case(
            Command.COM_STMT_FETCH,
            caps,
            [binary_row(i) for i in range(10)]
            + [end(caps, AC | CURSOR | ServerStatus.LAST_ROW_SENT)],
            {"rows": 10, "status": AC | CURSOR | ServerStatus.LAST_ROW_SENT},
        )
        cases[f"fetch-err-{mode}"] = Case(Command.COM_STMT_FETCH, caps, [err(1243)], {"rows": 0})
        pr = Command.COM_STMT_PREPARE
        cases[f"prepare-{mode}"] = Case(
            pr,
            caps,
            prepare_response(caps, 0x01020304, 2, 3),
            {"prepare": PrepareOk(0x01020304, num_columns=3, num_params=2), "stmt_id_offset": 5},
        )
        cases[f"prepare-params-only-{mode}"] = Case(
            pr,
            caps,
            prepare_response(caps, 8, 4, 0),
            {"prepare": PrepareOk(8, num_columns=0, num_params=4)},
        )
        cases[f"prepare-cols-only-{mode}"] = Case(
            pr,
            caps,
            prepare_response(caps, 9, 0, 1),
            {"prepare": PrepareOk(9, num_columns=1, num_params=0)},
        )
        cases[f"prepare-nothing-{mode}"] = Case(
            pr, caps, prepare_response(caps, 10, 0, 0), {"prepare": PrepareOk(10, 0, 0)}
        )
        cases[f"prepare-err-{mode}"] = Case(pr, caps, [err()], {"prepare": None})
        fl = Command.COM_FIELD_LIST
        fields = [
            encode_column_definition(ColumnDefinition(f"f{i}")) + encode_lenenc_bytes(b"d")
            for i in range(4)
        ]
        cases[f"field-list-{mode}"] = Case(fl, caps, [*fields, end(caps)], {"columns": 4})
        cases[f"field-list-err-{mode}"] = Case(fl, caps, [err(1146)], {"columns": 0})
        for command in (
            Command.COM_PING,
            Command.COM_INIT_DB,
            Command.COM_RESET_CONNECTION,
            Command.COM_STMT_RESET,
            Command.COM_PROCESS_KILL,
        ):
            cases[f"{command.name.lower()}-{mode}"] = Case(
                command, caps, [ok(caps, status=AC)], {"status": AC}
            )
        cases[f"set-option-{mode}"] = Case(
            Command.COM_SET_OPTION, caps, [end(caps, AC)], {"status": AC}
        )
        cases[f"init-db-err-{mode}"] = Case(
            Command.COM_INIT_DB, caps, [err(1049, "Unknown database 'x'")], {"status": None}
        )
    cases["statistics"] = Case(
        Command.COM_STATISTICS,
        CLASSIC,
        [b"Uptime: 100  Threads: 1  Questions: 2  Slow queries: 0  Opens: 17"],
        {"rows": 0, "error": None},
    )
    # MariaDB metadata caching: column definitions omitted when the flag byte is 0.
    cases["cache-metadata-skip"] = Case(
        Command.COM_STMT_EXECUTE,
        DEPRECATE,
        [b"\x02\x00", *(binary_row(i) for i in range(4)), end(DEPRECATE)],
        {"rows": 4, "columns": 2},
        mariadb_caps=MariaDBCapability.MARIADB_CLIENT_CACHE_METADATA,
    )
    cases["cache-metadata-send"] = Case(
        Command.COM_STMT_EXECUTE,
        DEPRECATE,
        [b"\x02\x01", col("a"), col("b"), binary_row(1), end(DEPRECATE)],
        {"rows": 1, "columns": 2},
        mariadb_caps=MariaDBCapability.MARIADB_CLIENT_CACHE_METADATA,
    )
    return cases


CASES = _cases()


def _check(case: Case, scanner: ResponseScanner, wire: bytes) -> None:
    assert scanner.done
    assert scanner.state is ScanState.DONE
    assert scanner.consumed == len(wire)
    assert scanner.packets == len(case.payloads)
    assert not scanner.infile
    last = case.payloads[-1]
    if last[:1] == b"\xff":
        assert scanner.error is not None
        assert scanner.error.code == int.from_bytes(last[1:3], "little")
    else:
        assert scanner.error is None
    for name, value in case.expect.items():
        assert getattr(scanner, name) == value, name
    if scanner.ok_payload is not None:
        assert parse_ok(scanner.ok_payload, case.caps).affected_rows == scanner.affected_rows


@pytest.mark.parametrize("chunking", list(CHUNKERS))
@pytest.mark.parametrize("name", list(CASES))
def test_response_shapes(name: str, chunking: str) -> None:
    case = CASES[name]
    wire = build_payloads(1, case.payloads)
    scanner = ResponseScanner(
        case.command, case.caps, cursor=case.cursor, mariadb_caps=case.mariadb_caps, first_seq=1
    )
    assert scan(scanner, wire + TRAILER, CHUNKERS[chunking]) == len(wire)
    _check(case, scanner, wire)
    assert scanner.last_seq == len(case.payloads)


QUERY_LIKE = (Command.COM_QUERY, Command.COM_STMT_EXECUTE)


def test_a_restarted_scanner_scans_as_a_new_one() -> None:
    """A session reuses its scanner: restart leaves nothing of the last response behind."""
    scanner = ResponseScanner(Command.COM_QUERY, BASE)
    for name in CASES:
        case = CASES[name]
        if case.cursor or case.mariadb_caps or case.command not in QUERY_LIKE:
            continue
        wire = build_payloads(1, case.payloads)
        scanner.restart(case.command, case.caps)
        assert scan(scanner, wire + TRAILER, CHUNKERS["random"]) == len(wire), name
        _check(case, scanner, wire)
        fresh = ResponseScanner(case.command, case.caps)
        scan(fresh, wire + TRAILER, CHUNKERS["random"])
        # Every attribute, private ones too (a compiled class lists them in __mypyc_attrs__).
        for slot in getattr(ResponseScanner, "__mypyc_attrs__", None) or ResponseScanner.__slots__:
            assert getattr(scanner, slot) == getattr(fresh, slot), (name, slot)


def test_ok_payload_keeps_session_state() -> None:
    case = CASES["select-session-track-dep"]
    scanner = ResponseScanner(case.command, case.caps)
    scanner.feed(build_payloads(1, case.payloads))
    assert scanner.ok_payload is not None
    assert parse_ok(scanner.ok_payload, case.caps).schema == "shop"


def test_mysql_commit_gtid_reaches_the_session_through_the_scanner() -> None:
    # What the session reads after a commit on MySQL (session_track_gtids=OWN_GTID): the OK,
    # cut anywhere by the network, is kept whole with its SESSION_TRACK_GTIDS entry.
    gtid = "3e11fa47-71ca-11e1-9e33-c80aa9429562:7-9"
    block = b"\x03" + encode_lenenc_bytes(b"\x00" + encode_lenenc_bytes(gtid.encode()))
    payload = (
        bytes.fromhex("00 03 00 02 40 00 00 00")  # 3 rows, AUTOCOMMIT | STATE_CHANGED, ""
        + encode_lenenc_bytes(block)
    )
    wire = build_payloads(1, [payload])
    for chunks in (list(byte_chunks(wire)), [wire]):
        scanner = ResponseScanner(Command.COM_QUERY, BASE)
        for chunk in chunks:
            scanner.feed(chunk)
        assert scanner.done and scanner.ok_payload is not None
        assert parse_ok(scanner.ok_payload, BASE).committed_gtid == gtid


def test_prepare_stmt_id_offset_allows_rewrite() -> None:
    wire = bytearray(build_payloads(1, prepare_response(DEPRECATE, 77, 1, 1)))
    scanner = ResponseScanner(Command.COM_STMT_PREPARE, DEPRECATE)
    scanner.feed(wire)
    assert (
        scanner.done
        and scanner.prepare == PrepareOk(77, 1, 1)
        and scanner.stmt_id_offset is not None
    )
    offset = scanner.stmt_id_offset
    assert int.from_bytes(wire[offset : offset + 4], "little") == 77


@pytest.mark.parametrize(
    "command", [Command.COM_STMT_CLOSE, Command.COM_STMT_SEND_LONG_DATA, Command.COM_QUIT]
)
def test_commands_without_response(command: Command) -> None:
    scanner = ResponseScanner(command, DEPRECATE)
    assert scanner.done
    assert scanner.feed(TRAILER) == 0


@pytest.mark.parametrize("command", [Command.COM_BINLOG_DUMP, Command.COM_CHANGE_USER])
def test_unscannable_commands(command: Command) -> None:
    with pytest.raises(ValueError):
        ResponseScanner(command, DEPRECATE)


# --------------------------------------------------------------------------- LOCAL INFILE


@pytest.mark.parametrize("chunking", list(CHUNKERS))
@pytest.mark.parametrize("caps", MODES)
def test_local_infile(caps: int, chunking: str) -> None:
    chunker = CHUNKERS[chunking]
    scanner = ResponseScanner(Command.COM_QUERY, caps, first_seq=1)
    request = build_payloads(1, [b"\xfb/tmp/data.csv"])
    assert scan(scanner, request, chunker) == len(request)
    assert scanner.infile and not scanner.done
    # The client sends its file as packets 2..4; the server's answer continues at 5 and,
    # in a multi-statement, may be followed by another result.
    answer = build_payloads(
        5, [ok(caps, affected_rows=3, status=AC | MORE), *result_set(caps, 1, text_rows(2, 1))]
    )
    assert scan(scanner, answer + TRAILER, chunker) == len(answer)
    assert scanner.done and not scanner.infile
    assert (scanner.rows, scanner.result_sets) == (2, 1)


def test_local_infile_error() -> None:
    scanner = ResponseScanner(Command.COM_QUERY, CLASSIC)
    scanner.feed(build_payloads(1, [b"\xfbdata.csv"]))
    assert scanner.state is ScanState.FIRST and scanner.infile
    scanner.feed(build_payloads(3, [err(2, "File not found")]))
    assert scanner.done and scanner.error is not None and scanner.error.code == 2


# --------------------------------------------------------------------------- huge packets


def _big_text_rows() -> list[bytes]:
    # A 20 MiB cell needs an 8-byte length prefix: the row starts with 0xFE. The byte where
    # its second fragment begins is 0xFE too, so a scanner that forgets the continuation
    # would take that fragment for an OK-as-EOF.
    size = 20 << 20
    cell = bytearray(b"r" * size)
    cell[MAX_PACKET_PAYLOAD - 9] = 0xFE
    huge = encode_text_row([bytes(cell), None])
    assert huge[0] == 0xFE and huge[MAX_PACKET_PAYLOAD] == 0xFE
    # A row of 0xFFFFFF + 5 bytes whose 5-byte continuation reads like an EOF packet.
    tricky = encode_text_row([b"t" * (MAX_PACKET_PAYLOAD - 4) + b"\xfe", b"\x00\x02\x00"])
    assert len(tricky) == MAX_PACKET_PAYLOAD + 5
    assert tricky[MAX_PACKET_PAYLOAD:] == bytes.fromhex("fe 03 00 02 00")
    return [encode_text_row(["small", 1]), huge, tricky, encode_text_row(["x", None])]


@pytest.mark.parametrize("chunking", ["one", "random", "headers"])
@pytest.mark.parametrize("caps", MODES)
def test_huge_text_rows(caps: int, chunking: str) -> None:
    payloads = result_set(caps, 2, _big_text_rows(), AC)
    wire = build_payloads(1, payloads)
    scanner = ResponseScanner(Command.COM_QUERY, caps, first_seq=1)
    assert scan(scanner, wire + TRAILER, CHUNKERS[chunking]) == len(wire)
    assert scanner.done and scanner.error is None
    assert scanner.rows == 4
    assert scanner.packets == len(payloads)
    # One continuation fragment each for the 20 MiB row and the tricky row.
    assert scanner.last_seq == len(payloads) + 2


@pytest.mark.parametrize("chunking", ["one", "random", "headers"])
def test_binary_row_of_exactly_max_payload(chunking: str) -> None:
    # A payload of exactly 0xFFFFFF is followed by an empty packet that ends it.
    row = b"\x00\x00" + encode_lenenc_bytes(b"b" * (MAX_PACKET_PAYLOAD - 2 - 4))
    assert len(row) == MAX_PACKET_PAYLOAD
    payloads = result_set(DEPRECATE, 1, [binary_row(1), row, binary_row(2)], AC)
    wire = build_payloads(1, payloads)
    scanner = ResponseScanner(Command.COM_STMT_EXECUTE, DEPRECATE, first_seq=1)
    assert scan(scanner, wire + TRAILER, CHUNKERS[chunking]) == len(wire)
    assert scanner.done and scanner.rows == 3
    assert scanner.last_seq == len(payloads) + 1


# --------------------------------------------------------------------------- errors


def test_out_of_order_sequence() -> None:
    payloads = result_set(CLASSIC, 1, text_rows(3, 1))
    wire = bytearray(build_payloads(1, payloads))
    scanner = ResponseScanner(Command.COM_QUERY, CLASSIC, first_seq=2)
    with pytest.raises(PacketOutOfOrder):
        scanner.feed(wire)
    # A gap in the middle of the rows.
    offset = 0
    for _ in range(5):
        offset += 4 + int.from_bytes(wire[offset : offset + 3], "little")
    wire[offset + 3] = 42
    scanner = ResponseScanner(Command.COM_QUERY, CLASSIC)
    with pytest.raises(PacketOutOfOrder):
        scanner.feed(wire)


def test_malformed_responses() -> None:
    scanner = ResponseScanner(Command.COM_STMT_PREPARE, CLASSIC)
    with pytest.raises(MalformedPacket):
        scanner.feed(build_payloads(1, [b"\x01abc"]))
    scanner = ResponseScanner(Command.COM_QUERY, CLASSIC)
    with pytest.raises(MalformedPacket):
        scanner.feed(build_payloads(1, [b""]))
    scanner = ResponseScanner(Command.COM_PING, CLASSIC)
    with pytest.raises(MalformedPacket):
        scanner.feed(build_payloads(1, [b"\x42"]))


def test_many_rows_in_one_chunk() -> None:
    rows = [encode_text_row([i, "abc"]) for i in range(20000)]
    wire = build_payloads(1, result_set(DEPRECATE, 2, rows))
    scanner = ResponseScanner(Command.COM_QUERY, DEPRECATE)
    assert scanner.feed(memoryview(wire)) == len(wire)
    assert scanner.done and scanner.rows == 20000
    assert scanner.last_seq == (len(rows) + 4) & 0xFF  # seq 1 + count + 2 defs + rows + OK


def test_packet_boundary_while_a_response_is_cut() -> None:
    """Where a relay may be cut and still be followed by an ERR the client can parse."""
    case = CASES["select-session-track-dep"]
    wire = build_payloads(1, case.payloads)
    first_len = int.from_bytes(wire[:3], "little") + 4
    for cut in range(1, len(wire)):
        scanner = ResponseScanner(case.command, case.caps)
        scanner.feed(wire[:cut])
        at_boundary = scanner.at_packet_boundary
        ends_packet = cut == first_len or _ends_packet(wire, cut)
        assert at_boundary == ends_packet, cut


def _ends_packet(wire: bytes, cut: int) -> bool:
    pos = 0
    while pos < cut:
        pos += int.from_bytes(wire[pos : pos + 3], "little") + 4
    return pos == cut


# -- ValueReply: a one-value reply (a GTID wait's) ahead of the next command's response ----


def _value_reply(caps: int, value: object) -> bytes:
    return build_payloads(1, result_set(caps, 1, [encode_text_row([value])]))


@pytest.mark.parametrize("caps", MODES)
@pytest.mark.parametrize("chunking", list(CHUNKERS))
@pytest.mark.parametrize(("value", "expect"), [(0, b"0"), (-1, b"-1"), (1, b"1"), (None, None)])
def test_value_reply_ends_where_the_next_response_starts(
    caps: int, chunking: str, value: object, expect: bytes | None
) -> None:
    first = _value_reply(caps, value)
    following = build_payloads(1, result_set(caps, 1, text_rows(50, 1)))
    wire = first + following
    reply = ValueReply(caps)
    used = 0
    rest = bytearray()
    for chunk in CHUNKERS[chunking](wire):
        if reply.done:
            rest += chunk
            continue
        n = reply.feed(chunk)
        used += n
        rest += chunk[n:]
    assert reply.done
    assert used == len(first)
    assert bytes(rest) == following
    assert reply.value == expect


def test_value_reply_error_and_empty_result() -> None:
    reply = ValueReply(DEPRECATE)
    wire = build_payloads(1, [err(1064)])
    assert reply.feed(wire + b"next") == len(wire)
    assert reply.done and reply.value is None
    empty = build_payloads(1, result_set(CLASSIC, 1, []))
    assert first_value(CLASSIC, empty) is None
    reply = ValueReply(CLASSIC)
    reply.feed(empty)
    assert reply.done and reply.value is None


def test_value_reply_is_bounded() -> None:
    """A reply bigger than a one-value answer is refused, never buffered whole."""
    big = build_payloads(1, result_set(DEPRECATE, 1, [encode_text_row(["y" * 500])] * 20))
    reply = ValueReply(DEPRECATE)
    with pytest.raises(MalformedPacket):
        for start in range(0, len(big), 1000):
            reply.feed(big[start : start + 1000])
    assert len(big) > VALUE_REPLY_LIMIT


def test_value_reply_not_done_has_no_value() -> None:
    reply = ValueReply(DEPRECATE)
    wire = _value_reply(DEPRECATE, 0)
    reply.feed(wire[:-3])
    assert not reply.done and reply.value is None


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"\xfe", 0),  # pre-4.1 bare EOF
        (bytes.fromhex("fe 03 00 22 40"), 0x4022),
    ],
)
def test_classic_eof_status_read_in_place(payload: bytes, status: int) -> None:
    """The whole-packet loop reads a classic EOF's status where it lies in the chunk."""
    wire = build_payloads(1, [encode_column_count(1, CLASSIC), col("a"), payload, payload])
    scanner = ResponseScanner(Command.COM_QUERY, CLASSIC)
    assert scanner.feed(wire + TRAILER) == len(wire)
    assert scanner.done
    assert scanner.status == status
    assert scanner.rows == 0


def test_classic_eof_too_long_is_malformed() -> None:
    scanner = ResponseScanner(Command.COM_QUERY, CLASSIC)
    with pytest.raises(MalformedPacket):
        scanner.feed(build_payloads(1, [encode_column_count(1, CLASSIC), col("a"), b"\xfe" * 9]))


def test_literal_constants_match_the_protocol() -> None:
    """The scanner spells these as literals (constants in the compiled C code)."""
    assert (response._OK_HEADER, response._EOF_HEADER) == (PacketHeader.OK, PacketHeader.EOF)
    assert response._ERR_HEADER == PacketHeader.ERR
    assert response._LOCAL_INFILE_HEADER == PacketHeader.LOCAL_INFILE
    assert response._MAX == MAX_PACKET_PAYLOAD
    assert response._COM_QUERY == Command.COM_QUERY
    assert response._COM_STMT_EXECUTE == Command.COM_STMT_EXECUTE
