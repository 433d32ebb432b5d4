"""Multi-MB statements running in a worker neither make its report too big to send (their
text is cut in stats_mysql_processlist) nor, were it too big, cost the worker."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pymysql

from proxy.channel import MAX_MESSAGE
from proxy.lab.lab import Lab
from proxy.report import INFO_MAX_CHARS
from tests.support.proxyproc import lab_proxy

SESSIONS = 10


def test_admin_query_while_huge_statements_run_kills_no_worker(lab: Lab, tmp_path: Path) -> None:
    """SESSIONS statements of more than MAX_MESSAGE / SESSIONS bytes running in one worker:
    the admin's stats_mysql_processlist lists every one (text cut at INFO_MAX_CHARS); the
    clients running them get their results; the worker stays the same process."""
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
            rows = proxy.admin_rows("SELECT info FROM stats_mysql_processlist")
            running = [r["info"] for r in rows if "SLEEP(6)" in (r["info"] or "")]
            assert len(running) == SESSIONS, proxy.log_tail()
            assert all(len(info) == INFO_MAX_CHARS for info in running)
        finally:
            for t in threads:
                t.join(60)
            for c in conns:
                c.close()
        assert results == [(0, len(literal))] * SESSIONS, proxy.log_tail()
        assert proxy.listening_pids() == pids
        assert proxy.answers()
