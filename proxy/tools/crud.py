"""The CRUD test script (crud.sql) through the proxy: with the mysql/mariadb CLI, or PyMySQL."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import resources

import pymysql

from proxy.tools.nodes import Endpoint, ToolError, describe

SCRIPT = "crud.sql"
CHECK_COLUMN = "crud_check"
CLIENTS = ("mariadb", "mysql")


@dataclass
class CrudResult:
    via: str
    checks: list[tuple[str, str]] = field(default_factory=list)  # (check, "ok" | "FAILED")
    error: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.checks) and not self.error and all(r == "ok" for _, r in self.checks)

    def lines(self) -> list[str]:
        out = [f"  {name:<26} {result}" for name, result in self.checks]
        if self.error:
            out.append(f"  error: {self.error}")
        return out

    def verdict(self) -> str:
        failed = [n for n, r in self.checks if r != "ok"]
        if self.ok:
            return f"ok: {len(self.checks)} checks on products and orders ({self.via})"
        what = self.error or f"{len(failed)} checks failed: {', '.join(failed)}"
        return f"FAILED ({self.via}): {what}"


def script_text() -> str:
    return resources.files("proxy.tools").joinpath(SCRIPT).read_text()


def client_binary() -> str | None:
    return next((path for c in CLIENTS if (path := shutil.which(c))), None)


def run_crud(endpoint: Endpoint, use_cli: bool = True) -> CrudResult:
    """Run crud.sql through the proxy; the CLI when one is installed (as users do)."""
    try:
        endpoint.connect(timeout=3.0).close()
    except (pymysql.MySQLError, OSError) as exc:
        raise ToolError(
            f"cannot connect to pyproxy at {endpoint.where} as {endpoint.user}: {describe(exc)}"
        ) from None
    binary = client_binary() if use_cli else None
    if binary is not None:
        return _with_cli(endpoint, binary)
    return _with_pymysql(endpoint)


def _with_cli(endpoint: Endpoint, binary: str) -> CrudResult:
    name = os.path.basename(binary)
    result = CrudResult(f"{name} CLI through pyproxy at {endpoint.where}")
    cmd = [
        binary,
        "--protocol=TCP",
        "-h",
        endpoint.host,
        "-P",
        str(endpoint.port),
        "-u",
        endpoint.user,
        "--batch",
        endpoint.database or "demo_db",
    ]
    env = {**os.environ, "MYSQL_PWD": endpoint.password}  # not on the command line
    proc = subprocess.run(
        cmd, input=script_text(), capture_output=True, text=True, env=env, timeout=60, check=False
    )
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0] != CHECK_COLUMN:
            result.checks.append((parts[0], parts[1]))
    if proc.returncode != 0:
        result.error = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    return result


def statements(text: str) -> list[str]:
    """The script's statements (it has no procedures: `;` at a line end ends a statement)."""
    out: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith("--") or not line.strip():
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            out.append("\n".join(current).rstrip().rstrip(";"))
            current = []
    return out


def _with_pymysql(endpoint: Endpoint) -> CrudResult:
    result = CrudResult(f"PyMySQL through pyproxy at {endpoint.where}")
    conn = endpoint.connect(timeout=5.0)
    try:
        with conn.cursor() as cur:
            for sql in statements(script_text()):
                cur.execute(sql)
                if cur.description and cur.description[0][0] == CHECK_COLUMN:
                    result.checks += [(str(a), str(b)) for a, b in cur.fetchall()]
    except pymysql.MySQLError as exc:
        result.error = describe(exc)
    finally:
        conn.close()
    return result
