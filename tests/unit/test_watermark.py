"""The shared high-water mark: one row per worker, max over rows, unknown states, processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from proxy import watermark as wm
from proxy.watermark import Watermark

UUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"


@pytest.fixture
def block() -> Iterator[int]:
    fd = wm.create(3)
    yield fd
    wm.release(fd)


def test_local_single_row() -> None:
    mark = Watermark()
    assert mark.mark() == {}
    assert mark.age_s() is None
    mark.advance({1: 10, UUID: 4})
    assert mark.mark() == {1: 10, UUID: 4}
    mark.advance({1: 7})  # older: ignored, values only grow
    assert mark.mark() == {1: 10, UUID: 4}
    age = mark.age_s()
    assert age is not None and age >= 0


def test_rows_merge_by_maximum(block: int) -> None:
    a, b = Watermark(block, 0, 3), Watermark(block, 1, 3)
    a.advance({1: 10})
    b.advance({1: 12, 2: 3})
    assert a.mark() == b.mark() == {1: 12, 2: 3}
    a.advance({1: 20})
    assert b.mark() == {1: 20, 2: 3}  # the reader's cache follows row versions
    a.close()
    b.close()


def test_unknown_commit_hides_the_mark_until_published(block: int) -> None:
    a, b = Watermark(block, 0, 3), Watermark(block, 2, 3)
    a.advance({1: 1})
    a.begin_unknown()
    assert b.mark() is None
    a.advance({1: 2})
    a.end_unknown()
    assert b.mark() == {1: 2}
    a.close()
    b.close()


def test_a_full_row_makes_the_mark_unknown() -> None:
    mark = Watermark()
    mark.advance({d: 1 for d in range(wm.SLOTS)})
    assert mark.mark() == {d: 1 for d in range(wm.SLOTS)}
    mark.advance({wm.SLOTS: 1})
    assert mark.mark() is None


def test_a_restarted_owner_keeps_its_row(block: int) -> None:
    """A worker restarted after SIGKILL reuses its predecessor's slots in place: no key is
    left twice in the row with its older value winning, none is lost."""
    old = Watermark(block, 0, 3)
    old.advance({1: 10, 2: 3})
    old.close()
    new, reader = Watermark(block, 0, 3), Watermark(block, 1, 3)
    new.advance({2: 5})
    assert reader.mark() == {1: 10, 2: 5}
    new.close()
    reader.close()


def test_a_dead_owners_pending_commits_end_once_covered(block: int) -> None:
    """Commits the dead worker acknowledged without publishing their GTID keep the mark
    unknown until a writer position asked after the restart holds them; then it is known
    again (not unknown for good, every causal read asking the writer)."""
    old = Watermark(block, 0, 3)
    old.advance({1: 10})
    old.begin_unknown()
    old.close()
    new, reader = Watermark(block, 0, 3), Watermark(block, 1, 3)
    assert reader.mark() is None
    new.covered(new.adopted_ns - 1, {1: 11})  # asked before the restart: proves nothing
    assert reader.mark() is None
    new.covered(time.monotonic_ns(), {1: 12})
    assert reader.mark() == {1: 12}
    new.covered(time.monotonic_ns(), {1: 13})  # nothing inherited any more: no effect
    assert reader.mark() == {1: 12}
    new.close()
    reader.close()


def test_a_write_cut_short_is_closed_by_the_next_owner(block: int) -> None:
    old = Watermark(block, 0, 3)
    old.advance({1: 10})
    view = memoryview(old._map).cast("Q")  # type: ignore[arg-type]
    view[0] += 1  # died between the two version bumps of advance()
    view.release()
    old.close()
    new, reader = Watermark(block, 0, 3), Watermark(block, 1, 3)
    assert reader.mark() == {1: 10}
    new.close()
    reader.close()


def test_bad_row_refused(block: int) -> None:
    with pytest.raises(ValueError):
        Watermark(block, 3, 3)


_WORKER = """
import sys
from proxy.watermark import Watermark
w = Watermark(int(sys.argv[1]), int(sys.argv[2]), 3)
w.advance({5: int(sys.argv[3]), sys.argv[4]: int(sys.argv[3])})
w.close()
"""


def test_another_process_writes_its_row(block: int) -> None:
    """A second process (as a worker is: the descriptor inherited) writes its row."""
    reader = Watermark(block, 0, 3)
    reader.advance({5: 1})
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(block), "1", "42", UUID],
        pass_fds=(block,),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert reader.mark() == {5: 42, UUID: 42}
    reader.close()
