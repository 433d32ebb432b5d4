"""bench.run.run_order: the order of a sysbench pair's runs."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.run import run_order


@pytest.mark.parametrize("sides", [2, 4, 6])
def test_even_sides_are_a_williams_square(sides: int) -> None:
    rows = [run_order(sides, pair) for pair in range(sides)]
    assert all(sorted(row) == list(range(sides)) for row in rows)
    places = Counter((row[i], i) for row in rows for i in range(sides))
    assert len(places) == sides * sides and set(places.values()) == {1}
    after = Counter((row[i - 1], row[i]) for row in rows for i in range(1, sides))
    assert len(after) == sides * (sides - 1) and set(after.values()) == {1}


def test_four_sides_as_the_bench_runs_them() -> None:
    # direct, pyproxy, HAProxy, interpreted: pyproxy right after direct in one pair of four
    assert [run_order(4, p) for p in range(5)] == [
        [0, 1, 3, 2], [1, 2, 0, 3], [2, 3, 1, 0], [3, 0, 2, 1], [0, 1, 3, 2],
    ]  # fmt: skip


def test_odd_sides_rotate() -> None:
    assert [run_order(3, p) for p in range(4)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]
