"""Choosing the server a classified statement runs on."""

from __future__ import annotations

from typing import Any

from proxy.cluster import Cluster, ServerState


class Router:
    """Maps a statement's classification to a server of the cluster.

    The data path issue sends everything to the writer; read/write splitting plugs in here.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def writer(self) -> ServerState | None:
        name = self.cluster.writer
        if name is None:
            return None
        server = self.cluster.server(name)
        return server if server.usable else None

    def choose(self, stmt: Any, session: Any) -> ServerState | None:
        return self.writer()
