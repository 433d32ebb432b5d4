"""Observability on real parts: a real Prometheus scrapes the real pyproxy under traffic and
every Grafana panel query returns data; the alert rules pass promtool's checks and unit tests."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.lab.lab import Lab
from tests.support.prometheus import PROMTOOL, Prometheus
from tests.support.proxyproc import LabProxy, lab_proxy
from tests.support.stats import run_traffic

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "pyproxy.json"
ALERTS = ROOT / "config" / "alerts.yml"
ALERT_TESTS = ROOT / "config" / "alerts_test.yml"
RULE = {"name": "reads_of_probe", "match_digest": "^select \\? \\+ \\?", "route": "reader"}


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel, rows' panels included."""
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, object]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):  # type: ignore[attr-defined]
                out.append((str(panel.get("title")), str(target["expr"])))
            walk(panel.get("panels", []))  # type: ignore[arg-type]

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return out


def promtool(*args: str) -> str:
    res = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_alert_rules_pass_promtool() -> None:
    assert "SUCCESS: 6 rules found" in promtool("check", "rules", str(ALERTS))
    assert "SUCCESS" in promtool("test", "rules", str(ALERT_TESTS))
    # The shipped Prometheus config loads the rules.
    assert "1 rule files found" in promtool(
        "check", "config", str(ROOT / "config" / "prometheus.yml")
    )


@pytest.fixture(scope="module")
def proxy(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProxy]:
    with lab_proxy(lab, tmp_path_factory.mktemp("observed"), query_rules=[RULE]) as running:
        yield running


@pytest.fixture(scope="module")
def traffic(proxy: LabProxy) -> Iterator[None]:
    """Reads, writes and errors through the proxy until the test ends."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def loop() -> None:
        try:
            while not stop.is_set():
                run_traffic(proxy, reads=20, writes=5, errors=1)
                stop.wait(0.2)
        except BaseException as exc:  # reported by the fixture, not lost in the thread
            failures.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not failures, failures


def test_every_dashboard_panel_returns_data(proxy: LabProxy, traffic: None, tmp_path: Path) -> None:
    queries = panel_queries()
    assert len(queries) >= 20
    prometheus = Prometheus(tmp_path, [f"127.0.0.1:{proxy.http_port}"], [ALERTS])
    try:
        prometheus.wait_scraping()
        # rate() needs two samples in its window: poll until every query answers, or time out.
        deadline = time.monotonic() + 90
        empty = queries
        while empty and time.monotonic() < deadline:
            empty = [(title, expr) for title, expr in empty if not prometheus.query(expr)]
            if empty:
                time.sleep(1)
        assert not empty, f"panels without data: {empty}"

        # The alert rules load and evaluate on the real metrics; a healthy lab has a writer.
        groups = prometheus.api("rules")["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        assert set(rules) == {
            "PyproxyDown", "PyproxyWriterDown", "PyproxyNoWriter", "PyproxyReplicaLagHigh",
            "PyproxyFailover", "PyproxyErrorRate",
        }  # fmt: skip
        assert all(r["health"] == "ok" for r in rules.values()), rules
        for name in ("PyproxyDown", "PyproxyWriterDown", "PyproxyNoWriter"):
            assert rules[name]["state"] == "inactive", rules[name]
    finally:
        prometheus.stop()
    assert proxy.answers()
