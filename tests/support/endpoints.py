"""Where test clients connect (Endpoint) and proxy configs for the lab on free ports."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import mysql.connector
import pymysql

from proxy.config import Config, parse_config
from proxy.lab.lab import Lab


@dataclass(frozen=True)
class Endpoint:
    """Where a MySQL client connects, and as whom."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def app(cls, port: int) -> Endpoint:
        """The lab's app account on a proxy port."""
        return cls("127.0.0.1", port, "app", "app-pass", "demo_db")

    def params(self, **kwargs: Any) -> dict[str, Any]:
        """Connect arguments the client libraries take (PyMySQL, mysql-connector, asyncmy),
        autocommit on (kwargs override)."""
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "autocommit": True,
        }
        params.update(kwargs)
        return params

    def connect(self, **kwargs: Any) -> pymysql.Connection:
        """A PyMySQL connection in autocommit mode (kwargs override)."""
        return pymysql.connect(**self.params(**kwargs))

    def connector(self, **kwargs: Any) -> Any:
        """A mysql-connector connection (its pure-Python protocol code, autocommit; kwargs
        override): the second client library of the tests."""
        conn = mysql.connector.connect(**self.params(**{"use_pure": True, **kwargs}))
        # Its pure-Python socket leaves Nagle on: a prepared statement's two small writes
        # (close the old one, prepare the next) then wait ~40 ms for a delayed ACK, with a
        # server as with the proxy (measured: 45 ms a statement direct, 0.7 ms with this).
        conn._socket.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn


def proxy_config(lab: Lab, **overrides: object) -> Config:
    """A proxy config for the lab, listening on free ports."""
    data = lab.proxy_config()
    for listener in data["listeners"].values():
        listener["port"] = 0
    data.update(overrides)
    return parse_config(data)
