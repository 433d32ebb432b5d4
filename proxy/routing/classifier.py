"""Classify SQL statements for read/write splitting: kind, session-state and pin flags."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum
from types import MappingProxyType
from typing import Literal, NamedTuple

from proxy.routing.digest import NO_HINTS, Digest, digest_id, normalize, parse_hints
from proxy.routing.functions import (
    PINNING_FUNCTIONS,
    PINNING_SYSTEM_VARIABLES,
    PREVIOUS_STATEMENT_FUNCTIONS,
    PREVIOUS_STATEMENT_VARIABLES,
    WRITING_FUNCTIONS,
    is_side_effect_free,
)
from proxy.routing.lru import LRUCache
from proxy.routing.tokens import (
    Tokenizer,
    raw_statements,
    regex_tokens,
    split_statements,
    sqlparse_tokens,
    stock_sqlparse_tokens,
)

__all__ = (
    "VALUE_PINS",
    "CachedDigest",
    "Classification",
    "Classifier",
    "StatementKind",
)


# Pin reasons for state that only its own session can see, which COM_RESET_CONNECTION
# clears: a connection pinned for these alone goes back to the pool (reset) when its session
# ends. Any other pin (locks, CALL, stored functions...) may hold what others wait for: that
# connection is closed instead.
VALUE_PINS: frozenset[str] = frozenset(
    {
        "user variable",
        "LAST_INSERT_ID()",
        "CONNECTION_ID()",
        "SQL_CALC_FOUND_ROWS",
        "sequence value of this session",
        "SQL-level prepared statement",
        "autocommit set to a value unknown here",
        "SET last_insert_id",
        "SET identity",
        "SET insert_id",
    }
)


class StatementKind(IntEnum):
    """Where a statement may run: READ on any backend, WRITE on the writer only."""

    READ = 0
    WRITE = 1


# Session variables set by SET NAMES and SET CHARACTER SET.
_CHARSET_VARS = (
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
)


@dataclass(frozen=True, slots=True)
class Classification:
    """What the router and the session layer need to know about one statement (or batch).

    Flags of a multi-statement batch are the union of its statements' flags; its kind is
    READ only if every statement is READ.
    """

    kind: StatementKind
    verb: str = ""
    """First keyword of the (first) statement, lower-case: 'select', 'insert', 'set'..."""
    is_multi_statement: bool = False

    changes_session_state: bool = False
    """Session state every backend of the session must replay (SET session vars, USE...)."""
    session_vars: tuple[str, ...] = ()
    """Names changed: system variables, or 'database' for USE, 'role' for SET ROLE."""
    replay_sql: str | None = None
    """The statement text(s) to replay on the other backends (';'-joined for a batch)."""
    next_transaction_only: bool = False
    """SET TRANSACTION without SESSION: applies to the next transaction only, wherever it
    runs; replay_sql holds it. Not session state."""

    pins_session: bool = False
    """State now lives on one backend (user variables, locks, temporary tables, SQL-level
    prepared statements, LAST_INSERT_ID()...): keep the session there. Pinning statements
    are WRITE, so the session is pinned to the writer."""
    pin_reason: str | None = None
    needs_previous_backend: bool = False
    """Reports on the previous statement (SHOW WARNINGS, ROW_COUNT(), @@warning_count...):
    must run on the backend that ran it."""

    is_ddl: bool = False
    changes_data: bool = False
    """May change data or schema (DML, DDL, CALL, a stored function, EXECUTE, a compound
    statement, anything not understood): after it, the session's reads (read-your-writes) and
    everyone's (causal) must see its commit. Implies WRITE; a pinning SELECT, SET @x, BEGIN,
    LOCK TABLES... are WRITE but change no data."""
    is_kill: bool = False
    kill_id: int | None = None
    kill_variant: str | None = None
    """'CONNECTION', 'QUERY', 'QUERY_ID' (MariaDB KILL QUERY ID) or 'USER'."""

    hint_route: str | None = None
    """From a pyproxy comment: 'writer', 'reader' or a server name. Never changes kind."""
    hint_consistency: str | None = None

    @property
    def is_read(self) -> bool:
        return self.kind is StatementKind.READ


class CachedDigest(NamedTuple):
    """One digest-cache entry: the comment-free Digest and the per-digest classification."""

    digest: Digest
    classification: Classification
    per_statement: bool
    """The classification has fields taken from literals or the statement text (SET, USE,
    KILL): re-derived from each new SQL string, since they are not in the digest."""
    replay_mask: tuple[bool, ...]
    """Per statement of the batch: whether its text belongs in replay_sql."""


class _Acc:
    """Mutable accumulator for classifying one digest; frozen into a Classification."""

    __slots__ = (
        "changes",
        "data",
        "ddl",
        "kill_id",
        "kill_variant",
        "literal_needed",
        "next_tx",
        "pin_reason",
        "pins",
        "prev_backend",
        "session_vars",
        "write",
    )

    def __init__(self) -> None:
        self.write = False  # the statement may write (each place that sets it says why)
        self.data = False  # ... and may change data or schema (see Classification)
        self.changes = False
        self.session_vars: list[str] = []
        self.next_tx = False
        self.pins = False
        self.pin_reason: str | None = None
        self.prev_backend = False
        self.ddl = False
        self.kill_id: int | None = None
        self.kill_variant: str | None = None
        self.literal_needed = False

    def pin(self, reason: str) -> None:
        self.pins = True
        if self.pin_reason is None:
            self.pin_reason = reason
        self.write = True  # the pinned backend is the writer

    def data_change(self) -> None:
        self.data = True
        self.write = True

    def stored_function(self) -> None:
        """A call of a stored (or unknown, or quoted) function: it may write, and may leave
        session state (user variables, temporary tables, locks) on its backend."""
        self.data_change()
        self.pin("stored function")

    def session_change(self, *names: str) -> None:
        self.changes = True
        for name in names:
            if name not in self.session_vars:
                self.session_vars.append(name)

    def ddl_statement(self) -> None:
        self.ddl = True
        self.data_change()


def _is_word(t: str) -> bool:
    return t[0].isalnum() or t[0] in "_$"


def _closing(tokens: list[str], i: int) -> int:
    """Index of the ')' matching the '(' at i, or len(tokens) when unbalanced."""
    depth = 0
    for j in range(i, len(tokens)):
        t = tokens[j]
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
            if depth == 0:
                return j
    return len(tokens)


def _at(tokens: list[str], i: int) -> str:
    return tokens[i] if i < len(tokens) else ""


# --- expressions -------------------------------------------------------------------------


def _scan(tokens: list[str], start: int, acc: _Acc, *, query: bool) -> None:
    """Look through expressions for pins and, in a query (`query`), anything that writes.

    A query is a statement that is READ unless something in it writes or locks:
    SELECT, WITH ... SELECT, VALUES, TABLE, DO, SHOW, SET values.
    """
    n = len(tokens)
    prev = ""
    for i in range(start, n):
        t = tokens[i]
        c = t[0]
        if c == "@":
            if t.startswith("@@"):
                name = t[2:].rsplit(".", 1)[-1]
                if name in PREVIOUS_STATEMENT_VARIABLES:
                    acc.prev_backend = True  # runs where the previous statement ran; no pin
                elif (reason := PINNING_SYSTEM_VARIABLES.get(name)) is not None:
                    acc.pin(reason)
            else:
                acc.pin("user variable")
        elif c.isalnum() or c in "_$":
            nxt = tokens[i + 1] if i + 1 < n else ""
            if nxt == "(":
                _call(tokens, i, prev, acc, query=query)
            elif prev != ".":
                _keyword(tokens, i, acc, query=query)
        elif query and (c == "`" or c == "?") and i + 1 < n and tokens[i + 1] == "(":
            # `f`(...), or "f"(...) under ANSI_QUOTES (digested as ?): a stored function, or
            # a built-in the server accepts quoted (`GET_LOCK`(...)).
            reason = PINNING_FUNCTIONS.get(t.strip("`").lower())
            if reason is not None:
                acc.pin(reason)
            else:
                acc.stored_function()
        prev = t


def _call(tokens: list[str], i: int, prev: str, acc: _Acc, *, query: bool) -> None:
    name = tokens[i]
    if prev == ".":
        if query:
            acc.stored_function()  # db.f()
        return
    if name in PREVIOUS_STATEMENT_FUNCTIONS:
        acc.prev_backend = True  # runs where the previous statement ran; no pin
        return
    reason = PINNING_FUNCTIONS.get(name)
    if reason is not None:
        acc.pin(reason)
        return
    if name in WRITING_FUNCTIONS:
        acc.data_change()  # a function that writes
        return
    if not query or is_side_effect_free(name):
        return
    if prev == "as":
        return  # derived table column list: AS t (a, b)
    j = _closing(tokens, i + 1)
    if _at(tokens, j + 1) == "as" and _at(tokens, j + 2) == "(":
        return  # CTE column list: name (a, b) AS (...)
    acc.stored_function()  # an unknown function may be a stored function


def _keyword(tokens: list[str], i: int, acc: _Acc, *, query: bool) -> None:
    t = tokens[i]
    if t == "sql_calc_found_rows":
        acc.pin("SQL_CALC_FOUND_ROWS")
    elif t in ("next", "previous") and tokens[i + 1 : i + 3] == ["value", "for"]:
        if t == "next":
            acc.data_change()  # NEXT VALUE FOR writes a sequence
        else:
            acc.pin("sequence value of this session")
    elif not query:
        return
    elif t == "into":
        acc.write = True  # INTO clause
    elif (t == "for" and _at(tokens, i + 1) in ("update", "share")) or (
        t == "lock" and _at(tokens, i + 1) == "in"
    ):
        acc.write = True  # locking read: FOR UPDATE/SHARE, LOCK IN SHARE MODE (+ NOWAIT...)
    elif t in ("update", "delete", "insert", "replace") and (i == 0 or tokens[i - 1] != "for"):
        acc.data_change()  # UPDATE/DELETE/... inside a query (not FOR UPDATE)


# --- statements ---------------------------------------------------------------------------

_QUERY_START = frozenset({"select", "with", "values", "table", "("})
_DML = frozenset({"insert", "replace", "update", "delete"})
_DDL = frozenset({"create", "alter", "drop", "rename", "truncate", "grant", "revoke"})
_MAINTENANCE_DDL = frozenset({"optimize", "repair"})
_MAINTENANCE = frozenset({"check", "checksum", "cache", "install", "uninstall"})
_ADMIN = frozenset(
    {"purge", "reset", "change", "stop", "shutdown", "restart", "binlog", "signal", "resignal"}
)
# SHOW statements describing one server (replication, binary logs, threads, engine
# internals): they must go to the server the client believes it talks to, the writer.
_SERVER_SPECIFIC_SHOW = frozenset(
    {
        "master",
        "slave",
        "slaves",
        "replica",
        "replicas",
        "binary",
        "binlog",
        "relaylog",
        "processlist",
    }
)
_SHOW_MODIFIERS = frozenset({"full", "global", "session", "local", "extended", "all"})


def _statement(tokens: list[str], acc: _Acc) -> bool:
    """Classify one statement into acc. Returns True when its text must be replayed."""
    v = tokens[0]
    if v in _QUERY_START:
        _query(tokens, acc)
    elif v in _DML:
        acc.data_change()  # DML
        _scan(tokens, 1, acc, query=False)
    elif v == "set":
        return _set(tokens, acc)
    elif v == "show":
        _show(tokens, acc)
    elif v in ("explain", "describe", "desc"):
        _explain(tokens, acc)
    elif v == "analyze":
        _analyze(tokens, acc)
    elif v == "do":
        _scan(tokens, 1, acc, query=True)
    elif v == "help":
        pass
    elif v == "use":
        acc.session_change("database")
        return True
    elif v in ("begin", "start", "commit", "rollback", "savepoint", "release", "xa"):
        _transaction(tokens, acc)
    elif v in _DDL:
        _ddl(tokens, acc)
    elif v in ("lock", "unlock", "flush", "backup", "handler"):
        _locking(tokens, acc)
    elif v in ("prepare", "execute", "deallocate"):
        if v == "execute":
            acc.data_change()  # runs text the classifier can't see
        if _at(tokens, 1) == "immediate":
            acc.pin("EXECUTE IMMEDIATE runs text the classifier can't see")
        else:
            acc.pin("SQL-level prepared statement")
    elif v == "call":
        # A procedure may do anything: write, and leave session state (user variables,
        # temporary tables, locks) that its backend connection keeps.
        acc.data_change()
        acc.pin("CALL")
        _scan(tokens, 1, acc, query=False)
    elif v == "load" and _at(tokens, 1) != "index":
        acc.data_change()  # LOAD DATA/XML
        _scan(tokens, 1, acc, query=False)
    elif v == "kill":
        _kill(tokens, acc)
    elif v in _MAINTENANCE_DDL:
        acc.ddl_statement()  # table maintenance
    elif v in _MAINTENANCE or (v == "load" and _at(tokens, 1) == "index"):
        acc.data_change()  # table maintenance
    elif v in _ADMIN:
        acc.data_change()  # server administration
    elif v == "get" and "diagnostics" in tokens[1:3]:
        acc.prev_backend = True
        _scan(tokens, 2, acc, query=False)  # GET DIAGNOSTICS @n = NUMBER sets a user variable
    else:
        acc.data_change()  # not understood
    return False


def _query(tokens: list[str], acc: _Acc) -> None:
    i = 0
    while i < len(tokens) and tokens[i] == "(":
        i += 1
    v = _at(tokens, i)
    if v == "with":
        body = _with_body(tokens, i)
        verb = _at(tokens, body) if body is not None else ""
        if verb in _DML:
            acc.data_change()  # WITH ... INSERT/UPDATE/...
            _scan(tokens, i, acc, query=False)
            return
        if verb not in _QUERY_START:
            acc.data_change()  # not understood: WITH
            return
    elif v not in _QUERY_START:
        acc.data_change()  # not understood
        return
    _scan(tokens, i, acc, query=True)


def _with_body(tokens: list[str], i: int) -> int | None:
    """Index of the statement after WITH's CTE list (tokens[i] == 'with')."""
    i += 1
    if _at(tokens, i) == "recursive":
        i += 1
    while i < len(tokens):
        i += 1  # CTE name
        if _at(tokens, i) == "(":
            i = _closing(tokens, i) + 1
        if _at(tokens, i) != "as" or _at(tokens, i + 1) != "(":
            return None
        i = _closing(tokens, i + 1) + 1
        if _at(tokens, i) != ",":
            return i
        i += 1
    return None


def _show(tokens: list[str], acc: _Acc) -> None:
    i = 1
    while _at(tokens, i) in _SHOW_MODIFIERS:
        i += 1
    what = _at(tokens, i)
    if what in ("warnings", "errors", "profile", "profiles") or (
        what == "count" and ("warnings" in tokens or "errors" in tokens)
    ):
        acc.prev_backend = True
    elif what in _SERVER_SPECIFIC_SHOW or (what == "engine" and tokens[-1] in ("status", "mutex")):
        acc.write = True  # describes one server
        return
    _scan(tokens, i, acc, query=True)


def _explain(tokens: list[str], acc: _Acc) -> None:
    i = 1
    analyze = False
    while i < len(tokens):
        t = tokens[i]
        if t == "analyze":
            analyze = True
            i += 1
        elif t in ("extended", "partitions", "verbose"):
            i += 1
        elif t == "format" and _at(tokens, i + 1) == "=":
            i += 3
        elif t == "into" and _at(tokens, i + 1).startswith("@"):
            acc.pin("user variable")  # MySQL 8.3: EXPLAIN FORMAT=JSON INTO @v
            i += 2
        elif t == "for" and _at(tokens, i + 1) == "connection":
            acc.write = True  # EXPLAIN FOR CONNECTION describes one server
            return
        else:
            break
    inner = tokens[i:]
    if not inner:
        acc.data_change()  # not understood: EXPLAIN
    elif analyze:
        _statement(inner, acc)  # EXPLAIN ANALYZE executes the statement
    # Otherwise nothing is executed: DESCRIBE t, EXPLAIN SELECT/UPDATE ... are READ.


def _analyze(tokens: list[str], acc: _Acc) -> None:
    i = 1
    if _at(tokens, i) == "format" and _at(tokens, i + 1) == "=":
        i += 3
    if _at(tokens, i) in ("table", "tables", "no_write_to_binlog", "local"):
        acc.ddl_statement()  # table maintenance
    elif i < len(tokens):
        _statement(tokens[i:], acc)  # MariaDB ANALYZE <statement> executes it
    else:
        acc.data_change()  # not understood: ANALYZE


def _transaction(tokens: list[str], acc: _Acc) -> None:
    modes = tokens[2:]
    if tokens[0] == "begin" and _at(tokens, 1) == "not":
        acc.data_change()  # compound statement
        _scan(tokens, 1, acc, query=False)
    elif tokens[0] != "start" or _at(tokens, 1) != "transaction":
        # BEGIN, COMMIT, ROLLBACK, XA, SAVEPOINT, RELEASE; START SLAVE / REPLICA / GROUP_...
        acc.write = True
    elif "only" not in modes or "write" in modes:
        acc.write = True  # START TRANSACTION; READ ONLY stays READ: it may run on a replica


def _ddl(tokens: list[str], acc: _Acc) -> None:
    v = tokens[0]
    second = _at(tokens, 1)
    if v == "drop" and second == "prepare":
        acc.pin("SQL-level prepared statement")
    elif second == "temporary" and v in ("create", "drop"):
        # The table exists on this backend's session only.
        acc.ddl_statement()
        acc.pin("temporary table")
    else:
        acc.ddl_statement()


def _locking(tokens: list[str], acc: _Acc) -> None:
    v = tokens[0]
    if v == "handler":
        acc.pin("HANDLER")
    elif v == "backup":
        acc.pin("BACKUP STAGE/LOCK")
    elif v == "flush":
        if "lock" in tokens or "export" in tokens:
            acc.pin("FLUSH TABLES WITH READ LOCK")
        else:
            acc.data_change()  # FLUSH
    else:
        acc.pin(f"{v.upper()} {_at(tokens, 1).upper()}".strip())


def _kill(tokens: list[str], acc: _Acc) -> None:
    acc.write = True  # KILL is handled by the session layer
    i = 1
    while _at(tokens, i) in ("hard", "soft"):
        i += 1
    variant = "CONNECTION"
    t = _at(tokens, i)
    if t == "connection":
        i += 1
    elif t == "query":
        variant = "QUERY"
        i += 1
        if _at(tokens, i) == "id":
            variant = "QUERY_ID"
            i += 1
    elif t == "user":
        variant = "USER"
    acc.kill_variant = variant
    target = _at(tokens, i)
    if variant != "USER" and i == len(tokens) - 1:
        if target == "?":
            acc.literal_needed = True
        elif target.isdigit():
            acc.kill_id = int(target)


# --- SET -----------------------------------------------------------------------------------

# SET scope keywords and @@scope. prefixes; PERSIST changes the server like GLOBAL.
_SCOPES: MappingProxyType[str, str] = MappingProxyType(
    {
        "global": "global",
        "session": "session",
        "local": "session",
        "persist": "global",
        "persist_only": "global",
    }
)
_TRUE = frozenset({"1", "on", "true", "'1'", "'on'", "'true'", '"1"', '"on"', '"true"'})
_FALSE = frozenset({"0", "off", "false", "'0'", "'off'", "'false'", '"0"', '"off"', '"false"'})


def _set(tokens: list[str], acc: _Acc) -> bool:
    """SET in all its forms. Returns True when the statement must be replayed."""
    first = _at(tokens, 1)
    second = _at(tokens, 2)
    if first == "statement":
        # MariaDB SET STATEMENT var=value [, ...] FOR <statement>: the variables apply to
        # that one statement only.
        depth = 0
        for j in range(2, len(tokens)):
            t = tokens[j]
            depth += (t == "(") - (t == ")")
            if t == "for" and depth == 0 and j + 1 < len(tokens):
                _scan(tokens[2:j], 0, acc, query=True)
                return _statement(tokens[j + 1 :], acc)
        acc.data_change()  # not understood: SET STATEMENT
        return False
    if first in ("password", "default") or (first == "resource" and second == "group"):
        acc.ddl_statement()  # account management
        return False
    if first == "role":
        acc.session_change("role")
        return True
    if first == "transaction":
        # Next transaction only: goes with the next BEGIN, which is routed to the writer.
        acc.next_tx = True
        acc.write = True  # SET TRANSACTION applies to the next transaction
        return True
    if second == "transaction" and first in _SCOPES:
        if _SCOPES[first] == "global":
            acc.write = True  # SET GLOBAL TRANSACTION
            return False
        if "isolation" in tokens:
            acc.session_change("transaction_isolation")
        if "only" in tokens or "write" in tokens:
            acc.session_change("transaction_read_only")
        return True

    replay = False
    scope = "session"  # a GLOBAL/SESSION keyword carries on to the next assignments
    items = _split_commas(tokens, 1)
    if not items:
        acc.data_change()  # not understood: SET
    for item in items:
        j = 0
        if item[0] in _SCOPES:
            scope = _SCOPES[item[0]]
            j = 1
        head = _at(item, j)
        if (
            head == "names"
            or head == "charset"
            or (head == "character" and _at(item, j + 1) == "set")
        ):
            acc.session_change(*_CHARSET_VARS)
            replay = True
            continue
        if head.startswith("@@"):
            name = head[2:]
            var_scope = "session"
            if "." in name:
                prefix, name = name.split(".", 1)
                var_scope = _SCOPES.get(prefix, "session")
        elif head.startswith("@"):
            acc.pin("user variable")
            _scan(item, j + 1, acc, query=True)
            continue
        elif head and _is_word(head):
            name = head
            var_scope = scope
        else:
            acc.data_change()  # not understood: SET
            continue
        if _at(item, j + 1) not in ("=", ":="):
            acc.data_change()  # not understood: SET
            continue
        value = item[j + 2 :]
        if var_scope == "global":
            acc.write = True  # SET GLOBAL/PERSIST changes the server
            continue
        acc.session_change(name)
        replay = True
        reason = PINNING_SYSTEM_VARIABLES.get(name)
        if reason is not None:
            acc.pin(f"SET {reason[2:]}")  # one-shot value for the next statement here
        if name == "autocommit":
            _autocommit(value, acc)
        _scan(value, 0, acc, query=True)
    return replay


def _autocommit(value: list[str], acc: _Acc) -> None:
    # On or off (? is a literal): the session reads the new value from the server's status
    # flags. A variable, DEFAULT or an expression is pinned.
    v = value[0].lower() if len(value) == 1 else ""
    if v not in _TRUE and v not in _FALSE and v != "?":
        acc.pin("autocommit set to a value unknown here")


def _split_commas(tokens: list[str], start: int) -> list[list[str]]:
    """Split tokens[start:] at commas outside parentheses, dropping empty parts."""
    items: list[list[str]] = []
    cur: list[str] = []
    depth = 0
    for t in tokens[start:]:
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
        elif t == "," and depth == 0:
            if cur:
                items.append(cur)
            cur = []
            continue
        cur.append(t)
    if cur:
        items.append(cur)
    return items


# --- whole texts -----------------------------------------------------------------------------


def _classify_tokens(tokens: list[str]) -> tuple[Classification, bool, tuple[bool, ...]]:
    """Classify a (possibly multi-statement) token list.

    Returns the classification, whether per-statement fields must be read from the SQL
    text (see CachedDigest.per_statement), and the replay mask.
    """
    acc = _Acc()
    ranges = split_statements(tokens)
    mask = tuple(_statement(tokens[a:b], acc) for a, b in ranges)
    verb = tokens[ranges[0][0]] if ranges else ""
    if verb == "(":
        verb = "select"
    replay = any(mask)
    c = Classification(
        kind=StatementKind.WRITE if acc.write else StatementKind.READ,
        verb=verb,
        is_multi_statement=len(ranges) > 1,
        changes_session_state=acc.changes,
        session_vars=tuple(acc.session_vars),
        next_transaction_only=acc.next_tx,
        pins_session=acc.pins,
        pin_reason=acc.pin_reason,
        needs_previous_backend=acc.prev_backend,
        is_ddl=acc.ddl,
        changes_data=acc.data,
        is_kill=acc.kill_variant is not None,
        kill_id=acc.kill_id,
        kill_variant=acc.kill_variant,
    )
    return c, replay or acc.literal_needed, mask


def _per_statement(c: Classification, sql: str, mask: tuple[bool, ...]) -> Classification:
    """Fill the fields the digest can't give: replay text, KILL id."""
    try:
        statements = raw_statements(sql)
        if len(statements) == len(mask):
            replay: list[str] = []
            acc = _Acc()
            for (text, tokens), wanted in zip(statements, mask, strict=True):
                if wanted:
                    replay.append(text)
                if tokens[0] == "kill":
                    _kill(tokens, acc)
            return replace(
                c,
                replay_sql="; ".join(replay) if replay else None,
                kill_id=acc.kill_id if acc.kill_id is not None else c.kill_id,
            )
    except Exception:  # a bug here must not break routing: fall through to the safe answer
        pass
    # The raw split disagrees with the digest's (not seen in fuzzing): stay on the writer.
    return replace(
        c,
        kind=StatementKind.WRITE,
        changes_data=True,
        pins_session=True,
        pin_reason=c.pin_reason or "statement not understood",
    )


_MAX_SQLPARSE_TEXT = 65536
"""Longer digest texts use the regex tokenizer: sqlparse lexes ~1.5 ms per kilobyte."""


class Classifier:
    """Digest and classify statements, with two bounded LRU caches.

    classify(sql): exact-string cache -> normalize -> digest cache -> tokenize + classify.
    Literals never change a digest's classification; what does depend on the statement
    text (SET values, USE, KILL id, hints in comments) is derived per SQL string and kept
    in the exact-string cache, never in the digest cache.
    """

    def __init__(
        self,
        cache_size: int = 10000,
        *,
        exact_cache_size: int | None = None,
        digest_cache: LRUCache[str, CachedDigest] | None = None,
        tokenizer: Literal["sqlparse", "sqlparse-stock", "regex"] = "sqlparse",
        max_exact_sql_length: int = 4096,
    ) -> None:
        self.digest_cache: LRUCache[str, CachedDigest] = (
            digest_cache if digest_cache is not None else LRUCache(cache_size)
        )
        self.exact_cache: LRUCache[str, tuple[Digest, Classification]] = LRUCache(
            exact_cache_size if exact_cache_size is not None else cache_size
        )
        # COM_QUERY payloads as they came (command byte first) -> (sql, digest, classification):
        # a hit costs no slice and no decode. Same size as the exact-string cache.
        self.payload_cache: LRUCache[bytes, tuple[str, Digest, Classification]] = LRUCache(
            self.exact_cache.maxsize
        )
        self.tokenizer = tokenizer
        self.max_exact_sql_length = max_exact_sql_length
        # Plain counters, read by metrics.
        self.exact_hits = 0
        self.exact_misses = 0
        self.digest_hits = 0
        self.digest_misses = 0
        self.sqlparse_calls = 0

    def classify(self, sql: str) -> tuple[Digest, Classification]:
        """Digest and classify one SQL text (a statement or a multi-statement batch)."""
        # Hot path: the LRU operations are inlined (method calls cost ~10% here).
        exact = self.exact_cache.data
        result = exact.get(sql)
        if result is not None:
            exact.move_to_end(sql)
            self.exact_hits += 1
            return result
        self.exact_misses += 1
        result = self._classify_sql(sql)
        if len(sql) <= self.max_exact_sql_length:
            exact[sql] = result  # a new key: appended as the most recent
            if len(exact) > self.exact_cache.maxsize:
                exact.popitem(last=False)
        return result

    def classify_query(self, payload: bytes) -> tuple[str, Digest, Classification]:
        """classify() for a COM_QUERY payload: (the SQL text, its digest, classification),
        cached by the payload's bytes, so that a repeated statement is not decoded again."""
        cache = self.payload_cache.data
        hit = cache.get(payload)
        if hit is not None:
            self.exact_hits += 1
            # Refreshed on one hit in 8, not each (move_to_end was ~10% of this call): an
            # entry hit often reaches the recent end long before it is the oldest. At worst
            # (hits in a fixed cycle of 8) a hot entry is evicted and classified again once
            # per maxsize misses.
            if not self.exact_hits & 7:
                cache.move_to_end(payload)
            return hit
        self.exact_misses += 1
        sql = payload[1:].decode("utf-8", "replace")
        digest, c = self._classify_sql(sql)
        result = (sql, digest, c)
        if len(sql) <= self.max_exact_sql_length:
            cache[payload] = result
            if len(cache) > self.payload_cache.maxsize:
                cache.popitem(last=False)
        return result

    def _classify_sql(self, sql: str) -> tuple[Digest, Classification]:
        """Digest and classification of one SQL text, past the exact caches."""
        text, comments = normalize(sql)
        digests = self.digest_cache.data
        entry = digests.get(text)
        if entry is None:
            entry = self._entry(text)
        else:
            digests.move_to_end(text)
            self.digest_hits += 1
        digest, c, per_statement, mask = entry
        if per_statement:
            c = _per_statement(c, sql, mask)
        if "\\" in sql and c.kind is StatementKind.READ:
            c = self._check_without_backslash_escapes(sql, text, c)
        if comments:
            hints = parse_hints(comments)
            digest = Digest(text, digest.id, comments, hints)
            if hints is not NO_HINTS:
                c = replace(c, hint_route=hints.route, hint_consistency=hints.consistency)
        return digest, c

    def _entry(self, text: str) -> CachedDigest:
        entry = self.digest_cache.get(text)
        if entry is None:
            self.digest_misses += 1
            entry = self._classify_text(text)
            self.digest_cache.put(text, entry)
        else:
            self.digest_hits += 1
        return entry

    def _check_without_backslash_escapes(
        self, sql: str, text: str, c: Classification
    ) -> Classification:
        """Stay READ only if the statement is also READ for a NO_BACKSLASH_ESCAPES session.

        'a\\'; DELETE ...; -- ' is one string by default but a DELETE in that sql_mode,
        which the classifier can't see; so READ must hold under both readings.
        """
        alt_text, _ = normalize(sql, backslash_escapes=False)
        if alt_text == text:
            return c
        alt = self._entry(alt_text).classification
        if alt.kind is StatementKind.READ:
            return c
        return replace(c, kind=StatementKind.WRITE, changes_data=alt.changes_data)

    def _classify_text(self, text: str) -> CachedDigest:
        if self.tokenizer != "regex" and len(text) <= _MAX_SQLPARSE_TEXT:
            self.sqlparse_calls += 1
            tokenize: Tokenizer = (
                sqlparse_tokens if self.tokenizer == "sqlparse" else stock_sqlparse_tokens
            )
        else:
            tokenize = regex_tokens
        try:
            c, per_statement, mask = _classify_tokens(tokenize(text))
        except Exception:  # a classifier bug must not break routing: go to the writer
            c = Classification(StatementKind.WRITE, changes_data=True)
            per_statement, mask = False, ()
        return CachedDigest(Digest(text, digest_id(text)), c, per_statement, mask)
