"""Benchmark settings: command-line flags over BENCH_* environment variables over defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results"


@dataclass(frozen=True)
class Settings:
    time_s: int  # length of one sysbench run
    pairs: int  # direct/proxied pairs per scenario
    warmup_s: int  # one unmeasured run each way before a workload's first scenario
    idle_connections: int
    out_dir: Path | None  # where latest.json / latest.md go; None: print only
    quick: bool
    keep_lab: bool  # leave the lab and its temp dir behind (debugging)
    only: tuple[str, ...]  # run only these phases (see --only); empty: all


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="sysbench straight to the writer and through pyproxy, in pairs; "
        "idle-connection footprint; classifier microbenchmark. Writes bench/results/latest.*",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="development run: 2 s runs, 1 pair, 500 idle connections, results not written "
        "unless --out is given",
    )
    parser.add_argument("--time", type=int, help="seconds per sysbench run (BENCH_TIME, 4)")
    parser.add_argument(
        "--pairs",
        type=int,
        help="direct/proxied pairs, also the causal rounds and worker runs (BENCH_PAIRS, 8)",
    )
    parser.add_argument("--warmup", type=int, help="warm-up seconds (BENCH_WARMUP, 2)")
    parser.add_argument(
        "--idle", type=int, help="idle client connections to hold (BENCH_IDLE, 5000)"
    )
    parser.add_argument("--out", type=Path, help="results directory (BENCH_OUT, bench/results)")
    parser.add_argument("--keep-lab", action="store_true", help="do not destroy the lab")
    parser.add_argument(
        "--only",
        action="append",
        choices=("sysbench", "ryw", "causal", "idle", "classify", "workers"),
        default=[],
        help="run only this phase (repeatable)",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    time_s = args.time or _env_int("BENCH_TIME", 2 if quick else 4)
    pairs = args.pairs or _env_int("BENCH_PAIRS", 1 if quick else 8)
    warmup = args.warmup if args.warmup is not None else _env_int("BENCH_WARMUP", 1 if quick else 2)
    idle = args.idle if args.idle is not None else _env_int("BENCH_IDLE", 500 if quick else 5000)
    out: Path | None = args.out
    if out is None and os.environ.get("BENCH_OUT"):
        out = Path(os.environ["BENCH_OUT"])
    if out is None and not quick:
        out = DEFAULT_OUT
    if time_s < 1 or pairs < 1 or warmup < 0 or idle < 0:
        parser.error("--time and --pairs must be >= 1, --warmup and --idle >= 0")
    return Settings(
        time_s=time_s,
        pairs=pairs,
        warmup_s=warmup,
        idle_connections=idle,
        out_dir=out,
        quick=quick,
        keep_lab=bool(args.keep_lab),
        only=tuple(args.only),
    )
