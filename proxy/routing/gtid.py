"""GTID positions, MariaDB (domain-server-seq) and MySQL (uuid:ranges): parse, merge, compare."""

from __future__ import annotations

# MariaDB: a position is the last seq_no applied per replication domain.
MariaPos = dict[int, int]
# MySQL: a GTID set is, per source uuid, a list of inclusive (start, end) intervals.
MySQLSet = dict[str, list[tuple[int, int]]]


def is_mariadb(pos: str) -> bool:
    return ":" not in pos


def parse_mariadb(pos: str) -> MariaPos:
    """'1-1-10,2-2-3' -> {1: 10, 2: 3} (the highest seq_no seen per domain)."""
    out: MariaPos = {}
    for part in pos.replace(" ", "").replace("\n", "").split(","):
        pieces = part.split("-")
        if len(pieces) == 3 and all(p.isdigit() for p in pieces):
            domain, seq = int(pieces[0]), int(pieces[2])
            if seq > out.get(domain, -1):
                out[domain] = seq
    return out


def parse_mysql(gtid_set: str) -> MySQLSet:
    """'uuid:1-5:7,uuid2:3' -> {uuid: [(1, 5), (7, 7)], uuid2: [(3, 3)]}."""
    out: MySQLSet = {}
    for part in gtid_set.replace(" ", "").replace("\n", "").split(","):
        if not part:
            continue
        uuid, *ranges = part.split(":")
        spans = out.setdefault(uuid.lower(), [])
        for r in ranges:
            lo, _, hi = r.partition("-")
            if lo.isdigit() and (not hi or hi.isdigit()):
                spans.append((int(lo), int(hi or lo)))
    return out


def contains(have: str, want: str) -> bool:
    """Has a server at position/set `have` applied everything in `want`?"""
    if not want:
        return True
    if is_mariadb(want):
        got = parse_mariadb(have)
        return all(got.get(d, -1) >= seq for d, seq in parse_mariadb(want).items())
    have_set = parse_mysql(have)
    for uuid, spans in parse_mysql(want).items():
        held = have_set.get(uuid, [])
        for lo, hi in spans:
            if not any(a <= lo and hi <= b for a, b in held):
                return False
    return True


def merge_mariadb(a: str, b: str) -> str:
    """The per-domain maximum of two MariaDB positions (what a server has surely applied)."""
    merged = parse_mariadb(a)
    for domain, seq in parse_mariadb(b).items():
        if seq > merged.get(domain, -1):
            merged[domain] = seq
    return ",".join(f"{d}-0-{s}" for d, s in sorted(merged.items()))
