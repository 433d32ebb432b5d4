"""A worker process: serves clients on the shared MySQL port with its own pool, following the
topology that the topology process decides and sends over the channel."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

from proxy.channel import Call, Channel, ChannelClosed
from proxy.datapath import DataPath
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
from proxy.protocol.packets import ErrPacket
from proxy.report import build_report
from proxy.shared import SharedCounts
from proxy.topology import Topology, WriterChanged
from proxy.watermark import Watermark

log = logging.getLogger("pyproxy.worker")

PR_SET_PDEATHSIG = 1
# Without a word from the topology process (no Drain), the drain after it died.
ORPHAN_GRACE_S = 5.0


class Worker:
    """Applies what the topology process says to the follower topology and the data path."""

    def __init__(
        self, channel: Channel, start: Start, shared: SharedCounts, sockets: list[socket.socket]
    ) -> None:
        self.channel = channel
        self.index = start.index
        self.topology = Topology(start.cluster)
        self.shared = shared
        self.path = DataPath(
            start.config,
            self.topology,
            self._recheck,
            index=start.index,
            id_range=(start.first_id, start.last_id),
            sockets=sockets,
            shared=shared,
            kill_elsewhere=self._kill_elsewhere,
            watermark=Watermark(start.watermark, start.index, start.workers),
        )
        self.silent = False  # no word from the topology process for too long: no writes
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def silence_s(self) -> float:
        return self.path.listener.config.topology_silence_ms / 1000

    def _recheck(self, server: str) -> None:
        with contextlib.suppress(ChannelClosed):
            self.channel.send(Recheck(server))

    async def _kill_elsewhere(
        self, target_id: int, username: str, query_only: bool
    ) -> ErrPacket | None:
        try:
            answer = await self.channel.call(Kill(target_id, username, query_only), 10.0)
        except (TimeoutError, ChannelClosed):
            return ErrPacket(1105, "pyproxy: the topology process did not answer the KILL")
        return ErrPacket(answer.code, answer.message) if isinstance(answer, Refused) else None

    async def run(self, stop: asyncio.Event) -> float:
        """Follow the topology process until told to drain, it goes away, or stop is set;
        the grace for running statements."""
        receiving = asyncio.ensure_future(self.channel.recv())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {receiving, stopping}, timeout=self.silence_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )  # fmt: skip
                if stopping in done:
                    return ORPHAN_GRACE_S
                if not done:
                    self._went_silent()
                    continue
                try:
                    message = receiving.result()
                except ChannelClosed:
                    log.error("the topology process is gone: draining and exiting")
                    return ORPHAN_GRACE_S
                receiving = asyncio.ensure_future(self.channel.recv())
                if isinstance(message, Drain):
                    return message.grace_s
                self._handle(message)
        finally:
            receiving.cancel()
            stopping.cancel()

    def _went_silent(self) -> None:
        if self.silent:
            return
        self.silent = True
        writer = self.topology.cluster.writer
        log.error(
            "no word from the topology process for %.1fs: no writes until it is heard again",
            self.silence_s,
        )
        if writer is not None:
            self.topology.apply(WriterChanged(writer, None, "topology process silent"))

    def _follow_writer(self, writer: str | None) -> None:
        """The writer is what the topology process says, whatever happened here meanwhile."""
        if self.silent:
            self.silent = False
            log.warning("the topology process is heard again")
        local = self.topology.cluster.writer
        if local != writer and self.topology.switching is None:
            self.topology.apply(WriterChanged(local, writer, "as the topology process says"))

    def _handle(self, message: object) -> None:
        match message:
            case Events(events, writer):
                for event in events:
                    self.topology.apply(event)
                self._follow_writer(writer)
            case Heartbeat(writer):
                self._follow_writer(writer)
            case Reload(config, slots):
                self.shared.slots = slots
                self.path.apply_config(config)
                self.path.listener.publish_counts()
            case Call(request=ReportRequest(reset_digests=reset, detail=detail)):
                report = build_report(self.path.listener, self.index, reset, detail)
                try:
                    self.channel.reply(message, report)
                except ValueError as exc:
                    # Over the channel's message bound (statements of many MB running, huge
                    # digests): this report is lost, not the worker and its clients.
                    log.error("report not sent: %s", exc)
                    self.channel.reply(message, f"report not sent: {exc}")
            case Call(request=Sync()):
                self.channel.reply(message, True)
            case Call(request=BusyOn(server)):
                busy = server in self.topology.cluster.servers and self.path.listener.busy_on(
                    server
                )
                self.channel.reply(message, busy)
            case Call(request=Kill() as kill):
                task = asyncio.get_running_loop().create_task(self._kill(message, kill))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            case _:
                log.error("unexpected message from the topology process: %r", message)

    async def _kill(self, call: Call, kill: Kill) -> None:
        err = await self.path.listener.kill_for(kill.target_id, kill.username, kill.query_only)
        with contextlib.suppress(ChannelClosed):
            self.channel.reply(call, None if err is None else Refused(err.code, err.message))


async def _serve(channel_fd: int, counts_fd: int, listen_fds: list[int]) -> None:
    channel = await Channel.open(socket.socket(fileno=channel_fd))
    async with asyncio.timeout(30):
        start = await channel.recv()
    if not isinstance(start, Start):
        raise RuntimeError(f"expected Start, got {start!r}")
    from proxy.cli import setup_logging

    setup_logging(start.config, f"worker{start.index}")
    shared = SharedCounts(counts_fd, start.workers, start.index)
    shared.slots = start.user_slots
    worker = Worker(channel, start, shared, [socket.socket(fileno=fd) for fd in listen_fds])
    await worker.path.start(start.server_version)
    # What start-up built (modules, config, classifier tables) lives as long as the process:
    # out of the collector's reach, a full collection walks only what serving made.
    gc.collect()
    gc.freeze()
    channel.send(Ready(os.getpid()))
    log.info("worker %d (pid %d) serving port %d", start.index, os.getpid(), start.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    grace = await worker.run(stop)
    log.info("worker %d draining (up to %.1fs)", start.index, grace)
    await worker.path.stop(grace)
    channel.close()


def _die_with_parent() -> None:
    """SIGTERM (a drain) when the topology process dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyproxy-worker")
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--counts-fd", type=int, required=True)
    parser.add_argument(
        "--listen-fds", type=lambda v: [int(fd) for fd in v.split(",")], required=True
    )
    args = parser.parse_args(argv)
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl: nobody to serve for
        return 0
    # Ctrl-C and a terminal's hangup reach the whole process group: the topology process
    # decides (it drains the workers, or reloads them).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        import uvloop

        uvloop.run(_serve(args.channel_fd, args.counts_fd, args.listen_fds))
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(_serve(args.channel_fd, args.counts_fd, args.listen_fds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
