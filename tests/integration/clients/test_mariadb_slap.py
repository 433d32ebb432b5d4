"""mariadb-slap: 4 concurrent clients, auto-generated SQL in its own schema, exits cleanly."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tests.integration.clients._support import connect, drop_schema, require_tool, run, unique

if TYPE_CHECKING:
    from tests.support.endpoints import Endpoint


def test_slap_auto_generated_load(proxy_endpoint: Endpoint) -> None:
    ep = proxy_endpoint
    schema = unique("slap")
    cmd = [
        require_tool("mariadb-slap"),
        f"--host={ep.host}",
        f"--port={ep.port}",
        "--protocol=TCP",
        f"--user={ep.user}",
        f"--password={ep.password}",
        "--concurrency=4",
        "--iterations=2",
        "--number-of-queries=200",
        "--auto-generate-sql",
        f"--create-schema={schema}",
    ]
    try:
        out = run(cmd, timeout=60).stdout
    finally:
        drop_schema(ep, schema)
    assert re.search(r"Number of clients running queries: 4\b", out), out
    assert re.search(r"Average number of queries per client: 50\b", out), out
    assert re.search(r"Average number of seconds to run all queries: [\d.]+ seconds", out), out
    conn = connect(ep)
    try:
        with conn.cursor() as cur:
            cur.execute(  # another session dropped it: ask the writer (a pyproxy hint)
                "SELECT /* pyproxy:writer */ COUNT(*) FROM information_schema.schemata "
                "WHERE schema_name = %s",
                (schema,),
            )
            assert cur.fetchone() == (0,)
    finally:
        conn.close()
