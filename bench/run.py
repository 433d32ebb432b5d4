"""Orchestration of `make bench`: lab, proxy, sysbench pairs, idle, classifier."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench import report, sysbench
from bench.causal import run_causal
from bench.classification import run_classify
from bench.hop import HopProxy
from bench.idle import hold_idle_connections
from bench.ryw import run_ryw
from bench.settings import Settings, parse_settings
from bench.summary import Measured, ScenarioRuns, public, summarise, targets
from bench.topology import BenchLab
from bench.workers import run_workers
from proxy.compiled import PURE_ENV, compiled_modules, describe
from proxy.config import load_config
from proxy.lab.servers import free_port
from proxy.testing import ProxyProcess, pyproxy_command, raise_nofile, start_on_free_ports

IDLE_SETTLE_S = 2.0  # a session idle for 1 s hands its backend connection back


def _say(text: str) -> None:
    print(text, flush=True)


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo").read().splitlines():  # noqa: SIM115
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _estimate_s(settings: Settings) -> float:
    point = sum(s.workload == "oltp_point_select" for s in sysbench.SCENARIOS)
    # Point selects also run through HAProxy and the interpreted pyproxy.
    runs = (len(sysbench.SCENARIOS) * 2 + 2 * point) * settings.pairs * (settings.time_s + 0.5)
    warmups = len({(s.workload, s.ps_mode) for s in sysbench.SCENARIOS}) * 2 * settings.warmup_s
    workers = 2 * settings.pairs * (2 * settings.time_s + 10)  # a pyproxy and a HAProxy run
    return runs + warmups + workers + 30 + settings.idle_connections / 500


def _measured_run(
    scenario: sysbench.Scenario,
    port: int,
    proxy: ProxyProcess | HopProxy,
    user: str,
    pw: str,
    t: int,
) -> Measured:
    cpu0, wall0 = proxy.cpu_seconds(), time.monotonic()
    result = sysbench.run(scenario, port, user, pw, t)
    return Measured(result, proxy.cpu_seconds() - cpu0, time.monotonic() - wall0)


def run_order(sides: int, pair: int) -> list[int]:
    """The order of a pair's runs. In a fixed order each proxy's figures would also measure
    its place (right after the direct run, which leaves the replica idle; after the other
    proxy). For an even number of sides, rows of a Williams square: over `sides` pairs each
    side runs once in each place and once right after each other side; otherwise the start
    rotates."""
    if sides % 2:
        return [(pair + i) % sides for i in range(sides)]
    first = [0]  # 0, 1, n-1, 2, n-2, ...
    for k in range(1, sides):
        first.append((k + 1) // 2 if k % 2 else sides - k // 2)
    return [(x + pair) % sides for x in first]


def run_sysbench(
    settings: Settings,
    lab: BenchLab,
    proxy: ProxyProcess,
    hop: HopProxy | None = None,
    pure: ProxyProcess | None = None,
) -> list[dict[str, Any]]:
    """Pairs per scenario, direct and through pyproxy; point selects also through `hop` and
    the interpreted pyproxy `pure` (if given) each pair, in the order run_order gives."""
    user, pw = lab.app_user
    direct_port = lab.writer.port
    rows = []
    warmed: set[tuple[str, str]] = set()
    total = len(sysbench.SCENARIOS)
    for i, scenario in enumerate(sysbench.SCENARIOS, 1):
        point = scenario.workload == "oltp_point_select"
        hop_here = hop if point else None
        pure_here = pure if point else None
        extra_ports = [x.port for x in (hop_here, pure_here) if x is not None]
        if settings.warmup_s and (scenario.workload, scenario.ps_mode) not in warmed:
            warmed.add((scenario.workload, scenario.ps_mode))
            for port in (direct_port, proxy.port, *extra_ports):
                with contextlib.suppress(sysbench.SysbenchError):  # the measured runs report it
                    sysbench.run(scenario, port, user, pw, settings.warmup_s)
        runs = ScenarioRuns(scenario)
        for pair in range(settings.pairs):
            # (name, port, the process whose CPU the run counts: pyproxy's idle CPU for direct)
            order: list[tuple[str, int, ProxyProcess | HopProxy]] = [
                ("direct", direct_port, proxy),
                ("proxied", proxy.port, proxy),
            ]
            if hop_here is not None:
                order.append(("hop", hop_here.port, hop_here))
            if pure_here is not None:
                order.append(("pure", pure_here.port, pure_here))
            try:
                done = {
                    name: _measured_run(scenario, port, process, user, pw, settings.time_s)
                    for name, port, process in (order[i] for i in run_order(len(order), pair))
                }
            except sysbench.SysbenchError as exc:  # report it and go on with the next scenario
                runs.failure = str(exc)[:4000]
                _say(f"[{i}/{total}] {scenario.key}: FAILED\n{runs.failure}")
                break
            d, p = done["direct"], done["proxied"]
            runs.direct.append(d)
            runs.proxied.append(p)
            if "hop" in done:
                runs.hop.append(done["hop"])
            if "pure" in done:
                runs.pure.append(done["pure"])
            _say(
                f"[{i}/{total}] {scenario.key} pair {pair + 1}/{settings.pairs}: "
                f"direct {d.result.qps:,.0f} qps, pyproxy {p.result.qps:,.0f} qps "
                f"({p.result.qps / d.result.qps:.2f}), pyproxy CPU "
                f"{p.proxy_cpu_s / p.result.queries * 1e6:.1f} us/stmt"
                + (
                    f"; HAProxy TCP {runs.hop[-1].result.qps / d.result.qps:.2f}"
                    if hop_here is not None and runs.hop
                    else ""
                )
                + (
                    f"; interpreted {runs.pure[-1].result.qps / d.result.qps:.2f}, CPU "
                    f"{runs.pure[-1].proxy_cpu_s / runs.pure[-1].result.queries * 1e6:.1f} us/stmt"
                    if pure_here is not None and runs.pure and runs.pure[-1].result.queries
                    else ""
                )
                if p.result.queries and d.result.qps
                else f"[{i}/{total}] {scenario.key}: no queries"
            )
        rows.append(summarise(runs))
    return rows


def run_idle(settings: Settings, lab: BenchLab, proxy: ProxyProcess) -> dict[str, Any]:
    user, pw = lab.app_user
    rss_before = proxy.rss_kb()
    backends_before = lab.backend_connections(user)

    def measure() -> dict[str, object]:
        return {"rss_kb": proxy.rss_kb(), "backends": lab.backend_connections(user)}

    _say(f"idle: opening {settings.idle_connections:,} client connections to pyproxy ...")
    res = hold_idle_connections(
        "127.0.0.1", proxy.port, user, pw, settings.idle_connections, IDLE_SETTLE_S, measure
    )
    held_rss = int(res.measured["rss_kb"])  # type: ignore[call-overload]
    held_backends: dict[str, int] = res.measured["backends"]  # type: ignore[assignment]
    per_conn = (held_rss - rss_before) / res.opened if res.opened else None
    _say(
        f"idle: {res.opened:,} open in {res.connect_s} s; RSS {rss_before / 1024:.1f} -> "
        f"{held_rss / 1024:.1f} MiB; backend connections {sum(backends_before.values())} -> "
        f"{sum(held_backends.values())}; {res.alive_after_hold:,} answered COM_PING"
    )
    return {
        "requested": res.requested,
        "opened": res.opened,
        "failures": res.failures,
        "connect_s": res.connect_s,
        "connections_per_s": round(res.opened / res.connect_s, 1) if res.connect_s else None,
        "settle_s": IDLE_SETTLE_S,
        "alive_after_hold": res.alive_after_hold,
        "rss_before_kb": rss_before,
        "rss_held_kb": held_rss,
        "rss_per_connection_kb": round(per_conn, 2) if per_conn is not None else None,
        "backend_connections_before": backends_before,
        "backend_connections_held": held_backends,
        "proxy_nofile_limit": proxy.nofile,
    }


def _start_hop(lab: BenchLab, results: dict[str, Any], threads: int) -> HopProxy | None:
    """HAProxy in TCP mode before the writer, as the extra-hop reference, with as many threads
    as pyproxy has worker processes; None if missing."""
    results["meta"]["hop_version"] = None
    results["meta"]["hop_threads"] = threads
    if HopProxy.available() is None:
        _say("haproxy is not installed: no reference for the extra hop (apt install haproxy)")
        return None
    hop = HopProxy(lab.tmp, free_port(), lab.writer.port, threads)
    try:
        hop.start()
    except RuntimeError as exc:
        _say(f"haproxy did not start, no extra-hop reference: {exc}")
        return None
    results["meta"]["hop_version"] = HopProxy.version()
    _say(
        f"reference: {results['meta']['hop_version']} in TCP mode, nbthread {threads}, "
        f"on port {hop.port}"
    )
    return hop


def _start_pure(lab: BenchLab, results: dict[str, Any]) -> ProxyProcess | None:
    """A second pyproxy running pure Python (PYPROXY_PURE=1) when this venv's is compiled: the
    point selects also run through it, for the compiled vs interpreted columns."""
    results["meta"]["build"] = describe()
    if not compiled_modules():
        _say(f"pyproxy is {results['meta']['build']}: no compiled vs interpreted columns")
        return None
    user, pw = lab.app_user

    def start() -> ProxyProcess:
        path, config = lab.write_proxy_config("pyproxy-pure.yaml")
        port = config["listeners"]["mysql"]["port"]
        command = ["env", f"{PURE_ENV}=1", *pyproxy_command()]
        pure = ProxyProcess(path, port, lab.tmp / "pyproxy-pure.log", command)
        pure.start(user, pw)
        return pure

    pure = start_on_free_ports(start)
    _say(f"pyproxy interpreted ({PURE_ENV}=1): pid {pure.pid} on port {pure.port}")
    return pure


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _phases(settings: Settings) -> set[str]:
    return set(settings.only) or {"sysbench", "ryw", "causal", "idle", "classify", "workers"}


def _bench(settings: Settings, results: dict[str, Any]) -> None:
    phases = _phases(settings)
    if "classify" in phases:
        _say("classify: bench/classify.py ...")
        results["classification"] = run_classify()
        h = results["classification"]["headline"]
        _say(
            f"classify: {h['tokenizer']}: cold {h['cold_us_per_statement']} us/stmt, "
            f"warm new literals {h['warm_new_literals_us_per_statement']} us/stmt"
        )
    if not phases & {"sysbench", "ryw", "causal", "idle", "workers"}:
        return
    lab = BenchLab()
    proxy: ProxyProcess | None = None
    try:
        _say(f"lab: starting 2 masters + 1 replica in {lab.dir} ...")
        lab.up()
        results["meta"]["server_version"] = lab.server_version()
        user, pw = lab.app_user
        lab.create_database(sysbench.DATABASE)
        if phases & {"sysbench", "ryw", "causal", "workers"}:
            _say("sysbench: prepare (straight to the writer) ...")
            sysbench.prepare(lab.writer.port, user, pw)
            lab.wait_for_rows(sysbench.DATABASE, sysbench.PREPARED_TABLES, sysbench.TABLE_SIZE)
        if "workers" in phases:
            _say("workers: oltp_point_select, 32 threads, workers: 1 vs 2 ...")
            results["workers"] = run_workers(settings, lab, _say)
        if phases & {"sysbench", "ryw", "idle"}:

            def start() -> tuple[ProxyProcess, Path]:
                path, config = lab.write_proxy_config()
                port = config["listeners"]["mysql"]["port"]
                proxy = ProxyProcess(path, port, lab.tmp / "pyproxy.log")
                proxy.start(user, pw)
                return proxy, path

            proxy, config_path = start_on_free_ports(start)
            _say(f"pyproxy: pid {proxy.pid} on port {proxy.port} (open files limit {proxy.nofile})")
        if proxy is not None and "sysbench" in phases:
            workers = load_config(config_path).worker_count
            results["meta"]["proxy_workers"] = workers
            hop = _start_hop(lab, results, workers)
            pure = _start_pure(lab, results)
            try:
                rows = run_sysbench(settings, lab, proxy, hop, pure)
            finally:
                if hop is not None:
                    hop.stop()
                if pure is not None:
                    pure.stop()
            results["sysbench"] = [public(r) for r in rows]
            results["targets"] = targets(rows, results.get("classification", {}).get("headline"))
        if proxy is not None and "ryw" in phases:
            _say("read-your-writes: INSERT + SELECT pairs, checked vs eventual reads ...")
            results["read_your_writes"] = run_ryw(proxy.port, user, pw, sysbench.DATABASE)
            r = results["read_your_writes"]
            _say(
                f"read-your-writes: pair {r['read_your_writes_pair_us']} us vs eventual "
                f"{r['eventual_pair_us']} us (+{r['added_us_per_pair']} us)"
            )
        if "causal" in phases:
            _say("causal: oltp_read_write --skip_trx=on, 8 threads, each consistency mode ...")
            results["causal"] = run_causal(lab, settings.pairs, settings.time_s)
            _say(f"causal: default -> {results['causal']['default']}")
        if proxy is not None and "idle" in phases:
            results["idle_connections"] = run_idle(settings, lab, proxy)
    except Exception:
        if proxy is not None:
            _say(f"pyproxy log tail:\n{proxy.log_tail()}")
        raise
    finally:
        if proxy is not None:
            stopped = proxy.stop()
            results["meta"]["proxy_stop"] = stopped
            if stopped.get("killed_after_sigterm_timeout"):
                _say(f"pyproxy did not exit on SIGTERM, killed; log tail:\n{proxy.log_tail()}")
        lab.destroy(keep=settings.keep_lab)
    if "targets" not in results and results.get("classification"):
        results["targets"] = targets([], results["classification"]["headline"])


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    start = time.monotonic()
    signal.signal(signal.SIGTERM, _on_sigterm)
    raise_nofile()  # the idle phase holds thousands of sockets in this process too
    results: dict[str, Any] = {
        "meta": {
            "started_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "loadavg_before": _loadavg(),
            "python": platform.python_version(),
            "sysbench_version": sysbench.version(),
            "server_version": None,
        },
        "definitions": {
            "ratio": "median over pairs of (proxied QPS / direct QPS of the same pair)",
            "p50_ms/p95_ms": "per sysbench event, from its latency histogram, medians over runs",
            "avg_ms": "sysbench latency sum / events",
            "added_latency_us_per_statement": "median over pairs of (proxied avg_ms - direct "
            "avg_ms) * 1000 / statements per event",
            "proxy_cpu_us_per_statement": "proxy utime+stime over the proxied runs / statements "
            "executed through it",
            "proxy_cpu_us_per_statement_net_of_idle": "same, minus the proxy's CPU rate during "
            "the direct runs (health monitor) times the proxied runs' duration",
            "proxy_cpu_pct_of_one_core": "proxy utime+stime over the proxied runs / their wall "
            "clock, in % (hop_ and pure_: the same for HAProxy and the interpreted build)",
            "rss_per_connection_kb": "(RSS holding the idle clients - RSS before) / clients",
        },
        "settings": {
            "time_s": settings.time_s,
            "pairs": settings.pairs,
            "warmup_s": settings.warmup_s,
            "idle_connections": settings.idle_connections,
            "quick": settings.quick,
        },
    }
    _say(
        f"pyproxy benchmark: {settings.pairs} pairs x {settings.time_s} s per scenario, "
        f"{len(sysbench.SCENARIOS)} scenarios, {settings.idle_connections:,} idle connections; "
        f"about {_estimate_s(settings) / 60:.0f} min"
    )
    try:
        _bench(settings, results)
    except KeyboardInterrupt:
        _say("interrupted: the proxy is stopped and the lab destroyed")
        return 130
    meta = results["meta"]
    meta["finished_at"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    meta["wall_s"] = round(time.monotonic() - start, 1)
    meta["loadavg_after"] = _loadavg()
    text = report.markdown(results)
    _say("\n" + text)
    if settings.out_dir is not None:
        json_path, md_path = report.write(settings.out_dir, results, text)
        _say(f"written: {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
