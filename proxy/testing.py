"""Running a ProxyServer on its own event loop thread, for tests and tools."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from proxy.config import Config
from proxy.frontend.listener import ProxyServer

T = TypeVar("T")


class ProxyThread:
    """A proxy serving from a background thread (uvloop), so a test can drive it with clients."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = _new_loop()
        self.server = ProxyServer(config)
        self._thread = threading.Thread(target=self.loop.run_forever, name="pyproxy", daemon=True)

    def start(self) -> ProxyThread:
        self._thread.start()
        self.call(self.server.start())
        return self

    @property
    def port(self) -> int:
        return self.server.port

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the proxy's loop and wait for its result."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.server.stop(grace_s=1.0))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
