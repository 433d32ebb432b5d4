"""The sysbench scenarios, how to run one, and parsing of its output (incl. the histogram)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass, field

DATABASE = "sbtest"
TABLE_SIZE = 10_000
PREPARED_TABLES = 4  # prepare creates sbtest1..4; point_select reads sbtest1 only


class SysbenchError(RuntimeError):
    """sysbench failed or printed something we cannot read."""


@dataclass(frozen=True)
class Scenario:
    workload: str  # sysbench Lua script name
    ps_mode: str  # --db-ps-mode: disable (text protocol) or auto (prepared statements)
    threads: int
    tables: int = 1
    extra: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        opts = "".join(f" {e.lstrip('-')}" for e in self.extra)
        return f"{self.workload}{opts} ps={self.ps_mode} threads={self.threads}"


SCENARIOS: tuple[Scenario, ...] = (
    *(
        Scenario("oltp_point_select", ps, threads)
        for ps in ("disable", "auto")
        for threads in (1, 8, 32)
    ),
    # Through pyproxy the SELECTs of oltp_read_only go to the replica (no BEGIN/COMMIT);
    # straight, everything runs on the writer.
    Scenario("oltp_read_only", "auto", 8, tables=PREPARED_TABLES, extra=("--skip_trx=on",)),
    # Uniform keys over 4 tables keep InnoDB's own deadlocks (which sysbench ignores and
    # counts) rare; the default "special" distribution piles the writes on a few rows.
    Scenario(
        "oltp_read_write",
        "auto",
        8,
        tables=PREPARED_TABLES,
        extra=("--rand-type=uniform",),
    ),
)


@dataclass
class RunResult:
    """One sysbench run: throughput, latency (per event) and the latency histogram."""

    queries: int
    qps: float
    events: int
    total_time_s: float
    latency_sum_ms: float
    sysbench_p95_ms: float
    errors: int
    reconnects: int
    histogram: list[tuple[float, int]] = field(repr=False)  # (bucket value ms, count)

    @property
    def avg_latency_ms(self) -> float:
        """Mean event latency from the sum (sysbench's own "avg" has only 10 us resolution)."""
        return self.latency_sum_ms / self.events if self.events else math.nan

    @property
    def statements_per_event(self) -> float:
        return self.queries / self.events if self.events else math.nan

    def percentile_ms(self, pct: float) -> float:
        """Percentile from the histogram, computed the way sysbench computes --percentile."""
        total = sum(count for _, count in self.histogram)
        if not total:
            return math.nan
        wanted = math.ceil(total * pct / 100)
        seen = 0
        for value, count in self.histogram:
            seen += count
            if seen >= wanted:
                return value
        return self.histogram[-1][0]


def sysbench_path() -> str:
    path = shutil.which("sysbench")
    if path is None:
        raise SysbenchError("sysbench is not installed (Debian package `sysbench`; `make deps`)")
    return path


def version() -> str:
    out = subprocess.run([sysbench_path(), "--version"], capture_output=True, text=True)
    return out.stdout.strip()


def base_args(port: int, user: str, password: str, workload: str, tables: int) -> list[str]:
    return [
        sysbench_path(),
        workload,
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
        f"--mysql-port={port}",
        f"--mysql-user={user}",
        f"--mysql-password={password}",
        f"--mysql-db={DATABASE}",
        f"--tables={tables}",
        f"--table-size={TABLE_SIZE}",
    ]


def prepare(port: int, user: str, password: str) -> None:
    """Create and fill sbtest1..N (run once, straight against the writer)."""
    cmd = [*base_args(port, user, password, "oltp_read_write", PREPARED_TABLES), "prepare"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise SysbenchError(f"sysbench prepare failed:\n{proc.stdout}\n{proc.stderr}")


def run(scenario: Scenario, port: int, user: str, password: str, seconds: int) -> RunResult:
    cmd = [
        *base_args(port, user, password, scenario.workload, scenario.tables),
        *scenario.extra,
        f"--threads={scenario.threads}",
        f"--time={seconds}",
        f"--db-ps-mode={scenario.ps_mode}",
        "--report-interval=0",
        "--histogram=on",
        "--percentile=95",
        "run",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if proc.returncode != 0:
        raise SysbenchError(
            f"sysbench failed ({proc.returncode}): {' '.join(cmd[1:])}\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return parse(proc.stdout)


_HIST_LINE = re.compile(r"^\s*(\d+\.\d+)\s+\|[* ]*?\s+(\d+)\s*$", re.MULTILINE)


def _number(text: str, pattern: str) -> re.Match[str]:
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise SysbenchError(f"no match for {pattern!r} in sysbench output:\n{text[-3000:]}")
    return match


def parse(text: str) -> RunResult:
    queries = _number(text, r"^\s*queries:\s+(\d+)\s+\(([\d.]+) per sec\.\)")
    head, _, _ = text.partition("SQL statistics:")
    return RunResult(
        queries=int(queries.group(1)),
        qps=float(queries.group(2)),
        events=int(_number(text, r"total number of events:\s+(\d+)").group(1)),
        total_time_s=float(_number(text, r"total time:\s+([\d.]+)s").group(1)),
        latency_sum_ms=float(_number(text, r"^\s*sum:\s+([\d.]+)").group(1)),
        sysbench_p95_ms=float(_number(text, r"95th percentile:\s+([\d.]+)").group(1)),
        errors=int(_number(text, r"ignored errors:\s+(\d+)").group(1)),
        reconnects=int(_number(text, r"reconnects:\s+(\d+)").group(1)),
        histogram=[(float(v), int(c)) for v, c in _HIST_LINE.findall(head)],
    )
