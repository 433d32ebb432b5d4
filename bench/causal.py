"""Consistency modes compared: sysbench oltp_read_write through pyproxy under eventual,
read_your_writes, causal and causal_global, in alternating runs, with a stale-read probe."""

from __future__ import annotations

import functools
import re
import statistics
import threading
import urllib.request
import uuid
from typing import Any

import pymysql

from bench import sysbench
from bench.topology import BenchLab
from proxy.testing import ProxyProcess, start_on_free_ports

MODES = ("eventual", "read_your_writes", "causal", "causal_global")
SCENARIO = sysbench.Scenario(
    "oltp_read_write",
    "auto",
    8,
    tables=sysbench.PREPARED_TABLES,
    # Without transactions two threads may re-insert the same deleted id: ignored, counted.
    extra=("--skip_trx=on", "--rand-type=uniform", "--mysql-ignore-errors=1062"),
)
# The default is causal unless it costs more than this against read_your_writes.
MAX_COST = 0.10


class ModeProxy:
    """One pyproxy process with routing.consistency set to `mode`."""

    def __init__(self, lab: BenchLab, mode: str) -> None:
        routing = {**lab.config.get("routing", {}), "consistency": mode}
        path, config = lab.write_proxy_config(f"pyproxy-{mode}.yaml", routing=routing)
        self.port = config["listeners"]["mysql"]["port"]
        self.http_port = config["listeners"]["http"]["port"]
        self.mode = mode
        self.process = ProxyProcess(path, self.port, lab.tmp / f"pyproxy-{mode}.log")

    def reads(self) -> dict[str, float]:
        """Successful reads so far by route (writer / reader), from /metrics."""
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        out = {"writer": 0.0, "reader": 0.0}
        pattern = r'^pyproxy_queries_total\{class="read",outcome="ok",route="(\w+)"\} (\S+)$'
        for route, value in re.findall(pattern, text, re.MULTILINE):
            out[route] = float(value)
        return out


class StaleProbe:
    """Connection A inserts a row, connection B reads it at once, until stopped: B's misses."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.args: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "user": user,
            "password": password,
            "database": sysbench.DATABASE,
            "autocommit": True,
        }
        self.table = f"probe_{uuid.uuid4().hex[:8]}"
        self.pairs = 0
        self.stale = 0
        self.error: str | None = None  # what stopped the probe early, if anything
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StaleProbe:
        self._a = pymysql.connect(**self.args)
        self._b = pymysql.connect(**self.args)
        with self._a.cursor() as cur:
            cur.execute(f"CREATE TABLE {self.table} (id INT PRIMARY KEY)")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        with self._a.cursor() as cur:
            cur.execute(f"DROP TABLE {self.table}")
        self._a.close()
        self._b.close()

    def _run(self) -> None:
        try:
            with self._a.cursor() as a, self._b.cursor() as b:
                i = 0
                while not self._stop.is_set():
                    i += 1
                    a.execute(f"INSERT INTO {self.table} (id) VALUES (%s)", (i,))
                    b.execute(f"SELECT id FROM {self.table} WHERE id = %s", (i,))
                    self.pairs += 1
                    self.stale += b.fetchall() != ((i,),)
                    self._stop.wait(0.002)
        except pymysql.MySQLError as exc:
            self.error = str(exc)


def _one_run(lab: BenchLab, proxy: ModeProxy, seconds: int) -> dict[str, Any]:
    user, pw = lab.app_user
    before = proxy.reads()
    with StaleProbe(proxy.port, user, pw) as probe:
        result = sysbench.run(SCENARIO, proxy.port, user, pw, seconds)
    after = proxy.reads()
    reader = after["reader"] - before["reader"]
    writer = after["writer"] - before["writer"]
    return {
        "qps": result.qps,
        "p95_ms": result.percentile_ms(95),
        "replica_share": reader / (reader + writer) if reader + writer else 0.0,
        "probe_pairs": probe.pairs,
        "stale": probe.stale,
        "probe_error": probe.error,
        "errors": result.errors,
    }


def _say(text: str) -> None:
    print(text, flush=True)


def run_causal(lab: BenchLab, rounds: int, seconds: int) -> dict[str, Any]:
    """`rounds` rounds; each runs every mode once, the order rotating by one per round."""
    user, pw = lab.app_user
    proxies: dict[str, ModeProxy] = {}
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}

    def start(mode: str) -> ModeProxy:
        # Each listening before the next picks its ports: free_port cannot hand them out again.
        p = ModeProxy(lab, mode)
        p.process.start(user, pw)
        return p

    try:
        for mode in MODES:
            proxies[mode] = start_on_free_ports(functools.partial(start, mode))
        for mode in MODES:  # warm-up: pools, caches, the replica's buffer pool
            sysbench.run(SCENARIO, proxies[mode].port, user, pw, 1)
        for r in range(rounds):
            order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
            for mode in order:
                got = _one_run(lab, proxies[mode], seconds)
                runs[mode].append(got)
                _say(
                    f"causal [{r + 1}/{rounds}] {mode}: {got['qps']:,.0f} qps, p95 "
                    f"{got['p95_ms']:.2f} ms, reads on replica {got['replica_share']:.1%}, "
                    f"stale {got['stale']}/{got['probe_pairs']}"
                    + (f" (probe stopped: {got['probe_error']})" if got["probe_error"] else "")
                )
    finally:
        for p in proxies.values():
            p.process.stop()
    return summarise(runs, rounds, seconds)


def summarise(runs: dict[str, list[dict[str, Any]]], rounds: int, seconds: int) -> dict[str, Any]:
    rows = []
    for mode, got in runs.items():
        qps = [g["qps"] for g in got]
        rows.append(
            {
                "mode": mode,
                "qps": round(statistics.median(qps)),
                "qps_min": round(min(qps)),
                "qps_max": round(max(qps)),
                "p95_ms": round(statistics.median(g["p95_ms"] for g in got), 2),
                "replica_share": round(statistics.median(g["replica_share"] for g in got), 4),
                "stale": sum(g["stale"] for g in got),
                "probe_pairs": sum(g["probe_pairs"] for g in got),
                "errors": sum(g["errors"] for g in got),
            }
        )
    # Paired per round (both modes ran in the same round, close in time): the median of the
    # per-round ratios cancels most of a shared machine's drift.
    pairs = list(zip(runs["causal"], runs["read_your_writes"], strict=True))
    qps_cost = 1 - statistics.median(c["qps"] / r["qps"] for c, r in pairs if r["qps"])
    share_cost = 1 - statistics.median(
        c["replica_share"] / r["replica_share"] for c, r in pairs if r["replica_share"]
    )
    default = "causal" if share_cost <= MAX_COST and qps_cost <= MAX_COST else "read_your_writes"
    return {
        "workload": SCENARIO.key,
        "rounds": rounds,
        "seconds": seconds,
        "rows": rows,
        "causal_vs_read_your_writes": {
            "replica_share_cost": round(share_cost, 4),
            "qps_cost": round(qps_cost, 4),
        },
        "default": default,
    }


def markdown(c: dict[str, Any]) -> list[str]:
    out = [
        "| consistency | QPS median (min-max) | p95 ms | reads on replica | stale reads (probe) |",
        "|---|--:|--:|--:|--:|",
    ]
    for r in c["rows"]:
        out.append(
            f"| {r['mode']} | {r['qps']:,} ({r['qps_min']:,}-{r['qps_max']:,}) | {r['p95_ms']} "
            f"| {r['replica_share']:.1%} | {r['stale']} / {r['probe_pairs']:,} |"
        )
    cost = c["causal_vs_read_your_writes"]
    out += [
        "",
        f"{c['workload']}; {c['rounds']} rounds x {c['seconds']} s per mode, the order rotating "
        "each round; medians over rounds. Reads on replica: pyproxy's own count of reads by "
        "route. Probe: beside sysbench, connection A inserts a row and connection B reads it "
        "at once.",
        f"causal vs read_your_writes (median of the per-round ratios): "
        f"{cost['replica_share_cost']:+.1%} reads-on-replica cost, "
        f"{cost['qps_cost']:+.1%} throughput cost → default `{c['default']}` "
        f"(causal unless either cost exceeds {MAX_COST:.0%}).",
    ]
    return out
