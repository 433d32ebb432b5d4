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


StatsKey = tuple[int, str, str, str, int]


class QueryDigests:
    """Counters per (digest, destination, user, schema); bounded so it cannot grow forever."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self.entries: dict[StatsKey, DigestStats] = {}

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
    ) -> None:
        key = (hostgroup, server, user, schema or "", digest_id)
        entry = self.entries.get(key)
        now = time.time()
        if entry is None:
            if len(self.entries) >= self.max_entries:
                return  # full: new digests are not tracked until a reset
            entry = DigestStats(
                hostgroup,
                schema or "",
                user,
                server,
                f"0x{digest_id:016X}",  # as ProxySQL prints it (Digest.hex), once per entry
                digest_text,
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
