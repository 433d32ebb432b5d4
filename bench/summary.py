"""From raw runs to the reported figures: medians over pairs, per-statement costs, targets."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from bench.sysbench import RunResult, Scenario

# The targets (2 cores shared by sysbench, the servers and the proxy).
TARGET_RATIO_32 = 0.80
TARGET_ADDED_LATENCY_US = 40.0
TARGET_CPU_US = 20.0
TARGET_CLASSIFY_US = 5.0


@dataclass
class Measured:
    """One sysbench run plus the proxy's CPU time consumed while it ran."""

    result: RunResult
    proxy_cpu_s: float
    wall_s: float


@dataclass
class ScenarioRuns:
    scenario: Scenario
    direct: list[Measured] = field(default_factory=list)
    proxied: list[Measured] = field(default_factory=list)
    # The same pairs through HAProxy in TCP mode (bench/hop.py), when it is installed.
    hop: list[Measured] = field(default_factory=list)
    # The same pairs through a second pyproxy running pure Python (PYPROXY_PURE=1), when the
    # first one runs compiled.
    pure: list[Measured] = field(default_factory=list)
    failure: str | None = None  # sysbench failed (the pairs before it are kept)


def _median(values: list[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def _r(value: float, digits: int) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def _run_json(mode: str, m: Measured) -> dict[str, Any]:
    r = m.result
    return {
        "mode": mode,
        "qps": r.qps,
        "queries": r.queries,
        "events": r.events,
        "avg_ms": _r(r.avg_latency_ms, 4),
        "p50_ms": _r(r.percentile_ms(50), 3),
        "p95_ms": _r(r.percentile_ms(95), 3),
        "sysbench_p95_ms": r.sysbench_p95_ms,
        "errors": r.errors,
        "reconnects": r.reconnects,
        "proxy_cpu_s": round(m.proxy_cpu_s, 3),
        "wall_s": round(m.wall_s, 3),
    }


def summarise(runs: ScenarioRuns) -> dict[str, Any]:
    """Medians over the pairs; ratio and added latency are medians of per-pair figures."""
    s = runs.scenario
    pairs = list(zip(runs.direct, runs.proxied, strict=True))
    per_stmt = _median([m.result.statements_per_event for m in runs.proxied])
    added_us = [
        (p.result.avg_latency_ms - d.result.avg_latency_ms) * 1000 / p.result.statements_per_event
        for d, p in pairs
    ]
    proxied_cpu = sum(m.proxy_cpu_s for m in runs.proxied)
    proxied_queries = sum(m.result.queries for m in runs.proxied)
    proxied_wall = sum(m.wall_s for m in runs.proxied)
    direct_cpu = sum(m.proxy_cpu_s for m in runs.direct)
    direct_wall = sum(m.wall_s for m in runs.direct)
    idle_rate = direct_cpu / direct_wall if direct_wall else 0.0  # monitor etc., no clients
    cpu_us = proxied_cpu / proxied_queries * 1e6 if proxied_queries else math.nan
    net_cpu_us = (
        (proxied_cpu - idle_rate * proxied_wall) / proxied_queries * 1e6
        if proxied_queries
        else math.nan
    )

    def med(mode: list[Measured], fn: Any) -> float:
        return _median([fn(m.result) for m in mode])

    return {
        "workload": s.workload,
        "options": " ".join(s.extra),
        "ps_mode": s.ps_mode,
        "threads": s.threads,
        "tables": s.tables,
        "pairs": len(pairs),
        "statements_per_event": _r(per_stmt, 2),
        "qps_direct": _r(med(runs.direct, lambda r: r.qps), 1),
        "qps_proxied": _r(med(runs.proxied, lambda r: r.qps), 1),
        "ratio": _r(_median([p.result.qps / d.result.qps for d, p in pairs if d.result.qps]), 3),
        "p50_direct_ms": _r(med(runs.direct, lambda r: r.percentile_ms(50)), 3),
        "p50_proxied_ms": _r(med(runs.proxied, lambda r: r.percentile_ms(50)), 3),
        "p95_direct_ms": _r(med(runs.direct, lambda r: r.percentile_ms(95)), 3),
        "p95_proxied_ms": _r(med(runs.proxied, lambda r: r.percentile_ms(95)), 3),
        "avg_direct_ms": _r(med(runs.direct, lambda r: r.avg_latency_ms), 4),
        "avg_proxied_ms": _r(med(runs.proxied, lambda r: r.avg_latency_ms), 4),
        "added_latency_us_per_statement": _r(_median(added_us), 1),
        "proxy_cpu_us_per_statement": _r(cpu_us, 1),
        "proxy_cpu_us_per_statement_net_of_idle": _r(net_cpu_us, 1),
        "proxy_cpu_pct_of_one_core": _r(_share(runs.proxied), 1),
        "proxy_idle_cpu_pct_of_one_core": round(idle_rate * 100, 2),
        "errors_direct": sum(m.result.errors for m in runs.direct),
        "errors_proxied": sum(m.result.errors for m in runs.proxied),
        "reconnects_proxied": sum(m.result.reconnects for m in runs.proxied),
        **_hop_figures(runs),
        **_pure_figures(runs),
        **_vs_hop(cpu_us, runs),
        "failure": runs.failure,
        "runs": [
            _run_json(mode, m) for d, p in pairs for mode, m in (("direct", d), ("proxied", p))
        ],
        "_cpu_s": proxied_cpu,
        "_queries": proxied_queries,
    }


def _hop_figures(runs: ScenarioRuns) -> dict[str, Any]:
    """Ratio, added latency and CPU per statement of the extra hop alone (HAProxy TCP)."""
    if not runs.hop:
        return {}
    triples = list(zip(runs.direct, runs.hop, strict=False))
    queries = sum(m.result.queries for m in runs.hop)
    return {
        "hop_qps": _r(_median([m.result.qps for m in runs.hop]), 1),
        "hop_ratio": _r(_median([h.result.qps / d.result.qps for d, h in triples]), 3),
        "hop_added_latency_us_per_statement": _r(
            _median(
                [
                    (h.result.avg_latency_ms - d.result.avg_latency_ms)
                    * 1000
                    / h.result.statements_per_event
                    for d, h in triples
                ]
            ),
            1,
        ),
        "hop_cpu_us_per_statement": _r(
            sum(m.proxy_cpu_s for m in runs.hop) / queries * 1e6 if queries else math.nan, 1
        ),
        "hop_cpu_pct_of_one_core": _r(_share(runs.hop), 1),
        "hop_runs": [_run_json("hop", m) for m in runs.hop],
    }


def _share(runs: list[Measured]) -> float:
    """The proxy's average share of one core over its runs, in %."""
    wall = sum(m.wall_s for m in runs)
    return sum(m.proxy_cpu_s for m in runs) / wall * 100 if wall else math.nan


def _cpu_us(runs: list[Measured]) -> float:
    queries = sum(m.result.queries for m in runs)
    return sum(m.proxy_cpu_s for m in runs) / queries * 1e6 if queries else math.nan


def _pure_figures(runs: ScenarioRuns) -> dict[str, Any]:
    """Ratio and CPU per statement of the interpreted build, beside the compiled one."""
    if not runs.pure:
        return {}
    pairs = list(zip(runs.direct, runs.pure, strict=False))
    return {
        "pure_ratio": _r(_median([p.result.qps / d.result.qps for d, p in pairs]), 3),
        "pure_cpu_us_per_statement": _r(_cpu_us(runs.pure), 1),
        "pure_cpu_pct_of_one_core": _r(_share(runs.pure), 1),
        "pure_runs": [_run_json("pure", m) for m in runs.pure],
    }


def _vs_hop(cpu_us: float, runs: ScenarioRuns) -> dict[str, Any]:
    """pyproxy CPU per statement over HAProxy's (the issue's summary line), each build."""
    hop = _cpu_us(runs.hop) if runs.hop else math.nan
    if math.isnan(hop) or not hop:
        return {}
    out = {
        "cpu_vs_hop": _r(cpu_us / hop, 2),
        # The same pair's QPS over HAProxy's: the direct run's own swings cancel out.
        "qps_vs_hop": _r(_qps_over(runs.proxied, runs.hop), 3),
    }
    if runs.pure:
        out["pure_cpu_vs_hop"] = _r(_cpu_us(runs.pure) / hop, 2)
        out["pure_qps_vs_hop"] = _r(_qps_over(runs.pure, runs.hop), 3)
    return out


def _qps_over(runs: list[Measured], hop: list[Measured]) -> float:
    """Median over pairs of a proxy's QPS / HAProxy's QPS in the same pair."""
    return _median(
        [p.result.qps / h.result.qps for p, h in zip(runs, hop, strict=False) if h.result.qps]
    )


def _find(rows: list[dict[str, Any]], workload: str, ps: str, threads: int) -> dict[str, Any]:
    for row in rows:
        if (row["workload"], row["ps_mode"], row["threads"]) == (workload, ps, threads):
            return row
    return {}


def _target(
    name: str,
    value: float | None,
    limit: float,
    higher_is_better: bool,
    hop: float | None = None,
) -> dict[str, Any]:
    met = None
    if value is not None and not math.isnan(value):
        met = value >= limit if higher_is_better else value <= limit
    return {
        "target": name,
        "goal": f"{'>=' if higher_is_better else '<='} {limit:g}",
        "value": value,
        "met": met,
        "hop": hop,  # the same figure for the extra hop alone (HAProxy TCP), if measured
    }


def targets(
    rows: list[dict[str, Any]], classification: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The issue's four targets, each with the measured value and whether it is met."""
    out = []
    for ps in ("disable", "auto"):
        row = _find(rows, "oltp_point_select", ps, 32)
        if row:
            out.append(
                _target(
                    f"oltp_point_select 32 threads ps={ps}: pyproxy/direct QPS",
                    row["ratio"],
                    TARGET_RATIO_32,
                    True,
                    row.get("hop_ratio"),
                )
            )
    for ps in ("disable", "auto"):
        row = _find(rows, "oltp_point_select", ps, 1)
        if row:
            out.append(
                _target(
                    f"oltp_point_select 1 thread ps={ps}: added latency, us/statement",
                    row["added_latency_us_per_statement"],
                    TARGET_ADDED_LATENCY_US,
                    False,
                    row.get("hop_added_latency_us_per_statement"),
                )
            )
    point = [r for r in rows if r["workload"] == "oltp_point_select"]
    queries = sum(r["_queries"] for r in point)
    if queries:
        cpu = round(sum(r["_cpu_s"] for r in point) / queries * 1e6, 1)
        hop_runs = [run for r in point for run in r.get("hop_runs", [])]
        hop_queries = sum(run["queries"] for run in hop_runs)
        hop_cpu = (
            round(sum(run["proxy_cpu_s"] for run in hop_runs) / hop_queries * 1e6, 1)
            if hop_queries
            else None
        )
        out.append(
            _target(
                "oltp_point_select, all proxied runs: pyproxy CPU, us/statement",
                cpu,
                TARGET_CPU_US,
                False,
                hop_cpu,
            )
        )
    if classification:
        name = f"classification ({classification['tokenizer']} tokenizer)"
        out.append(
            _target(
                f"{name}, cold: 500 sqlparse analyses amortized over 10,000 statements, "
                "us/statement",
                classification["cold_us_per_statement"],
                TARGET_CLASSIFY_US,
                False,
            )
        )
        out.append(
            _target(
                f"{name}, steady state: digest cache warm, new literals, us/statement",
                classification["warm_new_literals_us_per_statement"],
                TARGET_CLASSIFY_US,
                False,
            )
        )
    return out


def public(row: dict[str, Any]) -> dict[str, Any]:
    """The row without the private accumulators."""
    return {k: v for k, v in row.items() if not k.startswith("_")}
