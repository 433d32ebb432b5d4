"""Pure decisions from health-check results: replica usability and the writer election."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from proxy.health.replstatus import ReplicaStatus
from proxy.routing.gtid import contains, is_mariadb, merge_mariadb


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one successful check of a server saw."""

    read_only: bool
    replica: ReplicaStatus | None
    gtid_position: str
    latency_s: float


# A check that timed out while the loop was held up for more than this share of its timeout
# could not run: its outcome is unknown, not a failure.
STALL_SHARE = 1 / 3


class LoopStalls:
    """How late a ticker, due at a fixed period, ran: the time the event loop (or the whole
    process) could run nothing. A check timing out meanwhile says nothing about the server."""

    def __init__(self, keep_s: float = 60.0) -> None:
        self._late: deque[tuple[float, float]] = deque(maxlen=4096)  # (ran at, seconds late)
        self._keep_s = keep_s

    def record(self, due: float, ran: float) -> None:
        if ran > due:
            self._late.append((ran, ran - due))
        while self._late and self._late[0][0] < ran - self._keep_s:
            self._late.popleft()

    def stalled(self, since: float, now: float, next_due: float) -> float:
        """Seconds the loop was late within [since, now]; next_due: when the pending tick is
        due (a stall still going on has not been recorded yet)."""
        total = sum(min(late, ran - since) for ran, late in self._late if ran > since)
        return total + max(0.0, now - max(next_due, since))


def timeout_is_failure(stalled_s: float, timeout_s: float) -> bool:
    """A timed-out check counts as failed only when the loop could run it meanwhile."""
    return stalled_s <= timeout_s * STALL_SHARE


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
    gtid: str = ""  # what it has or will apply (held_position of its last check)
    fence_pending: bool = False  # demoted by a failover while unreachable: fence it first


@dataclass
class Election:
    """What to do: who writes, who gets promoted or fenced, any conflict to report, and why."""

    writer: str | None
    promote: str | None = None
    fence: list[str] = field(default_factory=list)
    conflict: list[str] = field(default_factory=list)  # masters that were writable together
    why: str = ""


def held_position(result: CheckResult) -> str:
    """The GTIDs a server has applied, plus on MariaDB those its IO thread has received (in
    its relay log, applied before a promotion completes): what it will hold as a writer."""
    rs = result.replica
    if rs is None or not rs.retrieved_gtid or not is_mariadb(result.gtid_position):
        return result.gtid_position
    return merge_mariadb(result.gtid_position, rs.retrieved_gtid)


def _behind(a: MasterView, b: MasterView) -> bool:
    """b has every transaction a has, and more."""
    return contains(b.gtid, a.gtid) and not contains(a.gtid, b.gtid)


def _newest(views: list[MasterView]) -> list[MasterView]:
    """The masters holding every transaction the others hold (several: a true tie)."""
    return [a for a in views if all(contains(a.gtid, b.gtid) for b in views)]


def elect(current: str | None, masters: list[MasterView]) -> Election:
    """Decide the writer from what the masters say (read_only, GTID positions), never from
    list order alone: priority only breaks a true tie.

    - A master demoted by a failover while unreachable is fenced (read_only ON) as soon as
      it answers, whatever it holds, and is no candidate until it is read-only.
    - With no current writer (at start, or after one was lost), every master must have been
      checked or be DOWN before anything is decided: no election from a partial view.
    - One writable master: follow it (several proxies agree on what the servers say).
    - Several writable: the one holding every transaction the others hold stays writer
      (a tie: the current writer, else priority) and the others are fenced; a master that
      alone holds the newest transactions is never fenced. When their GTIDs diverged (each
      holds some the other lacks), the current writer is kept; with no current writer the
      proxy holds (no writer) and reports the conflict until one is read-only again.
    - No writable master: a current writer that failed fewer checks than the threshold
      stays (no failover on a blip); one that is up and read-only means a switchover
      elsewhere: hold. Otherwise promote the healthy master no other is ahead of (ties:
      priority).

    `up` must mean "the latest check succeeded": a master that just failed a check may be the
    dead writer another proxy already replaced, and must not be followed or defended.
    """
    fence = [m.name for m in masters if m.fence_pending and m.up and m.read_only is False]
    eligible = [m for m in masters if not m.fence_pending]
    if current not in {m.name for m in eligible}:
        current = None
    unknown = [m.name for m in eligible if not m.up and not m.down]
    if current is None and unknown:
        return Election(
            None, fence=fence, why=f"waiting for the first check of {', '.join(unknown)}"
        )
    up = [m for m in eligible if m.up and m.read_only is not None]
    writable = [m for m in up if not m.read_only]
    if len(writable) == 1:
        return Election(writable[0].name, fence=fence, why="the only writable master")
    if writable:
        names = [w.name for w in writable]
        newest = [w.name for w in _newest(writable)]
        if current in newest or (current in names and not newest):
            keep: str | None = current
        elif newest:
            keep = newest[0]
        else:
            return Election(
                None,
                fence=fence,
                conflict=names,
                why=f"{' and '.join(names)} are writable with diverged GTIDs; set read_only=ON "
                "on all but one",
            )
        why = "newest GTIDs" if len(newest) == 1 else "holds every GTID the others hold"
        if not newest:
            why = "current writer (GTIDs diverged)"
        return Election(
            keep, fence=fence + [n for n in names if n != keep], conflict=names, why=why
        )
    current_view = next((m for m in eligible if m.name == current), None)
    if current_view is not None and not current_view.down:
        if not current_view.up:
            return Election(current, fence=fence)  # failing but not yet DOWN: no failover on a blip
        if current_view.read_only:
            return Election(
                None, fence=fence, why=f"{current} is read-only (a switchover elsewhere)"
            )
    ahead = [c for c in up if not any(_behind(c, o) for o in up)]
    if ahead:
        return Election(ahead[0].name, promote=ahead[0].name, fence=fence, why="newest GTIDs")
    return Election(None, fence=fence, why="no master is reachable")


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
