"""Per-digest query statistics, like ProxySQL's stats_mysql_query_digest."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final


@dataclass(slots=True)
class DigestStats:
    hostgroup: int
    schemaname: str
    username: str
    server: str
    digest: str  # 0x... id
    digest_text: str
    count_star: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    sum_time_us: int = 0
    min_time_us: int = 0
    max_time_us: int = 0
    sum_rows_sent: int = 0
    sum_rows_affected: int = 0

    def __reduce__(self) -> tuple[type[DigestStats], tuple[int | float | str, ...]]:
        # Copied and pickled as a plain tuple: a worker's report of thousands of digests is
        # built and sent several times faster than by the generic slots protocol.
        return (DigestStats, (
            self.hostgroup, self.schemaname, self.username, self.server, self.digest,
            self.digest_text, self.count_star, self.first_seen, self.last_seen,
            self.sum_time_us, self.min_time_us, self.max_time_us, self.sum_rows_sent,
            self.sum_rows_affected,
        ))  # fmt: skip


# Final: a C global in the compiled module (an imported name is a module dict lookup per use).
wall_clock: Final = time.time

StatsKey = tuple[int, str, str, str, int]


# ProxySQL's mysql-query_digests_max_digest_length default: digest_text is cut there.
MAX_DIGEST_LENGTH = 2048
# All the digest texts kept, in UTF-8 bytes (as a report carries them): with max_entries,
# what keeps a worker's report far under the channel's 64 MiB whatever the cut is set to.
MAX_TEXT_BYTES = 16 << 20


class QueryDigests:
    """Counters per (digest, destination, user, schema); bounded (entries, text kept) so it
    cannot grow forever nor make a report too big to send."""

    def __init__(self, max_entries: int = 20_000, max_text_bytes: int = MAX_TEXT_BYTES) -> None:
        self.max_entries = max_entries
        self.max_text_bytes = max_text_bytes
        self.entries: dict[StatsKey, DigestStats] = {}
        # The same entries by digest id: found by an int and a few string compares, with no
        # key tuple built and hashed per statement.
        self._by_digest: dict[int, list[DigestStats]] = {}
        self._text_bytes = 0  # of the texts in entries
        # Unix time, the last_seen of what count() counts: set by tick() (the worker's sweeper,
        # four times a second) rather than read per statement; last_seen is shown in seconds.
        self.now = wall_clock()

    def tick(self, now: float) -> None:
        """The time passed (Unix time, from time.time())."""
        self.now = now

    def count(
        self,
        digest_id: int,
        hostgroup: int,
        server: str,
        user: str,
        schema: str,
        elapsed_us: int,
        rows_sent: int,
        rows_affected: int,
    ) -> bool:
        """Count a statement in its entry; False when there is none yet (record() makes it)."""
        same = self._by_digest.get(digest_id)
        if same is None:
            return False
        for entry in same:
            if (
                entry.hostgroup == hostgroup
                and entry.server == server
                and entry.username == user
                and entry.schemaname == schema
            ):
                _bump(entry, self.now, elapsed_us, rows_sent, rows_affected)
                return True
        return False

    def record(
        self,
        digest_id: int,
        digest_text: str,
        hostgroup: int,
        server: str,
        user: str,
        schema: str | None,
        elapsed_us: int,
        rows_sent: int,
        rows_affected: int,
        max_digest_length: int = MAX_DIGEST_LENGTH,
    ) -> None:
        key = (hostgroup, server, user, schema or "", digest_id)
        entry = self.entries.get(key)
        now = self.now = wall_clock()  # a new entry (or a full table): rare, read exactly
        if entry is None:
            if len(self.entries) >= self.max_entries:
                return  # full: new digests are not tracked until a reset
            text = digest_text[:max_digest_length]
            size = len(text.encode("utf-8", "surrogatepass"))
            if self._text_bytes + size > self.max_text_bytes:
                return  # as full
            self._text_bytes += size
            entry = DigestStats(
                hostgroup,
                schema or "",
                user,
                server,
                f"0x{digest_id:016X}",  # as ProxySQL prints it (Digest.hex), once per entry
                text,
                first_seen=now,
                min_time_us=elapsed_us,
            )
            self.entries[key] = entry
            self._by_digest.setdefault(digest_id, []).append(entry)
        _bump(entry, now, elapsed_us, rows_sent, rows_affected)

    def reset(self) -> None:
        self.entries.clear()
        self._by_digest.clear()
        self._text_bytes = 0


def _bump(
    entry: DigestStats, now: float, elapsed_us: int, rows_sent: int, rows_affected: int
) -> None:
    entry.count_star += 1
    entry.last_seen = now
    entry.sum_time_us += elapsed_us
    if elapsed_us < entry.min_time_us:
        entry.min_time_us = elapsed_us
    if elapsed_us > entry.max_time_us:
        entry.max_time_us = elapsed_us
    entry.sum_rows_sent += rows_sent
    entry.sum_rows_affected += rows_affected
