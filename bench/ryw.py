"""Read-your-writes cost: write+read pairs through pyproxy, checked reads vs eventual reads."""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import pymysql

PAIRS = 2000  # per block; blocks alternate so that machine drift cancels
BLOCKS = 3
RYW = "/* pyproxy:consistency=read_your_writes */"


def _pair_latencies(cur: Any, table: str, start: int, n: int, hint: str) -> list[float]:
    out = []
    for i in range(start, start + n):
        t0 = time.perf_counter()
        cur.execute(f"INSERT INTO {table} (id, v) VALUES (%s, 1)", (i,))
        cur.execute(f"SELECT {hint} v FROM {table} WHERE id = %s", (i,))
        cur.fetchall()
        out.append(time.perf_counter() - t0)
    return out


def run_ryw(port: int, user: str, password: str, database: str) -> dict[str, Any]:
    """Median latency of an INSERT + SELECT-by-id pair, read-your-writes vs eventual.

    Same proxy, same connection: the reads carry /* pyproxy:consistency=read_your_writes */
    or /* pyproxy:consistency=eventual */, so the difference is exactly what read-your-writes
    adds (GTID learning and the check or wait on the replica). Sessions that never write pay
    nothing: the point_select rows above are such sessions.
    """
    conn = pymysql.connect(
        host="127.0.0.1",
        port=port,
        user=user,
        password=password,
        database=database,
        autocommit=True,
    )
    table = f"ryw_bench_{uuid.uuid4().hex[:8]}"
    ryw: list[float] = []
    eventual: list[float] = []
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v INT)")
            n = 0
            for _ in range(BLOCKS):
                ryw += _pair_latencies(cur, table, n, PAIRS, RYW)
                n += PAIRS
                eventual += _pair_latencies(
                    cur, table, n, PAIRS, "/* pyproxy:consistency=eventual */"
                )
                n += PAIRS
            cur.execute(f"DROP TABLE {table}")
    finally:
        conn.close()
    med_ryw, med_ev = statistics.median(ryw), statistics.median(eventual)
    reads = _read_only_qps(port, user, password, database)
    return {
        "pairs_each": PAIRS * BLOCKS,
        "read_your_writes_pair_us": round(med_ryw * 1e6, 1),
        "eventual_pair_us": round(med_ev * 1e6, 1),
        "added_us_per_pair": round((med_ryw - med_ev) * 1e6, 1),
        **reads,
    }


def _read_only_qps(port: int, user: str, password: str, database: str) -> dict[str, float]:
    """Point-select throughput of a session that never writes, read_your_writes vs eventual: the
    read-your-writes machinery must cost such sessions nothing."""
    conn = pymysql.connect(
        host="127.0.0.1",
        port=port,
        user=user,
        password=password,
        database=database,
        autocommit=True,
    )
    qps: dict[str, list[float]] = {"read_your_writes": [], "eventual": []}
    try:
        with conn.cursor() as cur:
            for _ in range(BLOCKS):
                for mode, hint in (
                    ("read_your_writes", RYW),
                    ("eventual", "/* pyproxy:consistency=eventual */"),
                ):
                    t0 = time.perf_counter()
                    for i in range(PAIRS):
                        cur.execute(f"SELECT {hint} c FROM sbtest1 WHERE id = %s", (i % 100 + 1,))
                        cur.fetchall()
                    qps[mode].append(PAIRS / (time.perf_counter() - t0))
    finally:
        conn.close()
    return {
        "point_select_qps_read_your_writes": round(statistics.median(qps["read_your_writes"])),
        "point_select_qps_eventual": round(statistics.median(qps["eventual"])),
    }
