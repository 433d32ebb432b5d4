"""Reaching the proxy and each server directly, and describing connection failures in one line."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import pymysql

from proxy.config import BackendTLS, Config, Server


class ToolError(RuntimeError):
    """A tool cannot run; str() is one line for the user."""


@dataclass(frozen=True)
class Endpoint:
    """Where a tool connects, as whom, and what it calls the place in messages."""

    name: str
    host: str
    port: int
    user: str
    password: str
    database: str | None = None
    role: str = "proxy"
    tls: BackendTLS | None = None  # servers[].tls, when enabled

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self, timeout: float = 3.0, read_timeout: float = 30.0) -> pymysql.Connection:
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "connect_timeout": timeout,
            "read_timeout": read_timeout,
            "write_timeout": read_timeout,
            "autocommit": True,
        }
        if self.database:
            kwargs["database"] = self.database
        if self.tls is not None:
            kwargs["ssl"] = _tls_context(self.tls)
        return pymysql.connect(**kwargs)


def _tls_context(tls: BackendTLS) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _client_host(listen_host: str) -> str:
    """Where a client reaches a listener: one on every address is reached on loopback."""
    if listen_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    return "::1" if listen_host == "::" else listen_host


def describe(exc: BaseException) -> str:
    """A MySQL or socket error as a short single line."""
    if isinstance(exc, pymysql.MySQLError) and len(exc.args) >= 2:
        code, msg = exc.args[0], str(exc.args[1])
        return f"{msg} ({code})".replace("\n", " ")
    text = str(exc) or type(exc).__name__
    return text.replace("\n", " ")


def app_user(config: Config) -> tuple[str, str, str | None]:
    if not config.users:
        raise ToolError("users: the config lists no user to connect as")
    user = config.users[0]
    return user.username, user.password, user.default_schema


def proxy_endpoint(config: Config, database: str | None = None) -> Endpoint:
    """The proxy's MySQL listener, as the config's first user."""
    user, password, schema = app_user(config)
    listen = config.listeners.mysql
    return Endpoint(
        "pyproxy", _client_host(listen.host), listen.port, user, password, database or schema
    )


def server_endpoint(config: Config, server: Server) -> Endpoint:
    """One backend directly (not through the proxy), as the config's first user."""
    user, password, _ = app_user(config)
    tls = server.tls if server.tls.enabled else None
    return Endpoint(server.name, server.host, server.port, user, password, None, server.role, tls)


def server_endpoints(config: Config) -> list[Endpoint]:
    return [server_endpoint(config, s) for s in config.masters + config.replicas]


def with_proxy_port(config: Config, port: int) -> Config:
    """A copy of the config whose MySQL listener is on `port` (for an in-process proxy)."""
    data = config.model_dump()
    data["listeners"]["mysql"]["port"] = port
    return Config.model_validate(data)


def free_listeners(config: Config) -> Config:
    """A copy of the config listening on free ports, so a tool's own proxy never collides."""
    data = config.model_dump()
    for listener in data["listeners"].values():
        listener["port"] = 0
    return Config.model_validate(data)
