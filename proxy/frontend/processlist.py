"""SHOW PROCESSLIST and KILL ids as on a direct connection: pyproxy's own sessions."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from proxy.protocol.constants import Collation, ColumnFlag, ColumnType, Command, ErrorCode
from proxy.protocol.packets import ColumnDefinition, ErrPacket, build_result_set

if TYPE_CHECKING:
    from proxy.backend.connection import BackendConnection
    from proxy.frontend.listener import ProxyServer
    from proxy.frontend.session import Session


# MySQL's columns, then where the session's statement runs: the backend server and the
# backend's thread id there (what CONNECTION_ID() returns). Clients read the first eight by
# position (MariaDB itself adds a ninth, Progress), so extra columns go last.
def _number(name: str, not_null: bool = True) -> ColumnDefinition:
    flags = ColumnFlag.UNSIGNED | ColumnFlag.BINARY | (ColumnFlag.NOT_NULL if not_null else 0)
    return ColumnDefinition(
        name,
        ColumnType.LONGLONG,
        org_name=name,
        charset=Collation.BINARY,
        column_length=21,
        flags=flags,
    )


# Typed like the server's: drivers hand the ids over as integers (PyMySQL's thread_id()).
COLUMNS = (
    _number("Id"),
    "User",
    "Host",
    "db",
    "Command",
    _number("Time"),
    "State",
    "Info",
    "Backend",
    _number("Backend_thread_id", not_null=False),
)
# Digest texts of the statements pyproxy answers itself.
STATEMENTS = {"show processlist": False, "show full processlist": True}
INFO_CHARS = 100  # SHOW PROCESSLIST without FULL cuts Info here, like MySQL

_COMMAND_NAMES: dict[int, str] = {
    Command.COM_QUERY: "Query",
    Command.COM_STMT_EXECUTE: "Execute",
    Command.COM_STMT_PREPARE: "Prepare",
    Command.COM_STMT_FETCH: "Fetch",
    Command.COM_FIELD_LIST: "Field List",
    Command.COM_INIT_DB: "Init DB",
    Command.COM_CHANGE_USER: "Change user",
    Command.COM_RESET_CONNECTION: "Reset connection",
}


def result_set(asker: Session, full: bool) -> bytes:
    """The framed SHOW [FULL] PROCESSLIST answer: the asker's user's sessions."""
    now = time.monotonic()
    rows = [
        _row(s, asker, full, now)
        for s in sorted(asker.server.sessions.values(), key=lambda s: s.id)
        if s.user is not None and s.username == asker.username
    ]
    return build_result_set(COLUMNS, rows, asker.caps, status=asker.status)


def _row(s: Session, asker: Session, full: bool, now: float) -> list[object]:
    busy = s is asker or s.is_executing
    name, info = command_of(s, busy)
    if info is not None and not full:
        info = info[:INFO_CHARS]
    conn = backend_of(s)
    return [
        s.id,
        s.username,
        f"{s.client.peer[0]}:{s.client.peer[1]}",
        s.state.schema or None,
        name,
        int(now - s.phase_since),
        "executing" if busy else "",
        info,
        conn.server_name if conn is not None else None,
        conn.thread_id if conn is not None else None,
    ]


def command_of(s: Session, busy: bool) -> tuple[str, str | None]:
    """SHOW PROCESSLIST's Command and Info: what a busy session runs (Sleep when idle)."""
    command = s.command
    if not busy or not command:
        return "Sleep", None
    return _COMMAND_NAMES.get(command[0], "Query"), _info(s, command)


def _info(s: Session, command: bytes) -> str | None:
    if command[0] == Command.COM_QUERY:
        return command[1:].decode("utf-8", "replace")
    if command[0] == Command.COM_STMT_EXECUTE and len(command) >= 5:
        stmt = s.stmts.get(int.from_bytes(command[1:5], "little"))
        return stmt.sql if stmt is not None else None
    return None


def backend_of(s: Session) -> BackendConnection | None:
    """The backend connection the session runs on now, or keeps between statements."""
    if s.current is not None:
        return s.current
    if s.pinned_server is not None and s.pinned_server in s.attached:
        return s.attached[s.pinned_server]
    for conn in s.attached.values():
        return conn
    return None


def kill_target(server: ProxyServer, username: str | None, kill_id: int) -> Session | ErrPacket:
    """The session a KILL id names, or the error to answer (username None: the admin's KILL,
    which may name any user's session).

    An id is a pyproxy session id (the handshake's, SHOW PROCESSLIST's Id) or the backend
    thread id (CONNECTION_ID()) of a connection one of username's sessions holds pinned:
    CONNECTION_ID() pins, so the session that asked keeps that connection. Session ids
    start above any backend thread id; an id matching two of the user's connections
    (thread ids repeat across servers) is refused rather than guessed. Only the user's
    own sessions can be killed, as on a server without the CONNECTION ADMIN privilege.
    """
    named = server.sessions.get(kill_id)
    if named is not None and named.user is None:
        named = None  # still logging in: nobody's yet
    mine: list[Session] = []
    foreign = named is not None and username is not None and named.username != username
    if named is not None and not foreign:
        mine.append(named)
    for s in server.sessions.values():
        if s is named:
            continue
        if s.pins and _holds(s, kill_id):
            if username is None or s.username == username:
                mine.append(s)
            else:
                foreign = True
    if len(mine) == 1:
        return mine[0]
    if mine:
        return ErrPacket(
            ErrorCode.ER_NO_SUCH_THREAD,
            f"pyproxy: thread id {kill_id} names several of your connections (backend "
            "thread ids repeat across servers); KILL the Id that SHOW PROCESSLIST shows",
        )
    if foreign:
        return ErrPacket(ErrorCode.ER_KILL_DENIED_ERROR, f"You are not owner of thread {kill_id}")
    return ErrPacket(ErrorCode.ER_NO_SUCH_THREAD, f"Unknown thread id: {kill_id}")


def _holds(s: Session, thread_id: int) -> bool:
    """Does the session keep the backend connection with this thread id (pinned to it)?"""
    conn = s.attached.get(s.pinned_server) if s.pinned_server is not None else None
    return conn is not None and conn.thread_id == thread_id
