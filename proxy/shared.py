"""Client connection counts that every worker process reads, so that max_client_connections
and a user's max_connections hold for the whole proxy and new connections go to the worker
holding the fewest: one row of counters per worker in shared memory, each row written only by
its worker, a total read as the sum of the rows."""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping

MAX_USERS = 4096  # users beyond this are limited per worker
_TOTAL = 0  # slot of the logged-in clients
_OPEN = 1  # slot of the client connections open, logging in or not; -1: not serving
_TAKEN = 2  # slot of the connections taken off the listening sockets, ever
_FIRST_USER = 3  # users have slots _FIRST_USER.. (MAX_USERS of them)
_WIDTH = 8


class SharedCounts:
    """A table of workers x (_FIRST_USER + MAX_USERS) counters in a memfd mapped by every
    process; for the acceptor, the Balance between the worker processes."""

    def __init__(self, fd: int, workers: int, row: int | None) -> None:
        """row: the row this process writes (a worker's index); None: read only."""
        self.fd = fd
        self.workers = workers
        self.row = row
        self._width = _FIRST_USER + MAX_USERS
        self._map = mmap.mmap(fd, workers * self._width * _WIDTH)
        self._cells = memoryview(self._map).cast("q")
        self.slots: Mapping[str, int] = {}  # user name -> slot (given by the topology process)

    @classmethod
    def create(cls, workers: int) -> SharedCounts:
        fd = os.memfd_create("pyproxy-counts")  # close-on-exec: workers get it by pass_fds
        os.ftruncate(fd, workers * (_FIRST_USER + MAX_USERS) * _WIDTH)
        counts = cls(fd, workers, None)
        for row in range(workers):
            counts.clear_row(row)
        return counts

    def publish(self, total: int, per_user: Mapping[str, int]) -> None:
        """This worker's logged-in clients, in all and per user (its row, rewritten)."""
        assert self.row is not None
        base = self.row * self._width
        self._cells[base + _TOTAL] = total
        for name, slot in self.slots.items():
            self._cells[base + slot] = per_user.get(name, 0)

    def set_open(self, count: int) -> None:
        """This worker holds count client connections (-1: it takes no new ones)."""
        assert self.row is not None
        self._cells[self.row * self._width + _OPEN] = count

    def took_one(self) -> None:
        """This worker took a connection off the listening sockets."""
        assert self.row is not None
        self._cells[self.row * self._width + _TAKEN] += 1

    def crowded(self) -> bool:
        """Another worker taking connections holds fewer than this one."""
        assert self.row is not None
        cells, width = self._cells, self._width
        mine = cells[self.row * width + _OPEN]
        return any(
            0 <= cells[row * width + _OPEN] < mine for row in range(self.workers) if row != self.row
        )

    def taken_elsewhere(self) -> int:
        """The connections the other workers took so far: a change says one took one."""
        return sum(
            self._cells[row * self._width + _TAKEN]
            for row in range(self.workers)
            if row != self.row
        )

    def clear_row(self, row: int) -> None:
        """Forget a dead (or not yet started) worker's counts: its clients are gone with it,
        and new connections are not left to it."""
        base = row * self._width
        self._cells[base : base + self._width] = memoryview(bytes(self._width * _WIDTH)).cast("q")
        self._cells[base + _OPEN] = -1

    def total(self) -> int:
        return self._sum(_TOTAL)

    def _sum(self, slot: int) -> int:
        return sum(self._cells[r * self._width + slot] for r in range(self.workers))

    def user_total(self, name: str) -> int | None:
        """The user's clients in every worker; None for a user without a slot."""
        slot = self.slots.get(name)
        if slot is None:
            return None
        return self._sum(slot)


def assign_slots(current: Mapping[str, int], names: list[str]) -> dict[str, int]:
    """Slots for these user names: kept for known names, the lowest free ones for new names."""
    slots = {n: s for n, s in current.items() if n in names}
    free = (s for s in range(_FIRST_USER, _FIRST_USER + MAX_USERS) if s not in slots.values())
    for name in names:
        if name not in slots:
            slot = next(free, None)
            if slot is None:
                break
            slots[name] = slot
    return slots
