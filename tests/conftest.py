"""Shared pytest fixtures: the real-server lab for integration tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from proxy.lab.lab import Lab
from proxy.testing import ProxyThread
from tests.support.endpoints import Endpoint, proxy_config

LAB_ENV = "PYPROXY_TEST_LAB"


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A lab of 2 masters + 2 replicas: the one named by $PYPROXY_TEST_LAB, or a fresh one.

    Reusing a running lab (`PYPROXY_TEST_LAB=/tmp/devlab pytest ...`) skips the start-up, so a
    developer can iterate fast; that lab is left running afterwards.
    """
    reuse = os.environ.get(LAB_ENV)
    lab = Lab(reuse) if reuse else Lab(tmp_path_factory.mktemp("lab"))
    lab.up(masters=2, replicas=2)
    try:
        yield lab
    finally:
        if not reuse:
            lab.destroy()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # When a test that used real servers fails, show what the servers said.
    if report.failed and "lab" in getattr(item, "fixturenames", ()):
        lab_obj = item.funcargs.get("lab") if hasattr(item, "funcargs") else None
        if isinstance(lab_obj, Lab):
            report.sections.append(("server error logs", lab_obj.log_tails(30)))
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "integration":
            item.add_marker(pytest.mark.integration)


def _dump_proxy_tasks(thread: ProxyThread) -> None:
    """SIGUSR1 prints the proxy loop's task stacks: what a hung test is waiting for."""

    def dump(signum: int, frame: object) -> None:
        for task in asyncio.all_tasks(thread.loop):
            task.print_stack(file=sys.stderr)

    signal.signal(signal.SIGUSR1, dump)


@pytest.fixture(scope="session")
def proxy(lab: Lab) -> Iterator[ProxyThread]:
    """pyproxy in front of the lab, serving from a background thread of this process."""
    thread = ProxyThread(proxy_config(lab)).start()
    _dump_proxy_tasks(thread)
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture(scope="session")
def proxy_endpoint(proxy: ProxyThread, lab: Lab) -> Endpoint:
    """The proxy's MySQL port for the app user."""
    acct = lab.accounts.app
    return Endpoint("127.0.0.1", proxy.port, acct.username, acct.password, "demo_db")
