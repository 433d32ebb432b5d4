"""HTTP on the metrics port: /metrics for Prometheus, health probes and a small JSON API."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from proxy.admin.tables import digest_rows, pool_rows, server_rows
from proxy.config import is_loopback
from proxy.metrics import exposition
from proxy.report import WorkerReport

if TYPE_CHECKING:
    from proxy.view import ProxyView

log = logging.getLogger(__name__)

_REASONS = {
    200: "OK",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
# Paths anyone who reaches the port may read (Prometheus, load balancer probes).
_OPEN = frozenset({"/metrics", "/healthz", "/readyz"})
_AUTHORIZATION = re.compile(rb"^authorization:[ \t]*bearer[ \t]+(\S+)[ \t]*\r?$", re.I | re.M)


class HttpServer:
    """A minimal HTTP/1.1 server (one request per connection) on the proxy's event loop."""

    def __init__(self, proxy: ProxyView) -> None:
        self.proxy = proxy
        self._server: asyncio.Server | None = None
        self._loopback = True
        # path -> the response; a route reads the workers' report when it names one.
        self.routes: dict[str, Callable[[WorkerReport | None], tuple[int, str, bytes]]] = {
            "/metrics": self._metrics,
            "/healthz": lambda _: _json(200, {"status": "ok"}),
            "/readyz": self._ready,
            "/api/servers": lambda _: _json(200, server_rows(proxy)),
            "/api/digests": lambda r: _json(200, digest_rows(proxy, _needed(r))),
            "/api/pools": lambda r: _json(200, pool_rows(proxy, _needed(r))),
        }
        # path -> whether it reads the digests and sessions (the workers' costly part)
        self._reported = {"/metrics": False, "/api/digests": True, "/api/pools": False}
        self._report: Callable[..., Awaitable[WorkerReport]] = proxy.report

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port, reuse_address=True)
        self._loopback = is_loopback(host)
        if not self._loopback and not self.proxy.config.admin.http_token:
            log.warning(
                "HTTP API on %s: /api/* refused until admin.http_token is set "
                "(/metrics, /healthz and /readyz are served)",
                host,
            )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await self._server.wait_closed()

    def _metrics(self, report: WorkerReport | None) -> tuple[int, str, bytes]:
        body = exposition(self.proxy, _needed(report))
        return 200, "text/plain; version=0.0.4; charset=utf-8", body

    def _ready(self, _: WorkerReport | None) -> tuple[int, str, bytes]:
        writer = self.proxy.cluster.writer
        return _json(200 if writer else 503, {"ready": bool(writer), "writer": writer})

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readuntil(b"\r\n\r\n")
            method, target, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = target.split("?", 1)[0]
            route = self.routes.get(path)
            if route is None:
                status, ctype, body = _json(404, {"error": f"no such path: {path}"})
            elif method not in ("GET", "HEAD"):
                status, ctype, body = _json(405, {"error": "only GET"})
            elif path not in _OPEN and (refused := self._refused(request)) is not None:
                status, ctype, body = refused
            else:
                detail = self._reported.get(path)
                report = None if detail is None else await self._report(detail=detail)
                status, ctype, body = route(report)
            challenge = 'WWW-Authenticate: Bearer realm="pyproxy"\r\n' if status == 401 else ""
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{challenge}"
                "Connection: close\r\n\r\n"
            ).encode()
            writer.write(head + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ConnectionError,
            ValueError,
        ):
            pass  # a broken or slow request: just hang up
        except Exception:
            log.exception("HTTP request failed")
        finally:
            writer.close()

    def _refused(self, request: bytes) -> tuple[int, str, bytes] | None:
        """Why a request for the API is refused, or None: with admin.http_token set, it
        needs `Authorization: Bearer <token>`; without one, only a loopback listener serves."""
        token = self.proxy.config.admin.http_token  # read now: a reload may change it
        if token:
            m = _AUTHORIZATION.search(request)
            if m is None or not hmac.compare_digest(m.group(1), token.encode()):
                return _json(401, {"error": "this path needs Authorization: Bearer <token>"})
            return None
        if self._loopback:
            return None
        return _json(
            403,
            {"error": "set admin.http_token to use the API on a non-loopback listener"},
        )


def _needed(report: WorkerReport | None) -> WorkerReport:
    assert report is not None, "a route that reads the report is listed in _reported"
    return report


def _json(status: int, data: Any) -> tuple[int, str, bytes]:
    return status, "application/json", (json.dumps(data, indent=1, default=str) + "\n").encode()
