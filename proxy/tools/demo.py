"""`pyproxy demo`: a lab, CRUD, load with its replication check, verify and a failover drill."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from proxy.config import parse_config
from proxy.lab.lab import Lab
from proxy.testing import ProxyThread
from proxy.tools.crud import run_crud
from proxy.tools.drill import DrillOptions, DrillResult, run_drill
from proxy.tools.load import DEFAULT_TABLE, LoadOptions, LoadRun, drive
from proxy.tools.nodes import free_listeners, proxy_endpoint, server_endpoints, with_proxy_port
from proxy.tools.progress import Progress
from proxy.tools.stats import ms
from proxy.tools.verify import VerifyOptions, verify

DEFAULT_SHAPE = (2, 2, True)  # masters, replicas, semisync


@dataclass(frozen=True)
class DemoOptions:
    dir: str | None = None  # a lab directory to use (kept); default: a temporary one
    keep: bool = False  # leave the lab running at the end
    load_seconds: float = 15.0
    rate: float = 200.0
    drill: DrillOptions = field(default_factory=DrillOptions)


def run_demo(options: DemoOptions, progress: Progress) -> int:
    started = time.monotonic()
    root = Path(options.dir) if options.dir else Path(tempfile.mkdtemp(prefix="pyproxy-demo-"))
    lab = Lab(root)
    existing = lab.load()
    masters, replicas, semisync = (
        (existing.masters, existing.replicas, existing.semisync) if existing else DEFAULT_SHAPE
    )
    report: list[tuple[str, str]] = []
    ok = True
    _section(f"lab: {masters} masters + {replicas} replicas in {lab.root}")
    try:
        t = time.monotonic()
        lab.up(masters=masters, replicas=replicas, semisync=semisync)
        print("\n".join(lab.status_lines()), flush=True)
        sync = ", semisync" if semisync else ""
        report.append(
            (
                "lab",
                f"{masters} masters + {replicas} replicas{sync} ({lab.flavor.value}), "
                f"up in {time.monotonic() - t:.1f} s, in {lab.root}",
            )
        )
        config = parse_config(lab.proxy_config())
        proxy = ProxyThread(free_listeners(config)).start()
        try:
            endpoint = proxy_endpoint(with_proxy_port(config, proxy.port))
            report.append(
                ("pyproxy", f"in-process on {endpoint.where}, writer {proxy.server.cluster.writer}")
            )

            _section(f"CRUD: crud.sql through pyproxy at {endpoint.where}")
            crud = run_crud(endpoint)
            print("\n".join(crud.lines()), flush=True)
            report.append(("CRUD", crud.verdict()))
            ok &= crud.ok

            _section(f"load: {options.load_seconds:g} s at {options.rate:g} ops/s")
            schema = endpoint.database or "demo_db"
            load_opts = LoadOptions(rate=options.rate, duration=options.load_seconds)
            load = LoadRun(endpoint, server_endpoints(config), load_opts, schema, DEFAULT_TABLE)
            load.prepare()
            load.start()
            drive(load, options.load_seconds, load_opts.settle, progress)
            print("\n".join(load.summary()), flush=True)
            issues = load.problems()
            ok &= not issues
            p95 = ", ".join(f"{w.name} {ms(w.delays.percentiles(95)[0])}" for w in load.watches)
            c = load.counts
            report.append(
                (
                    "load",
                    f"{c.ok} ops ({c.ok / load.elapsed():.0f}/s), {c.errors} errors, "
                    + (f"PROBLEMS: {'; '.join(issues)}" if issues else "every row on every node")
                    + f"; replication delay p95 ms: {p95}",
                )
            )

            _section("verify: every node against the writer")
            before = verify(server_endpoints(config), VerifyOptions())
            print("\n".join(before.lines()), flush=True)
            report.append(("verify", before.verdict()))
            ok &= before.ok

            _section("drill failover: kill the writer under load")
            drill = run_drill("failover", lab, config, options.drill, progress, proxy=proxy)
            print("\n".join(drill.lines()), flush=True)
            ok &= drill.ok
            report.append(("failover", _failover_line(drill)))
            if drill.verify is not None:
                report.append(("verify", drill.verify.verdict() + " (after the drill)"))
        finally:
            proxy.stop()
    finally:
        if existing is None and not options.keep:
            lab.destroy()
    _section("pyproxy demo report")
    width = max(len(k) for k, _ in report)
    print("\n".join(f"  {k:<{width}}  {v}" for k, v in report))
    if existing is not None or options.keep:
        print(f"  the lab keeps running: pyproxy --config {lab.config_path}")
    took = time.monotonic() - started
    print(f"result: {'OK' if ok else 'PROBLEMS (see above)'} (demo took {took:.0f} s)", flush=True)
    return 0 if ok else 1


def _failover_line(drill: DrillResult) -> str:
    kill = next((text for label, _, text in drill.events if label == "t0"), "kill")
    steps = [
        f"{name} {t:+.3f} s"
        for name, label in (("detected", "t1"), ("promoted", "t2"), ("first write", "t3"))
        if (t := drill.at(label)) is not None
    ]
    errors = len(drill.errors)
    return (
        f"{kill} at t0; " + ", ".join(steps) + f"; {errors} client error{'s' * (errors != 1)}, "
        f"{drill.rows_lost} rows lost"
        + ("" if drill.ok else f"; PROBLEMS: {'; '.join(drill.problems)}")
    )


def _section(title: str) -> None:
    print(f"\n== {title}", flush=True)
