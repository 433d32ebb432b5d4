"""Spot checks of protocol constants against the documented values."""

from __future__ import annotations

from proxy.protocol.constants import (
    DEFAULT_COLLATION,
    MAX_PACKET_PAYLOAD,
    CachingSha2Status,
    Capability,
    Collation,
    ColumnType,
    Command,
    ErrorCode,
    LenencPrefix,
    PacketHeader,
    ServerStatus,
    SessionTrackType,
)


def test_values() -> None:
    expected: list[tuple[int, int]] = [
        (MAX_PACKET_PAYLOAD, 16 * 1024 * 1024 - 1),
        (Command.COM_QUERY, 3),
        (Command.COM_STMT_PREPARE, 0x16),
        (Command.COM_RESET_CONNECTION, 0x1F),
        (Command.COM_BINLOG_DUMP, 0x12),
        (Capability.CLIENT_PROTOCOL_41, 0x200),
        (Capability.CLIENT_DEPRECATE_EOF, 0x1000000),
        (Capability.CLIENT_QUERY_ATTRIBUTES, 1 << 27),
        (ServerStatus.MORE_RESULTS_EXISTS, 8),
        (ServerStatus.SESSION_STATE_CHANGED, 0x4000),
        (ErrorCode.ER_ACCESS_DENIED_ERROR, 1045),
        (ErrorCode.CR_SERVER_LOST, 2013),
        (ErrorCode.ER_LOCK_WAIT_TIMEOUT, 1205),
        (ErrorCode.ER_MALFORMED_PACKET, 1835),
        (SessionTrackType.TRANSACTION_STATE, 5),
        (ColumnType.VAR_STRING, 0xFD),
        (ColumnType.JSON, 0xF5),
        (Collation.LATIN1_SWEDISH_CI, 8),
        (Collation.BINARY, 63),
        (Collation.UTF8MB4_0900_AI_CI, 255),
        (DEFAULT_COLLATION, 45),
        (PacketHeader.AUTH_SWITCH, 0xFE),
        (LenencPrefix.NULL, 0xFB),
        (CachingSha2Status.FAST_AUTH_SUCCESS, 3),
    ]
    for member, value in expected:
        assert int(member) == value, member
    assert PacketHeader(0xFE).name == "EOF"  # AUTH_SWITCH is an alias of the same byte
