"""Config <-> ProxySQL's configuration tables: a lossless round trip, and errors that name the
table, the row and the column."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from proxy.admin import configdb
from proxy.admin.configdb import MODULES, TABLE_NAMES, TableError, read_config, write_config
from proxy.config import Config, parse_config

YAML = {
    "servers": [
        {"name": "m1", "host": "127.0.0.1", "port": 3306, "role": "master", "priority": 1},
        {"name": "m2", "host": "127.0.0.1", "port": 3307, "role": "master", "priority": 2},
        {
            "name": "r1",
            "host": "10.0.0.3",
            "port": 3306,
            "role": "replica",
            "weight": 3,
            "status": "OFFLINE_SOFT",
            "comment": "backups",
            "tls": {"enabled": True, "ca": "/etc/ca.pem", "verify": True},
        },
    ],
    "users": [
        {"username": "app", "password": "s3cret", "default_schema": "shop"},
        {"username": "batch", "password": "b", "consistency": "eventual", "max_connections": 5},
    ],
    "monitor": {"username": "mon", "password": "mon-pw", "ssl": False},
    "health": {"check_interval_ms": 700, "failure_threshold": 4},
    "limits": {"client_idle_timeout_s": 60.5},
    "server_version": "8.0.36",
    "query_rules": [
        {"match_digest": "^SELECT .* FOR UPDATE", "route": "writer", "name": "locks"},
        {"rule_id": 10, "match_digest": "^DELETE FROM audit", "block": "no deletes"},
        {"match_pattern": "tbl_old", "rewrite": "tbl_new"},
        {"match_digest": "^SELECT .* FROM reports", "route": "r1", "username": "batch"},
    ],
}


@pytest.fixture
def config() -> Config:
    return parse_config(YAML)


@pytest.fixture
def db(config: Config) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:")
    configdb.create_tables(db, "main")
    write_config(db, "main", config, TABLE_NAMES)
    yield db
    db.close()


def load(db: sqlite3.Connection, base: Config, *modules: str) -> Config:
    return read_config(db, "main", base, modules or MODULES)


def test_round_trip_is_lossless(db: sqlite3.Connection, config: Config) -> None:
    assert load(db, parse_config({**YAML, "query_rules": [], "users": YAML["users"][:1]})) == (
        config.model_copy(
            update={"query_rules": [r.model_copy(update={"rule_id": i}) for r, i in
                                    zip(config.query_rules, (1, 10, 11, 12), strict=True)]}
        )
    )  # fmt: skip


def test_tables_speak_proxysql(db: sqlite3.Connection) -> None:
    servers = db.execute(
        "SELECT hostgroup_id, hostname, port, status, use_ssl FROM mysql_servers ORDER BY port"
    ).fetchall()
    assert (1, "10.0.0.3", 3306, "OFFLINE_SOFT", 1) in servers
    assert (0, "127.0.0.1", 3307, "ONLINE", 0) in servers
    rules = db.execute(
        "SELECT rule_id, active, destination_hostgroup, destination_server, error_msg, apply "
        "FROM mysql_query_rules ORDER BY rule_id"
    ).fetchall()
    assert rules == [
        (1, 1, 0, None, None, 1),
        (10, 1, None, None, "no deletes", 1),
        (11, 1, None, None, None, 1),
        (12, 1, None, "r1", None, 1),
    ]
    variables = dict(db.execute("SELECT * FROM global_variables").fetchall())
    assert variables["mysql-monitor_username"] == "mon"
    assert variables["mysql-monitor_ssl"] == "false"
    assert variables["mysql-monitor_read_only_interval"] == "700"
    assert variables["mysql-monitor_ping_interval"] == "700"
    assert variables["mysql-wait_timeout"] == "60500"  # ProxySQL's unit: ms
    assert variables["mysql-default_query_timeout"] == "36000000"
    assert variables["pyproxy-routing.consistency"] == "read_your_writes"
    assert variables["mysql-server_version"] == "8.0.36"
    assert variables["mysql-query_digests_max_digest_length"] == "2048"


def test_setup_guide_insert_takes_the_defaults(db: sqlite3.Connection, config: Config) -> None:
    db.execute("INSERT INTO mysql_servers(hostgroup_id,hostname,port) VALUES (1,'10.0.0.9',3306)")
    new = load(db, config, "servers")
    added = next(s for s in new.servers if s.host == "10.0.0.9")
    assert (added.name, added.role, added.status, added.weight) == (
        "10.0.0.9:3306", "replica", "ONLINE", 1
    )  # fmt: skip
    assert new.users == config.users  # the other modules keep the running config


@pytest.mark.parametrize(
    ("sql", "module", "error"),
    [
        (
            "UPDATE mysql_servers SET port = 70000 WHERE name = 'r1'",
            "servers",
            "mysql_servers row (hostgroup_id=1, hostname='10.0.0.3', port=70000), column port: "
            "Input should be less than or equal to 65535",
        ),
        (
            "INSERT INTO mysql_servers(hostgroup_id,hostname,port) VALUES (7,'10.0.0.9',3306)",
            "servers",
            "mysql_servers row (hostgroup_id=7, hostname='10.0.0.9', port=3306), column "
            "hostgroup_id: unknown hostgroup 7",
        ),
        (
            "UPDATE mysql_servers SET status = 'OFFLINE_HARD' WHERE name = 'r1'",
            "servers",
            "column status: Input should be 'ONLINE' or 'OFFLINE_SOFT'",
        ),
        (
            "DELETE FROM mysql_servers WHERE hostgroup_id = 0",
            "servers",
            "mysql_servers: at least one server must have hostgroup_id 0 (a master)",
        ),
        (
            "INSERT INTO mysql_servers(hostgroup_id,hostname,port,name) VALUES (1,'x',1,'m1')",
            "servers",
            "server name 'm1' is used more than once",
        ),
        (
            "UPDATE mysql_replication_hostgroups SET reader_hostgroup = 2",
            "servers",
            "mysql_replication_hostgroups: pyproxy runs one replication cluster",
        ),
        (
            "UPDATE mysql_users SET default_hostgroup = 1 WHERE username = 'app'",
            "users",
            "mysql_users row (username='app'), column default_hostgroup:",
        ),
        (
            "UPDATE mysql_users SET consistency = 'sometimes' WHERE username = 'app'",
            "users",
            "mysql_users row (username='app'), column consistency:",
        ),
        (
            "UPDATE mysql_query_rules SET error_msg = 'no' WHERE rule_id = 1",
            "query rules",
            "mysql_query_rules rule_id=1: a rule needs exactly one of destination_hostgroup, "
            "destination_server, error_msg or replace_pattern",
        ),
        (
            "UPDATE mysql_query_rules SET destination_server = 'nope' WHERE rule_id = 12",
            "query rules",
            "mysql_query_rules rule_id=12, column destination_server: no server named 'nope'",
        ),
        (
            "UPDATE mysql_query_rules SET match_digest = '(' WHERE rule_id = 1",
            "query rules",
            "mysql_query_rules rule_id=1: match_digest: invalid regex",
        ),
        (
            "INSERT INTO mysql_query_rules(active,match_digest,destination_hostgroup,apply) "
            "VALUES (1,'^x',5,1)",
            "query rules",
            "mysql_query_rules rule_id=13, column destination_hostgroup: unknown hostgroup 5",
        ),
        (
            "INSERT INTO mysql_query_rules(active,match_digest,error_msg) VALUES (1,'^x','no')",
            "query rules",
            "mysql_query_rules rule_id=13, column apply: pyproxy stops at the first matching rule",
        ),
        (
            "UPDATE global_variables SET variable_value = 'often' "
            "WHERE variable_name = 'mysql-monitor_ping_interval'",
            "variables",
            "global_variables mysql-monitor_ping_interval: Input should be a valid integer",
        ),
        (
            "UPDATE global_variables SET variable_value = 'soon' "
            "WHERE variable_name = 'mysql-wait_timeout'",
            "variables",
            "global_variables mysql-wait_timeout: 'soon' is not a number",
        ),
        (
            "INSERT INTO global_variables VALUES ('mysql-threads', '4')",
            "variables",
            "global_variables: unknown variable 'mysql-threads'",
        ),
    ],
)
def test_errors_name_row_and_column(
    db: sqlite3.Connection, config: Config, sql: str, module: str, error: str
) -> None:
    db.execute(sql)
    with pytest.raises(TableError) as exc:
        load(db, config, module)
    assert error in str(exc.value)
    assert "\n" not in str(exc.value)


def test_inactive_rows_stay_in_the_table_only(db: sqlite3.Connection, config: Config) -> None:
    db.execute("UPDATE mysql_users SET active = 0 WHERE username = 'batch'")
    db.execute("UPDATE mysql_query_rules SET active = 0 WHERE rule_id = 10")
    new = load(db, config, "users", "query rules")
    assert [u.username for u in new.users] == ["app"]
    assert 10 not in new.rule_ids()


def test_aliases_of_one_setting(db: sqlite3.Connection, config: Config) -> None:
    # ProxySQL has several intervals; pyproxy checks everything at one: the one changed wins.
    db.execute(
        "UPDATE global_variables SET variable_value = '2000' "
        "WHERE variable_name = 'mysql-monitor_read_only_interval'"
    )
    assert load(db, config, "variables").health.check_interval_ms == 2000
    db.execute(
        "UPDATE global_variables SET variable_value = '3000' "
        "WHERE variable_name = 'mysql-monitor_ping_interval'"
    )
    with pytest.raises(TableError, match="give them the same value"):
        load(db, config, "variables")
    assert configdb.aliases("mysql-monitor_ping_interval")[:2] == [
        "mysql-monitor_ping_interval",
        "mysql-monitor_read_only_interval",
    ]


def test_variables_convert_units_and_empty(db: sqlite3.Connection, config: Config) -> None:
    db.execute("UPDATE global_variables SET variable_value = '1500' "
               "WHERE variable_name = 'mysql-wait_timeout'")  # fmt: skip
    db.execute("UPDATE global_variables SET variable_value = '' "
               "WHERE variable_name = 'mysql-server_version'")  # fmt: skip
    db.execute("UPDATE global_variables SET variable_value = 'true' "
               "WHERE variable_name = 'mysql-monitor_ssl'")  # fmt: skip
    db.execute("UPDATE global_variables SET variable_value = '512' "
               "WHERE variable_name = 'mysql-query_digests_max_digest_length'")  # fmt: skip
    new = load(db, config, "variables")
    assert new.limits.client_idle_timeout_s == 1.5
    assert new.limits.query_digests_max_digest_length == 512
    assert new.server_version is None
    assert new.monitor.ssl is True
    assert new.backend_admin is None


def test_runtime_never_shows_a_password() -> None:
    # MySQL: SELECT PASSWORD("password")
    assert configdb.native_hash("password") == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
    assert configdb.mask("mysql-monitor_password", "x") == "********"
    assert configdb.mask("mysql-monitor_username", "x") == "x"


def test_settings_read_at_start_are_named(db: sqlite3.Connection, config: Config) -> None:
    db.execute("UPDATE global_variables SET variable_value = 'false' "
               "WHERE variable_name = 'mysql-monitor_enabled'")  # fmt: skip
    new = load(db, config, "variables")
    assert configdb.restart_only_changes(config, new) == ["mysql-monitor_enabled"]
    assert configdb.restart_only_changes(config, config) == []
