"""Launching and stopping local mariadbd/mysqld processes, one datadir each."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class LabError(RuntimeError):
    """A lab step failed; str() is a paragraph for the user, with a log tail when useful."""


@dataclass
class ServerBinary:
    path: str
    flavor: str  # "mariadb" | "mysql"
    install_db: str | None  # mariadb-install-db; MySQL initializes with --initialize-insecure


INSTALL_HINT = (
    "No MariaDB or MySQL server binary (mariadbd or mysqld) was found on PATH or in /usr/sbin.\n"
    "Install one, e.g. on Debian/Ubuntu:  sudo apt-get install mariadb-server mariadb-client\n"
    "(the lab starts its own server processes; the system service can stay stopped)."
)


def find_server_binary(search: str | None = None) -> ServerBinary:
    if search is None:
        search = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/usr/local/sbin"
    for name in ("mariadbd", "mysqld"):
        path = shutil.which(name, path=search)
        if not path:
            continue
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
        if "MariaDB" in out.stdout:
            return ServerBinary(path, "mariadb", shutil.which("mariadb-install-db", path=search))
        return ServerBinary(path, "mysql", None)
    raise LabError(INSTALL_HINT)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def tail(path: Path, lines: int = 25) -> str:
    try:
        data = path.read_bytes()[-16384:]
    except OSError:
        return "(no log)"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


@dataclass
class NodeFiles:
    """Where one node keeps its files; all under one directory per node."""

    root: Path

    @property
    def cnf(self) -> Path:
        return self.root / "my.cnf"

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket(self) -> Path:
        return self.root / "mysqld.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "mysqld.pid"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"


def write_cnf(
    files: NodeFiles,
    binary: ServerBinary,
    *,
    port: int,
    server_id: int,
    role: str,
    domain_id: int,
    masters: int,
    master_index: int,
    semisync: bool,
) -> None:
    lines = [
        "[mysqld]" if binary.flavor == "mysql" else "[mariadbd]",
        f"datadir={files.datadir}",
        f"socket={files.socket}",
        f"pid-file={files.pidfile}",
        f"log-error={files.error_log}",
        f"port={port}",
        "bind-address=127.0.0.1",
        "skip-name-resolve",
        f"server_id={server_id}",
        "log_bin=binlog",
        "binlog_format=ROW",
        "log_slave_updates=ON",
        f"relay_log={files.root / 'data' / 'relay'}",
        "relay_log_recovery=ON",
        # Every node starts read-only: a restarted master never comes back writable by itself;
        # `lab up` (or the proxy's failover) turns it off on exactly one master.
        "read_only=ON",
        f"auto_increment_increment={max(masters, 1)}",
        f"auto_increment_offset={master_index if role == 'master' else 1}",
        "max_connections=1000",
        "max_allowed_packet=64M",
        "innodb_buffer_pool_size=64M",
        "innodb_log_file_size=16M",
        "innodb_flush_log_at_trx_commit=2",
        "sync_binlog=0",
        "performance_schema=OFF",
        "character-set-server=utf8mb4",
        "collation-server=utf8mb4_general_ci",
    ]
    if os.geteuid() == 0:
        lines.append("user=root")
    if binary.flavor == "mariadb":
        lines += [
            f"gtid_domain_id={domain_id}",
            "slave_parallel_threads=0",
            "session_track_system_variables=autocommit,character_set_client,"
            "character_set_connection,character_set_results,time_zone,last_gtid",
        ]
        if semisync and role == "master":
            lines += [
                "rpl_semi_sync_master_enabled=ON",
                "rpl_semi_sync_slave_enabled=ON",
                "rpl_semi_sync_master_timeout=2000",
                "rpl_semi_sync_master_wait_point=AFTER_SYNC",
                # With its peer down a master has nobody to wait for: waiting out the timeout
                # on every write would only stall it (the write is not made any safer).
                "rpl_semi_sync_master_wait_no_slave=OFF",
            ]
    else:
        lines += [
            "gtid_mode=ON",
            "enforce_gtid_consistency=ON",
            "mysqlx=OFF",
        ]
        if role == "replica":
            lines.append("super_read_only=ON")
    files.root.mkdir(parents=True, exist_ok=True)
    files.cnf.write_text("\n".join(lines) + "\n")


def initialize_datadir(files: NodeFiles, binary: ServerBinary) -> None:
    if (files.datadir / "mysql").is_dir():
        return
    files.datadir.mkdir(parents=True, exist_ok=True)
    if binary.flavor == "mariadb":
        if not binary.install_db:
            raise LabError("mariadb-install-db was not found next to mariadbd; " + INSTALL_HINT)
        cmd = [
            binary.install_db,
            f"--defaults-file={files.cnf}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
    else:
        cmd = [binary.path, f"--defaults-file={files.cnf}", "--initialize-insecure"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise LabError(
            f"Initializing {files.datadir} failed (exit {out.returncode}).\n"
            + (out.stderr or out.stdout)[-2000:]
        )


def read_pid(files: NodeFiles) -> int | None:
    try:
        return int(files.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def is_ours(pid: int, files: NodeFiles) -> bool:
    """True when pid is a live server process started with this node's defaults file."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"--defaults-file={files.cnf}".encode() in cmdline


def running_pid(files: NodeFiles) -> int | None:
    pid = read_pid(files)
    if pid is not None and is_ours(pid, files):
        return pid
    return None


def start(files: NodeFiles, binary: ServerBinary, name: str, timeout: float = 60.0) -> int:
    if pid := running_pid(files):
        return pid
    files.pidfile.unlink(missing_ok=True)
    port = _cnf_port(files)
    if not port_is_free(port):
        raise LabError(
            f"{name}: port {port} on 127.0.0.1 is already taken by another process, so the "
            f"server cannot start. Stop that process, or run `pyproxy lab destroy` and "
            f"`pyproxy lab up` to get new free ports."
        )
    log_start = files.error_log.stat().st_size if files.error_log.exists() else 0
    with open(os.devnull, "wb") as devnull:
        proc = subprocess.Popen(
            [binary.path, f"--defaults-file={files.cnf}"],
            stdin=subprocess.DEVNULL,
            stdout=devnull,
            stderr=devnull,
            start_new_session=True,  # survives the CLI and Ctrl-C in its terminal
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(
                f"{name}: the server exited during startup (exit {proc.returncode}). "
                f"Last lines of {files.error_log}:\n{_log_since(files.error_log, log_start)}"
            )
        if files.socket.exists() and read_pid(files) == proc.pid and _accepts(files):
            return proc.pid
        time.sleep(0.05)
    proc.kill()
    raise LabError(
        f"{name}: the server did not accept connections within {timeout:.0f}s. "
        f"Last lines of {files.error_log}:\n{tail(files.error_log)}"
    )


def _log_since(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-25:]) or tail(path)


def _accepts(files: NodeFiles) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(1)
        try:
            s.connect(str(files.socket))
            return len(s.recv(1)) == 1  # the server greeting
        except OSError:
            return False


def _cnf_port(files: NodeFiles) -> int:
    for line in files.cnf.read_text().splitlines():
        if line.startswith("port="):
            return int(line.split("=", 1)[1])
    raise LabError(f"{files.cnf} has no port")


def stop(files: NodeFiles, timeout: float = 60.0) -> bool:
    """Stop the node's server if it is ours; True when a process was stopped."""
    pid = running_pid(files)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_ours(pid, files):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    while is_ours(pid, files):
        time.sleep(0.05)
    return True


def kill(files: NodeFiles, sig: int = signal.SIGKILL) -> int | None:
    """Send sig to the node's server (for failure drills and tests)."""
    pid = running_pid(files)
    if pid is not None:
        os.kill(pid, sig)
        if sig == signal.SIGKILL:
            while is_ours(pid, files):
                time.sleep(0.01)
    return pid
