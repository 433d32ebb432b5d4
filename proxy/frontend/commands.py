"""Per-command handling of the text protocol: what each COM_* does in the proxy."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

from proxy.backend.sync import SessionState
from proxy.cluster import ServerState
from proxy.frontend import prepared, processlist
from proxy.frontend.session import Session, Starter
from proxy.protocol.constants import Command, ErrorCode, ServerStatus
from proxy.protocol.handshake import parse_change_user
from proxy.protocol.packets import Packet, ProtocolError, build_command, build_packet
from proxy.routing.classifier import Classification
from proxy.routing.digest import Digest

Handler = Callable[[Session, Packet], Awaitable[bool]]

# A C global in the compiled module (an imported name is a module dict lookup per call).
monotonic: Final = time.monotonic
_COM_QUERY: Final = int(Command.COM_QUERY)
_COM_STMT_EXECUTE: Final = int(Command.COM_STMT_EXECUTE)


def dispatch(session: Session, packet: Packet) -> Awaitable[bool]:
    """The handler run of one client command (awaiting it gives False to end the session).

    A plain function returning the handler's coroutine: no extra coroutine frame for every
    statement to pass through each time it suspends and resumes.
    """
    payload = packet.payload
    if not payload:
        raise ProtocolError("empty command packet")
    session.start_command(payload)
    command = payload[0]
    # The usual ones: a native call, no dict lookup and no generic call.
    if command == _COM_QUERY:
        return com_query(session, packet)
    if command == _COM_STMT_EXECUTE:
        return prepared.com_stmt_execute(session, packet)
    return HANDLERS.get(command, com_unknown)(session, packet)


async def com_unknown(session: Session, packet: Packet) -> bool:
    session.send_error(ErrorCode.ER_UNKNOWN_COM_ERROR, "Unknown command")
    return True


async def com_quit(session: Session, packet: Packet) -> bool:
    return False


async def com_ping(session: Session, packet: Packet) -> bool:
    session.send_ok()
    return True


def com_query(session: Session, packet: Packet) -> Awaitable[bool]:
    """COM_QUERY run by the session's task: a plain function returning the coroutine that
    runs the statement (_run_query), or one for the rarer commands answered otherwise."""
    sql, digest, stmt = session.server.classifier.classify_query(packet.payload)
    if stmt.is_kill:
        return _kill(session, stmt)
    if stmt.verb == "show" and (full := processlist.STATEMENTS.get(digest.text)) is not None:
        session.client.write(processlist.result_set(session, full))
        return prepared.answered()
    ruled = session.apply_rules(sql, digest, stmt)
    if ruled is None:
        return prepared.answered()
    rewritten, digest, stmt, override = ruled
    return _run_query(session, _query_frame(packet, sql, rewritten), rewritten, digest, stmt,
                      override, None, False)  # fmt: skip


def start_fast(session: Session, packet: Packet) -> bool:
    """A command from the client's data_received (Session.on_command_data). A COM_QUERY
    routed at once to a ready backend connection is sent from here (Session.start_statement,
    no task wake-up); one that must wait (a failover, a replica check, a connection) is
    handed to the task; COM_STMT_EXECUTE: prepared.start_execute. False: anything else, the
    task runs the command (dispatch)."""
    payload = packet.payload
    if not payload:
        return False
    if payload[0] == _COM_STMT_EXECUTE:
        return prepared.start_execute(session, packet)
    if payload[0] != _COM_QUERY or session.killed or session.gtid_conn is not None:
        return False
    sql, digest, stmt = session.server.classifier.classify_query(payload)
    if (
        stmt.is_kill
        or stmt.verb == "show"
        or (stmt.changes_session_state and "wait_timeout" in stmt.session_vars)
    ):
        return False
    session.start_command(payload)
    ruled = session.apply_rules(sql, digest, stmt)
    if ruled is None:
        return True  # a rule blocked it: the client has the error
    rewritten, digest, stmt, override = ruled
    frame = _query_frame(packet, sql, rewritten)
    target = session.route(stmt, override)
    conn = None if target is None else session.ready_backend(target)
    if target is None or conn is None:
        session.hand_over(
            _run_query(session, frame, rewritten, digest, stmt, override, target, True)
        )
    else:
        session.start_statement(target, conn, frame, rewritten, digest, stmt, override)
    return True


class FastStarter(Starter):
    """start_fast as the session's Starter."""

    def start(self, session: Session, packet: Packet) -> bool:
        return start_fast(session, packet)


FAST_START: Final = FastStarter()


async def _run_query(
    session: Session,
    frame: bytes,
    sql: str,
    digest: Digest,
    stmt: Classification,
    override: str | None,
    target: ServerState | None,
    routed: bool,
) -> bool:
    """A text statement from routing on: target when already known; routed when route()
    was asked already (None: route_wait it)."""
    if target is None:
        if not routed:
            if session.gtid_conn is not None and not stmt.needs_previous_backend:
                await session.ask_gtid()
            target = session.route(stmt, override)
        if target is None:
            target = await session.route_wait(stmt, override, gated=True)
            if target is None:
                return True
    started = monotonic()
    scanner = await session.forward(target, _COM_QUERY, frame, stmt=stmt, override=override)
    session.finish_query(target, digest, stmt, sql, scanner, monotonic() - started)
    if (
        stmt.changes_session_state
        and "wait_timeout" in stmt.session_vars
        and scanner is not None
        and scanner.error is None
    ):
        await session.learn_wait_timeout()
    return True


def _query_frame(packet: Packet, sql: str, rewritten: str) -> bytes:
    if rewritten is sql:
        return _frame(packet)
    return build_packet(0, bytes((Command.COM_QUERY,)) + rewritten.encode())


async def _kill(session: Session, stmt: Classification) -> bool:
    """KILL [HARD|SOFT] [CONNECTION|QUERY] id, answered by pyproxy for its own ids (never
    forwarded: the backends' threads are shared by many clients)."""
    refusal = None
    if stmt.is_multi_statement:
        refusal = "pyproxy does not support KILL inside a multi-statement batch"
    elif stmt.kill_variant == "USER":
        refusal = "pyproxy does not support KILL USER: KILL each Id that SHOW PROCESSLIST shows"
    elif stmt.kill_variant == "QUERY_ID":
        refusal = (
            "pyproxy does not support KILL QUERY ID (query ids belong to one backend): "
            "use KILL QUERY with the Id that SHOW PROCESSLIST shows"
        )
    elif stmt.kill_id is None:
        refusal = "pyproxy supports KILL with a thread id number only"
    if refusal is not None:
        session.send_error(ErrorCode.ER_NOT_SUPPORTED_YET, refusal)
        return True
    assert stmt.kill_id is not None
    await session.server.kill(session, stmt.kill_id, stmt.kill_variant == "QUERY")
    return True


async def com_init_db(session: Session, packet: Packet) -> bool:
    schema = packet.payload[1:].decode("utf-8", "replace")
    target = session.sticky_target()
    scanner = await session.forward(target, Command.COM_INIT_DB, _frame(packet))
    if scanner is not None and scanner.error is None:
        session.state.schema = schema
        conn = session.attached.get(target.name)
        if conn is not None:
            conn.note_session(schema=schema)
    return True


async def com_forward_to_sticky(session: Session, packet: Packet) -> bool:
    """Commands any server can answer for the session (field lists, statistics)."""
    await session.forward(session.sticky_target(), packet.payload[0], _frame(packet))
    return True


async def com_set_option(session: Session, packet: Packet) -> bool:
    if len(packet.payload) < 3:
        raise ProtocolError("COM_SET_OPTION without an option")
    option = int.from_bytes(packet.payload[1:3], "little")
    if option not in (0, 1):
        session.send_error(ErrorCode.ER_UNKNOWN_COM_ERROR, "Unknown command")
        return True
    # Applied lazily to whichever backend runs the next statement (see sync_steps).
    session.state.multi_statements = option == 0
    session.send_eof_or_ok()
    return True


async def com_reset_connection(session: Session, packet: Packet) -> bool:
    session.reset(
        SessionState(
            schema=session.state.schema,
            collation=session.state.collation,
            multi_statements=session.state.multi_statements,
        )
    )
    session.status = int(ServerStatus.AUTOCOMMIT)
    session.send_ok()
    return True


async def com_change_user(session: Session, packet: Packet) -> bool:
    try:
        request = parse_change_user(packet.payload, session.caps)
    except ProtocolError:
        session.send_error(ErrorCode.ER_MALFORMED_PACKET, "Malformed communication packet")
        return True
    return await session.change_user(request)


async def com_process_kill(session: Session, packet: Packet) -> bool:
    if len(packet.payload) < 5:
        raise ProtocolError("COM_PROCESS_KILL without an id")
    await session.server.kill(session, int.from_bytes(packet.payload[1:5], "little"), False)
    return True


def _frame(packet: Packet) -> bytes:
    # Commands start a new exchange: sequence 0, re-split when over 16 MiB. The client's own
    # frame already is that (seq 0, one fragment) in the usual case: forwarded as it came.
    wire = packet.wire
    if wire is not None and packet.seq == 0:
        return wire
    return build_packet(0, packet.payload)


def _unsupported(name: str) -> Handler:
    async def refuse(session: Session, packet: Packet) -> bool:
        session.send_error(ErrorCode.ER_NOT_SUPPORTED_YET, f"pyproxy does not support {name}")
        return True

    return refuse


HANDLERS: dict[int, Handler] = {
    Command.COM_QUIT: com_quit,
    Command.COM_PING: com_ping,
    Command.COM_QUERY: com_query,
    Command.COM_INIT_DB: com_init_db,
    Command.COM_FIELD_LIST: com_forward_to_sticky,
    Command.COM_STATISTICS: com_forward_to_sticky,
    Command.COM_SET_OPTION: com_set_option,
    Command.COM_RESET_CONNECTION: com_reset_connection,
    Command.COM_CHANGE_USER: com_change_user,
    Command.COM_PROCESS_KILL: com_process_kill,
    Command.COM_STMT_PREPARE: prepared.com_stmt_prepare,
    Command.COM_STMT_EXECUTE: prepared.com_stmt_execute,
    Command.COM_STMT_SEND_LONG_DATA: prepared.com_stmt_send_long_data,
    Command.COM_STMT_RESET: prepared.com_stmt_reset,
    Command.COM_STMT_CLOSE: prepared.com_stmt_close,
    Command.COM_STMT_FETCH: prepared.com_stmt_fetch,
    Command.COM_BINLOG_DUMP: _unsupported("COM_BINLOG_DUMP (replication through a proxy)"),
    Command.COM_BINLOG_DUMP_GTID: _unsupported("COM_BINLOG_DUMP_GTID"),
    Command.COM_REGISTER_SLAVE: _unsupported("COM_REGISTER_SLAVE"),
}

__all__ = ["FAST_START", "HANDLERS", "build_command", "dispatch", "start_fast"]
