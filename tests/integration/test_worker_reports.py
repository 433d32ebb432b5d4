"""A worker's report over the channel's message bound costs that report, not the worker."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pymysql

from proxy.channel import MAX_MESSAGE
from proxy.lab.lab import Lab
from tests.support.proxyproc import lab_proxy

SESSIONS = 10


def test_admin_query_while_huge_statements_run_kills_no_worker(lab: Lab, tmp_path: Path) -> None:
    """stats_mysql_processlist carries each running statement in full: SESSIONS statements
    of more than MAX_MESSAGE / SESSIONS bytes running in one worker make its report too big
    to send. The admin query still answers; the clients running them get their results; the
    worker stays the same process."""
    literal = "x" * (MAX_MESSAGE // SESSIONS + (1 << 20))
    with lab_proxy(lab, tmp_path, workers=1) as proxy:
        pids = proxy.listening_pids()
        conns = [proxy.connect(max_allowed_packet=64 << 20) for _ in range(SESSIONS)]
        results: list[object] = []
        lock = threading.Lock()

        def run(conn: pymysql.Connection) -> None:
            try:
                with conn.cursor() as cur:
                    cur.execute(f"SELECT SLEEP(6), LENGTH('{literal}')")
                    got: object = cur.fetchone()
            except pymysql.MySQLError as exc:
                got = exc
            with lock:
                results.append(got)

        threads = [threading.Thread(target=run, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        try:
            time.sleep(2)  # the statements are sent and sleeping (SLEEP(6)): running now
            rows = proxy.admin_rows("SELECT COUNT(*) AS n FROM stats_mysql_processlist")
            assert int(rows[0]["n"]) >= 0
        finally:
            for t in threads:
                t.join(60)
            for c in conns:
                c.close()
        assert results == [(0, len(literal))] * SESSIONS, proxy.log_tail()
        assert proxy.listening_pids() == pids
        assert proxy.answers()
