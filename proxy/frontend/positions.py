"""The writer's current GTID position for causal reads, one query shared by concurrent reads."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.backend.connection import BackendError
from proxy.backend.pool import BackendPool
from proxy.cluster import ServerState
from proxy.config import User
from proxy.metrics import Metrics
from proxy.routing.causal import Mark, commit_mark

log = logging.getLogger(__name__)

# A read waits this long at most for the writer's position; then it runs on the writer.
POSITION_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Asker:
    """Whose credentials the position query borrows (a pooled connection of that user)."""

    user: User
    caps: int
    collation: int


class WriterPositions:
    """Asks the writer for its position (gtid_binlog_pos / gtid_executed) on behalf of reads.

    A position is good for a read when its query was sent at most max_age before the read
    arrived: then everything acknowledged before the read is in it. A read joins the query in
    flight when that one is recent enough, else the next query, which starts as soon as the
    one in flight ends: however many reads wait, at most two queries are outstanding.
    """

    def __init__(
        self,
        pool: BackendPool,
        metrics: Metrics,
        writer: Callable[[], ServerState | None],
        max_age_us: Callable[[], int],
        learnt: Callable[[int, Mark], None] | None = None,
    ) -> None:
        """learnt(sent_ns, position): told of every position read (the watermark's
        covered())."""
        self._pool = pool
        self._learnt = learnt
        self._metrics = metrics
        self._writer = writer
        self._max_age_us = max_age_us
        self._last: tuple[int, Mark] | None = None  # (query sent, monotonic ns; position)
        self._inflight: tuple[int, asyncio.Future[Mark | None]] | None = None
        self._next: asyncio.Future[Mark | None] | None = None  # reads waiting for a new query
        self._asker: Asker | None = None
        self._task: asyncio.Task[None] | None = None

    async def position(
        self, arrived_ns: int, asker: Asker, max_age_us: int | None = None
    ) -> Mark | None:
        """The writer's position as a mark, asked after arrived_ns (less max_age, by default
        routing.causal_position_max_age_us); None when it could not be learnt in time (the
        read then goes to the writer)."""
        age = self._max_age_us() if max_age_us is None else max_age_us
        oldest = arrived_ns - age * 1000
        if self._last is not None and self._last[0] >= oldest:
            self._metrics.causal_positions["reused"] += 1
            return self._last[1]
        if self._inflight is not None and self._inflight[0] >= oldest:
            self._metrics.causal_positions["shared"] += 1
            fut = self._inflight[1]
        else:
            self._asker = asker
            if self._next is None:
                self._next = asyncio.get_running_loop().create_future()
            else:
                self._metrics.causal_positions["shared"] += 1
            fut = self._next
            if self._inflight is None:
                self._start()
        try:
            async with asyncio.timeout(POSITION_TIMEOUT_S):
                return await asyncio.shield(fut)
        except TimeoutError:
            return None

    def _start(self) -> None:
        assert self._next is not None and self._asker is not None
        fut, self._next = self._next, None
        self._inflight = (time.monotonic_ns(), fut)
        self._task = asyncio.get_running_loop().create_task(self._ask(self._asker, fut))

    async def _ask(self, asker: Asker, fut: asyncio.Future[Mark | None]) -> None:
        assert self._inflight is not None
        sent = self._inflight[0]
        mark: Mark | None = None
        try:
            async with asyncio.timeout(POSITION_TIMEOUT_S):
                mark = await self._query(asker)
        except (BackendError, TimeoutError) as exc:
            log.info("causal reads: the writer's position could not be read: %s", exc)
        finally:
            self._metrics.causal_positions["queries"] += 1
            if mark is not None and (self._last is None or self._last[0] < sent):
                self._last = (sent, mark)
            if mark is not None and self._learnt is not None:
                self._learnt(sent, mark)
            self._inflight = None
            if not fut.done():
                fut.set_result(mark)
            if self._next is not None:
                self._start()

    async def _query(self, asker: Asker) -> Mark | None:
        writer = self._writer()
        if writer is None:
            return None
        conn = await self._pool.acquire(
            writer.config, asker.user, asker.caps, asker.collation, None
        )
        sql = "SELECT @@GLOBAL.gtid_binlog_pos" if conn.mariadb else "SELECT @@GLOBAL.gtid_executed"
        try:
            value = await conn.query_scalar(sql)
        except BackendError:
            self._pool.discard(conn)
            raise
        self._pool.release(conn)
        return commit_mark(value.decode()) if value is not None else None

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
