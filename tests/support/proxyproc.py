"""The real `pyproxy` process in front of the test lab, and raw-socket clients to be rude with."""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymysql
import yaml

from proxy.lab.lab import Lab
from proxy.lab.servers import free_port
from proxy.protocol.auth import AuthDone, AuthFailed, AuthSend, ClientAuth
from proxy.protocol.constants import Command
from proxy.protocol.handshake import parse_handshake_v10
from proxy.protocol.packets import Packet, PacketReader, build_command, is_err, parse_err
from proxy.protocol.response import ResponseScanner
from proxy.testing import ProxyProcess, admin_query, start_on_free_ports
from tests.support.endpoints import Endpoint

CURSOR_TYPE_READ_ONLY = 0x01


def _merge(data: dict[str, Any], sections: dict[str, Any]) -> None:
    """Config sections over the lab's, key by key (nested mappings merged too)."""
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            _merge(data[key], value)
        else:
            data[key] = value


class LabProxy(ProxyProcess):
    """`pyproxy --config FILE` for the lab on free ports, with the app user's credentials."""

    def __init__(self, lab: Lab, workdir: Path, **sections: Any) -> None:
        """sections: config sections merged over the lab's (limits={...}, routing={...},
        health={...}); extra_users=[...] adds users."""
        data = lab.proxy_config()
        data["users"] += sections.pop("extra_users", None) or []
        _merge(data, sections)
        self.admin_port, self.http_port = free_port(), free_port()
        port = free_port()
        data["listeners"]["mysql"]["port"] = port
        data["listeners"]["admin"]["port"] = self.admin_port
        data["listeners"]["http"]["port"] = self.http_port
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "pyproxy.yaml"
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        super().__init__(config, port, workdir / "pyproxy.log")
        self.lab = lab
        self.user = lab.accounts.app.username
        self.password = lab.accounts.app.password

    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port, self.user, self.password, "demo_db")

    def connect(self, **kwargs: Any) -> pymysql.Connection:
        args: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": "demo_db",
            "connect_timeout": 10,
            "read_timeout": 30,
            "write_timeout": 30,
            "autocommit": True,
        }
        args.update(kwargs)
        return pymysql.connect(**args)

    def answers(self) -> bool:
        """Alive and serving: a fresh client logs in and gets a result."""
        if not self.alive():
            return False
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 41 + 1")
                return cur.fetchone() == (42,)
        finally:
            conn.close()

    def rss_mib(self) -> float:
        return self.rss_kb() / 1024

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode())

    def client_connections(self) -> int:
        """The pyproxy_client_connections gauge: client sessions open in the proxy now."""
        m = re.search(
            r"^pyproxy_client_connections ([0-9.e+]+)$", self.metrics_text(), re.MULTILINE
        )
        assert m is not None
        return int(float(m.group(1)))

    def refused(self, reason: str) -> int:
        """pyproxy_client_connections_refused{reason=...} as scraped now."""
        line = f'pyproxy_client_connections_refused_total{{reason="{reason}"}} '
        m = re.search("^" + re.escape(line) + "([0-9.e+]+)$", self.metrics_text(), re.MULTILINE)
        return int(float(m.group(1))) if m else 0

    def backend_connections(self) -> dict[str, int]:
        """The app user's connections on each lab server (its processlist, seen as root)."""
        state = self.lab.load()
        assert state is not None
        counts = {}
        for node in state.nodes:
            root = self.lab.connect_root(node.name)
            try:
                with root.cursor(pymysql.cursors.Cursor) as cur:
                    cur.execute(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s",
                        (self.user,),
                    )
                    row = cur.fetchone()
                    counts[node.name] = int(row[0]) if row else 0
            finally:
                root.close()
        return counts

    def admin_rows(self, sql: str) -> list[dict[str, Any]]:
        """An admin SELECT's rows (the admin interface on its own port)."""
        admin = yaml.safe_load(self.config.read_text()).get("admin", {})
        user, password = admin.get("username", "admin"), admin.get("password", "admin")
        return admin_query(self.admin_port, sql, user, password)

    def listening_pids(self) -> set[int]:
        """The processes with a socket listening on the MySQL port (from /proc)."""
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == self.port:
                        inodes.add(f"socket:[{inode}]")
        pids = set()
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        if os.readlink(fd) in inodes:
                            pids.add(pid)
        return pids

    def stop_clean(self) -> None:
        """SIGTERM; the process must exit by itself with status 0."""
        outcome = self.stop()
        assert outcome.get("exit_code") == 0, f"{outcome}\n{self.log_tail()}"
        assert not outcome.get("killed_after_sigterm_timeout"), outcome


def start_lab_proxy(lab: Lab, workdir: Path, **sections: Any) -> LabProxy:
    """A started LabProxy, on other free ports if one was taken before it bound it."""

    def start() -> LabProxy:
        proxy = LabProxy(lab, workdir, **sections)
        proxy.start(proxy.user, proxy.password)
        return proxy

    return start_on_free_ports(start)


@contextmanager
def lab_proxy(lab: Lab, workdir: Path, **sections: Any) -> Iterator[LabProxy]:
    """pyproxy started as users start it; on exit it must stop cleanly on SIGTERM."""
    proxy = start_lab_proxy(lab, workdir, **sections)
    try:
        yield proxy
    finally:
        if proxy.alive():
            proxy.stop_clean()
        else:
            proxy.stop()


class RawClient:
    """A blocking socket that speaks just enough protocol to log in, then sends any bytes."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = PacketReader()
        self.caps = 0

    def read_packet(self) -> Packet:
        while True:
            packet = self.reader.read()
            if packet is not None:
                return packet
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the proxy closed the connection")
            self.reader.feed(data)

    def login(self, user: str, password: str, database: str | None = None) -> None:
        greeting = parse_handshake_v10(self.read_packet().payload)
        auth = ClientAuth(greeting, user, password, database=database)
        action = auth.start()
        while True:
            if isinstance(action, AuthFailed):
                raise PermissionError(action.error.message)
            if isinstance(action, AuthDone):
                self.caps = auth.capabilities
                return
            if isinstance(action, AuthSend):
                self.sock.sendall(action.data)
            packet = self.read_packet()
            action = auth.feed(packet.payload, packet.seq)

    def query(self, sql: str) -> None:
        self.sock.sendall(build_command(0x03, sql.encode()))

    def request(self, command: int, body: bytes = b"", *, cursor: bool = False) -> ResponseScanner:
        """Send a command and read its whole response (what a client library does)."""
        self.sock.sendall(build_command(command, body))
        scanner = ResponseScanner(command, self.caps, cursor=cursor)
        data = self.reader.take_buffered()
        while True:
            if data:
                scanner.feed(data)
            if scanner.done:
                return scanner
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the proxy closed the connection")

    def prepare(self, sql: str) -> int:
        scanner = self.request(Command.COM_STMT_PREPARE, sql.encode())
        assert scanner.error is None and scanner.prepare is not None, scanner.error
        return scanner.prepare.stmt_id

    def execute_cursor(self, stmt_id: int) -> ResponseScanner:
        """COM_STMT_EXECUTE of a statement without parameters, opening a read-only cursor
        (what no client library here does; COM_STMT_FETCH reads it)."""
        body = stmt_id.to_bytes(4, "little") + bytes((CURSOR_TYPE_READ_ONLY,)) + b"\x01\0\0\0"
        return self.request(Command.COM_STMT_EXECUTE, body, cursor=True)

    def fetch(self, stmt_id: int, rows: int) -> ResponseScanner:
        body = stmt_id.to_bytes(4, "little") + rows.to_bytes(4, "little")
        return self.request(Command.COM_STMT_FETCH, body)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def error_code(self) -> int | None:
        """The code of the next packet if it is an ERR, else None (also when the proxy hung
        up without a word)."""
        try:
            packet = self.read_packet()
        except (ConnectionError, OSError):
            return None
        return parse_err(packet.payload).code if is_err(packet.payload) else None

    def close(self) -> None:
        self.sock.close()


class PoliteClients:
    """Well-behaved PyMySQL clients in threads: each checks every answer it gets and keeps
    its own connection; errors and the slowest statement are recorded, never raised."""

    def __init__(self, proxy: LabProxy, count: int, table: str | None = None) -> None:
        self.proxy = proxy
        self.count = count
        self.table = table  # when set, clients also insert rows and count their own
        self.statements = 0
        self.errors: list[str] = []
        self.max_latency = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._started = threading.Semaphore(0)
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)
        ]

    def __enter__(self) -> PoliteClients:
        """Starts them and returns once each has logged in and had its first answer."""
        for t in self._threads:
            t.start()
        for _ in self._threads:
            self._started.acquire(timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _note(self, statements: int, latency: float) -> None:
        with self._lock:
            self.statements += statements
            self.max_latency = max(self.max_latency, latency)

    def _fail(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        try:
            conn = self.proxy.connect()
        except pymysql.MySQLError as exc:
            self._fail(f"client {index}: connect: {exc}")
            self._started.release()
            return
        mine = 0
        first = True
        try:
            with conn.cursor() as cur:
                if self.table:
                    cur.execute(f"DELETE FROM {self.table} WHERE client = %s", (index,))
                while not self._stop.is_set():
                    value = rng.randrange(1 << 30)
                    started = time.monotonic()
                    cur.execute("SELECT %s", (value,))
                    got = cur.fetchone()
                    if got != (value,):
                        self._fail(f"client {index}: SELECT {value} gave {got}")
                    done = 1
                    if self.table:
                        cur.execute(f"INSERT INTO {self.table} (client) VALUES (%s)", (index,))
                        mine += 1
                        cur.execute(
                            f"SELECT COUNT(*) FROM {self.table} WHERE client = %s", (index,)
                        )
                        got = cur.fetchone()
                        if got != (mine,):
                            self._fail(f"client {index}: {mine} rows inserted, {got} counted")
                        done = 3
                    self._note(done, time.monotonic() - started)
                    if first:
                        first = False
                        self._started.release()
                    self._stop.wait(rng.uniform(0.005, 0.03))
        except pymysql.MySQLError as exc:
            self._fail(f"client {index}: {exc}")
        finally:
            if first:
                self._started.release()
            conn.close()
