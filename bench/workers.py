"""oltp_point_select at 32 threads through pyproxy with `workers: 1` and `workers: 2`, runs
alternating: QPS, CPU per statement over every pyproxy process, each worker's share, and the
health checks' latency under that load; beside each, HAProxy in TCP mode with as many threads."""

from __future__ import annotations

import statistics
import threading
from typing import Any

import pymysql

from bench import sysbench
from bench.hop import HopProxy
from bench.settings import Settings
from bench.topology import BenchLab
from proxy.lab.servers import free_port
from proxy.testing import ProxyProcess, admin_query, start_on_free_ports

SCENARIO = sysbench.Scenario("oltp_point_select", "disable", 32)
WORKER_COUNTS = (1, 2)
SAMPLE_S = 0.5  # health-check latency is sampled this often during a run


def _admin(config: dict[str, Any], sql: str) -> list[dict[str, Any]]:
    admin = config.get("admin", {})
    port = int(config["listeners"]["admin"]["port"])
    return admin_query(port, sql, admin.get("username", "admin"), admin.get("password", "admin"))


class CheckLatency:
    """Samples the last health-check latency of every server while a run goes on."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.samples_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CheckLatency:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            try:
                rows = _admin(self.config, "SELECT Latency_us FROM stats_mysql_connection_pool")
            except pymysql.MySQLError:
                continue
            self.samples_ms += [int(r["Latency_us"]) / 1000 for r in rows if r["Latency_us"]]


def _one_run(lab: BenchLab, workers: int, seconds: int) -> dict[str, Any]:
    user, pw = lab.app_user

    def start() -> tuple[ProxyProcess, dict[str, Any]]:
        path, config = lab.write_proxy_config(f"pyproxy-workers{workers}.yaml", workers=workers)
        port = config["listeners"]["mysql"]["port"]
        proxy = ProxyProcess(path, port, lab.tmp / f"pyproxy-workers{workers}.log")
        proxy.start(user, pw)
        return proxy, config

    proxy, config = start_on_free_ports(start)
    port = proxy.port
    try:
        before_rows = _admin(config, "SELECT worker, pid, statements FROM stats_pyproxy_workers")
        cpu0 = proxy.cpu_by_pid()
        with CheckLatency(config) as checks:
            result = sysbench.run(SCENARIO, port, user, pw, seconds)
        cpu1 = proxy.cpu_by_pid()
        rows = _admin(config, "SELECT worker, pid, statements FROM stats_pyproxy_workers")
    finally:
        proxy.stop()
    before = {int(r["worker"]): int(r["statements"]) for r in before_rows}
    cpu = {pid: cpu1[pid] - cpu0.get(pid, 0.0) for pid in cpu1}
    total_cpu = sum(cpu.values())
    shares = []
    for r in rows:
        statements = int(r["statements"]) - before.get(int(r["worker"]), 0)
        worker_cpu = cpu.get(int(r["pid"]), 0.0)
        shares.append({
            "worker": int(r["worker"]),
            "statements": statements,
            "statement_share": round(statements / result.queries, 3) if result.queries else None,
            "cpu_s": round(worker_cpu, 2),
            "cpu_us_per_statement": round(worker_cpu / statements * 1e6, 1) if statements else None,
        })  # fmt: skip
    topology_cpu = cpu.get(proxy_pid(cpu1, rows), 0.0)
    per_stmt = total_cpu / result.queries * 1e6 if result.queries else None
    samples = checks.samples_ms
    return {
        "workers": workers,
        "qps": round(result.qps),
        "queries": result.queries,
        "cpu_us_per_statement": round(per_stmt, 1) if per_stmt is not None else None,
        "topology_cpu_s": round(topology_cpu, 2),
        "per_worker": shares,
        "health_check_ms_median": round(statistics.median(samples), 2) if samples else None,
        "health_check_ms_max": round(max(samples), 2) if samples else None,
    }


def _hop_run(lab: BenchLab, threads: int, seconds: int) -> dict[str, Any] | None:
    """The same run through HAProxy with `threads` threads; None when it is not installed."""
    if HopProxy.available() is None:
        return None
    hop = HopProxy(lab.tmp, free_port(), lab.writer.port, threads)
    hop.start()
    try:
        user, pw = lab.app_user
        cpu0 = hop.cpu_seconds()
        result = sysbench.run(SCENARIO, hop.port, user, pw, seconds)
        cpu = hop.cpu_seconds() - cpu0
    finally:
        hop.stop()
    per_stmt = cpu / result.queries * 1e6 if result.queries else None
    return {
        "threads": threads,
        "qps": round(result.qps),
        "cpu_us_per_statement": round(per_stmt, 1) if per_stmt is not None else None,
    }


def proxy_pid(cpu: dict[int, float], rows: list[dict[str, Any]]) -> int:
    """The topology process: the pyproxy process that is not a worker."""
    workers = {int(r["pid"]) for r in rows}
    return next((pid for pid in cpu if pid not in workers), 0)


def run_workers(settings: Settings, lab: BenchLab, say: Any) -> dict[str, Any]:
    """Alternating runs (1, 2, 2, 1, ...) over settings.pairs; medians per worker count."""
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in WORKER_COUNTS}
    hops: dict[int, list[dict[str, Any]]] = {n: [] for n in WORKER_COUNTS}
    for pair in range(settings.pairs):
        order = WORKER_COUNTS if pair % 2 == 0 else tuple(reversed(WORKER_COUNTS))
        for workers in order:
            run = _one_run(lab, workers, settings.time_s)
            runs[workers].append(run)
            say(
                f"workers={workers} pair {pair + 1}/{settings.pairs}: {run['qps']:,} qps, "
                f"{run['cpu_us_per_statement']} us CPU/stmt (all processes), per worker "
                + ", ".join(
                    f"#{w['worker']} {w['statement_share']} of stmts "
                    f"{w['cpu_us_per_statement']} us/stmt"
                    for w in run["per_worker"]
                )
                + f"; health check {run['health_check_ms_median']} ms median, "
                f"{run['health_check_ms_max']} ms max"
            )
            hop = _hop_run(lab, workers, settings.time_s)
            if hop is not None:
                hops[workers].append(hop)
                say(
                    f"HAProxy nbthread {workers}: {hop['qps']:,} qps, "
                    f"{hop['cpu_us_per_statement']} us CPU/stmt"
                )
    summary = []
    for workers, done in runs.items():
        per_worker_cpu = [
            w["cpu_us_per_statement"] for r in done for w in r["per_worker"]
            if w["cpu_us_per_statement"] is not None
        ]  # fmt: skip
        summary.append({
            "workers": workers,
            "qps_median": _median([r["qps"] for r in done]),
            "qps_spread": _spread([r["qps"] for r in done]),
            "cpu_us_per_statement_median": _median([r["cpu_us_per_statement"] for r in done]),
            "worker_cpu_us_per_statement_median": _median(per_worker_cpu),
            "worker_statement_shares": [
                [w["statement_share"] for w in r["per_worker"]] for r in done
            ],
            "hop_qps_median": _median([h["qps"] for h in hops[workers]]),
            "hop_cpu_us_per_statement_median": _median(
                [h["cpu_us_per_statement"] for h in hops[workers]]
            ),
            "health_check_ms_median": _median([r["health_check_ms_median"] for r in done]),
            "health_check_ms_max": max(
                (r["health_check_ms_max"] for r in done if r["health_check_ms_max"] is not None),
                default=None,
            ),
        })  # fmt: skip
    return {"scenario": SCENARIO.key, "summary": summary, "runs": runs, "hop_runs": hops}


def _median(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 1) if present else None


def _spread(values: list[Any]) -> list[Any]:
    present = [v for v in values if v is not None]
    return [min(present), max(present)] if present else []
