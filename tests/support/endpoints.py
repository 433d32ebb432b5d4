"""Where test clients connect (Endpoint) and proxy configs for the lab on free ports."""

from __future__ import annotations

from dataclasses import dataclass

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


def proxy_config(lab: Lab, **overrides: object) -> Config:
    """A proxy config for the lab, listening on free ports."""
    data = lab.proxy_config()
    for listener in data["listeners"].values():
        listener["port"] = 0
    data.update(overrides)
    return parse_config(data)
