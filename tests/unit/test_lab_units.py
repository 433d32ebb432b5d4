"""Lab and bootstrap logic that needs no server: messages, statements, status parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.health.replstatus import normalize_replica_status
from proxy.lab.bootstrap import (
    Account,
    Accounts,
    Flavor,
    Node,
    account_statements,
    change_source_statements,
    read_only_statements,
    semisync_statements,
)
from proxy.lab.servers import LabError, find_server_binary


def test_missing_server_binary_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="apt-get install mariadb-server"):
        find_server_binary(search=str(tmp_path))


def test_mariadb_status_columns() -> None:
    st = normalize_replica_status(
        {
            "Master_Host": "127.0.0.1",
            "Master_Port": 3307,
            "Slave_IO_Running": "Yes",
            "Slave_SQL_Running": "No",
            "Seconds_Behind_Master": None,
            "Last_SQL_Error": "Unknown column 'price'",
            "Last_SQL_Errno": 1054,
            "Gtid_IO_Pos": "1-1-10,2-2-3",
        }
    )
    assert (st.source_port, st.healthy, st.seconds_behind) == (3307, False, None)
    assert st.last_error == "Unknown column 'price'" and st.last_sql_errno == 1054
    assert st.gtid_position == "1-1-10,2-2-3"


def test_mysql84_status_columns() -> None:
    st = normalize_replica_status(
        {
            "Source_Host": "mysql-master1",
            "Source_Port": 3306,
            "Replica_IO_Running": "Yes",
            "Replica_SQL_Running": "Yes",
            "Seconds_Behind_Source": 4,
            "Executed_Gtid_Set": "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n"
            "4e11fa47-71ca-11e1-9e33-c80aa9429562:1-2",
        }
    )
    assert st.healthy and st.seconds_behind == 4 and st.source_host == "mysql-master1"
    assert "\n" not in st.gtid_position


def test_accounts_never_get_all_privileges() -> None:
    for flavor in Flavor:
        stmts = account_statements(flavor, Accounts())
        assert not any("ALL" in s.split(" ON ")[0] for s in stmts if s.startswith("GRANT"))
        app_grant = next(s for s in stmts if s.startswith("GRANT") and "'app'" in s)
        assert "SUPER" not in app_grant and "READ_ONLY" not in app_grant


def test_mysql_statements_use_new_names() -> None:
    src = Node("m1", "master", "mysql-master1", 3306)
    stmts = change_source_statements(Flavor.MYSQL, src, Account("repl", "p'w"))
    assert "SOURCE_AUTO_POSITION=1" in stmts[1] and "GET_SOURCE_PUBLIC_KEY=1" in stmts[1]
    assert "'p\\'w'" in stmts[1]
    assert read_only_statements(Flavor.MYSQL, False)[0] == "SET GLOBAL super_read_only = OFF"
    assert any("semisync_source.so" in s for s in semisync_statements(Flavor.MYSQL, (8, 4), 1000))
    maria = change_source_statements(Flavor.MARIADB, src, Account("repl", "x"))
    assert "MASTER_USE_GTID=slave_pos" in maria[1]
