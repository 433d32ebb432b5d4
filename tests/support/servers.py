"""Test helpers that act on the lab's servers directly, as root: a statement's rows, a status
variable, a delayed replica."""

from __future__ import annotations

import contextlib
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


def set_delay(lab: Lab, node: str, seconds: int) -> None:
    """The replica applies everything `seconds` late (MASTER_DELAY; 0: as soon as it can)."""
    root = lab.connect_root(node)
    with root.cursor() as cur:
        cur.execute("STOP SLAVE")
        cur.execute(f"CHANGE MASTER TO MASTER_DELAY = {seconds}")
        cur.execute("START SLAVE")
    root.close()


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
