"""Binary-protocol prepared statements: stable client ids over lazily prepared backend ones."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from proxy.backend.connection import (
    BackendConnection,
    BackendError,
    BackendStmt,
    BufferSink,
)
from proxy.protocol.constants import MAX_PACKET_PAYLOAD, Command, ErrorCode, ServerStatus
from proxy.protocol.packets import (
    Packet,
    ProtocolError,
    build_command,
    build_packet,
    read_stmt_id,
)
from proxy.protocol.response import ResponseScanner

# Imported at run time, not only for type checking: compiled (mypyc) classes check their
# attributes' types, which must be loaded before this module.
from proxy.routing.classifier import Classification
from proxy.routing.digest import Digest

if TYPE_CHECKING:
    from proxy.cluster import ServerState
    from proxy.frontend.session import Session

# Backend statements kept per connection; the least recently used are closed beyond this.
# A C global in the compiled module (an imported name is a module dict lookup per call).
monotonic: Final = time.monotonic
MAX_BACKEND_STMTS = 256
_CURSOR_FLAGS = 0x07  # CURSOR_TYPE_READ_ONLY | FOR_UPDATE | SCROLLABLE
_EXECUTE: Final = 0x17  # Command.COM_STMT_EXECUTE, a C constant when compiled (no enum lookup)


@dataclass
class ClientStmt:
    """What the client prepared, independent of any backend connection."""

    sql: str
    digest: Digest
    stmt: Classification
    num_params: int
    num_columns: int
    override: str | None = None  # the route a query rule gave it
    param_types: bytes | None = None  # the last types the client bound (2 bytes per param)
    pinned_conn: BackendConnection | None = None  # long data sent or a cursor open there
    pin_reasons: bool = False  # its cursor/long-data reasons are in session.pins
    # The framing of its executes for one backend statement (frame() keeps it): the header
    # and id put before the client's payload, for payloads of frame_size bytes.
    frame_stmt: BackendStmt | None = None
    same_id: bool = False  # the backend statement has the client's id: the payload goes as is
    frame_size: int = -1
    frame_head: bytes = b""

    def frame(self, payload: bytes, bs: BackendStmt, wire: bytes | None = None) -> bytes:
        """The client's COM_STMT_EXECUTE framed for the backend statement bs, types bound.

        A client sends parameter types only when they change (new_params_bound_flag); a
        backend statement that got other types, or none, needs them again, so they are put
        back in. Otherwise the payload is not parsed: its statement id is replaced by one
        concatenation with a cached head, or, when the backend's id is the client's, the
        client's frame (wire: as it came, sequence 0, one fragment) goes as it is.
        """
        n = self.num_params
        if n:
            flag_pos = 10 + (n + 7) // 8  # cmd(1) id(4) flags(1) iterations(4) null bitmap
            if len(payload) > flag_pos:  # else malformed: let the server say so
                if payload[flag_pos] == 1:
                    types = payload[flag_pos + 1 : flag_pos + 1 + 2 * n]
                    self.param_types = types
                    bs.bound_types = types
                elif (
                    self.param_types is not None
                    and bs.bound_types is not self.param_types
                    and bs.bound_types != self.param_types
                ):
                    bs.bound_types = self.param_types
                    return _with_types(payload, bs.stmt_id, flag_pos, self.param_types)
        size = len(payload)
        if size >= MAX_PACKET_PAYLOAD:  # split in fragments: rare, no cache
            return build_packet(0, _execute_head(bs.stmt_id) + payload[5:])
        if self.frame_stmt is not bs:
            self.frame_stmt = bs
            self.same_id = payload[1:5] == bs.stmt_id.to_bytes(4, "little")
            self.frame_size = -1
        if size != self.frame_size:
            self.frame_size = size
            header = size.to_bytes(4, "little")  # 3-byte length, sequence 0
            self.frame_head = header if self.same_id else header + _execute_head(bs.stmt_id)
        if self.same_id:
            return self.frame_head + payload if wire is None else wire
        return self.frame_head + payload[5:]

    def executed(
        self,
        session: Session,
        target: ServerState,
        client_id: int,
        scanner: ResponseScanner | None,
        elapsed: float,
        cursor: bool = False,
        conn: BackendConnection | None = None,
    ) -> None:
        """An execute of it ended (scanner None: the client got an error): counted, its
        cursor pinned to conn or its pins dropped, what it changed learnt."""
        session.account(target, self.digest, self.stmt, scanner, elapsed)
        if scanner is None:
            self.pinned_conn = None
            return
        if cursor and scanner.status is not None and scanner.status & ServerStatus.CURSOR_EXISTS:
            assert conn is not None
            _pin(session, f"cursor:{client_id}", self, conn)
        elif self.pinned_conn is not None or self.pin_reasons:
            _unpin(session, client_id, self)
        session.note_statement(self.stmt, self.sql, scanner)


def _execute_head(backend_id: int) -> bytes:
    return bytes((_EXECUTE,)) + backend_id.to_bytes(4, "little")


def _with_types(payload: bytes, backend_id: int, flag_pos: int, types: bytes) -> bytes:
    """The framed execute with the types the backend statement lacks put back in."""
    body = bytearray(payload)
    body[1:5] = backend_id.to_bytes(4, "little")
    body[flag_pos] = 1
    body[flag_pos + 1 : flag_pos + 1] = types
    return build_packet(0, body)


def _unknown(session: Session, stmt_id: int) -> None:
    session.send_error(
        ErrorCode.ER_UNKNOWN_STMT_HANDLER,
        f"Unknown prepared statement handler ({stmt_id}) given to mysqld_stmt_execute",
    )


def _stmt_id(packet: Packet) -> int:
    payload = packet.payload
    if len(payload) < 5:
        raise ProtocolError("statement command without a statement id")
    return read_stmt_id(payload)


async def com_stmt_prepare(session: Session, packet: Packet) -> bool:
    server = session.server
    limit = server.config.limits.max_prepared_stmt_count
    if len(session.stmts) >= limit:
        # Bounded like a server's max_prepared_stmt_count (per session here): the client's
        # statements held by the proxy cannot grow without end; the session goes on.
        session.send_error(
            ErrorCode.ER_MAX_PREPARED_STMT_COUNT_REACHED,
            f"Can't create more than max_prepared_stmt_count statements (current value: {limit})",
        )
        return True
    sql = packet.payload[1:].decode("utf-8", "replace")
    digest, stmt = server.classifier.classify(sql)  # once, at prepare
    if stmt.is_kill:
        # A backend would take the id as one of its threads, shared by many clients.
        session.send_error(
            ErrorCode.ER_UNSUPPORTED_PS,
            "pyproxy does not prepare KILL: send it as a plain query (COM_QUERY)",
        )
        return True
    ruled = session.apply_rules(sql, digest, stmt)
    if ruled is None:
        return True
    rewritten, digest, stmt, override = ruled
    payload = packet.payload
    if rewritten is not sql:
        sql = rewritten
        payload = bytes((Command.COM_STMT_PREPARE,)) + sql.encode()
    target = session.route(stmt, override) or await session.route_wait(stmt, override)
    if target is None:
        return True
    try:
        conn = await session.backend_for(target)
    except BackendError as exc:
        session.report_backend_failure(target, exc)
        return True
    # The response is small: collect it, put the client's statement id in, then send it.
    buf = bytearray()
    scanner = ResponseScanner(Command.COM_STMT_PREPARE, conn.caps)
    try:
        await conn.relay(build_packet(0, payload), scanner, BufferSink(buf))
    except BackendError as exc:
        session.detach(conn, broken=True)
        session.report_backend_failure(target, exc)
        return True
    if scanner.error is not None or scanner.prepare is None:
        session.client.write(bytes(buf))
        return True
    backend_id = _remember(conn, sql, scanner).stmt_id
    client_id = _client_id(session.stmts, session.next_stmt_id, backend_id)
    session.next_stmt_id = client_id + 1
    offset = scanner.stmt_id_offset if scanner.stmt_id_offset is not None else 5
    buf[offset : offset + 4] = client_id.to_bytes(4, "little")
    session.stmts[client_id] = ClientStmt(
        sql, digest, stmt, scanner.prepare.num_params, scanner.prepare.num_columns, override
    )
    session.client.write(bytes(buf))
    return True


def _client_id(used: dict[int, ClientStmt], next_id: int, backend_id: int) -> int:
    """The id a client gets for a new statement: the backend's own when it is not below
    next_id (ids only grow in a session, as a server's do on a connection: a closed one is
    never handed out again) and unused (the executes that run there then go as the client
    framed them, see ClientStmt.frame), else next_id or the first unused one after it."""
    if next_id <= backend_id < 0xFFFFFFFF and backend_id not in used:
        return backend_id
    while next_id in used:
        next_id += 1
    return next_id


def _remember(conn: BackendConnection, sql: str, scanner: ResponseScanner) -> BackendStmt:
    assert scanner.prepare is not None
    old = conn.stmts.pop(sql, None)
    if old is not None:
        conn.write(build_command(Command.COM_STMT_CLOSE, old.stmt_id.to_bytes(4, "little")))
    bs = BackendStmt(
        scanner.prepare.stmt_id, scanner.prepare.num_params, scanner.prepare.num_columns
    )
    conn.stmts[sql] = bs
    conn.last_stmt = bs
    while len(conn.stmts) > MAX_BACKEND_STMTS:
        _, evicted = conn.stmts.popitem(last=False)
        conn.write(build_command(Command.COM_STMT_CLOSE, evicted.stmt_id.to_bytes(4, "little")))
    return bs


async def _backend_stmt(
    session: Session, cs: ClientStmt, target: ServerState
) -> tuple[BackendConnection, BackendStmt] | None:
    """The connection to run cs on, with cs prepared there (prepared now if needed)."""
    conn = _ready_conn(session, cs, target)
    if conn is None:
        try:
            conn = await session.backend_for(target)
        except BackendError as exc:
            session.report_backend_failure(target, exc)
            return None
    bs = _prepared_on(conn, cs.sql)
    if bs is not None:
        return conn, bs
    scanner = ResponseScanner(Command.COM_STMT_PREPARE, conn.caps)
    try:
        await conn.run(build_command(Command.COM_STMT_PREPARE, cs.sql.encode()), scanner)
    except BackendError as exc:
        session.detach(conn, broken=True)
        session.report_backend_failure(target, exc)
        return None
    if scanner.error is not None:
        session.send_error(scanner.error.code, scanner.error.message)
        return None
    return conn, _remember(conn, cs.sql, scanner)


def _ready_conn(session: Session, cs: ClientStmt, target: ServerState) -> BackendConnection | None:
    """The connection cs runs on when it can as it is: the one it is pinned to, else the
    session's ready one to target."""
    pinned = cs.pinned_conn
    if pinned is not None and not pinned.broken:
        return pinned
    return session.ready_backend(target)


def _prepared_on(conn: BackendConnection, sql: str) -> BackendStmt | None:
    """The statement prepared for sql on conn, now its most recently used one."""
    bs = conn.stmts.get(sql)
    if bs is not None and bs is not conn.last_stmt:
        conn.stmts.move_to_end(sql)
        conn.last_stmt = bs
    return bs


def com_stmt_execute(session: Session, packet: Packet) -> Awaitable[bool]:
    """COM_STMT_EXECUTE run by the session's task: a plain function returning the coroutine
    that runs it (_execute)."""
    client_id = _stmt_id(packet)
    cs = session.stmts.get(client_id)
    if cs is None:
        _unknown(session, client_id)
        return answered()
    return _execute(session, packet.payload, client_id, cs, None, False)


async def answered() -> bool:
    """A handler's coroutine for a command already answered (by the plain function)."""
    return True


async def _execute(
    session: Session,
    payload: bytes,
    client_id: int,
    cs: ClientStmt,
    target: ServerState | None,
    routed: bool,
) -> bool:
    """An execute of cs from routing on: target when already known; routed when route()
    was asked already (None: route_wait it)."""
    if not routed and session.gtid_conn is not None and not cs.stmt.needs_previous_backend:
        await session.ask_gtid()
    cursor = len(payload) > 5 and payload[5] & _CURSOR_FLAGS != 0
    pinned = cs.pinned_conn
    if pinned is None:
        # A GTID wait chosen here (causal, read-your-writes) goes just ahead of the execute
        # (not with a cursor: its rows come later), unless it must be prepared there first.
        if target is None:
            target = (None if routed else session.route(cs.stmt, cs.override)) or (
                await session.route_wait(cs.stmt, cs.override, gated=not cursor)
            )
        if target is not None and session.gate_pending(target):
            ready = session.ready_backend(target)
            if ready is None or cs.sql not in ready.stmts:
                target = await session.settle_gate(target)
    else:
        target = session.target_of(pinned)
    if target is None:
        return True
    # The usual case without a coroutine: the connection is ready, the statement prepared.
    conn = _ready_conn(session, cs, target)
    bs = _prepared_on(conn, cs.sql) if conn is not None else None
    if conn is None or bs is None:
        found = await _backend_stmt(session, cs, target)
        if found is None:
            return True
        conn, bs = found
    frame = cs.frame(payload, bs)
    started = monotonic()
    scanner = await session.forward(
        target,
        _EXECUTE,
        frame,
        cursor=cursor,
        conn=conn,
        resend=(
            (lambda writer: _execute_on(session, cs, payload, writer))
            if session.gate_pending(target)
            else None
        ),
    )
    cs.executed(session, target, client_id, scanner, monotonic() - started, cursor, conn)
    return True


def start_execute(session: Session, packet: Packet) -> bool:
    """COM_STMT_EXECUTE from the client's data_received (Session.on_command_data): a
    statement routed at once to a ready connection where it is prepared is sent from here
    (Session.start_statement, no task wake-up); once routed, one that must wait (a
    failover, a replica check, a statement to prepare there) is handed to the task; False:
    the task runs it (com_stmt_execute: a cursor, long data, an unknown statement)."""
    payload = packet.payload
    if len(payload) < 6 or payload[5] & _CURSOR_FLAGS or session.gtid_conn is not None:
        return False
    client_id = read_stmt_id(payload)
    cs = session.stmts.get(client_id)
    if cs is None or cs.pinned_conn is not None or session.killed:
        return False
    session.start_command(payload)
    target = session.route(cs.stmt, cs.override)
    conn = None if target is None else session.ready_backend(target)
    bs = _prepared_on(conn, cs.sql) if conn is not None else None
    if target is None or conn is None or bs is None:
        # Routed once only: asking route() again would take another replica's turn.
        session.hand_over(_execute(session, payload, client_id, cs, target, True))
        return True
    frame = cs.frame(payload, bs, packet.wire if packet.seq == 0 else None)
    session.start_statement(target, conn, frame, cs.sql, cs.digest, cs.stmt, cs.override, cs,
                            client_id)  # fmt: skip
    return True


async def _execute_on(
    session: Session, cs: ClientStmt, payload: bytes, target: ServerState
) -> tuple[BackendConnection, bytes] | None:
    """The connection and framed COM_STMT_EXECUTE to run cs on target instead (a causal
    read whose replica did not catch up); None: the client got the error."""
    found = await _backend_stmt(session, cs, target)
    if found is None:
        return None
    conn, bs = found
    return conn, cs.frame(payload, bs)


def _pin(session: Session, reason: str, cs: ClientStmt, conn: BackendConnection) -> None:
    cs.pinned_conn = conn
    cs.pin_reasons = True
    session.pins.reasons.add(reason)


def _unpin(session: Session, client_id: int, cs: ClientStmt) -> None:
    cs.pinned_conn = None
    cs.pin_reasons = False
    session.pins.reasons.discard(f"cursor:{client_id}")
    session.pins.reasons.discard(f"longdata:{client_id}")


async def com_stmt_send_long_data(session: Session, packet: Packet) -> bool:
    # No response, ever: errors surface at the following COM_STMT_EXECUTE.
    client_id = _stmt_id(packet)
    cs = session.stmts.get(client_id)
    if cs is None:
        return True
    if cs.pinned_conn is None:
        # The execute that follows runs where the data goes: routed (and checked for
        # read-your-writes) now. No response to this command, so no error either.
        target = session.route(cs.stmt, cs.override) or await session.route_wait(
            cs.stmt, cs.override, silent=True
        )
    else:
        target = session.target_of(cs.pinned_conn)
    if target is None:
        return True
    found = await _backend_stmt(session, cs, target)
    if found is None:
        return True
    conn, bs = found
    _pin(session, f"longdata:{client_id}", cs, conn)
    body = bytearray(packet.payload)
    body[1:5] = bs.stmt_id.to_bytes(4, "little")
    try:
        conn.write(build_packet(0, body))
    except BackendError:
        session.detach(conn, broken=True)
    return True


async def com_stmt_reset(session: Session, packet: Packet) -> bool:
    client_id = _stmt_id(packet)
    cs = session.stmts.get(client_id)
    if cs is None:
        session.send_error(
            ErrorCode.ER_UNKNOWN_STMT_HANDLER,
            f"Unknown prepared statement handler ({client_id}) given to mysqld_stmt_reset",
        )
        return True
    conn = cs.pinned_conn
    _unpin(session, client_id, cs)
    if conn is None or conn.broken or cs.sql not in conn.stmts:
        session.send_ok()  # nothing is buffered or open on any backend
        return True
    body = bytearray(packet.payload)
    body[1:5] = conn.stmts[cs.sql].stmt_id.to_bytes(4, "little")
    await session.forward(
        session.target_of(conn), Command.COM_STMT_RESET, build_packet(0, body), conn=conn
    )
    return True


async def com_stmt_close(session: Session, packet: Packet) -> bool:
    client_id = _stmt_id(packet)
    cs = session.stmts.pop(client_id, None)
    if cs is not None:
        conn = cs.pinned_conn
        _unpin(session, client_id, cs)
        if conn is not None and not conn.broken and cs.sql in conn.stmts:
            # A cursor may be open on it: close that backend statement for real.
            bs = conn.stmts.pop(cs.sql)
            conn.write(build_command(Command.COM_STMT_CLOSE, bs.stmt_id.to_bytes(4, "little")))
    return True


async def com_stmt_fetch(session: Session, packet: Packet) -> bool:
    client_id = _stmt_id(packet)
    cs = session.stmts.get(client_id)
    conn = cs.pinned_conn if cs is not None else None
    if cs is None or conn is None or cs.sql not in conn.stmts:
        session.send_error(
            ErrorCode.ER_UNKNOWN_STMT_HANDLER,
            f"Unknown prepared statement handler ({client_id}) given to mysqld_stmt_fetch",
        )
        return True
    body = bytearray(packet.payload)
    body[1:5] = conn.stmts[cs.sql].stmt_id.to_bytes(4, "little")
    scanner = await session.forward(
        session.target_of(conn), Command.COM_STMT_FETCH, build_packet(0, body), conn=conn
    )
    if (
        scanner is not None
        and scanner.status is not None
        and (scanner.status & ServerStatus.LAST_ROW_SENT)
    ):
        _unpin(session, client_id, cs)
    return True
