"""Rendering the results: bench/results/latest.json and the markdown table (latest.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.causal import markdown as causal_markdown


def _f(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _pair(a: Any, b: Any, fmt: str) -> str:
    return f"{_f(a, fmt)} / {_f(b, fmt)}"


def _sysbench_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| workload | ps mode | thr | QPS direct | QPS pyproxy | ratio "
        "| p50 ms direct / pyproxy | p95 ms direct / pyproxy | added µs/stmt "
        "| pyproxy CPU µs/stmt (% of a core) | errors d/p |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        name = r["workload"] + (f" `{r['options']}`" if r["options"] else "")
        if r.get("failure"):
            name += " (**sysbench failed**, see latest.json)"
        lines.append(
            f"| {name} | {r['ps_mode']} | {r['threads']} | {_f(r['qps_direct'], ',.0f')} "
            f"| {_f(r['qps_proxied'], ',.0f')} | {_f(r['ratio'], '.2f')} "
            f"| {_pair(r['p50_direct_ms'], r['p50_proxied_ms'], '.3f')} "
            f"| {_pair(r['p95_direct_ms'], r['p95_proxied_ms'], '.3f')} "
            f"| {_f(r['added_latency_us_per_statement'], '.1f')} "
            f"| {_f(r['proxy_cpu_us_per_statement'], '.1f')} "
            f"({_f(r['proxy_cpu_pct_of_one_core'], '.0f')} %) "
            f"| {r['errors_direct']}/{r['errors_proxied']} |"
        )
    return lines


def _idle_lines(idle: dict[str, Any]) -> list[str]:
    held = idle.get("backend_connections_held", {})
    before = idle.get("backend_connections_before", {})
    per_node = ", ".join(f"{k} {v}" for k, v in held.items())
    lines = [
        f"**{idle['opened']:,} idle client connections** (of {idle['requested']:,} requested, "
        f"opened in {idle['connect_s']} s, {idle['alive_after_hold']:,} answered COM_PING "
        "afterwards):",
        "",
        "| pyproxy RSS before | RSS holding them | per connection | backend connections "
        "before | holding them |",
        "|--:|--:|--:|--:|--:|",
        f"| {idle['rss_before_kb'] / 1024:.1f} MiB | {idle['rss_held_kb'] / 1024:.1f} MiB "
        f"| {_f(idle['rss_per_connection_kb'], '.1f')} KiB | {sum(before.values())} "
        f"| {sum(held.values())} ({per_node}) |",
    ]
    if idle.get("failures"):
        lines += [
            "",
            "Failed connections: "
            + "; ".join(f"{n} x {msg}" for msg, n in idle["failures"].items()),
        ]
    return lines


def _classify_lines(figures: list[dict[str, Any]], default: str) -> list[str]:
    lines = [
        "| tokenizer | cold µs/stmt (sqlparse calls) | warm, same strings | warm, new literals "
        "| compute_digest |",
        "|---|--:|--:|--:|--:|",
    ]
    for f in figures:
        name = f["tokenizer"] + (" (pyproxy's default)" if f["tokenizer"] == default else "")
        lines.append(
            f"| {name} | {f['cold_us_per_statement']:.2f} ({f['cold_sqlparse_calls']}) "
            f"| {f['warm_same_strings_us_per_statement']:.2f} "
            f"| {f['warm_new_literals_us_per_statement']:.2f} "
            f"| {f['compute_digest_us_per_statement']:.2f} |"
        )
    return lines


def _target_lines(targets: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| target | goal | pyproxy | met | the hop alone (HAProxy TCP) |",
        "|---|--:|--:|:-:|--:|",
    ]
    for t in targets:
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(
            f"| {t['target']} | {t['goal']} | {_f(t['value'], 'g')} | {met} "
            f"| {_f(t.get('hop'), 'g')} |"
        )
    return lines


def _hop_lines(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    threads, workers = meta.get("hop_threads", 1), meta.get("proxy_workers")
    lines = [
        f"The same pairs through {meta.get('hop_version', 'HAProxy')} in TCP mode (`nbthread "
        f"{threads}`, no MySQL parsing): what the extra hop itself costs on this machine, a "
        "floor for any proxy. The CPU column is HAProxy's own, over all its threads; it runs "
        f"as many threads as pyproxy runs worker processes ({workers}), since a relay spread "
        "over more threads or processes sleeps and wakes more often per statement. pyproxy: "
        f"{meta.get('build', '?')}; the interpreted figures come from a second pyproxy "
        "process with PYPROXY_PURE=1 in the same pairs. Under the table, QPS ÷ HAProxy QPS is "
        "the median over pairs of the proxy's QPS over HAProxy's in the same pair (the ratio "
        "columns' quotient without the direct run's swings). Share of a core: each proxy's "
        "CPU over its runs' wall clock; share ÷ CPU per statement is its statements per "
        "second, so QPS ÷ HAProxy QPS ≈ (share ÷ HAProxy's share) ÷ (CPU/stmt ÷ HAProxy's).",
        "",
        "| workload | ps mode | thr | ratio: HAProxy TCP / pyproxy / interpreted | added µs/stmt: "
        "HAProxy TCP / pyproxy | CPU µs/stmt: HAProxy TCP / pyproxy / interpreted "
        "| share of a core: HAProxy TCP / pyproxy / interpreted |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    summary = []
    for r in rows:
        if "hop_ratio" not in r:
            continue
        added = _pair(
            r["hop_added_latency_us_per_statement"], r["added_latency_us_per_statement"], ".1f"
        )
        cpu = _pair(r["hop_cpu_us_per_statement"], r["proxy_cpu_us_per_statement"], ".1f")
        lines.append(
            f"| {r['workload']} | {r['ps_mode']} | {r['threads']} "
            f"| {_pair(r['hop_ratio'], r['ratio'], '.2f')} / {_f(r.get('pure_ratio'), '.2f')} "
            f"| {added} | {cpu} / {_f(r.get('pure_cpu_us_per_statement'), '.1f')} "
            f"| {_pair(r.get('hop_cpu_pct_of_one_core'), r['proxy_cpu_pct_of_one_core'], '.0f')}"
            f" / {_f(r.get('pure_cpu_pct_of_one_core'), '.0f')} % |"
        )
        summary.append(
            f"- {r['workload']} ps={r['ps_mode']} {r['threads']} thr: pyproxy CPU/stmt ÷ HAProxy "
            f"CPU/stmt = **{_f(r.get('cpu_vs_hop'), '.2f')} x**"
            + (
                f" (interpreted {_f(r.get('pure_cpu_vs_hop'), '.2f')} x)"
                if r.get("pure_cpu_vs_hop") is not None
                else ""
            )
            + f"; pyproxy QPS ÷ HAProxy QPS = **{_f(r.get('qps_vs_hop'), '.2f')} x**"
            + (
                f" (interpreted {_f(r.get('pure_qps_vs_hop'), '.2f')} x)"
                if r.get("pure_qps_vs_hop") is not None
                else ""
            )
        )
    return [*lines, "", *summary]


def _worker_lines(w: dict[str, Any], s: dict[str, Any]) -> list[str]:
    out = [
        f"{w['scenario']} through pyproxy, `workers: 1` and `workers: 2` alternating "
        f"({s['pairs']} runs each x {s['time_s']} s, medians):",
        "",
        "| workers | QPS (min-max) | CPU µs/stmt, all processes | CPU µs/stmt per worker | "
        "statement share per worker | health check ms median / max | HAProxy, as many "
        "threads: QPS / CPU µs/stmt | CPU ÷ HAProxy's |",
        "|--:|--:|--:|--:|---|--:|--:|--:|",
    ]
    for r in w["summary"]:
        spread = "-".join(f"{v:,}" for v in r["qps_spread"])
        shares = " · ".join("/".join(str(x) for x in run) for run in r["worker_statement_shares"])
        hop_cpu = r.get("hop_cpu_us_per_statement_median")
        cpu = r["cpu_us_per_statement_median"]
        versus = cpu / hop_cpu if cpu is not None and hop_cpu else None
        out.append(
            f"| {r['workers']} | {_f(r['qps_median'], ',.0f')} ({spread}) | "
            f"{cpu} | {r['worker_cpu_us_per_statement_median']} | "
            f"{shares} | {r['health_check_ms_median']} / {r['health_check_ms_max']} | "
            f"{_f(r.get('hop_qps_median'), ',.0f')} / {_f(hop_cpu, '.1f')} | "
            f"{_f(versus, '.2f')} |"
        )
    out += [
        "",
        "CPU per worker = a worker's utime+stime / the statements it served: the capacity "
        "figure to multiply by cores (a worker per core). All processes adds the topology "
        "process (health checks, admin). On a 2-core host shared with sysbench and the "
        "servers, a second worker adds little throughput. HAProxy (TCP mode, `nbthread` = "
        "the workers) runs right after each pyproxy run: both pay more per statement when "
        "spread over two threads or processes, which sleep and wake more often.",
    ]
    return out


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    s = results["settings"]
    out = [
        "# pyproxy benchmark — latest run",
        "",
        f"{meta['finished_at']} · {meta['cpus']} CPUs ({meta['cpu_model']}) · load before "
        f"{meta['loadavg_before']}, after {meta['loadavg_after']} · {meta['server_version']} · "
        f"{meta['sysbench_version']} · "
        f"{meta['wall_s']:.0f} s wall clock",
        "",
    ]
    if results.get("sysbench"):
        out += [
            f"## sysbench: straight to the writer vs through pyproxy "
            f"(median of {s['pairs']} pairs x {s['time_s']} s, in an order that changes)",
            "",
            *_sysbench_table(results["sysbench"]),
            "",
            "ratio = median over pairs of pyproxy QPS / direct QPS. p50/p95: per event (one "
            "transaction for oltp_read_*), from sysbench's latency histogram. added = median over "
            "pairs of (pyproxy mean latency - direct mean latency) / statements per event; above "
            "1 thread it includes queueing for the shared cores. CPU = pyproxy's utime+stime over "
            "its runs / statements it relayed (and its average share of one core meanwhile).",
            "",
        ]
        if any("hop_ratio" in r for r in results["sysbench"]):
            out += [
                "## The extra hop alone",
                "",
                *_hop_lines(results["sysbench"], results["meta"]),
                "",
            ]
        elif results["meta"].get("hop_version") is None:
            out += ["(HAProxy is not installed: no reference for the extra hop alone.)", ""]
    if results.get("read_your_writes"):
        r = results["read_your_writes"]
        out += [
            "## Read-your-writes",
            "",
            "| write+read pair | median µs |",
            "|---|--:|",
            f"| read-your-writes | {r['read_your_writes_pair_us']} |",
            f"| eventual | {r['eventual_pair_us']} |",
            f"| added by read-your-writes | {r['added_us_per_pair']} |",
            "",
            "| point select, a session that never writes | QPS (one connection) |",
            "|---|--:|",
            f"| read-your-writes | {r.get('point_select_qps_read_your_writes', '-')} |",
            f"| eventual | {r.get('point_select_qps_eventual', '-')} |",
            "",
            f"INSERT + SELECT by id on one connection, {r['pairs_each']:,} pairs each, in "
            "alternating blocks. Sessions that never write pay nothing: the point_select rows "
            "above are such sessions.",
            "",
        ]
    if results.get("causal"):
        out += [
            "## Consistency modes (causal reads)",
            "",
            *causal_markdown(results["causal"]),
            "",
        ]
    if results.get("workers"):
        out += ["## Worker processes", "", *_worker_lines(results["workers"], s), ""]
    if results.get("idle_connections"):
        out += ["## Idle connections", "", *_idle_lines(results["idle_connections"]), ""]
    if results.get("classification"):
        c = results["classification"]
        out += [
            "## Classification microbenchmark (bench/classify.py, best of 5)",
            "",
            *_classify_lines(c["figures"], c["proxy_tokenizer"]),
            "",
        ]
    if results.get("targets"):
        out += ["## Targets", "", *_target_lines(results["targets"]), ""]
    return "\n".join(out)


def _json_safe(value: Any) -> Any:
    """NaN/inf (a run without statements) become null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write(out_dir: Path, results: dict[str, Any], text: str) -> tuple[Path, Path]:
    """Replace latest.json and latest.md atomically (the latest run only, no history)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / "latest.json", out_dir / "latest.md")
    bodies = (json.dumps(_json_safe(results), indent=2) + "\n", text + "\n")
    for path, body in zip(paths, bodies, strict=True):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(body)
        tmp.replace(path)
    return paths
