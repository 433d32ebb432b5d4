"""The errors pyproxy itself sends, as real clients read them through the real process:
their sequence ids and error numbers are what the drivers accept."""

from __future__ import annotations

from pathlib import Path

import pymysql
import pytest

from proxy.lab.lab import Lab
from tests.support.proxyproc import lab_proxy

MIB = 1 << 20


def test_statement_over_max_allowed_packet_gets_1153_in_sequence(
    lab: Lab, tmp_path: Path
) -> None:
    """A statement over max_allowed_packet sent as two packets (16 MiB - 1, then the rest):
    PyMySQL gets ER_NET_PACKET_TOO_LARGE, not 'Packet sequence number wrong'."""
    with lab_proxy(lab, tmp_path, workers=1, limits={"max_allowed_packet": 16 * MIB}) as proxy:
        conn = proxy.connect(max_allowed_packet=64 * MIB)
        with conn.cursor() as cur, pytest.raises(pymysql.MySQLError) as err:
            cur.execute("SELECT LENGTH(%s)", ("a" * (17 * MIB),))
        assert err.value.args[0] == 1153, err.value
        assert "max_allowed_packet" in str(err.value.args[1])
        conn.close()
        assert proxy.answers()
