"""Test helpers: walking raw packet streams and cutting them into chunks."""

from __future__ import annotations

import random
from collections.abc import Iterator


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
