"""JDBC with MariaDB Connector/J and server-side prepares: params, long data, batch, keys, tx."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tests.integration.clients._support import (
    HERE,
    client_env,
    require_path,
    require_tool,
    run_json,
)

if TYPE_CHECKING:
    from tests.support.endpoints import Endpoint

CONNECTOR_J = Path("/usr/share/java/mariadb-java-client.jar")

# Which calls trigger COM_STMT_SEND_LONG_DATA in Connector/J 2.7.6, checked by disassembling
# the installed jar (`javap -c -p org.mariadb.jdbc.internal.protocol.AbstractQueryProtocol`):
# executePreparedQuery() first writes a 0x18 (COM_STMT_SEND_LONG_DATA) packet for every
# parameter whose ParameterHolder.canBeLongData() is true, then COM_STMT_EXECUTE. That is true
# for ByteArrayParameter (setBytes), StreamParameter (setBinaryStream/setBlob(InputStream)) and
# ReaderParameter (setCharacterStream), whatever their size. So both 2 MiB values in
# Client.java -- one via setBytes, one via setBinaryStream -- go out as long data.


def test_connector_j_client(
    proxy_endpoint: Endpoint, new_table: Callable[[], str], tmp_path: Path
) -> None:
    java = require_tool("java")
    require_path(CONNECTOR_J, "MariaDB Connector/J")
    t = new_table()
    blobs = [os.urandom(2 * 1024 * 1024), os.urandom(2 * 1024 * 1024)]
    files = [tmp_path / "via_set_bytes.bin", tmp_path / "via_set_binary_stream.bin"]
    for path, blob in zip(files, blobs, strict=True):
        path.write_bytes(blob)
    out = run_json(
        [java, "-cp", str(CONNECTOR_J), str(HERE / "Client.java"), t, *map(str, files)],
        timeout=90,
        env=client_env(proxy_endpoint),
    )

    assert out["driver"].startswith("2.7")
    keys = out["keys"]
    assert len(keys) == 2
    assert keys[0] < keys[1]
    sent_bytes, sent_stream = (hashlib.sha256(blob).hexdigest() for blob in blobs)
    assert out["rows"] == [[1, "bytes 🐬", sent_bytes], [None, None, sent_stream]]
    assert out["batch_counts"] == [1] * 100  # pipelined COM_STMT_EXECUTEs
    # -2 is Statement.SUCCESS_NO_INFO, what a COM_STMT_BULK_EXECUTE batch reports.
    assert len(out["bulk_counts"]) == 100
    assert set(out["bulk_counts"]) <= {1, -2}
    assert out["batch_rows"] == 200
    assert out["deleted_in_tx"] == 200
    assert out["after_rollback"] == 202
    assert out["after_commit"] == 52  # n >= 1050 went: 50 of the first batch, all the bulk one
    assert out["error"] == [1146, "42S02"]
    assert out["streamed"] == [10_000, 10_000 * 10_001 // 2, "row-10000"]
    assert out["after_stream"] == 2
