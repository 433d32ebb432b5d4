"""Pure decisions from health-check results: replica usability and the writer election."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.health.replstatus import ReplicaStatus
from proxy.routing.gtid import contains, is_mariadb


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one successful check of a server saw."""

    read_only: bool
    replica: ReplicaStatus | None
    gtid_position: str
    latency_s: float


def replica_problem(result: CheckResult, max_lag_s: float, currently_shunned: bool) -> str | None:
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
    up: bool  # its latest check succeeded
    down: bool  # failed failure_threshold checks in a row
    read_only: bool | None  # from the last successful check; None: never checked


@dataclass
class Election:
    """What to do: who writes, who gets promoted or fenced, and any conflict to report."""

    writer: str | None
    promote: str | None = None
    fence: list[str] = field(default_factory=list)
    conflict: list[str] = field(default_factory=list)  # masters that were writable together


def elect(current: str | None, masters: list[MasterView]) -> Election:
    """Decide the writer from the masters' read_only flags, the truth every proxy can see.

    - The masters with read_only OFF are the candidates; a proxy follows them rather than a
      private choice, so several proxies agree.
    - Two writable masters: keep the current writer if it is one of them and fence the others
      (read_only ON). A proxy with no current writer cannot know which one clients have been
      writing to, so it holds (no writer) and only reports the conflict.
    - No writable master and the writer is DOWN (or unknown): promote the first healthy
      master by priority. A writer that failed fewer checks than the threshold stays.
    - No writable master but the current writer is up and read-only: a switchover is
      happening elsewhere; hold (no writer) until a master becomes writable.

    `up` must mean "the latest check succeeded": a master that just failed a check may be the
    dead writer another proxy already replaced, and must not be followed or defended.
    """
    up = [m for m in masters if m.up and m.read_only is not None]
    writable = [m.name for m in up if not m.read_only]
    if len(writable) == 1:
        return Election(writable[0])
    if writable:
        if current in writable:
            return Election(current, fence=[w for w in writable if w != current], conflict=writable)
        return Election(None, conflict=writable)
    current_view = next((m for m in masters if m.name == current), None)
    if current_view is not None and not current_view.down:
        if not current_view.up:
            return Election(current)  # failing but not yet DOWN: no failover on a blip
        if current_view.read_only:
            return Election(None)
    if up:
        return Election(up[0].name, promote=up[0].name)
    return Election(None)


def ready_for_failback(
    preferred: CheckResult | None, writer: CheckResult | None, writer_port: int
) -> bool:
    """The preferred master replicates from the current writer and has applied all of it."""
    if preferred is None or writer is None or not preferred.read_only:
        return False
    rs = preferred.replica
    if rs is None or not rs.healthy or rs.seconds_behind != 0 or rs.source_port != writer_port:
        return False
    if not rs.applied_all_received:
        return False
    if is_mariadb(writer.gtid_position):
        return contains(preferred.gtid_position, writer.gtid_position)
    return True
