"""Helpers for the client tests: unique names, required tools, bounded subprocess runs."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pymysql
import pytest

if TYPE_CHECKING:
    from tests.support.endpoints import Endpoint

HERE = Path(__file__).resolve().parent


def unique(prefix: str) -> str:
    """A name no other run uses: `prefix_<8 hex>`, valid as a table or schema name."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def require_tool(name: str) -> str:
    """The path of an installed program; a missing one fails the test (never skips it)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed, and this client test needs it", pytrace=False)
    return path


def require_path(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.fail(f"{what} is missing: {path}", pytrace=False)
    return path


def client_env(ep: Endpoint) -> dict[str, str]:
    """The environment helper scripts read the endpoint from."""
    return {
        **os.environ,
        "PYPROXY_HOST": ep.host,
        "PYPROXY_PORT": str(ep.port),
        "PYPROXY_USER": ep.user,
        "PYPROXY_PASSWORD": ep.password,
        "PYPROXY_DB": ep.database,
    }


def run(
    cmd: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    stdin: IO[str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a client program; a hang past `timeout` or (with `check`) a non-zero exit fails."""
    proc: subprocess.CompletedProcess[str] | None = None
    with contextlib.suppress(subprocess.TimeoutExpired):  # subprocess.run kills it on timeout
        proc = subprocess.run(
            cmd,
            env=env,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if proc is None:
        pytest.fail(f"{shlex.join(cmd)} hung for more than {timeout}s", pytrace=False)
    if check and proc.returncode != 0:
        pytest.fail(
            f"{shlex.join(cmd)} exited with {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc


def run_json(cmd: list[str], *, timeout: float, env: dict[str, str]) -> dict[str, Any]:
    """Run a helper script that prints one JSON object as its last stdout line."""
    proc = run(cmd, timeout=timeout, env=env)
    lines = proc.stdout.strip().splitlines()
    if not lines:
        pytest.fail(f"{shlex.join(cmd)} printed nothing\n--- stderr ---\n{proc.stderr[-4000:]}")
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except ValueError:
        result = {}
    if not isinstance(result, dict) or not result:
        pytest.fail(f"{shlex.join(cmd)} printed no JSON object last:\n{proc.stdout[-4000:]}")
    return result


def connect(ep: Endpoint, **kwargs: Any) -> pymysql.Connection[Any]:
    """A PyMySQL connection to the endpoint (utf8mb4, autocommit unless told otherwise)."""
    options: dict[str, Any] = {"charset": "utf8mb4", "autocommit": True, **kwargs}
    return pymysql.connect(
        host=ep.host,
        port=ep.port,
        user=ep.user,
        password=ep.password,
        database=ep.database,
        **options,
    )


def drop_tables(ep: Endpoint, names: list[str]) -> None:
    """Drop the given tables if they exist (children first, foreign keys off)."""
    if not names:
        return
    conn = connect(ep)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION foreign_key_checks = 0")
            for name in reversed(names):
                cur.execute(f"DROP TABLE IF EXISTS `{name}`")
    finally:
        conn.close()


def drop_schema(ep: Endpoint, name: str) -> None:
    conn = connect(ep)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()
