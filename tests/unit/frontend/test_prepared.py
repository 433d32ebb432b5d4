"""ClientStmt.frame: a client's COM_STMT_EXECUTE framed for a backend statement; the id a
new statement gets."""

from __future__ import annotations

import struct

import pytest

from proxy.backend.connection import BackendStmt
from proxy.frontend.prepared import ClientStmt, _client_id
from proxy.protocol.constants import Command
from proxy.protocol.packets import build_packet
from proxy.routing.classifier import Classifier

LONGLONG, VAR_STRING = b"\x08\x00", b"\xfd\x00"


def _client_stmt(num_params: int) -> ClientStmt:
    sql = "SELECT * FROM t WHERE a = ? AND b = ?" if num_params else "SELECT 1"
    digest, stmt = Classifier(tokenizer="regex").classify(sql)
    return ClientStmt(sql, digest, stmt, num_params=num_params, num_columns=1)


def _execute(stmt_id: int, nulls: bytes, types: bytes | None, values: bytes) -> bytes:
    """COM_STMT_EXECUTE payload: id, flags, iteration count, NULL bitmap, bound flag..."""
    head = bytes((Command.COM_STMT_EXECUTE,)) + struct.pack("<IBI", stmt_id, 0, 1) + nulls
    if types is None:
        return head + b"\x00" + values
    return head + b"\x01" + types + values


VALUES = struct.pack("<q", 7) + b"\x03abc"


def _rewrite_execute(payload: bytes, cs: ClientStmt, bs: BackendStmt) -> bytes:
    """The payload cs.frame sends (its frame checked: one packet, sequence 0)."""
    frame = cs.frame(payload, bs)
    assert frame[:4] == build_packet(0, frame[4:])[:4]
    return frame[4:]


def test_statement_id_replaced_and_types_kept() -> None:
    cs, bs = _client_stmt(2), BackendStmt(stmt_id=900, num_params=2, num_columns=1)
    types = LONGLONG + VAR_STRING
    out = _rewrite_execute(_execute(1, b"\x00", types, VALUES), cs, bs)
    assert out == _execute(900, b"\x00", types, VALUES)
    assert cs.param_types == types and bs.bound_types == types


def test_types_put_back_for_a_backend_statement_that_lacks_them() -> None:
    cs = _client_stmt(2)
    types = LONGLONG + VAR_STRING
    first = BackendStmt(stmt_id=5, num_params=2, num_columns=1)
    _rewrite_execute(_execute(1, b"\x00", types, VALUES), cs, first)
    # The client sends no types again; a statement on another backend never saw them.
    other = BackendStmt(stmt_id=6, num_params=2, num_columns=1)
    out = _rewrite_execute(_execute(1, b"\x00", None, VALUES), cs, other)
    assert out == _execute(6, b"\x00", types, VALUES)
    assert other.bound_types == types
    # The same backend statement again: it has them, the packet stays as the client sent it.
    assert _rewrite_execute(_execute(1, b"\x00", None, VALUES), cs, other) == _execute(
        6, b"\x00", None, VALUES
    )


def test_new_types_replace_the_old_ones() -> None:
    cs, bs = _client_stmt(2), BackendStmt(stmt_id=5, num_params=2, num_columns=1)
    _rewrite_execute(_execute(1, b"\x00", LONGLONG + LONGLONG, b""), cs, bs)
    _rewrite_execute(_execute(1, b"\x00", VAR_STRING + VAR_STRING, b""), cs, bs)
    assert cs.param_types == bs.bound_types == VAR_STRING + VAR_STRING


def test_no_types_known_yet_leaves_the_packet() -> None:
    cs, bs = _client_stmt(2), BackendStmt(stmt_id=5, num_params=2, num_columns=1)
    out = _rewrite_execute(_execute(1, b"\x03", None, b""), cs, bs)  # both NULL
    assert out == _execute(5, b"\x03", None, b"")
    assert cs.param_types is None and bs.bound_types is None


def test_no_parameters_and_malformed_packets_only_get_the_id() -> None:
    bs = BackendStmt(stmt_id=0x01020304, num_params=0, num_columns=1)
    payload = bytes((Command.COM_STMT_EXECUTE,)) + struct.pack("<IBI", 1, 0, 1)
    assert _rewrite_execute(payload, _client_stmt(0), bs)[1:5] == b"\x04\x03\x02\x01"
    # Too short to hold the bound flag: the server will refuse it, not the proxy.
    short = payload + b"\x00"
    assert (
        _rewrite_execute(short, _client_stmt(2), bs) == short[:1] + b"\x04\x03\x02\x01" + short[5:]
    )


def test_same_statement_id_relays_the_payload_as_it_came() -> None:
    cs, bs = _client_stmt(2), BackendStmt(stmt_id=3, num_params=2, num_columns=1)
    types = LONGLONG + VAR_STRING
    first = _execute(3, b"\x00", types, VALUES)
    assert cs.frame(first, bs) == build_packet(0, first)  # types still learned
    assert cs.param_types == bs.bound_types == types
    again = _execute(3, b"\x00", None, VALUES)
    assert cs.frame(again, bs) == build_packet(0, again)
    # A backend statement with the client's id that never saw the types still gets them.
    fresh = BackendStmt(stmt_id=3, num_params=2, num_columns=1)
    assert _rewrite_execute(again, cs, fresh) == _execute(3, b"\x00", types, VALUES)


def test_same_statement_id_sends_the_clients_own_frame() -> None:
    cs, bs = _client_stmt(2), BackendStmt(stmt_id=3, num_params=2, num_columns=1)
    types = LONGLONG + VAR_STRING
    first = _execute(3, b"\x00", types, VALUES)
    wire = build_packet(0, first)
    assert cs.frame(first, bs, wire) is wire  # not copied
    again = _execute(3, b"\x00", None, VALUES)
    wire = build_packet(0, again)
    assert cs.frame(again, bs, wire) is wire
    # Types to put back, or another backend id: framed anew, the client's frame unused.
    fresh = BackendStmt(stmt_id=3, num_params=2, num_columns=1)
    assert cs.frame(again, fresh, wire) == build_packet(0, _execute(3, b"\x00", types, VALUES))
    other = BackendStmt(stmt_id=4, num_params=2, num_columns=1)
    other.bound_types = types
    assert cs.frame(again, other, wire) == build_packet(0, _execute(4, b"\x00", None, VALUES))


@pytest.mark.parametrize(
    ("used", "next_id", "backend_id", "expected"),
    [
        ([], 1, 7, 7),  # the backend's id, free in the session: taken as is
        ([7], 1, 7, 1),  # taken: the next unused one
        ([1, 2, 7], 1, 7, 3),
        ([], 5, 3, 5),  # below the ids handed out already (3 may have been closed): not again
        ([], 1, 0, 1),  # 0 and 0xFFFFFFFF (MariaDB's "the last prepared") never go out
        ([], 5, 0xFFFFFFFF, 5),
    ],
)
def test_a_new_statement_gets_the_backends_id_when_it_is_free(
    used: list[int], next_id: int, backend_id: int, expected: int
) -> None:
    stmts = {i: _client_stmt(0) for i in used}
    assert _client_id(stmts, next_id, backend_id) == expected


def test_cached_head_follows_the_payload_size_and_the_backend_statement() -> None:
    cs = _client_stmt(2)
    bs = BackendStmt(stmt_id=7, num_params=2, num_columns=1)
    types = LONGLONG + VAR_STRING
    for values in (VALUES, VALUES, VALUES + b"\x00" * 300, VALUES):
        payload = _execute(1, b"\x00", types, values)
        assert cs.frame(payload, bs) == build_packet(0, _execute(7, b"\x00", types, values))
    other = BackendStmt(stmt_id=1, num_params=2, num_columns=1)  # the client's id: as it came
    payload = _execute(1, b"\x00", None, VALUES)
    assert cs.frame(payload, other) == build_packet(0, _execute(1, b"\x00", types, VALUES))
    assert cs.frame(payload, other) == build_packet(0, payload)
    assert cs.frame(payload, bs) == build_packet(0, _execute(7, b"\x00", None, VALUES))


def test_a_payload_of_16_mib_is_split() -> None:
    cs, bs = _client_stmt(0), BackendStmt(stmt_id=9, num_params=0, num_columns=1)
    values = b"\x00" * (0xFFFFFF - 11)
    payload = _execute(1, b"", None, values)
    assert len(payload) == 0xFFFFFF
    assert cs.frame(payload, bs) == build_packet(0, _execute(9, b"", None, values))
