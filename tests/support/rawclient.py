"""A bare binary-protocol MySQL client built on pyproxy's own sans-IO protocol code.

For what no client library here does: server-side cursors (COM_STMT_EXECUTE with a cursor
flag, then COM_STMT_FETCH), and exact control over which packet is sent when.
"""

from __future__ import annotations

import socket

from proxy.protocol.auth import AuthDone, AuthFailed, AuthSend, ClientAuth
from proxy.protocol.constants import Command
from proxy.protocol.handshake import parse_handshake_v10
from proxy.protocol.packets import Packet, PacketReader, build_command
from proxy.protocol.response import ResponseScanner

CURSOR_TYPE_READ_ONLY = 0x01


class RawClient:
    """One authenticated connection; each request returns the scanner of its response."""

    def __init__(self, host: str, port: int, user: str, password: str, database: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        reader = PacketReader()
        greeting = self._packet(reader)
        auth = ClientAuth(parse_handshake_v10(greeting.payload), user, password, database=database)
        action = auth.start()
        while not isinstance(action, AuthDone):
            if isinstance(action, AuthFailed):
                raise ConnectionError(action.error.message)
            if isinstance(action, AuthSend):
                self.sock.sendall(action.data)
            packet = self._packet(reader)
            action = auth.feed(packet.payload, packet.seq)
        self.caps = auth.capabilities

    def _packet(self, reader: PacketReader) -> Packet:
        while (packet := reader.read()) is None:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            reader.feed(data)
        return packet

    def request(self, command: int, body: bytes = b"", *, cursor: bool = False) -> ResponseScanner:
        self.sock.sendall(build_command(command, body))
        scanner = ResponseScanner(command, self.caps, cursor=cursor)
        while not scanner.done:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            scanner.feed(data)
        return scanner

    def prepare(self, sql: str) -> int:
        scanner = self.request(Command.COM_STMT_PREPARE, sql.encode())
        assert scanner.error is None and scanner.prepare is not None, scanner.error
        return scanner.prepare.stmt_id

    def execute_cursor(self, stmt_id: int) -> ResponseScanner:
        """COM_STMT_EXECUTE of a statement without parameters, opening a read-only cursor."""
        body = stmt_id.to_bytes(4, "little") + bytes((CURSOR_TYPE_READ_ONLY,)) + b"\x01\0\0\0"
        return self.request(Command.COM_STMT_EXECUTE, body, cursor=True)

    def fetch(self, stmt_id: int, rows: int) -> ResponseScanner:
        body = stmt_id.to_bytes(4, "little") + rows.to_bytes(4, "little")
        return self.request(Command.COM_STMT_FETCH, body)

    def close(self) -> None:
        self.sock.close()
