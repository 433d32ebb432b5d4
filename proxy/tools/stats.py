"""Bounded samples for percentiles, and the number formats the reports share."""

from __future__ import annotations

import math
import random

RESERVOIR = 100_000


class Samples:
    """Count, max and a uniform reservoir of values (memory stays bounded on long runs)."""

    def __init__(self, size: int = RESERVOIR) -> None:
        self.size = size
        self.count = 0
        self.max = 0.0
        self._values: list[float] = []
        self._rng = random.Random(0)

    def add(self, value: float) -> None:
        self.count += 1
        self.max = max(self.max, value)
        if len(self._values) < self.size:
            self._values.append(value)
        else:
            i = self._rng.randrange(self.count)
            if i < self.size:
                self._values[i] = value

    def percentiles(self, *qs: float) -> list[float]:
        """Nearest-rank percentiles, each q in [0, 100]; 0.0 without samples."""
        if not self._values:
            return [0.0 for _ in qs]
        ordered = sorted(self._values)
        out = []
        for q in qs:
            rank = max(1, math.ceil(q / 100 * len(ordered)))
            out.append(ordered[min(rank, len(ordered)) - 1])
        return out


def ms(seconds: float) -> str:
    """Milliseconds with a precision that suits the size."""
    value = seconds * 1000
    if value >= 10_000:
        return f"{seconds:.1f}s"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def table(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
