"""Pure decisions from health-check results: replica usability and the writer election."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.health.replstatus import ReplicaStatus


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one successful check of a server saw."""

    read_only: bool
    replica: ReplicaStatus | None
    gtid_position: str
    latency_s: float


def replica_problem(
    result: CheckResult, max_lag_s: float, currently_shunned: bool
) -> str | None:
    """Why a replica must not take reads now (None: it may).

    A shunned replica comes back only once fully caught up (lag 0), so that one hovering
    around the limit does not flap in and out of the read pool.
    """
    if not result.read_only:
        return "read_only is OFF on a replica (misconfigured)"
    rs = result.replica
    if rs is None:
        return "not replicating (no replica status)"
    if rs.io_running != "Yes" or rs.sql_running != "Yes":
        detail = f": {rs.last_error}" if rs.last_error else ""
        return f"replication stopped (IO {rs.io_running}, SQL {rs.sql_running}){detail}"
    if rs.last_error:
        return f"replication error: {rs.last_error}"
    if rs.seconds_behind is None:
        return "replication lag unknown"
    if rs.seconds_behind > max_lag_s:
        return f"replication lag {rs.seconds_behind}s > {max_lag_s:g}s"
    if currently_shunned and rs.seconds_behind > 0:
        return f"catching up (lag {rs.seconds_behind}s)"
    return None


@dataclass(frozen=True, slots=True)
class MasterView:
    """A master as the election sees it (masters are given in priority order)."""

    name: str
    up: bool  # not DOWN: its last checks succeeded
    read_only: bool | None  # None: never checked successfully


@dataclass
class Election:
    """What to do: who writes, who gets promoted or fenced, and any conflict to report."""

    writer: str | None
    promote: str | None = None
    fence: list[str] = field(default_factory=list)
    conflict: list[str] = field(default_factory=list)  # masters that were writable together


def elect(current: str | None, masters: list[MasterView]) -> Election:
    """Decide the writer from the masters' read_only flags, the truth every proxy can see.

    - Exactly the masters with read_only OFF are candidates; a proxy follows them rather than
      a private choice, so several proxies agree.
    - Two writable masters: keep the current writer if it is one of them, else the first by
      priority; the others are fenced (read_only ON). Reported as a conflict.
    - No writable master and the writer is gone (or unknown): promote the first healthy
      master by priority.
    - No writable master but the current writer is up and read-only: a switchover is
      happening elsewhere; hold (no writer) until a master becomes writable.
    """
    up = [m for m in masters if m.up and m.read_only is not None]
    writable = [m.name for m in up if not m.read_only]
    if writable:
        keep = current if current in writable else writable[0]
        others = [w for w in writable if w != keep]
        return Election(keep, fence=others, conflict=writable if others else [])
    current_view = next((m for m in masters if m.name == current), None)
    if current_view is not None and current_view.up and current_view.read_only:
        return Election(None)
    if up:
        return Election(up[0].name, promote=up[0].name)
    return Election(None)
