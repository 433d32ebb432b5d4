"""`pyproxy verify`: every node against the writer: tables, columns, rows, checksums, GTIDs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pymysql

from proxy.routing.gtid import contains as gtid_contains
from proxy.tools.nodes import Endpoint, ToolError, describe
from proxy.tools.stats import table

SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")
ATTEMPTS = 3  # a table that differs is compared again after the node catches up
RECHECK_WAIT_S = 2.0
SHOWN_CHUNKS = 3
_INT_TYPES = ("tinyint", "smallint", "mediumint", "int", "bigint")


@dataclass(frozen=True)
class VerifyOptions:
    schemas: tuple[str, ...] = ()  # empty: every non-system schema on the writer
    chunk_rows: int = 100_000  # larger tables (with an integer primary key) go chunk by chunk
    wait: float = 10.0  # how long to wait for each node to reach the writer's GTID position


@dataclass
class TableInfo:
    columns: list[str]  # "name type", in order
    est_rows: int
    int_pk: str | None  # the single integer primary key column, for chunking


@dataclass
class NodeState:
    endpoint: Endpoint
    conn: pymysql.Connection | None = None
    error: str = ""
    mariadb: bool = True
    read_only: bool = True
    gtid: str = ""
    caught_up: bool | None = None
    tables: dict[str, TableInfo] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.endpoint.name

    def query(self, sql: str, args: object = None) -> list[tuple[object, ...]]:
        assert self.conn is not None
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())


@dataclass(frozen=True)
class Fingerprint:
    rows: int
    checksum: int | None = None  # CHECKSUM TABLE
    chunks: tuple[tuple[int, int | None, int, int], ...] = ()  # (lo, hi, rows, crc) per chunk


@dataclass(frozen=True)
class Difference:
    node: str
    table: str
    detail: str


@dataclass
class VerifyReport:
    writer: str
    nodes: list[NodeState]
    tables: list[str]
    differences: list[Difference]
    seconds: float

    @property
    def unreachable(self) -> list[NodeState]:
        return [n for n in self.nodes if n.conn is None]

    @property
    def ok(self) -> bool:
        return not self.differences and not self.unreachable

    def verdict(self) -> str:
        if self.ok:
            return (
                f"OK: {len(self.nodes)} nodes match the writer {self.writer} "
                f"({len(self.tables)} tables)"
            )
        parts = []
        by_node: dict[str, list[str]] = {}
        for d in self.differences:
            by_node.setdefault(d.node, []).append(d.table)
        for node, tables in by_node.items():
            names = sorted(set(tables))
            verb = "differs" if len(names) == 1 else "differ"
            parts.append(f"{', '.join(names)} {verb} on {node}")
        parts += [f"{n.name} unreachable" for n in self.unreachable]
        return "DIVERGED: " + "; ".join(parts)

    def lines(self) -> list[str]:
        schemas = sorted({t.split(".", 1)[0] for t in self.tables})
        out = [
            f"verify: writer {self.writer}; {len(self.nodes)} nodes, {len(self.tables)} tables "
            f"({', '.join(schemas) or 'none'}) in {self.seconds:.1f} s"
        ]
        rows = [["node", "role", "gtid", "caught up", "result"]]
        for n in self.nodes:
            mine = [d for d in self.differences if d.node == n.name]
            if n.conn is None:
                result = f"UNREACHABLE: {n.error}"
            elif n.name == self.writer:
                result = "reference"
            elif mine:
                result = f"{len(mine)} difference{'s' if len(mine) > 1 else ''}"
            else:
                result = "ok"
            caught = "-" if n.caught_up is None else ("yes" if n.caught_up else "NO")
            role = "writer" if n.name == self.writer else n.endpoint.role
            rows.append([n.name, role, n.gtid or "-", caught, result])
        out += ["  " + line for line in table(rows)]
        if self.differences:
            out.append("differences:")
            out += [f"  {d.node}: {d.table}: {d.detail}" for d in self.differences]
        out.append("result: " + self.verdict())
        return out


def verify(endpoints: list[Endpoint], options: VerifyOptions) -> VerifyReport:
    started = time.monotonic()
    nodes = [NodeState(e) for e in endpoints]
    try:
        for n in nodes:
            _inspect(n)
        reachable = [n for n in nodes if n.conn is not None]
        if not reachable:
            detail = "; ".join(f"{n.name} ({n.endpoint.where}): {n.error}" for n in nodes)
            raise ToolError(f"cannot reach any server: {detail}")
        writer = _writer(nodes)
        for n in reachable:
            _load_tables(n, options.schemas)
        diffs: list[Difference] = []
        others = [n for n in reachable if n is not writer]
        for n in others:
            n.caught_up = _wait_caught_up(writer, n, options.wait)
        names = sorted(writer.tables)
        for name in names:
            for n in others:
                detail = _compare_table(writer, n, name, options)
                if detail:
                    diffs.append(Difference(n.name, name, detail))
        for n in others:
            for name in sorted(set(n.tables) - set(writer.tables)):
                diffs.append(Difference(n.name, name, "exists here but not on the writer"))
        for n in others:
            if not n.caught_up and not any(d.node == n.name for d in diffs):
                diffs.append(
                    Difference(
                        n.name,
                        "(gtid)",
                        f"behind the writer ({writer.gtid}) after {options.wait:g} s",
                    )
                )
        return VerifyReport(writer.name, nodes, names, diffs, time.monotonic() - started)
    finally:
        for n in nodes:
            if n.conn is not None:
                n.conn.close()


def _inspect(n: NodeState) -> None:
    try:
        n.conn = n.endpoint.connect(timeout=3.0, read_timeout=300.0)
        version = str(n.query("SELECT VERSION()")[0][0])
        n.mariadb = "MariaDB" in version
        n.read_only = bool(int(str(n.query("SELECT @@GLOBAL.read_only")[0][0])))
        n.gtid = _gtid(n)
    except (pymysql.MySQLError, OSError) as exc:
        n.error = describe(exc)
        if n.conn is not None:
            n.conn.close()
        n.conn = None


def _gtid(n: NodeState) -> str:
    var = "gtid_current_pos" if n.mariadb else "gtid_executed"
    return str(n.query(f"SELECT @@GLOBAL.{var}")[0][0] or "").replace("\n", "")


def _writer(nodes: list[NodeState]) -> NodeState:
    masters = [n for n in nodes if n.endpoint.role == "master"]
    writable = [n for n in masters if n.conn is not None and not n.read_only]
    if len(writable) == 1:
        return writable[0]
    if not writable:
        states = "; ".join(
            f"{n.name} " + (f"unreachable: {n.error}" if n.conn is None else "read_only")
            for n in masters
        )
        raise ToolError(f"no writable master to compare with ({states})")
    names = ", ".join(n.name for n in writable)
    raise ToolError(f"more than one writable master ({names}): fix that before verifying")


def _load_tables(n: NodeState, schemas: tuple[str, ...]) -> None:
    where = "TABLE_SCHEMA NOT IN %s"
    args: list[object] = [SYSTEM_SCHEMAS]
    if schemas:
        where += " AND TABLE_SCHEMA IN %s"
        args.append(schemas)
    base = n.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES "
        f"WHERE TABLE_TYPE = 'BASE TABLE' AND {where}",
        args,
    )
    tables = {f"{s}.{t}": TableInfo([], int(str(r)), None) for s, t, r in base}
    for s, t, col, ctype, key in n.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, COLUMN_KEY "
        f"FROM information_schema.COLUMNS WHERE {where} "
        "ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
        args,
    ):
        info = tables.get(f"{s}.{t}")
        if info is not None:
            info.columns.append(f"{col} {ctype}")
            if key == "PRI":
                info.int_pk = str(col) if info.int_pk is None else "-"  # "-": composite key
                if str(ctype).split("(")[0].split()[0].lower() not in _INT_TYPES:
                    info.int_pk = "-"
    for info in tables.values():
        if info.int_pk == "-":
            info.int_pk = None
    n.tables = tables


def _caught_up(writer: NodeState, n: NodeState) -> bool:
    n.gtid = _gtid(n)
    if n.mariadb:
        return gtid_contains(n.gtid, writer.gtid)
    return bool(n.query("SELECT GTID_SUBSET(%s, @@GLOBAL.gtid_executed)", (writer.gtid,))[0][0])


def _wait_caught_up(writer: NodeState, n: NodeState, timeout: float) -> bool:
    writer.gtid = _gtid(writer)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if _caught_up(writer, n):
                return True
        except (pymysql.MySQLError, ValueError):
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _compare_table(writer: NodeState, n: NodeState, name: str, options: VerifyOptions) -> str:
    """'' when the node's copy of the table matches the writer's, else what differs."""
    want = writer.tables[name]
    have = n.tables.get(name)
    if have is None:
        return "missing on this node"
    if have.columns != want.columns:
        return _column_difference(want.columns, have.columns)
    detail = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            # Writes may still be arriving: compare again once the node has what the writer has.
            _wait_caught_up(writer, n, RECHECK_WAIT_S)
        try:
            ref = _fingerprint(writer, name, want, options, None)
            got = _fingerprint(n, name, want, options, ref)
        except pymysql.MySQLError as exc:
            return f"cannot read it: {describe(exc)}"
        detail = _describe_difference(ref, got, want.int_pk)
        if not detail:
            return ""
    return detail


def _column_difference(want: list[str], have: list[str]) -> str:
    missing = [c for c in want if c not in have]
    extra = [c for c in have if c not in want]
    parts = []
    if missing:
        parts.append("lacks column " + ", ".join(c.split()[0] for c in missing))
    if extra:
        parts.append("has extra column " + ", ".join(c.split()[0] for c in extra))
    return "columns differ: " + ("; ".join(parts) or "same columns in another order/type")


def _quoted(name: str) -> str:
    schema, tbl = name.split(".", 1)
    return f"`{schema}`.`{tbl}`"


def _fingerprint(
    n: NodeState, name: str, info: TableInfo, options: VerifyOptions, ref: Fingerprint | None
) -> Fingerprint:
    fq = _quoted(name)
    chunked = info.int_pk is not None and (
        (ref is not None and bool(ref.chunks))
        or (ref is None and info.est_rows > options.chunk_rows)
    )
    if not chunked:
        rows = int(str(n.query(f"SELECT COUNT(*) FROM {fq}")[0][0]))
        checksum = n.query(f"CHECKSUM TABLE {fq}")[0][1]
        return Fingerprint(rows, None if checksum is None else int(str(checksum)))
    assert info.int_pk is not None
    pk = f"`{info.int_pk}`"
    bounds = (
        [(c[0], c[1]) for c in ref.chunks] if ref is not None else _chunk_bounds(n, fq, pk, options)
    )
    cols = [c.split()[0] for c in info.columns]
    row_crc = (
        "CRC32(CONCAT_WS('#', "
        + ", ".join(f"`{c}`" for c in cols)
        + ", CONCAT("
        + ", ".join(f"ISNULL(`{c}`)" for c in cols)
        + ")))"
    )
    chunks = []
    for lo, hi in bounds:
        where = f"{pk} >= %s" + (f" AND {pk} <= %s" if hi is not None else "")
        args = (lo, hi) if hi is not None else (lo,)
        count, crc = n.query(
            f"SELECT COUNT(*), COALESCE(BIT_XOR({row_crc}), 0) FROM {fq} WHERE {where}", args
        )[0]
        chunks.append((lo, hi, int(str(count)), int(str(crc))))
    return Fingerprint(sum(c[2] for c in chunks), None, tuple(chunks))


def _chunk_bounds(
    n: NodeState, fq: str, pk: str, options: VerifyOptions
) -> list[tuple[int, int | None]]:
    """Key ranges of about chunk_rows rows each, from the writer; the first and the last are
    open-ended so that rows a node has beyond the writer's keys are counted too."""
    step = max(1, options.chunk_rows)
    bounds: list[tuple[int, int | None]] = []
    lo = -(2**63)
    while True:
        row = n.query(
            f"SELECT {pk} FROM {fq} WHERE {pk} >= %s ORDER BY {pk} LIMIT 1 OFFSET %s", (lo, step)
        )
        if not row:
            bounds.append((lo, None))
            return bounds
        nxt = int(str(row[0][0]))
        bounds.append((lo, nxt - 1))
        lo = nxt


def _describe_difference(ref: Fingerprint, got: Fingerprint, pk: str | None) -> str:
    if ref == got:
        return ""
    rows = f"{got.rows} row{'s' * (got.rows != 1)}"
    parts = [f"{rows} (writer {ref.rows})" if got.rows != ref.rows else rows]
    if ref.chunks:
        bad = [(w, h) for w, h in zip(ref.chunks, got.chunks, strict=True) if w[2:] != h[2:]]
        shown = []
        for w, h in bad[:SHOWN_CHUNKS]:
            lo = "min" if w[0] == -(2**63) else str(w[0])
            hi = "max" if w[1] is None else str(w[1])
            shown.append(f"{pk} {lo}..{hi} ({h[2]} rows, writer {w[2]})")
        more = f" and {len(bad) - SHOWN_CHUNKS} more" if len(bad) > SHOWN_CHUNKS else ""
        parts.append(f"{len(bad)} of {len(ref.chunks)} chunks differ: " + ", ".join(shown) + more)
    else:
        parts.append(f"checksum {got.checksum} (writer {ref.checksum})")
    return ", ".join(parts)
