"""Source conventions that code review alone let slip: checked on the package's text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "proxy"


def _sources(under: str = "") -> list[Path]:
    return sorted((PACKAGE / under).rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_wait_for(path: Path) -> None:
    """Python 3.11's asyncio.wait_for returns the result and drops a cancel that arrives as
    its awaitable completes: a task cancelled at shutdown then runs on, and the process hangs
    (seen in CI). asyncio.timeout() cancels the task itself and has no such window."""
    assert not re.search(r"\basyncio\.wait_for\(", path.read_text())


@pytest.mark.parametrize(
    "path", _sources("protocol") + _sources("routing"), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_sans_io(path: Path) -> None:
    """Protocol and routing code is bytes in, events out: no event loop in it."""
    assert not re.search(r"^\s*(import asyncio|from asyncio)", path.read_text(), re.M)
