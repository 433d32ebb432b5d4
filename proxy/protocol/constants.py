"""Numeric constants of the MySQL/MariaDB client/server protocol."""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Final

# Largest payload a single wire packet can carry; longer payloads are split.
MAX_PACKET_PAYLOAD: Final = 0xFFFFFF

# Length of the challenge used by mysql_native_password and caching_sha2_password.
SCRAMBLE_LENGTH: Final = 20


class PacketHeader(IntEnum):
    """First payload byte of the generic packets."""

    OK = 0x00
    AUTH_MORE_DATA = 0x01  # connection phase only
    LOCAL_INFILE = 0xFB
    EOF = 0xFE
    AUTH_SWITCH = 0xFE  # alias of EOF: the same byte means AuthSwitchRequest during auth
    ERR = 0xFF


class LenencPrefix(IntEnum):
    """Prefix bytes of length-encoded integers (anything below 0xFB is the value itself)."""

    NULL = 0xFB  # a NULL cell in text rows
    INT2 = 0xFC
    INT3 = 0xFD
    INT8 = 0xFE


class Command(IntEnum):
    """First payload byte of a client command packet."""

    COM_SLEEP = 0x00
    COM_QUIT = 0x01
    COM_INIT_DB = 0x02
    COM_QUERY = 0x03
    COM_FIELD_LIST = 0x04
    COM_CREATE_DB = 0x05
    COM_DROP_DB = 0x06
    COM_REFRESH = 0x07
    COM_SHUTDOWN = 0x08
    COM_STATISTICS = 0x09
    COM_PROCESS_INFO = 0x0A
    COM_CONNECT = 0x0B
    COM_PROCESS_KILL = 0x0C
    COM_DEBUG = 0x0D
    COM_PING = 0x0E
    COM_TIME = 0x0F
    COM_DELAYED_INSERT = 0x10
    COM_CHANGE_USER = 0x11
    COM_BINLOG_DUMP = 0x12
    COM_TABLE_DUMP = 0x13
    COM_CONNECT_OUT = 0x14
    COM_REGISTER_SLAVE = 0x15
    COM_STMT_PREPARE = 0x16
    COM_STMT_EXECUTE = 0x17
    COM_STMT_SEND_LONG_DATA = 0x18
    COM_STMT_CLOSE = 0x19
    COM_STMT_RESET = 0x1A
    COM_SET_OPTION = 0x1B
    COM_STMT_FETCH = 0x1C
    COM_DAEMON = 0x1D
    COM_BINLOG_DUMP_GTID = 0x1E
    COM_RESET_CONNECTION = 0x1F
    COM_CLONE = 0x20
    COM_SUBSCRIBE_GROUP_REPLICATION_STREAM = 0x21
    # MariaDB only: array binding for prepared statements.
    COM_STMT_BULK_EXECUTE = 0xFA


class Capability(IntEnum):
    """Client/server capability flags (the 32 bits shared by MySQL and MariaDB).

    These flag classes are IntEnums, not IntFlags: `|`, `&` and `~` on them give plain ints
    at int speed, where IntFlag ran Python-level enum code for each (about 30 such
    operations in a login took a third of its CPU)."""

    CLIENT_LONG_PASSWORD = 1 << 0  # MariaDB: cleared by the server ("CLIENT_MYSQL")
    CLIENT_FOUND_ROWS = 1 << 1
    CLIENT_LONG_FLAG = 1 << 2
    CLIENT_CONNECT_WITH_DB = 1 << 3
    CLIENT_NO_SCHEMA = 1 << 4
    CLIENT_COMPRESS = 1 << 5
    CLIENT_ODBC = 1 << 6
    CLIENT_LOCAL_FILES = 1 << 7
    CLIENT_IGNORE_SPACE = 1 << 8
    CLIENT_PROTOCOL_41 = 1 << 9
    CLIENT_INTERACTIVE = 1 << 10
    CLIENT_SSL = 1 << 11
    CLIENT_IGNORE_SIGPIPE = 1 << 12
    CLIENT_TRANSACTIONS = 1 << 13
    CLIENT_RESERVED = 1 << 14
    CLIENT_SECURE_CONNECTION = 1 << 15
    CLIENT_MULTI_STATEMENTS = 1 << 16
    CLIENT_MULTI_RESULTS = 1 << 17
    CLIENT_PS_MULTI_RESULTS = 1 << 18
    CLIENT_PLUGIN_AUTH = 1 << 19
    CLIENT_CONNECT_ATTRS = 1 << 20
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
    CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
    CLIENT_SESSION_TRACK = 1 << 23
    CLIENT_DEPRECATE_EOF = 1 << 24
    CLIENT_OPTIONAL_RESULTSET_METADATA = 1 << 25
    CLIENT_ZSTD_COMPRESSION_ALGORITHM = 1 << 26
    CLIENT_QUERY_ATTRIBUTES = 1 << 27
    CLIENT_MULTI_FACTOR_AUTHENTICATION = 1 << 28
    CLIENT_CAPABILITY_EXTENSION = 1 << 29
    CLIENT_SSL_VERIFY_SERVER_CERT = 1 << 30
    CLIENT_REMEMBER_OPTIONS = 1 << 31


class MariaDBCapability(IntEnum):
    """MariaDB extended capabilities, carried in the handshake's reserved bytes."""

    MARIADB_CLIENT_PROGRESS = 1 << 0
    MARIADB_CLIENT_COM_MULTI = 1 << 1
    MARIADB_CLIENT_STMT_BULK_OPERATIONS = 1 << 2
    MARIADB_CLIENT_EXTENDED_METADATA = 1 << 3
    MARIADB_CLIENT_CACHE_METADATA = 1 << 4
    MARIADB_CLIENT_BULK_UNIT_RESULTS = 1 << 5


class ServerStatus(IntEnum):
    """Server status flags found in OK and EOF packets and in the greeting."""

    IN_TRANS = 0x0001
    AUTOCOMMIT = 0x0002
    MORE_RESULTS_EXISTS = 0x0008
    NO_GOOD_INDEX_USED = 0x0010
    NO_INDEX_USED = 0x0020
    CURSOR_EXISTS = 0x0040
    LAST_ROW_SENT = 0x0080
    DB_DROPPED = 0x0100
    NO_BACKSLASH_ESCAPES = 0x0200
    METADATA_CHANGED = 0x0400
    QUERY_WAS_SLOW = 0x0800
    PS_OUT_PARAMS = 0x1000
    IN_TRANS_READONLY = 0x2000
    SESSION_STATE_CHANGED = 0x4000
    ANSI_QUOTES = 0x8000  # MariaDB only


class ErrorCode(IntEnum):
    """Error numbers a proxy emits or has to recognise (server ER_* and client CR_*)."""

    ER_CON_COUNT_ERROR = 1040
    ER_OUT_OF_RESOURCES = 1041
    ER_BAD_HOST_ERROR = 1042
    ER_HANDSHAKE_ERROR = 1043
    ER_DBACCESS_DENIED_ERROR = 1044
    ER_ACCESS_DENIED_ERROR = 1045
    ER_NO_DB_ERROR = 1046
    ER_UNKNOWN_COM_ERROR = 1047
    ER_BAD_DB_ERROR = 1049
    ER_NO_SUCH_THREAD = 1094
    ER_NOT_ALLOWED_COMMAND = 1148
    ER_KILL_DENIED_ERROR = 1095
    ER_SERVER_SHUTDOWN = 1053
    ER_PARSE_ERROR = 1064
    ER_EMPTY_QUERY = 1065
    ER_UNKNOWN_ERROR = 1105
    ER_HOST_IS_BLOCKED = 1129
    ER_HOST_NOT_PRIVILEGED = 1130
    ER_NET_PACKET_TOO_LARGE = 1153
    ER_NET_PACKETS_OUT_OF_ORDER = 1156
    ER_NET_UNCOMPRESS_ERROR = 1157
    ER_NET_READ_ERROR = 1158
    ER_NET_READ_INTERRUPTED = 1159
    ER_NET_ERROR_ON_WRITE = 1160
    ER_NET_WRITE_INTERRUPTED = 1161
    ER_UNKNOWN_SYSTEM_VARIABLE = 1193
    ER_TOO_MANY_USER_CONNECTIONS = 1203
    ER_LOCK_WAIT_TIMEOUT = 1205
    ER_READ_ONLY_TRANSACTION = 1207
    ER_LOCK_DEADLOCK = 1213
    ER_SPECIFIC_ACCESS_DENIED_ERROR = 1227
    ER_NOT_SUPPORTED_YET = 1235
    ER_UNKNOWN_STMT_HANDLER = 1243
    ER_NOT_SUPPORTED_AUTH_MODE = 1251
    ER_OPTION_PREVENTS_STATEMENT = 1290
    ER_UNSUPPORTED_PS = 1295
    ER_MAX_PREPARED_STMT_COUNT_REACHED = 1461
    ER_QUERY_INTERRUPTED = 1317
    ER_ACCESS_DENIED_NO_PASSWORD_ERROR = 1698
    ER_MUST_CHANGE_PASSWORD = 1820
    ER_MALFORMED_PACKET = 1835
    ER_CONNECTION_KILLED = 1927  # MariaDB
    ER_STATEMENT_TIMEOUT = 1969  # MariaDB max_statement_time
    ER_QUERY_TIMEOUT = 3024  # MySQL max_execution_time
    # pyproxy's own "no server could take the statement" (ProxySQL's 9001, "Max connect timeout
    # reached while reaching hostgroup"): a server-range number, as libmariadb refuses a
    # client-range one (2000-2999) in an ERR packet with 2027 "Received malformed packet".
    PROXY_NO_BACKEND = 9001
    CR_UNKNOWN_ERROR = 2000
    CR_CONNECTION_ERROR = 2002
    CR_CONN_HOST_ERROR = 2003
    CR_SERVER_GONE_ERROR = 2006
    CR_VERSION_ERROR = 2007
    CR_OUT_OF_MEMORY = 2008
    CR_SERVER_HANDSHAKE_ERR = 2012
    CR_SERVER_LOST = 2013
    CR_COMMANDS_OUT_OF_SYNC = 2014
    CR_NET_PACKET_TOO_LARGE = 2020
    CR_SSL_CONNECTION_ERROR = 2026
    CR_MALFORMED_PACKET = 2027
    CR_AUTH_PLUGIN_CANNOT_LOAD = 2059
    CR_AUTH_PLUGIN_ERR = 2061


# SQLSTATE of each error we emit; anything missing is the generic "HY000".
SQLSTATE: Final[Mapping[int, str]] = MappingProxyType(
    {
        ErrorCode.ER_CON_COUNT_ERROR: "08004",
        ErrorCode.ER_BAD_HOST_ERROR: "08S01",
        ErrorCode.ER_HANDSHAKE_ERROR: "08S01",
        ErrorCode.ER_DBACCESS_DENIED_ERROR: "42000",
        ErrorCode.ER_ACCESS_DENIED_ERROR: "28000",
        ErrorCode.ER_NO_DB_ERROR: "3D000",
        ErrorCode.ER_UNKNOWN_COM_ERROR: "08S01",
        ErrorCode.ER_BAD_DB_ERROR: "42000",
        ErrorCode.ER_SERVER_SHUTDOWN: "08S01",
        ErrorCode.ER_PARSE_ERROR: "42000",
        ErrorCode.ER_EMPTY_QUERY: "42000",
        ErrorCode.ER_NET_PACKET_TOO_LARGE: "08S01",
        ErrorCode.ER_NET_PACKETS_OUT_OF_ORDER: "08S01",
        ErrorCode.ER_NET_UNCOMPRESS_ERROR: "08S01",
        ErrorCode.ER_NET_READ_ERROR: "08S01",
        ErrorCode.ER_NET_READ_INTERRUPTED: "08S01",
        ErrorCode.ER_NET_ERROR_ON_WRITE: "08S01",
        ErrorCode.ER_NET_WRITE_INTERRUPTED: "08S01",
        ErrorCode.ER_TOO_MANY_USER_CONNECTIONS: "42000",
        ErrorCode.ER_READ_ONLY_TRANSACTION: "25000",
        ErrorCode.ER_LOCK_DEADLOCK: "40001",
        ErrorCode.ER_SPECIFIC_ACCESS_DENIED_ERROR: "42000",
        ErrorCode.ER_NOT_SUPPORTED_YET: "42000",
        ErrorCode.ER_NOT_SUPPORTED_AUTH_MODE: "08004",
        ErrorCode.ER_QUERY_INTERRUPTED: "70100",
        ErrorCode.ER_MAX_PREPARED_STMT_COUNT_REACHED: "42000",
        ErrorCode.ER_ACCESS_DENIED_NO_PASSWORD_ERROR: "28000",
        ErrorCode.ER_CONNECTION_KILLED: "70100",
    }
)

DEFAULT_SQLSTATE: Final = "HY000"


def sqlstate_for(code: int) -> str:
    """SQLSTATE MySQL pairs with *code* (HY000 when it has no specific one)."""
    return SQLSTATE.get(code, DEFAULT_SQLSTATE)


class SessionTrackType(IntEnum):
    """Entry types in the session-state-change block of an OK packet."""

    SYSTEM_VARIABLES = 0
    SCHEMA = 1
    STATE_CHANGE = 2
    GTIDS = 3
    TRANSACTION_CHARACTERISTICS = 4
    TRANSACTION_STATE = 5


class ColumnType(IntEnum):
    """Column/parameter type codes (MYSQL_TYPE_*)."""

    DECIMAL = 0x00
    TINY = 0x01
    SHORT = 0x02
    LONG = 0x03
    FLOAT = 0x04
    DOUBLE = 0x05
    NULL = 0x06
    TIMESTAMP = 0x07
    LONGLONG = 0x08
    INT24 = 0x09
    DATE = 0x0A
    TIME = 0x0B
    DATETIME = 0x0C
    YEAR = 0x0D
    NEWDATE = 0x0E
    VARCHAR = 0x0F
    BIT = 0x10
    TIMESTAMP2 = 0x11
    DATETIME2 = 0x12
    TIME2 = 0x13
    TYPED_ARRAY = 0x14
    VECTOR = 0xF2
    INVALID = 0xF3
    BOOL = 0xF4
    JSON = 0xF5
    NEWDECIMAL = 0xF6
    ENUM = 0xF7
    SET = 0xF8
    TINY_BLOB = 0xF9
    MEDIUM_BLOB = 0xFA
    LONG_BLOB = 0xFB
    BLOB = 0xFC
    VAR_STRING = 0xFD
    STRING = 0xFE
    GEOMETRY = 0xFF


class ColumnFlag(IntEnum):
    """Column definition flags."""

    NOT_NULL = 1 << 0
    PRI_KEY = 1 << 1
    UNIQUE_KEY = 1 << 2
    MULTIPLE_KEY = 1 << 3
    BLOB = 1 << 4
    UNSIGNED = 1 << 5
    ZEROFILL = 1 << 6
    BINARY = 1 << 7
    ENUM = 1 << 8
    AUTO_INCREMENT = 1 << 9
    TIMESTAMP = 1 << 10
    SET = 1 << 11
    NO_DEFAULT_VALUE = 1 << 12
    ON_UPDATE_NOW = 1 << 13
    PART_KEY = 1 << 14
    NUM = 1 << 15


class Collation(IntEnum):
    """Collation ids a proxy commonly announces (the handshake's 'charset' byte)."""

    LATIN1_SWEDISH_CI = 8
    UTF8MB3_GENERAL_CI = 33
    UTF8MB4_GENERAL_CI = 45
    UTF8MB4_BIN = 46
    BINARY = 63
    UTF8MB4_UNICODE_CI = 224
    UTF8MB4_0900_AI_CI = 255


DEFAULT_COLLATION: Final = Collation.UTF8MB4_GENERAL_CI


class AuthPlugin(StrEnum):
    """Authentication plugin names."""

    MYSQL_NATIVE_PASSWORD = "mysql_native_password"
    CACHING_SHA2_PASSWORD = "caching_sha2_password"
    SHA256_PASSWORD = "sha256_password"
    MYSQL_CLEAR_PASSWORD = "mysql_clear_password"


class CachingSha2Status(IntEnum):
    """Single-byte AuthMoreData messages of caching_sha2_password."""

    REQUEST_PUBLIC_KEY = 0x02
    FAST_AUTH_SUCCESS = 0x03
    PERFORM_FULL_AUTH = 0x04
