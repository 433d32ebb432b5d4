"""Test helpers that act on the lab's servers directly, as root: a statement's rows, a status
variable, a delayed replica."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pymysql
import pymysql.cursors

from proxy.lab.lab import Lab


def root_rows(lab: Lab, node: str, sql: str) -> list[tuple[object, ...]]:
    """sql run as root on one server of the lab: its rows."""
    conn = lab.connect_root(node)
    try:
        with conn.cursor(pymysql.cursors.Cursor) as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def global_status(lab: Lab, node: str, name: str) -> str:
    """One of a server's SHOW GLOBAL STATUS values (Com_stmt_prepare, ...), as root."""
    return str(root_rows(lab, node, f"SHOW GLOBAL STATUS LIKE '{name}'")[0][1])


def root_execute(lab: Lab, node: str, *statements: str) -> None:
    """statements run as root, in order, on one server of the lab."""
    conn = lab.connect_root(node)
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    finally:
        conn.close()


# START SLAVEs set_delay tries before it gives up (one in 100 comes out a second short).
DELAY_STARTS = 20


def set_delay(lab: Lab, node: str, seconds: int) -> None:
    """The replica applies everything `seconds` late (MASTER_DELAY; 0: as soon as it can).

    A delay is checked to be in force: the replica measures its clock against its master's
    in whole seconds at START SLAVE, and some starts (2 in 200 seen here, MariaDB 10.11)
    come out a second short (MASTER_DELAY = 1 then delays nothing). Such a start is
    redone: a test that relies on the delayed replica must not pass or fail by that chance.
    """
    for _ in range(DELAY_STARTS):
        root_execute(
            lab, node, "STOP SLAVE", f"CHANGE MASTER TO MASTER_DELAY = {seconds}", "START SLAVE"
        )
        if seconds == 0 or _applied_after(lab, node, seconds) > seconds - 0.5:
            return
    raise AssertionError(
        f"{node}: MASTER_DELAY = {seconds} not in force after {DELAY_STARTS} starts"
    )


def _applied_after(lab: Lab, node: str, seconds: int) -> float:
    """Seconds the replica took to apply a change made on its master now (after a first
    change, which a replica may apply at once just after it started)."""
    with contextlib.ExitStack() as stack:
        # Root connections autocommit: each poll sees what is applied now, not a snapshot.
        replica = stack.enter_context(contextlib.closing(lab.connect_root(node)))
        with replica.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("SHOW SLAVE STATUS")
            port = (cur.fetchone() or {}).get("Master_Port")
        nodes = lab.topology().nodes
        source = next((n.name for n in nodes if (n.advertised_port or n.port) == port), None)
        assert source is not None, f"{node} replicates from no lab node (port {port})"
        master = stack.enter_context(contextlib.closing(lab.connect_root(source)))
        with master.cursor() as cur:
            cur.execute("CREATE DATABASE IF NOT EXISTS pyproxy_probe")
            cur.execute(
                "CREATE TABLE IF NOT EXISTS pyproxy_probe.delay (id INT PRIMARY KEY, n BIGINT)"
            )
        elapsed = 0.0
        for _ in range(2):
            token = time.monotonic_ns()
            with master.cursor() as cur:
                cur.execute("REPLACE INTO pyproxy_probe.delay VALUES (1, %s)", (token,))
            start = time.monotonic()
            while True:
                with replica.cursor(pymysql.cursors.DictCursor) as cur:
                    try:
                        cur.execute("SELECT n FROM pyproxy_probe.delay WHERE id = 1")
                        row = cur.fetchone()
                    except pymysql.err.ProgrammingError:  # not created there yet
                        row = None
                elapsed = time.monotonic() - start
                if row is not None and row["n"] == token:
                    break
                assert elapsed < seconds * 2 + 30, f"{node} did not apply a change"
                time.sleep(0.01)
        return elapsed


@contextlib.contextmanager
def delayed_replicas(lab: Lab, nodes: tuple[str, ...], seconds: int) -> Iterator[Lab]:
    """These replicas apply everything `seconds` late while the block runs."""
    for node in nodes:
        set_delay(lab, node, seconds)
    try:
        yield lab
    finally:
        for node in nodes:
            set_delay(lab, node, 0)
