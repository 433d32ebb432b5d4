"""The admin interface on 6032: ProxySQL-style tables answered by SQLite, and pyproxy commands."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from proxy.admin.configdb import TABLE_NAMES
from proxy.admin.layers import READ_ONLY, Layers, authorize, names_layer_table
from proxy.admin.tables import TABLES
from proxy.authio import drive_auth
from proxy.frontend.client import ClientConnection, ClientGone
from proxy.metrics import Metrics
from proxy.protocol.auth import AuthFailed, ServerAuth
from proxy.protocol.constants import Command, ErrorCode
from proxy.protocol.packets import ProtocolError, build_err, build_ok, build_result_set

if TYPE_CHECKING:
    from proxy.report import WorkerReport
    from proxy.view import ProxyView

log = logging.getLogger(__name__)

_SWITCHOVER = re.compile(r"^\s*(?:pyproxy\s+)?switchover\s+(?:to\s+)?`?([\w.-]+)`?\s*;?\s*$", re.I)
_SET_STATUS = re.compile(
    r"^\s*(?:pyproxy\s+)?set\s+server\s+`?([\w.-]+)`?\s+(offline|online)\s*;?\s*$", re.I
)
_RELOAD = re.compile(r"^\s*(?:pyproxy\s+reload(?:\s+config)?|reload)\s*;?\s*$", re.I)
_KILL = re.compile(r"^\s*kill\s+(connection\s+|query\s+)?(\d+)\s*;?\s*$", re.I)
_CHANGES = ("insert", "update", "delete", "replace")
_VERSION_COMMENT = re.compile(r"^\s*select\s+@@version_comment\s+limit\s+1\s*;?\s*$", re.I)

MAX_ROWS = 100_000
"""The most rows an admin query may return (its result is built in memory)."""
_PROGRESS_STEPS = 10_000
_MAX_VALUE_BYTES = 16 << 20

HELP = (
    "SELECT/INSERT/UPDATE/DELETE/REPLACE on mysql_servers | mysql_users | mysql_query_rules | "
    "global_variables, then LOAD MYSQL SERVERS|USERS|QUERY RULES|VARIABLES TO RUNTIME and "
    "SAVE ... TO DISK;  SET mysql-<variable>='value';  SHOW VARIABLES;  SELECT ... FROM "
    "runtime_mysql_servers | stats_mysql_query_digest[_reset] | stats_mysql_connection_pool | "
    "stats_mysql_processlist | stats_mysql_global | stats_mysql_commands_counters | "
    "stats_mysql_errors | stats_pyproxy_workers | monitor.mysql_server_ping_log | "
    "monitor.mysql_server_read_only_log | monitor.mysql_server_replication_lag_log;  "
    "SWITCHOVER TO <master>;  SET SERVER <name> OFFLINE|ONLINE;  RELOAD;  KILL [QUERY] <id>"
)


class AdminServer:
    """Accepts admin connections (admin credentials from the config) on the proxy's loop."""

    def __init__(self, proxy: ProxyView) -> None:
        self.proxy = proxy
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_id = 0
        self.metrics = Metrics()  # the admin's own connections' bytes (not client traffic)
        # Admin queries run here, off the event loop; two at a time, the others queue.
        self._worker = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pyproxy-admin")
        self.layers = Layers(proxy)

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_client, host, port, reuse_address=True)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._worker.shutdown(wait=False, cancel_futures=True)  # running ones end by deadline
        self.layers.close()

    def _new_client(self) -> ClientConnection:
        client = ClientConnection(1 << 20, self.metrics)
        client.on_connected = self._on_connected
        return client

    def _on_connected(self, client: ClientConnection) -> None:
        self._next_id += 1
        task = asyncio.get_running_loop().create_task(self._session(client, self._next_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _session(self, client: ClientConnection, conn_id: int) -> None:
        try:
            async with asyncio.timeout(self.proxy.config.limits.connect_timeout_s):
                caps = await self._authenticate(client, conn_id)
            if caps is None:
                return
            while True:
                packet = await client.read_packet()
                if not packet.payload or packet.payload[0] == Command.COM_QUIT:
                    return
                command = packet.payload[0]
                if command == Command.COM_QUERY:
                    sql = packet.payload[1:].decode("utf-8", "replace")
                    client.write(await self.execute(sql, caps))
                elif command in (Command.COM_PING, Command.COM_INIT_DB):
                    client.write(build_ok(1, caps))
                else:
                    client.write(build_err(1, ErrorCode.ER_UNKNOWN_COM_ERROR, "Unknown command"))
        except (ClientGone, ProtocolError, TimeoutError):
            pass
        except Exception:
            log.exception("admin session failed")
        finally:
            client.close()

    async def _authenticate(self, client: ClientConnection, conn_id: int) -> int | None:
        admin = self.proxy.config.admin
        auth = ServerAuth(
            lambda name: admin.password if name == admin.username else None,
            connection_id=conn_id,
            server_version=f"{self.proxy.server_version} (pyproxy admin)",
            default_plugin="mysql_native_password",
            client_host=client.peer[0],
        )
        action = await drive_auth(auth.start(), auth.feed, client.read_packet, client.write)
        if isinstance(action, AuthFailed):
            return None
        client.write(action.data)
        client.logged_in()
        return auth.capabilities

    # -- statements ------------------------------------------------------------------------------
    async def execute(self, sql: str, caps: int) -> bytes:
        """One admin statement -> the framed response."""
        try:
            if _VERSION_COMMENT.match(sql):
                return build_result_set(["@@version_comment"], [["pyproxy admin"]], caps)
            if m := _SWITCHOVER.match(sql):
                await self.proxy.switchover(m.group(1))
                return build_ok(1, caps, info=f"writer is now {m.group(1)}")
            if m := _SET_STATUS.match(sql):
                self.proxy.set_server_offline(m.group(1), m.group(2).lower() == "offline")
                return build_ok(1, caps)
            if _RELOAD.match(sql):
                return await self._reload(caps)
            if (done := await self.layers.command(sql)) is not None:
                return build_ok(1, caps, info=done)
            show, like = self.layers.match_show_variables(sql)
            if show:
                names, rows = await self.layers.run(lambda: self.layers.show_variables(like))
                return build_result_set(names, rows, caps)
            if m := _KILL.match(sql):
                query_only = (m.group(1) or "").strip().lower() == "query"
                err = await self.proxy.kill(int(m.group(2)), query_only)
                if err is not None:
                    return build_err(1, err.code, err.message)
                return build_ok(1, caps)
            command = sql.strip().rstrip(";").strip().lower()
            if command.startswith(("set ", "commit", "rollback", "begin")):
                return build_ok(1, caps)  # drivers' session set-up: nothing to do here
            if command in ("show tables", "show tables from main"):
                names = sorted([*TABLES, *TABLE_NAMES])
                return build_result_set(["tables"], [[t] for t in names], caps)
            if command == "show databases":
                disk = [["disk"]] if self.layers.disk is not None else []
                return build_result_set(["name"], [["main"], *disk], caps)
            if command in ("help", "pyproxy help"):
                return build_result_set(["help"], [[HELP]], caps)
            if command.startswith(("select", "with")) or (
                command.startswith(_CHANGES) and names_layer_table(sql)
            ):
                return await self._query(sql, caps)
            if command.startswith(_CHANGES):
                return build_err(1, ErrorCode.ER_UNKNOWN_ERROR, READ_ONLY)
            return build_err(
                1,
                ErrorCode.ER_NOT_SUPPORTED_YET,
                f"pyproxy admin does not support this statement. {HELP}",
            )
        except (ValueError, RuntimeError, KeyError) as exc:
            return build_err(1, ErrorCode.ER_UNKNOWN_ERROR, str(exc).strip("'\""))
        except sqlite3.IntegrityError as exc:  # e.g. a rule_id or a server given twice
            return build_err(1, ErrorCode.ER_UNKNOWN_ERROR, f"admin statement refused: {exc}")
        except sqlite3.Error as exc:
            return build_err(1, ErrorCode.ER_PARSE_ERROR, f"admin query failed: {exc}")

    async def _query(self, sql: str, caps: int) -> bytes:
        """A SELECT over the admin tables: the snapshot is taken here, on the loop that owns
        the state, with the workers' report; SQLite runs on the admin's worker thread, so a
        heavy query never holds up client traffic, and it is interrupted after
        admin.query_timeout_ms."""
        reset = "stats_mysql_query_digest_reset" in sql.lower()
        tables = snapshot(self.proxy, await self.proxy.report(reset_digests=reset), sql)
        timeout_ms = self.proxy.config.admin.query_timeout_ms
        if names_layer_table(sql):
            # The editable tables live in the layers' database, on its own thread.
            db = self.layers.db
            return await self.layers.run(lambda: run_on(db, tables, sql, caps, timeout_ms, True))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, run_query, tables, sql, caps, timeout_ms)

    async def _reload(self, caps: int) -> bytes:
        ok, message = await self.proxy.reload()
        if not ok:
            return build_err(1, ErrorCode.ER_UNKNOWN_ERROR, message)
        return build_ok(1, caps, info=message)


Snapshot = dict[str, tuple[tuple[str, ...], list[tuple[object, ...]]]]
"""Table name -> (columns, rows): the runtime state an admin query reads."""


def snapshot(proxy: ProxyView, report: WorkerReport, sql: str) -> Snapshot:
    """The admin tables sql names, copied from the proxy's runtime state."""
    lowered = sql.lower()
    return {
        table: (columns, [tuple(row[c] for c in columns) for row in build(proxy, report)])
        for table, (columns, build) in TABLES.items()
        if table.rsplit(".", 1)[-1] in lowered  # monitor.x is also found as x
    }


def _qualified(table: str) -> str:
    """Where ProxySQL keeps a table: stats_* in `stats`, monitor's logs in `monitor` (named
    so already). Unqualified names find them too: SQLite searches every attached database."""
    return f"stats.{table}" if table.startswith("stats_") else table


def _created(table: str) -> str:
    """Where run_on creates a snapshot table for one statement: its schema, else temp (the
    layers' database keeps the editable tables in main)."""
    qualified = _qualified(table)
    return qualified if "." in qualified else f"temp.{qualified}"


def run_query(tables: Snapshot, sql: str, caps: int, timeout_ms: int) -> bytes:
    """Answer a SELECT from a fresh in-memory SQLite database of the snapshot."""
    db = sqlite3.connect(":memory:")
    try:
        return run_on(db, tables, sql, caps, timeout_ms, False)
    finally:
        db.close()


def run_on(
    db: sqlite3.Connection,
    tables: Snapshot,
    sql: str,
    caps: int,
    timeout_ms: int,
    guarded: bool,
) -> bytes:
    """Run sql on db with the snapshot's tables as temporary tables: the framed result set
    (or OK with the rows changed), or an error when it runs past timeout_ms or returns too
    many rows. guarded: only reads and changes to the editable tables are allowed."""
    deadline = time.monotonic() + timeout_ms / 1000
    cur: sqlite3.Cursor | None = None
    # SQLite calls this every N virtual-machine steps; non-zero interrupts the statement.
    db.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
    # One step can't be interrupted: bound what one step may allocate (zeroblob(1e9)...).
    db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE_BYTES)
    try:
        attached = {row[1] for row in db.execute("PRAGMA database_list")}
        for schema in {q.split(".", 1)[0] for q in map(_qualified, tables) if "." in q}:
            if schema not in attached:
                db.execute(f"ATTACH DATABASE ':memory:' AS {schema}")
        for name, (columns, rows) in tables.items():
            table = _created(name)
            db.execute(f"CREATE TABLE {table} ({', '.join(columns)})")
            db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(columns))})", rows)
        if guarded:
            db.set_authorizer(authorize)
        try:
            cur = db.execute(sql)
        except sqlite3.DatabaseError as exc:
            if "not authorized" in str(exc):
                return build_err(1, ErrorCode.ER_UNKNOWN_ERROR, READ_ONLY)
            raise
        finally:
            db.set_authorizer(None)
        if cur.description is None:
            return build_ok(1, caps, affected_rows=max(cur.rowcount, 0))
        names = [d[0] for d in cur.description]
        result = cur.fetchmany(MAX_ROWS + 1)
        if len(result) > MAX_ROWS:
            return build_err(
                1,
                ErrorCode.ER_UNKNOWN_ERROR,
                f"admin query returns more than {MAX_ROWS} rows: add a WHERE or a LIMIT",
            )
        return build_result_set(names, result, caps)
    except sqlite3.OperationalError:
        if time.monotonic() <= deadline:
            raise
        return build_err(
            1,
            ErrorCode.ER_QUERY_INTERRUPTED,
            f"admin query interrupted: it ran longer than admin.query_timeout_ms ({timeout_ms} ms)",
        )
    finally:
        if cur is not None:
            cur.close()  # a statement left running would keep its tables locked
        db.set_progress_handler(None, 0)
        for name in tables:
            db.execute(f"DROP TABLE IF EXISTS {_created(name)}")
