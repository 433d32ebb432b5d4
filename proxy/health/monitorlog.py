"""The monitor's recent checks per server (ProxySQL's monitor.mysql_server_*_log), bounded."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CheckRecord:
    """One check of one server: what ProxySQL's ping, read_only and replication lag logs show.
    pyproxy's check is one round trip answering all three; error is set when it failed."""

    hostname: str
    port: int
    time_start_us: int
    success_time_us: int | None
    read_only: int | None
    repl_lag: int | None
    is_replica: bool
    error: str | None


class MonitorLog:
    """The last checks of each server (also of servers since removed, for the record); the
    monitor is its one writer (record)."""

    def __init__(self, history: Callable[[], int]) -> None:
        """history(): how many checks to keep per server (read at each record, so that a
        reload changing it takes effect at the next check)."""
        self._history = history
        self._checks: dict[str, deque[CheckRecord]] = {}

    def record(self, server: str, check: CheckRecord) -> None:
        length = self._history()
        log = self._checks.get(server)
        if log is None or log.maxlen != length:
            log = self._checks[server] = deque(log or (), maxlen=length)
        log.append(check)

    def records(self) -> list[CheckRecord]:
        """Every server's checks, oldest first per server (a copy: safe off the loop)."""
        return [check for log in self._checks.values() for check in log]
