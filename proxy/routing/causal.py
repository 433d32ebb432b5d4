"""Causal reads: high-water marks of acknowledged commits, and which replica covers one."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from proxy.routing.gtid import is_mariadb, parse_mariadb, parse_mysql

# A mark: per MariaDB replication domain (int key) the highest seq_no, or per MySQL source
# uuid (str key) the highest transaction number, that must be visible.
Mark = dict[int | str, int]

CAUSAL_LEVELS = frozenset({"causal", "causal_global"})


def commit_mark(gtid: str) -> Mark:
    """The mark one commit (or a writer's whole position) asks a replica to have applied.

    MariaDB 'd-s-n[,...]': per domain the highest seq_no. MySQL 'uuid:1-5:7[,...]': per
    uuid the highest transaction number (the replica must hold 1..n, see applied_mark)."""
    if is_mariadb(gtid):
        return {d: seq for d, seq in parse_mariadb(gtid).items()}
    return {uuid: max(hi for _, hi in spans) for uuid, spans in parse_mysql(gtid).items() if spans}


def applied_mark(position: str) -> Mark:
    """What a server at this position has surely applied, as a mark: MariaDB per domain its
    seq_no; MySQL per uuid the end of the unbroken run from transaction 1 (a gap means the
    transactions after it may be missing)."""
    if is_mariadb(position):
        return {d: seq for d, seq in parse_mariadb(position).items()}
    out: Mark = {}
    for uuid, spans in parse_mysql(position).items():
        end = 0
        for lo, hi in sorted(spans):
            if lo > end + 1:
                break
            end = max(end, hi)
        if end:
            out[uuid] = end
    return out


def merge(a: Mark, b: Mark) -> Mark:
    """The per-key maximum of two marks (a new dict)."""
    out = dict(a)
    for key, value in b.items():
        if value > out.get(key, -1):
            out[key] = value
    return out


def covers(have: Mark, want: Mark) -> bool:
    """Has a server that applied `have` applied everything in `want`?"""
    for key, value in want.items():  # noqa: SIM110 - a loop: no generator on the read path
        if have.get(key, -1) < value:
            return False
    return True


def wait_gtid(want: Mark) -> str:
    """The GTID argument for MASTER_GTID_WAIT (MariaDB: 'd-0-n', the server id is not
    compared) or WAIT_FOR_EXECUTED_GTID_SET (MySQL: 'uuid:1-n')."""
    return ",".join(
        f"{key}-0-{value}" if isinstance(key, int) else f"{key}:1-{value}"
        for key, value in sorted(want.items(), key=lambda kv: str(kv[0]))
    )


def wait_query(gtid: str, wait_ms: int, mariadb: bool) -> str:
    """The bounded wait for a replica to apply gtid: MASTER_GTID_WAIT on MariaDB,
    WAIT_FOR_EXECUTED_GTID_SET on MySQL; both answer 0 once applied (see caught_up)."""
    fn = "MASTER_GTID_WAIT" if mariadb else "WAIT_FOR_EXECUTED_GTID_SET"
    return f"SELECT {fn}('{gtid}', {wait_ms / 1000:.3f})"


def caught_up(value: bytes | None) -> bool:
    """Did the wait's answer say the replica applied the GTID? 0 yes; MariaDB's -1 and
    MySQL's 1 (timed out), NULL or an error (None): no."""
    return value == b"0"


def is_mysql_mark(want: Mark) -> bool:
    return any(isinstance(key, str) for key in want)


class PositionCache:
    """applied_mark() of the positions the servers report, parsed once per distinct string."""

    LIMIT = 256  # positions change with every health check: a bounded memo, reset when full

    def __init__(self) -> None:
        self._parsed: dict[str, Mark] = {}

    def mark(self, position: str) -> Mark:
        got = self._parsed.get(position)
        if got is None:
            if len(self._parsed) >= self.LIMIT:
                self._parsed.clear()
            got = self._parsed[position] = applied_mark(position)
        return got


class Outcome(Enum):
    """How a causal read was served (the metric's label)."""

    REPLICA_FRESH = "replica_fresh"
    REPLICA_AFTER_WAIT = "replica_after_wait"
    WRITER_FALLBACK = "writer_fallback"


@dataclass(frozen=True)
class Candidate:
    """A replica that may take the read: its name, known position (as a mark), lag."""

    name: str
    applied: Mark
    lag_s: float | None


@dataclass(frozen=True)
class Decision:
    """fresh: a replica that covers the mark now; else wait_on: one to wait on (bounded),
    then the writer if it does not catch up; neither: the writer at once."""

    fresh: str | None = None
    wait_on: str | None = None


def decide(want: Mark | None, candidates: list[Candidate]) -> Decision:
    """Where a causal read goes. want None: no mark could be had (not even the writer's
    position): only the writer is safe. Candidates come in the
    router's order (its weighted choice first): the first that covers the mark takes the
    read; else the one not known to lag that is nearest the mark is worth a wait (a delayed
    replica that merely reports no lag between events is passed over); else the writer."""
    if want is None:
        return Decision()
    for c in candidates:
        if covers(c.applied, want):
            return Decision(fresh=c.name)
    best: Candidate | None = None
    best_score = 0
    for c in candidates:
        if c.lag_s:
            continue
        score = sum(min(c.applied.get(k, -1), v) for k, v in want.items())
        if best is None or score > best_score:
            best, best_score = c, score
    return Decision() if best is None else Decision(wait_on=best.name)
