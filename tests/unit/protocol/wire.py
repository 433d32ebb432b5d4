"""Test helpers: walking raw packet streams, cutting them into chunks, reading and building
the packets the proxy only writes or only skips (written apart from the package's code)."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator

from proxy.protocol.packets import ColumnDefinition, OkPacket, parse_eof, parse_ok

_CLIENT_DEPRECATE_EOF = 1 << 24


def header(wire: bytes, pos: int = 0) -> tuple[int, int]:
    """(payload length, sequence id) of the packet header at *pos*."""
    return int.from_bytes(wire[pos : pos + 3], "little"), wire[pos + 3]


def header_offsets(wire: bytes) -> list[int]:
    """Offsets of every packet header in a well-formed stream (independent of the package)."""
    offsets = []
    pos = 0
    while pos < len(wire):
        offsets.append(pos)
        pos += 4 + int.from_bytes(wire[pos : pos + 3], "little")
    assert pos == len(wire)
    return offsets


def split_at(wire: bytes, cuts: set[int]) -> list[memoryview]:
    """Zero-copy chunks of *wire* cut at the given offsets."""
    view = memoryview(wire)
    points = sorted(c for c in cuts if 0 < c < len(wire))
    chunks = []
    start = 0
    for point in [*points, len(wire)]:
        chunks.append(view[start:point])
        start = point
    return chunks


def random_chunks(wire: bytes, seed: int, max_size: int = 97) -> list[memoryview]:
    """Random chunk sizes; large streams get a proportionally larger ceiling."""
    rng = random.Random(seed)
    ceiling = max(max_size, len(wire) // 200)
    cuts = set()
    pos = 0
    while pos < len(wire):
        pos += rng.randint(1, ceiling)
        cuts.add(pos)
    return split_at(wire, cuts)


def header_chunks(wire: bytes) -> list[memoryview]:
    """Cuts inside and right after every header, so headers and first bytes straddle chunks."""
    cuts: set[int] = set()
    for off in header_offsets(wire):
        cuts.update(off + i for i in range(6))
    return split_at(wire, cuts)


def byte_chunks(wire: bytes) -> Iterator[bytes]:
    """One byte at a time."""
    for i in range(len(wire)):
        yield wire[i : i + 1]


def _lenenc_int(data: bytes, pos: int) -> tuple[int | None, int]:
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFB:
        return None, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
    return int.from_bytes(data[pos + 1 : pos + 1 + size], "little"), pos + 1 + size


def _lenenc_bytes(data: bytes, pos: int) -> tuple[bytes | None, int]:
    length, pos = _lenenc_int(data, pos)
    if length is None:
        return None, pos
    assert pos + length <= len(data), "truncated length-encoded string"
    return data[pos : pos + length], pos + length


def column_definition(payload: bytes) -> ColumnDefinition:
    """Read a ColumnDefinition41 payload."""
    names: list[str] = []
    pos = 0
    for _ in range(6):
        raw, pos = _lenenc_bytes(payload, pos)
        assert raw is not None
        names.append(raw.decode())
    assert payload[pos] == 0x0C, "fixed-length block of 12 bytes"
    charset, length, col_type, flags, decimals = struct.unpack_from("<HIBHB", payload, pos + 1)
    pos += 1 + 10
    assert payload[pos : pos + 2] == b"\0\0", "filler"
    pos += 2
    assert pos == len(payload), "trailing bytes after the column definition"
    catalog, schema, table, org_table, name, org_name = names
    return ColumnDefinition(
        name=name,
        column_type=col_type,
        schema=schema,
        table=table,
        org_table=org_table,
        org_name=org_name,
        catalog=catalog,
        charset=charset,
        column_length=length,
        flags=flags,
        decimals=decimals,
    )


def end_of_result(payload: bytes, caps: int) -> OkPacket:
    """Read the packet that ends a result set: OK-as-EOF under CLIENT_DEPRECATE_EOF, else EOF."""
    assert payload[:1] == b"\xfe", "a result set ends with a 0xFE packet"
    if caps & _CLIENT_DEPRECATE_EOF:
        return parse_ok(payload, caps)
    eof = parse_eof(payload)
    return OkPacket(status=eof.status, warnings=eof.warnings)


def prepare_ok(stmt_id: int, num_columns: int, num_params: int, warnings: int = 0) -> bytes:
    """COM_STMT_PREPARE_OK payload."""
    return struct.pack("<BIHHBH", 0, stmt_id, num_columns, num_params, 0, warnings)
