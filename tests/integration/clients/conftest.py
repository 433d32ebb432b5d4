"""Fixtures for the client tests: the endpoint (proxy, or the writer for comparison), tables."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.integration.clients._support import drop_tables, unique

if TYPE_CHECKING:
    from proxy.lab.lab import Lab
    from tests.support.endpoints import Endpoint

DIRECT_ENV = "PYPROXY_CLIENTS_DIRECT"


@pytest.fixture(scope="session")
def proxy_endpoint(proxy_endpoint: Endpoint, lab: Lab) -> Endpoint:
    """The proxy endpoint; with $PYPROXY_CLIENTS_DIRECT=1, the lab's writer on the same terms.

    The direct mode tells a proxy bug from a test bug: a test that passes straight against
    the writer and fails through the proxy found something the proxy does differently.
    """
    if os.environ.get(DIRECT_ENV) != "1":
        return proxy_endpoint
    writer = next(r["node"] for r in lab.status() if r["read_only"] == "OFF")
    return dataclasses.replace(proxy_endpoint, port=lab.node(writer).port)


@pytest.fixture
def new_table(
    proxy_endpoint: Endpoint, request: pytest.FixtureRequest
) -> Iterator[Callable[[], str]]:
    """A factory of unique table names (`<client>_<hex>`), all dropped after the test."""
    prefix = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    names: list[str] = []

    def make() -> str:
        names.append(unique(prefix))
        return names[-1]

    yield make
    drop_tables(proxy_endpoint, names)
