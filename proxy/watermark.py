"""The proxy-wide high-water mark of acknowledged commits, shared by every worker process.

Causal reads (routing.consistency: causal) need, when a read is routed, the highest GTID that
any worker of this pyproxy acknowledged to any client. Each worker publishes a commit's GTID
here *before* it forwards the commit's OK to the client, and reads the mark synchronously
(no await, no lock) when it routes a read.

Layout: a block of `rows` rows of 64-bit words, one row per worker. A worker writes only its
own row (one owner per row: no locks); readers take the maximum over all rows. A row is

    [version, updated_ns, pending, flags] + SLOTS x [kind, key_a, key_b, value]

- version: a seqlock; odd while the owner writes the row, bumped after every change, so a
  reader retries a torn row and reuses its merged mark while no version moved.
- updated_ns: time.monotonic_ns() of the row's last advance (CLOCK_MONOTONIC is one clock
  for every process of the host): the mark's age.
- pending: commits acknowledged whose GTID is not known yet (no session tracking): while
  any row has one, the mark is unknown: a causal read asks the writer's current position
  instead (and goes to the writer if that fails).
- flags: FULL when a domain/uuid did not fit in the row's SLOTS: the mark is unknown from
  then on (as above: every causal read asks the writer's position) and a warning is
  logged; raise SLOTS if that happens.
- a slot: kind 1 = MariaDB domain (key_a), kind 2 = MySQL source uuid (key_a, key_b: its 16
  bytes); value: the highest seq_no / transaction number. The owner fills key and value
  before kind, and values only grow.

Every word is 8-byte aligned: on x86-64 and arm64 such stores and loads are single, untorn
accesses, and the seqlock catches a reader overlapping a row being written.

Use: the owner of the block (the topology process) calls `create(rows)` (a memfd, so no
name in /dev/shm to leak and no resource-tracker process) before spawning the workers, which
inherit the descriptor (pass_fds) and open `Watermark(fd, row=index, rows=rows)`; the owner
calls `release(fd)` after they are gone. In a single process, `Watermark()` uses a private
one-row block (no shared memory).
"""

from __future__ import annotations

import logging
import mmap
import os
import time
import uuid

from proxy.routing.causal import Mark

log = logging.getLogger(__name__)

SLOTS = 32  # domains / source uuids per row
HEADER = 4
SLOT_WORDS = 4
ROW_WORDS = HEADER + SLOTS * SLOT_WORDS
ROW_BYTES = ROW_WORDS * 8
_VERSION, _UPDATED, _PENDING, _FLAGS = range(HEADER)
FULL = 1
_MARIADB, _MYSQL = 1, 2
_SPINS = 1000  # a reader's retries of a row being written before it calls the mark unknown


def create(rows: int) -> int:
    """Create a zeroed block for `rows` workers: its file descriptor (close-on-exec: a worker
    gets it by pass_fds), for Watermark(fd, ...)."""
    fd = os.memfd_create("pyproxy-watermark")
    os.ftruncate(fd, rows * ROW_BYTES)
    return fd


def release(fd: int) -> None:
    """The owner's descriptor, closed once no worker uses it (the memory goes with the last
    mapping)."""
    os.close(fd)


def _key_words(key: int | str) -> tuple[int, int, int]:
    if isinstance(key, int):
        return _MARIADB, key, 0
    raw = uuid.UUID(key).bytes
    return _MYSQL, int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")


def _key_of(kind: int, a: int, b: int) -> int | str:
    if kind == _MARIADB:
        return a
    return str(uuid.UUID(bytes=a.to_bytes(8, "little") + b.to_bytes(8, "little")))


class Watermark:
    """One worker's view of the block: advance() its own row, mark() over all rows."""

    def __init__(self, fd: int | None = None, row: int = 0, rows: int = 1) -> None:
        if not 0 <= row < rows:
            raise ValueError(f"watermark row {row} is not in 0..{rows - 1}")
        self._map: mmap.mmap | None = None
        if fd is None:
            buf: bytearray | mmap.mmap = bytearray(rows * ROW_BYTES)
        else:
            if os.fstat(fd).st_size < rows * ROW_BYTES:
                raise ValueError(f"watermark block (fd {fd}) is smaller than {rows} rows")
            buf = self._map = mmap.mmap(fd, rows * ROW_BYTES)
        self._words = memoryview(buf).cast("Q")
        self.rows = rows
        self._base = row * ROW_WORDS
        self._mine: Mark = {}  # this row's values, as written
        self._slots: dict[int | str, int] = {}  # key -> word index of its slot
        self._seen: list[int] = []  # row versions the cached mark was merged from
        self._cached: Mark | None = {}
        self.adopted_ns = time.monotonic_ns()
        self._inherited = 0  # a dead predecessor's commits whose GTID it never published
        if fd is not None:
            self._adopt()

    def _adopt(self) -> None:
        """A restarted worker takes its row over as its dead predecessor left it: the slots
        (reused in place, so a key is never in two slots), a write cut short (odd version:
        made even; values only grow, so the row is still a valid mark), and its pending
        commits, which keep the mark unknown until a writer position asked after now covers
        them (covered())."""
        w, base = self._words, self._base
        if w[base + _VERSION] & 1:
            w[base + _VERSION] += 1
        for s in range(base + HEADER, base + ROW_WORDS, SLOT_WORDS):
            if w[s] == 0:
                break
            key = _key_of(w[s], w[s + 1], w[s + 2])
            self._slots[key] = s
            self._mine[key] = w[s + 3]
        self._inherited = w[base + _PENDING]

    # -- the owner's side: its row only ------------------------------------------------------
    def advance(self, mark: Mark) -> None:
        """Publish a commit's mark (call before the client gets its OK)."""
        mine = self._mine
        changes = [(k, v) for k, v in mark.items() if v > mine.get(k, -1)]
        if not changes:
            return
        w, base = self._words, self._base
        w[base + _VERSION] += 1
        for key, value in changes:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._new_slot(key)
                if slot is None:
                    continue
                w[slot + 3] = value
                kind, a, b = _key_words(key)
                w[slot + 1], w[slot + 2] = a, b
                w[slot] = kind
            else:
                w[slot + 3] = value
            mine[key] = value
        w[base + _UPDATED] = time.monotonic_ns()
        w[base + _VERSION] += 1

    def _new_slot(self, key: int | str) -> int | None:
        used = len(self._slots)
        if used >= SLOTS:
            if not self._words[self._base + _FLAGS] & FULL:
                log.warning(
                    "causal reads: more than %d GTID domains/source uuids; every causal read "
                    "asks the writer's position until restart",
                    SLOTS,
                )
                self._words[self._base + _FLAGS] |= FULL
            return None
        slot = self._base + HEADER + used * SLOT_WORDS
        self._slots[key] = slot
        return slot

    def begin_unknown(self) -> None:
        """A commit was acknowledged whose GTID is not known yet: the mark is unknown."""
        self._bump(_PENDING, 1)

    def end_unknown(self) -> None:
        """That commit's GTID was published (or given up on)."""
        self._bump(_PENDING, -1)

    def covered(self, asked_ns: int, mark: Mark) -> None:
        """The writer's position, asked at asked_ns (monotonic ns): asked after this row was
        adopted, it holds the predecessor's unpublished commits, which are pending no more."""
        if self._inherited and asked_ns > self.adopted_ns:
            self.advance(mark)
            self._bump(_PENDING, -self._inherited)
            self._inherited = 0

    def _bump(self, word: int, delta: int) -> None:
        w, base = self._words, self._base
        w[base + _VERSION] += 1
        w[base + word] += delta
        w[base + _VERSION] += 1

    # -- everyone's side: all rows -----------------------------------------------------------
    def mark(self) -> Mark | None:
        """The maximum over every worker's row; None: unknown (a commit's GTID pending, the
        table full, or a row kept changing under the reader): ask the writer's position."""
        w = self._words
        versions = [w[r * ROW_WORDS] for r in range(self.rows)]
        if versions == self._seen:
            return self._cached
        merged: Mark | None = {}
        for r in range(self.rows):
            got = self._read_row(r * ROW_WORDS)
            if got is None:
                merged = None
                break
            assert merged is not None
            for key, value in got.items():
                if value > merged.get(key, -1):
                    merged[key] = value
        self._seen, self._cached = versions, merged
        return merged

    def _read_row(self, base: int) -> Mark | None:
        w = self._words
        for _ in range(_SPINS):
            v1 = w[base + _VERSION]
            if v1 & 1:
                continue
            unknown = w[base + _PENDING] or w[base + _FLAGS] & FULL
            got: Mark = {}
            for s in range(base + HEADER, base + ROW_WORDS, SLOT_WORDS):
                kind = w[s]
                if kind == 0:
                    break
                got[_key_of(kind, w[s + 1], w[s + 2])] = w[s + 3]
            if w[base + _VERSION] == v1:
                return None if unknown else got
        return None

    def age_s(self) -> float | None:
        """Seconds since the mark last advanced (on any worker); None: never."""
        w = self._words
        last = max(w[r * ROW_WORDS + _UPDATED] for r in range(self.rows))
        return (time.monotonic_ns() - last) / 1e9 if last else None

    def close(self) -> None:
        self._words.release()
        if self._map is not None:
            self._map.close()
