"""Per-digest query statistics, like ProxySQL's stats_mysql_query_digest."""

from __future__ import annotations

import time
from dataclasses import dataclass


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
        self._text_bytes = 0  # of the texts in entries

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
        now = time.time()
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
        entry.count_star += 1
        entry.last_seen = now
        entry.sum_time_us += elapsed_us
        if elapsed_us < entry.min_time_us:
            entry.min_time_us = elapsed_us
        if elapsed_us > entry.max_time_us:
            entry.max_time_us = elapsed_us
        entry.sum_rows_sent += rows_sent
        entry.sum_rows_affected += rows_affected

    def reset(self) -> None:
        self.entries.clear()
        self._text_bytes = 0
