"""GTID positions: parsing, containment and merging, MariaDB and MySQL forms."""

from __future__ import annotations

import pytest

from proxy.routing.gtid import contains, is_mariadb, merge_mariadb, parse_mariadb, parse_mysql

UUID = "3E11FA47-71CA-11E1-9E33-C80AA9429562"
UUID2 = "4e11fa47-71ca-11e1-9e33-c80aa9429562"


def test_is_mariadb() -> None:
    assert is_mariadb("0-1-5,1-2-3")
    assert is_mariadb("")
    assert not is_mariadb(f"{UUID}:1-5")


def test_parse_mariadb_keeps_the_highest_seq_per_domain() -> None:
    assert parse_mariadb("1-1-10,2-2-3") == {1: 10, 2: 3}
    assert parse_mariadb("0-1-5, 0-2-9,\n0-3-7") == {0: 9}
    assert parse_mariadb("") == {}
    assert parse_mariadb("garbage,1-1,1-x-2,3-3-30") == {3: 30}


def test_parse_mysql_intervals_lower_case_uuid() -> None:
    assert parse_mysql(f"{UUID}:1-5:7,\n{UUID2}:3") == {
        UUID.lower(): [(1, 5), (7, 7)],
        UUID2: [(3, 3)],
    }
    assert parse_mysql("") == {}
    assert parse_mysql(f"{UUID}:x-2:4") == {UUID.lower(): [(4, 4)]}


@pytest.mark.parametrize(
    ("have", "want", "result"),
    [
        ("0-1-10", "", True),  # nothing wanted
        ("0-1-10", "0-1-10", True),
        ("0-1-10", "0-2-9", True),  # the server id does not matter, the domain does
        ("0-1-9", "0-1-10", False),
        ("0-1-10", "0-1-5,1-1-1", False),  # a domain the server has not seen
        ("0-1-10,1-2-4", "1-1-4", True),
        ("", "0-1-1", False),
        (f"{UUID}:1-10", f"{UUID}:3-7", True),
        (f"{UUID}:1-10", f"{UUID.lower()}:10", True),
        (f"{UUID}:1-5:7-10", f"{UUID}:5-7", False),  # a hole in the server's set
        (f"{UUID}:1-10", f"{UUID}:1-10,{UUID2}:1", False),
        (f"{UUID}:1-10,{UUID2}:1-3", f"{UUID2}:2", True),
    ],
)
def test_contains(have: str, want: str, result: bool) -> None:
    assert contains(have, want) is result


def test_merge_mariadb_takes_the_maximum_per_domain() -> None:
    assert merge_mariadb("0-1-10,1-1-3", "0-2-7,2-5-1") == "0-0-10,1-0-3,2-0-1"
    assert merge_mariadb("", "0-1-4") == "0-0-4"
    assert merge_mariadb("", "") == ""
    merged = merge_mariadb("0-1-10", "0-2-12")
    assert contains(merged, "0-1-10") and contains(merged, "0-2-12")


def test_containment_over_several_domains() -> None:
    assert contains("1-1-10,2-2-5", "1-1-10,2-2-4")
    assert not contains("1-1-9,2-2-5", "1-1-10")
    assert not contains("2-2-5", "1-1-1")
