"""The topology process's side of the worker processes: spawns and restarts them, sends them
the cluster state and every topology event, a heartbeat and reloads, and asks them for
reports, acknowledgements (the failover barrier), busy servers and KILLs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy import watermark
from proxy.channel import Call, Channel, ChannelClosed
from proxy.config import Config
from proxy.frontend.acceptor import LISTEN_BACKLOG, listen_sockets
from proxy.frontend.listener import FIRST_SESSION_ID, LAST_SESSION_ID
from proxy.messages import (
    BusyOn,
    Drain,
    Events,
    Heartbeat,
    Kill,
    Ready,
    Recheck,
    Refused,
    Reload,
    ReportRequest,
    Start,
    Sync,
)
from proxy.protocol.constants import ErrorCode
from proxy.protocol.packets import ErrPacket
from proxy.report import WorkerReport, merge
from proxy.shared import SharedCounts, assign_slots
from proxy.topology import Event, Topology, WriterChanged
from proxy.watermark import Watermark

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  # a worker imports, builds its listener and says Ready within this
CALL_TIMEOUT_S = 5.0  # reports, busy checks, KILL
BARRIER_TIMEOUT_S = 2.0  # a worker that cannot acknowledge "no writer" within this is killed
RESTART_BACKOFF_S = 1.0  # a worker dying at once again is restarted no faster than this
STOP_MARGIN_S = 5.0  # past the drain grace, a worker still running is killed


@dataclass
class WorkerProcess:
    """One worker as the topology process sees it."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    channel: Channel | None = None
    pid: int = 0
    started_at: float = 0.0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Workers:
    """The DataPlane of a proxy with worker processes (see datapath.DataPlane)."""

    def __init__(
        self,
        count: int,
        settings: Callable[[], Config],
        topology: Topology,
        recheck: Callable[[str], None],
    ) -> None:
        self.count = count
        self._settings = settings
        self.topology = topology
        self._recheck = recheck
        self.workers = [WorkerProcess(i) for i in range(count)]
        self.shared = SharedCounts.create(count)
        self.shared.slots = assign_slots({}, [u.username for u in settings().users])
        # The causal-reads mark: each worker writes its row; this process only reads it.
        self._watermark_fd = watermark.create(count)
        self.watermark = Watermark(self._watermark_fd, 0, count)
        self._span = (LAST_SESSION_ID - FIRST_SESSION_ID) // count
        self._server_version = ""
        # The MySQL port's listening sockets: every worker, a restarted one too, takes
        # connections from the same listen queue (none is lost with a worker).
        self._listening: list[socket.socket] = []
        self._pending: list[Event] = []
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        topology.follow(self._event)

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._listening[0].getsockname()[1])

    async def start(self, server_version: str) -> None:
        self._server_version = server_version
        listen = self._settings().listeners.mysql
        self._listening = await listen_sockets(listen.host, listen.port, LISTEN_BACKLOG)
        started = await asyncio.gather(
            *(self._spawn(w) for w in self.workers), return_exceptions=True
        )
        failed = [r for r in started if isinstance(r, BaseException)]
        if failed:
            await self.stop(0.0)
            raise RuntimeError(f"a worker process did not start: {failed[0]}")
        self._spawn_task(self._heartbeat())
        log.info("%d worker processes serve port %d: pids %s", self.count, self.port,
                 ", ".join(str(w.pid) for w in self.workers))  # fmt: skip

    async def _spawn(self, worker: WorkerProcess) -> None:
        """Start the worker's process and wait until it listens."""
        ours, theirs = socket.socketpair()
        try:
            # Popen, not the loop's subprocess support: the workers' exits are seen as their
            # channel closing, and reaped by _reap (no child watcher on the loop).
            worker.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "proxy.worker",
                    "--channel-fd",
                    str(theirs.fileno()),
                    "--counts-fd",
                    str(self.shared.fd),
                    "--listen-fds",
                    ",".join(str(sock.fileno()) for sock in self._listening),
                ],
                stdin=subprocess.DEVNULL,
                pass_fds=(
                    theirs.fileno(),
                    self.shared.fd,
                    self._watermark_fd,
                    *(sock.fileno() for sock in self._listening),
                ),
            )
        finally:
            theirs.close()
        worker.pid = worker.proc.pid
        worker.started_at = time.monotonic()
        channel = await Channel.open(ours)
        config = self._settings()
        first = FIRST_SESSION_ID + worker.index * self._span
        self._flush()  # the others hear of the events so far; the new one starts after them
        channel.send(
            Start(
                worker.index,
                self.count,
                config,
                self.topology.cluster,
                self._server_version,
                self.port,
                first,
                first + self._span - 1,
                dict(self.shared.slots),
                self._watermark_fd,
            )
        )
        # From now on it is sent every event (it applies them once it listens).
        worker.channel = channel
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                ready = await channel.recv()
        except (TimeoutError, ChannelClosed) as exc:
            worker.channel = None
            channel.close()
            worker.proc.kill()
            await _reap(worker.proc, None)
            raise RuntimeError(f"worker {worker.index} did not start ({exc!r})") from None
        assert isinstance(ready, Ready)
        self._spawn_task(self._serve(worker, channel))

    async def stop(self, grace_s: float) -> None:
        """Every worker drains (listener closed, running statements finish within grace_s)."""
        self._stopping = True
        for sock in self._listening:  # the port is closed once the workers close theirs
            sock.close()
        for worker in self.workers:
            if worker.channel is not None:
                with contextlib.suppress(ChannelClosed):
                    worker.channel.send(Drain(grace_s))
        procs = [w.proc for w in self.workers if w.proc is not None]
        await asyncio.gather(*(_reap(p, grace_s + STOP_MARGIN_S) for p in procs))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self.workers:
            if worker.channel is not None:
                worker.channel.close()
        self.watermark.close()
        watermark.release(self._watermark_fd)

    def _spawn_task(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- what workers say ------------------------------------------------------------------------
    async def _serve(self, worker: WorkerProcess, channel: Channel) -> None:
        """Read the worker's messages until its channel closes; then restart it."""
        try:
            while True:
                message = await channel.recv()
                if isinstance(message, Recheck):
                    self._recheck(message.server)
                elif isinstance(message, Call) and isinstance(message.request, Kill):
                    self._spawn_task(self._forward_kill(worker, channel, message))
        except ChannelClosed:
            pass
        worker.channel = None
        if self._stopping:
            return
        await self._restart(worker)

    async def _restart(self, worker: WorkerProcess) -> None:
        proc = worker.proc
        if proc is not None:
            proc.kill()  # its channel is gone: it serves nobody well any more
            await _reap(proc, None)
            log.error("worker %d (pid %d) exited with %s: restarting it",
                      worker.index, proc.pid, proc.returncode)  # fmt: skip
        self.shared.clear_row(worker.index)  # its clients went with it
        while not self._stopping:
            if time.monotonic() - worker.started_at < RESTART_BACKOFF_S:
                await asyncio.sleep(RESTART_BACKOFF_S)
            try:
                await self._spawn(worker)
            except (RuntimeError, OSError) as exc:
                log.error("worker %d: restart failed: %s", worker.index, exc)
                continue
            log.warning("worker %d restarted: pid %d", worker.index, worker.pid)
            return

    async def _forward_kill(self, asker: WorkerProcess, channel: Channel, call: Call) -> None:
        """KILL of an id the asking worker does not have."""
        assert isinstance(call.request, Kill)
        result = await self._kill(call.request, asker)
        with contextlib.suppress(ChannelClosed):
            channel.reply(call, result)

    async def kill(self, target_id: int, query_only: bool) -> ErrPacket | None:
        """The admin's KILL [QUERY] id, of any user's session in any worker."""
        refused = await self._kill(Kill(target_id, None, query_only), None)
        return None if refused is None else ErrPacket(refused.code, refused.message)

    async def _kill(self, kill: Kill, asker: WorkerProcess | None) -> Refused | None:
        """The worker owning the id (a session id) or every other worker (a backend thread
        id) carries the KILL out: None when done, else the error to answer."""
        if kill.target_id >= FIRST_SESSION_ID:
            owner = (kill.target_id - FIRST_SESSION_ID) // self._span
            others = [w for w in self.workers if w.index == owner and w is not asker]
        else:
            others = [w for w in self.workers if w is not asker]
        answers = await self._ask(others, kill, CALL_TIMEOUT_S)
        result = Refused(ErrorCode.ER_NO_SUCH_THREAD, f"Unknown thread id: {kill.target_id}")
        for answer in answers.values():
            if answer is None:
                return None
            if isinstance(answer, Refused) and answer.code == ErrorCode.ER_KILL_DENIED_ERROR:
                result = answer
        return result

    # -- what workers are told -------------------------------------------------------------------
    def _event(self, event: Event) -> None:
        """Every event goes to every worker, batched per turn of the loop, in order."""
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(event)

    def _flush(self) -> None:
        if not self._pending:
            return
        message = Events(tuple(self._pending), self.topology.cluster.writer)
        self._pending = []
        self._send_all(message)

    def _send_all(self, message: object) -> None:
        for worker in self.workers:
            if worker.channel is not None:
                with contextlib.suppress(ChannelClosed):  # its reader restarts it
                    worker.channel.send(message)

    async def _heartbeat(self) -> None:
        while True:
            self._flush()
            self._send_all(Heartbeat(self.topology.cluster.writer))
            await asyncio.sleep(self._settings().topology_silence_ms / 1000 / 5)

    def apply_config(self, config: Config) -> None:
        self.shared.slots = assign_slots(self.shared.slots, [u.username for u in config.users])
        self._flush()
        self._send_all(Reload(config, dict(self.shared.slots)))

    async def settled(self) -> None:
        """Every worker has applied what was sent before (the channel keeps the order): a
        LOAD ... TO RUNTIME answers once its change is in force for every new statement."""
        answers = await self._ask(self.workers, Sync(), CALL_TIMEOUT_S)
        for index, answer in sorted(answers.items()):
            if answer is not True:  # restarting: it starts from the current config anyway
                log.warning("worker %d did not confirm the new config: %s", index, answer)

    async def _ask(
        self, workers: list[WorkerProcess], request: object, timeout: float
    ) -> dict[int, object]:
        """request to each worker: index -> its answer (an exception when it gave none)."""

        async def one(worker: WorkerProcess) -> object:
            if worker.channel is None:
                return ChannelClosed(f"worker {worker.index} is restarting")
            try:
                return await worker.channel.call(request, timeout)
            except (TimeoutError, ChannelClosed) as exc:
                return exc

        self._flush()  # what they were told before comes first
        answers = await asyncio.gather(*(one(w) for w in workers))
        return {w.index: a for w, a in zip(workers, answers, strict=True)}

    async def report(self, reset_digests: bool = False, detail: bool = True) -> WorkerReport:
        request = ReportRequest(reset_digests, detail)
        answers = await self._ask(self.workers, request, CALL_TIMEOUT_S)
        reports = [a for a in answers.values() if isinstance(a, WorkerReport)]
        for index, answer in answers.items():
            if not isinstance(answer, WorkerReport):
                log.warning("worker %d gave no report: %r", index, answer)
        return merge(reports)

    async def busy_on(self, server: str) -> bool:
        """A worker that does not answer counts as busy (the switchover waits longer)."""
        answers = await self._ask(self.workers, BusyOn(server), CALL_TIMEOUT_S)
        return any(a is not False for a in answers.values())

    async def barrier(self) -> None:
        """Before a promotion: no worker writes to any master until every worker has applied
        "no writer". A worker that does not acknowledge in time is killed (and restarted,
        from the state after the promotion)."""
        old = self.topology.cluster.writer
        if old is not None:
            self.topology.apply(WriterChanged(old, None, "failover: writes stopped everywhere"))
        answers = await self._ask(self.workers, Sync(), BARRIER_TIMEOUT_S)
        for worker in self.workers:
            if answers.get(worker.index) is not True and worker.proc is not None:
                log.error("worker %d did not acknowledge the failover barrier: killed",
                          worker.index)  # fmt: skip
                worker.proc.kill()


async def _reap(proc: subprocess.Popen[bytes], timeout: float | None) -> None:
    """Wait for the process to exit (killed after timeout s, when given) and reap it."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while proc.poll() is None:
        if deadline is not None and time.monotonic() > deadline:
            log.error("worker pid %d did not stop: killed", proc.pid)
            proc.kill()
            deadline = None
        await asyncio.sleep(0.02)
