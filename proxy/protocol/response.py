"""Hot-path response framing: where a backend's reply to one command ends, rows undecoded."""

from __future__ import annotations

from enum import IntEnum
from typing import Final

from mypy_extensions import i64

from proxy.protocol.constants import (
    Capability,
    Command,
    MariaDBCapability,
    ServerStatus,
)
from proxy.protocol.packets import (
    PROGRESS_REPORT_CODE,
    STMT_ID_OFFSET,
    Buffer,
    ErrPacket,
    MalformedPacket,
    PacketOutOfOrder,
    PacketReader,
    PrepareOk,
    ProtocolError,
    eof_status_at,
    parse_err,
    parse_prepare_ok,
    parse_text_row,
    read_lenenc_int,
)

# Literal ints (compiled, a literal Final is a constant in the C code, a computed one a
# global load and check per use); tests/unit/protocol/test_response.py checks they match.
_OK_HEADER: Final = 0x00  # PacketHeader.OK
_LOCAL_INFILE_HEADER: Final = 0xFB  # PacketHeader.LOCAL_INFILE
_EOF_HEADER: Final = 0xFE  # PacketHeader.EOF
_ERR_HEADER: Final = 0xFF  # PacketHeader.ERR

_FIRST: Final = 0
_COLUMNS: Final = 1
_COLUMNS_EOF: Final = 2
_ROWS: Final = 3
_PREPARE_FIRST: Final = 4
_PREPARE_PARAMS: Final = 5
_PREPARE_PARAMS_EOF: Final = 6
_PREPARE_COLUMNS: Final = 7
_PREPARE_COLUMNS_EOF: Final = 8
_FIELD_LIST: Final = 9
_SINGLE: Final = 10
_STATISTICS: Final = 11
_DONE: Final = 12


class ScanState(IntEnum):
    """What the scanner expects next."""

    FIRST = _FIRST  # first packet of a (further) result: OK, ERR, LOCAL INFILE or column count
    COLUMNS = _COLUMNS  # column definitions of a result set
    COLUMNS_EOF = _COLUMNS_EOF  # EOF closing the column definitions (no CLIENT_DEPRECATE_EOF)
    ROWS = _ROWS  # rows until EOF / OK-as-EOF / ERR
    PREPARE_FIRST = _PREPARE_FIRST  # COM_STMT_PREPARE_OK or ERR
    PREPARE_PARAMS = _PREPARE_PARAMS
    PREPARE_PARAMS_EOF = _PREPARE_PARAMS_EOF
    PREPARE_COLUMNS = _PREPARE_COLUMNS
    PREPARE_COLUMNS_EOF = _PREPARE_COLUMNS_EOF
    FIELD_LIST = _FIELD_LIST  # column definitions until EOF (COM_FIELD_LIST)
    SINGLE = _SINGLE  # exactly one OK / EOF / ERR
    STATISTICS = _STATISTICS  # one human-readable string packet
    DONE = _DONE


# What to do with the payload of the current logical packet.
_SKIP: Final = 0  # forward blindly (rows, column definitions)
_CAPTURE: Final = 1  # small control packet: keep its bytes and decode it at the end
_FINAL: Final = 2  # forward blindly; the response is complete once it ends

_MAX: Final = 0xFFFFFF  # MAX_PACKET_PAYLOAD
_MORE_RESULTS: Final = int(ServerStatus.MORE_RESULTS_EXISTS)
_CURSOR_EXISTS: Final = int(ServerStatus.CURSOR_EXISTS)
# Plain ints, C globals when compiled: no enum attribute lookup per packet.
_DEPRECATE_EOF_CAP: Final = int(Capability.CLIENT_DEPRECATE_EOF)
_OPTIONAL_METADATA_CAP: Final = int(Capability.CLIENT_OPTIONAL_RESULTSET_METADATA)
_CACHE_METADATA_CAP: Final = int(MariaDBCapability.MARIADB_CLIENT_CACHE_METADATA)
_LENENC_NULL: Final = 0xFB  # first byte of a column count at or over it: not a 1-byte count
_NO_SEQ: Final = -1  # _expect_seq when any sequence id is accepted

# Plain ints too: comparing with an IntEnum member loads it from its class each time.
_COM_QUERY: Final = 0x03  # Command.COM_QUERY
_COM_STMT_EXECUTE: Final = 0x17  # Command.COM_STMT_EXECUTE
_COM_STMT_PREPARE: Final = int(Command.COM_STMT_PREPARE)
_COM_STMT_FETCH: Final = int(Command.COM_STMT_FETCH)
_COM_FIELD_LIST: Final = int(Command.COM_FIELD_LIST)
_COM_STATISTICS: Final = int(Command.COM_STATISTICS)
# Commands whose reply may hold result sets, several of them with MORE_RESULTS_EXISTS.
_QUERY_LIKE: Final = frozenset(
    (
        _COM_QUERY,
        _COM_STMT_EXECUTE,
        int(Command.COM_PROCESS_INFO),
        int(Command.COM_STMT_BULK_EXECUTE),
    )
)
_NO_RESPONSE: Final = frozenset(
    int(c) for c in (Command.COM_QUIT, Command.COM_STMT_CLOSE, Command.COM_STMT_SEND_LONG_DATA)
)
# Replies that are streams or authentication exchanges, not one framed response.
_UNSCANNABLE: Final = frozenset(
    int(c)
    for c in (
        Command.COM_BINLOG_DUMP,
        Command.COM_BINLOG_DUMP_GTID,
        Command.COM_CHANGE_USER,
        Command.COM_CLONE,
        Command.COM_SUBSCRIBE_GROUP_REPLICATION_STREAM,
    )
)


class ResponseScanner:
    """Splits a backend byte stream into 'this command's response' and what follows.

    Feed raw chunks as they arrive; ``feed`` returns how many leading bytes belong to the
    response (all of them until the response ends). Only packet headers and the first
    byte of each packet are inspected; the small control packets (OK, ERR, EOF, column
    count, prepare-OK) are copied and decoded. Rows are counted, never decoded or copied.

    *caps* are the capabilities negotiated on the backend connection (and *mariadb_caps*
    its MariaDB extended ones); *cursor* says the COM_STMT_EXECUTE asked for a cursor (a
    READ_ONLY, FOR_UPDATE or SCROLLABLE bit in its flags byte); *first_seq*, if given, is the
    sequence id the first response packet must carry (1 unless the command itself was split).

    After LOCAL INFILE (``infile`` is True) the client must send the file and an empty
    packet; keep feeding the server's bytes afterwards, the answer is OK/ERR.
    """

    __slots__ = (
        "_cache_metadata",
        "_capture",
        "_cont",
        "_count",
        "_cursor",
        "_deprecate_eof",
        "_eof_limit",
        "_expect_seq",
        "_frag_full",
        "_hdr_len",
        "_kind",
        "_multi",
        "_optional_metadata",
        "_pending",
        "_remaining",
        "_state",
        "affected_rows",
        "columns",
        "command",
        "consumed",
        "error",
        "infile",
        "last_seq",
        "ok_payload",
        "packets",
        "prepare",
        "result_sets",
        "rows",
        "status",
        "stmt_id_offset",
    )

    def __init__(
        self,
        command: int,
        caps: int,
        *,
        cursor: bool = False,
        mariadb_caps: int = 0,
        first_seq: int | None = None,
    ) -> None:
        self._setup(command, caps, cursor, mariadb_caps, first_seq)

    def restart(self, command: int, caps: int) -> None:
        """Scan the response to a new command, as a new scanner would: a session reuses its
        scanner from one statement to the next (no object built and freed per statement)."""
        self._setup(command, caps, False, 0, None)

    def _setup(
        self, command: int, caps: int, cursor: bool, mariadb_caps: int, first_seq: int | None
    ) -> None:
        # The commands of nearly every statement first: no set lookups for them.
        multi = command in (_COM_QUERY, _COM_STMT_EXECUTE) or command in _QUERY_LIKE
        if not multi and command in _UNSCANNABLE:
            raise ValueError(f"the reply to command 0x{command:02X} is not a single response")
        self.command = command
        caps = int(caps)
        self._deprecate_eof = bool(caps & _DEPRECATE_EOF_CAP)
        # 0xFE packets shorter than this end a result set; longer ones are rows whose first
        # cell has an 8-byte length prefix.
        self._eof_limit: i64 = _MAX if self._deprecate_eof else 9
        self._optional_metadata = bool(caps & _OPTIONAL_METADATA_CAP)
        self._cache_metadata = bool(int(mariadb_caps) & _CACHE_METADATA_CAP)
        self._cursor = cursor and command == _COM_STMT_EXECUTE
        self._multi = multi
        # Framing state.
        self._pending = b""  # a header split across chunks (rare: no buffer allocated)
        self._hdr_len: i64 = -1  # header read, first payload byte not yet seen
        self._remaining: i64 = 0  # payload bytes of the current fragment still to come
        self._frag_full = False  # current fragment is 0xFFFFFF long: a continuation follows
        self._cont = False  # next fragment continues the current logical packet
        self._kind = _SKIP
        self._capture: bytearray | None = None
        self._expect_seq: i64 = _NO_SEQ if first_seq is None else first_seq
        self._count: i64 = 0  # definitions still expected in a counted state
        # Results.
        self.last_seq: i64 = -1
        self.consumed: i64 = 0
        self.packets: i64 = 0
        self.rows: i64 = 0
        self.columns = 0
        self.result_sets = 0
        self.status: int | None = None
        self.affected_rows = 0
        self.ok_payload: bytes | None = None
        self.error: ErrPacket | None = None
        self.infile = False
        self.prepare: PrepareOk | None = None
        self.stmt_id_offset: int | None = None
        if multi:
            self._state: i64 = _FIRST
        elif command in _NO_RESPONSE:
            self._state = _DONE
        elif command == _COM_STMT_PREPARE:
            self._state = _PREPARE_FIRST
        elif command == _COM_STMT_FETCH:
            self._state = _ROWS
        elif command == _COM_FIELD_LIST:
            self._state = _FIELD_LIST
        elif command == _COM_STATISTICS:
            self._state = _STATISTICS
        else:
            self._state = _SINGLE

    # ------------------------------------------------------------------ results

    @property
    def done(self) -> bool:
        """The whole response has been seen."""
        return self._state == _DONE

    @property
    def at_packet_boundary(self) -> bool:
        """Everything consumed so far ends with a whole packet (a cut here leaves the
        client's stream parseable: one more packet, e.g. an ERR, may follow)."""
        return (
            len(self._pending) == 0
            and self._hdr_len < 0
            and self._remaining == 0
            and not self._cont
        )

    @property
    def state(self) -> ScanState:
        """What the scanner expects next."""
        return ScanState(self._state)

    @property
    def is_result_set(self) -> bool:
        """At least one result set (column count + definitions) was returned."""
        return self.result_sets > 0

    # ------------------------------------------------------------------ feeding

    def feed(self, chunk: Buffer) -> int:
        """Scan a chunk; returns how many leading bytes belong to this response."""
        if self._state == _DONE:
            return 0
        # As bytes (what a transport delivers): compiled, indexing it and reading headers
        # from it are native operations, not calls.
        data = chunk if isinstance(chunk, bytes) else bytes(chunk)
        n: i64 = len(data)
        pos: i64 = 0
        while pos < n and self._state != _DONE:
            rem = self._remaining
            if rem:
                take = n - pos
                if take > rem:
                    take = rem
                if self._capture is not None:
                    self._capture += data[pos : pos + take]
                pos += take
                rem -= take
                self._remaining = rem
                if not rem:
                    self._fragment_done()
                continue
            if self._hdr_len >= 0:
                length = self._hdr_len
                self._hdr_len = -1
                self._begin(length, data[pos])
                continue
            if len(self._pending) == 0:
                if not self._cont and not self.infile and n - pos >= 5:
                    pos = self._whole_packets(data, pos, n)
                    if self._remaining or pos >= n or self._state == _DONE:
                        continue
                if n - pos >= 4:
                    length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
                    seq = data[pos + 3]
                    pos += 4
                    self._header(length, seq, data, pos, n)
                    continue
            # A header split across chunks.
            need = 4 - len(self._pending)
            piece = data[pos : pos + need]
            self._pending += piece
            pos += len(piece)
            if len(self._pending) == 4:
                head = self._pending
                self._pending = b""
                self._header(head[0] | head[1] << 8 | head[2] << 16, head[3], data, pos, n)
        self.consumed += pos
        return pos

    def _header(self, length: int, seq: int, data: bytes, pos: i64, n: i64) -> None:
        """A header was read; *pos* is where its payload starts in *data*."""
        expect = self._expect_seq
        if expect != _NO_SEQ and seq != expect:
            raise PacketOutOfOrder(f"response packet seq {seq}, expected {expect}")
        self._expect_seq = (seq + 1) & 0xFF
        self.last_seq = seq
        if self._cont or length == 0:
            self._begin(length, -1)
        elif pos < n:
            self._begin(length, data[pos])
        else:
            self._hdr_len = length  # classify once the first payload byte arrives

    def _whole_packets(self, data: bytes, pos: i64, n: i64) -> i64:
        """Packets that lie whole in this chunk, in one loop with no per-packet calls for
        column definitions and rows. Stops, leaving the rest to the general path, at a
        packet cut by the chunk's end, an empty or 16 MiB one, a state other than a text or
        binary result, or a sequence id out of order (the general path raises)."""
        while n - pos >= 5:
            state = self._state
            if state == _ROWS:
                pos = self._scan_rows(data, pos, n)
                if self._remaining or n - pos < 5:
                    break
            elif state not in (_FIRST, _COLUMNS, _COLUMNS_EOF, _SINGLE):
                break
            length: i64 = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            seq = data[pos + 3]
            end = pos + 4 + length
            if end > n or length == 0 or length == _MAX:
                break
            expect = self._expect_seq
            if expect != _NO_SEQ and seq != expect:
                break
            self._expect_seq = (seq + 1) & 0xFF
            self.last_seq = seq
            self.packets += 1
            first = data[pos + 4]
            if state == _COLUMNS and first != _ERR_HEADER:
                self._count -= 1
                if self._count <= 0:
                    self._state = _ROWS if self._deprecate_eof else _COLUMNS_EOF
            elif first == _EOF_HEADER and length < 9 and not self._deprecate_eof:
                # A classic EOF closing definitions or rows: its status read in place.
                self._eof(eof_status_at(data, pos + 4, length))
            elif state == _FIRST and first < _LENENC_NULL and first != _OK_HEADER:
                self._column_count(first, data[pos + 5] if length > 1 else -1)  # 1-byte count
            else:
                # A control packet (OK, ERR, EOF, column count; in _ROWS only the end of
                # the rows reaches here): decoded as _fragment_done would.
                self._process(data[pos + 4 : end])
            pos = end
            if self._state == _DONE or self.infile:
                break
        return pos

    def _scan_rows(self, data: bytes, pos: i64, n: i64) -> i64:
        """Tight loop over ordinary rows; stops at anything that needs a closer look."""
        expect = self._expect_seq
        limit: i64 = self._eof_limit
        rows: i64 = 0
        last = -1
        while n - pos >= 5:
            length: i64 = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            seq = data[pos + 3]
            if expect != _NO_SEQ and seq != expect:
                break  # let the general path raise
            first = data[pos + 4]
            if first == 0xFF or (first == 0xFE and length < limit) or length == 0xFFFFFF:
                break
            expect = (seq + 1) & 0xFF
            last = seq
            rows += 1
            pos += 4 + length
            if pos > n:  # the row continues in later chunks
                self._remaining = pos - n
                self._frag_full = False
                self._kind = _SKIP
                pos = n
                break
        if rows:
            self.rows += rows
            self.packets += rows
            self._expect_seq = expect
            self.last_seq = last
        return pos

    def _begin(self, length: int, first: int) -> None:
        """A fragment starts; classify it if it starts a logical packet."""
        self._frag_full = length == _MAX
        self._remaining = length
        if not self._cont:
            self.packets += 1
            self._classify(length, first)
        if length == 0:
            self._fragment_done()

    def _classify(self, length: int, first: int) -> None:
        state = self._state
        self._kind = _SKIP
        if self.infile:
            self.infile = False  # the server answers after the client's file data
        if state == _ROWS:
            if first == _ERR_HEADER or (first == _EOF_HEADER and length < self._eof_limit):
                self._start_capture()
            else:
                self.rows += 1
        elif state in (_COLUMNS, _PREPARE_PARAMS, _PREPARE_COLUMNS):
            if first == _ERR_HEADER:
                self._start_capture()
                return
            self._count -= 1
            if self._count > 0:
                return
            if state == _COLUMNS:
                self._state = _ROWS if self._deprecate_eof else _COLUMNS_EOF
            elif not self._deprecate_eof:
                self._state = (
                    _PREPARE_PARAMS_EOF if state == _PREPARE_PARAMS else (_PREPARE_COLUMNS_EOF)
                )
            elif state == _PREPARE_PARAMS and self.prepare and self.prepare.num_columns:
                self._state = _PREPARE_COLUMNS
                self._count = self.prepare.num_columns
            else:
                self._kind = _FINAL
        elif state == _FIELD_LIST:
            if first == _ERR_HEADER or (first == _EOF_HEADER and length < self._eof_limit):
                self._start_capture()
            else:
                self.columns += 1
        elif state == _STATISTICS:
            if first == _ERR_HEADER:
                self._start_capture()
            else:
                self._kind = _FINAL
        else:
            self._start_capture()

    def _start_capture(self) -> None:
        self._kind = _CAPTURE
        self._capture = bytearray()

    def _fragment_done(self) -> None:
        if self._frag_full:
            self._cont = True
            return
        self._cont = False
        if self._kind == _CAPTURE:
            payload = bytes(self._capture or b"")
            self._capture = None
            self._process(payload)
        elif self._kind == _FINAL:
            self._state = _DONE

    # ------------------------------------------------------------------ control packets

    def _process(self, p: bytes) -> None:
        if len(p) == 0:
            raise MalformedPacket(f"empty packet in state {ScanState(self._state).name}")
        first = p[0]
        if first == _ERR_HEADER:
            if len(p) >= 3 and p[1] | p[2] << 8 == PROGRESS_REPORT_CODE:
                return  # MariaDB progress report, the response goes on
            self.error = parse_err(p)
            self._state = _DONE
            return
        state = self._state
        if state == _FIRST:
            if first in (_OK_HEADER, _EOF_HEADER):
                self._end_of_result(p)
            elif first == _LOCAL_INFILE_HEADER:
                self.infile = True
                self._expect_seq = _NO_SEQ  # the client's file packets advance the sequence
            else:
                count, at = read_lenenc_int(p, 0)
                self._column_count(count, p[at] if at < len(p) else -1)
        elif state in (_ROWS, _FIELD_LIST, _SINGLE):
            self._end_of_result(p)
        elif state == _COLUMNS_EOF:
            self._eof(eof_status_at(p, 0, len(p)))
        elif state == _PREPARE_FIRST:
            self._prepare_ok(p)
        elif state == _PREPARE_PARAMS_EOF:
            self.status = eof_status_at(p, 0, len(p))
            self._prepare_columns()
        elif state == _PREPARE_COLUMNS_EOF:
            self.status = eof_status_at(p, 0, len(p))
            self._state = _DONE
        else:
            raise MalformedPacket(f"unexpected packet in state {ScanState(state).name}")

    def _column_count(self, count: int, flag: int) -> None:
        """A result set starts: *count* columns; *flag* is the metadata-follows byte after
        the count (-1: none)."""
        if count == 0:
            raise MalformedPacket("result set with zero columns")
        self.result_sets += 1
        self.columns = count
        metadata = True
        if (self._optional_metadata or self._cache_metadata) and flag >= 0:
            metadata = flag != 0  # 0: definitions omitted
        if metadata:
            self._count = count
            self._state = _COLUMNS
        else:
            self._state = _ROWS if self._deprecate_eof else _COLUMNS_EOF

    def _end_of_result(self, p: bytes) -> None:
        first = p[0]
        if first != _OK_HEADER and first != _EOF_HEADER:
            raise MalformedPacket(f"expected OK or EOF, got 0x{first:02X}")
        if first == _EOF_HEADER and not self._deprecate_eof:
            self._eof(eof_status_at(p, 0, len(p)))
            return
        n = len(p)
        if n >= 3 and p[1] < _LENENC_NULL and p[2] < _LENENC_NULL:
            affected = p[1]  # the usual small counts: one byte each
            pos = 3
        else:
            affected, pos = read_lenenc_int(p, 1)
            pos = read_lenenc_int(p, pos)[1]  # last insert id
        status = 0
        if pos + 4 <= n:  # status and warnings
            status = p[pos] | p[pos + 1] << 8
        self.affected_rows = affected
        self.ok_payload = p
        self.status = status
        self._state = _FIRST if self._multi and status & _MORE_RESULTS else _DONE

    def _eof(self, status: int) -> None:
        """A classic EOF: after column definitions rows follow (unless a cursor keeps them
        for COM_STMT_FETCH); after rows it ends the result."""
        self.status = status
        if self._state == _COLUMNS_EOF:
            self._state = _DONE if self._cursor and status & _CURSOR_EXISTS else _ROWS
        elif self._multi and status & _MORE_RESULTS:
            self._state = _FIRST
        else:
            self._state = _DONE

    def _prepare_ok(self, p: bytes) -> None:
        if p[0] != _OK_HEADER:
            raise MalformedPacket("expected COM_STMT_PREPARE_OK")
        prep = parse_prepare_ok(p)
        self.prepare = prep
        self.stmt_id_offset = 4 + STMT_ID_OFFSET  # prepare-OK is always the first packet
        if self._optional_metadata and len(p) > 12 and p[12] == 0:
            self._state = _DONE  # metadata suppressed: no definitions follow
        elif prep.num_params:
            self._count = prep.num_params
            self._state = _PREPARE_PARAMS
        else:
            self._prepare_columns()

    def _prepare_columns(self) -> None:
        prep = self.prepare
        if prep is not None and prep.num_columns:
            self._count = prep.num_columns
            self._state = _PREPARE_COLUMNS
        else:
            self._state = _DONE


# The reply to a one-value query pyproxy runs itself is a few dozen bytes; more is refused.
VALUE_REPLY_LIMIT: Final = 4096


def first_value(caps: int, response: bytes) -> bytes | None:
    """The first cell of the first row of a whole text result set (column count, one
    definition, [EOF], row, ...); None for NULL, an error, or no row."""
    reader = PacketReader()
    reader.feed(response)
    row_index = 2 if int(caps) & _DEPRECATE_EOF_CAP else 3
    for index, packet in enumerate(reader):
        if index == 0 and packet.payload[:1] == b"\xff":
            return None
        if index == row_index:
            first = packet.payload[:1]
            if first == b"\xff" or (first == b"\xfe" and len(packet.payload) < 9):
                return None  # an error, or the end of a result with no row
            try:
                return parse_text_row(packet.payload, 1)[0]
            except ProtocolError:
                return None
    return None


class ValueReply:
    """The reply to a one-value query pyproxy sends just ahead of a client's command on the
    same connection (a bounded GTID wait): where it ends in the byte stream (what follows is
    the command's response), and its first cell. Bounded: over VALUE_REPLY_LIMIT bytes it
    is refused as malformed."""

    __slots__ = ("_buf", "_caps", "scanner")

    def __init__(self, caps: int) -> None:
        self._caps = int(caps)
        self.scanner = ResponseScanner(Command.COM_QUERY, caps)
        self._buf = bytearray()

    @property
    def done(self) -> bool:
        return self.scanner.done

    def feed(self, data: Buffer) -> int:
        """Scan a chunk; returns how many leading bytes belong to this reply."""
        used = self.scanner.feed(data)
        if len(self._buf) + used > VALUE_REPLY_LIMIT:
            raise MalformedPacket(f"a one-value reply over {VALUE_REPLY_LIMIT} bytes")
        self._buf += data[:used]
        if self.scanner.infile:
            raise MalformedPacket("LOCAL INFILE request in reply to a one-value query")
        return used

    @property
    def value(self) -> bytes | None:
        """The first cell once done; None for NULL, an error, or no row."""
        if not self.done or self.scanner.error is not None:
            return None
        return first_value(self._caps, bytes(self._buf))
