"""Multi-MB statements running in a worker neither make its report too big to send (their
text is cut in stats_mysql_processlist, their digest text in stats_mysql_query_digest) nor,
were it too big, cost the worker."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pymysql

from proxy.channel import MAX_MESSAGE
from proxy.lab.lab import Lab
from proxy.report import INFO_MAX_CHARS
from tests.support.proxyproc import LabProxy, lab_proxy

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


def _long_statements(proxy: LabProxy, first: int, count: int) -> None:
    """count distinct statements of about 60 KB (unknown columns: the server refuses them
    at once, the digest is taken all the same)."""
    conn = proxy.connect()
    try:
        with conn.cursor() as cur:
            for i in range(first, first + count):
                columns = ",".join(f"c{i}_{j}" for j in range(6000))
                with contextlib.suppress(pymysql.MySQLError):
                    cur.execute(f"SELECT COALESCE({columns})")
    finally:
        conn.close()


def test_digest_text_is_cut_at_max_digest_length(lab: Lab, tmp_path: Path) -> None:
    """Long distinct statements keep at most mysql-query_digests_max_digest_length (2048)
    characters each in stats_mysql_query_digest, and the admin's SET + LOAD MYSQL VARIABLES
    TO RUNTIME changes the cut for new digests; every worker still reports."""
    with lab_proxy(lab, tmp_path, workers=2) as proxy:
        _long_statements(proxy, 0, 40)
        sql = (
            "SELECT digest_text FROM stats_mysql_query_digest "
            "WHERE digest_text LIKE 'select coalesce(c%'"
        )
        lengths = sorted(len(r["digest_text"]) for r in proxy.admin_rows(sql))
        assert lengths == [2048] * 40, lengths
        proxy.admin_rows("SET mysql-query_digests_max_digest_length = '100'")
        proxy.admin_rows("LOAD MYSQL VARIABLES TO RUNTIME")
        _long_statements(proxy, 40, 5)
        lengths = sorted(len(r["digest_text"]) for r in proxy.admin_rows(sql))
        assert lengths == [100] * 5 + [2048] * 40, lengths
        workers = proxy.admin_rows("SELECT worker FROM stats_pyproxy_workers")
        assert sorted(int(r["worker"]) for r in workers) == [0, 1], proxy.log_tail()
        assert "gave no report" not in proxy.log_text()
        assert proxy.answers()
