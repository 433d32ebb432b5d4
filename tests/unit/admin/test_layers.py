"""Which configuration a start begins with (ProxySQL's rule): the YAML seeds the disk
database once, then the disk database wins unless --initial; a broken one stops the start."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from proxy.admin.layers import names_layer_table, plan_start, seed_disk
from proxy.config import ConfigError, load_config

YAML = {
    "servers": [{"name": "m1", "host": "127.0.0.1", "port": 3306, "role": "master"}],
    "users": [{"username": "app", "password": "pw"}],
    "admin": {"database": "proxysql.db"},
}


def write_yaml(tmp_path: Path, **changes: object) -> str:
    path = tmp_path / "pyproxy.yaml"
    path.write_text(yaml.safe_dump({**YAML, **changes}))
    return str(path)


def test_without_a_database_the_yaml_is_in_force(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, admin={})
    start = plan_start(load_config(path), path, initial=False)
    assert not start.seed_disk
    assert "admin.database is not set" in start.source


def test_first_start_seeds_then_the_disk_wins(tmp_path: Path) -> None:
    path = write_yaml(tmp_path)
    first = plan_start(load_config(path), path, initial=False)
    db_path = tmp_path / "proxysql.db"
    assert first.seed_disk and "first start" in first.source
    assert first.config.admin.database == str(db_path)  # relative to the YAML
    assert not db_path.exists()  # planning writes nothing (--check)
    seed_disk(first.config)
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE mysql_users SET password = 'from-disk'")
    path = write_yaml(tmp_path, users=[{"username": "app", "password": "from-yaml"}])
    again = plan_start(load_config(path), path, initial=False)
    assert not again.seed_disk and "disk database" in again.source
    assert again.config.users[0].password == "from-disk"
    initial = plan_start(load_config(path), path, initial=True)
    assert initial.seed_disk and "--initial" in initial.source
    assert initial.config.users[0].password == "from-yaml"
    seed_disk(initial.config)
    assert (tmp_path / "proxysql.db.bak").exists()


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, b""])
def test_a_broken_database_names_the_file_and_the_way_out(tmp_path: Path, content: bytes) -> None:
    path = write_yaml(tmp_path)
    (tmp_path / "proxysql.db").write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        plan_start(load_config(path), path, initial=False)
    message = str(exc.value)
    assert str(tmp_path / "proxysql.db") in message and "--initial" in message


def test_invalid_rows_on_disk_stop_the_start(tmp_path: Path) -> None:
    path = write_yaml(tmp_path)
    seed_disk(plan_start(load_config(path), path, initial=False).config)
    with sqlite3.connect(tmp_path / "proxysql.db") as db:
        db.execute("UPDATE mysql_servers SET port = 70000")
    with pytest.raises(ConfigError, match=r"column port: .*--initial"):
        plan_start(load_config(path), path, initial=False)


def test_statements_on_the_editable_tables() -> None:
    assert names_layer_table("UPDATE mysql_servers SET status='OFFLINE_SOFT'")
    assert names_layer_table("select * from disk.mysql_users")
    assert names_layer_table("SELECT * FROM main.global_variables")
    assert not names_layer_table("DELETE FROM runtime_mysql_servers")
    assert not names_layer_table("SELECT * FROM stats_mysql_query_digest")


def test_a_path_with_odd_characters(tmp_path: Path) -> None:
    odd = tmp_path / "conf dir #1?"
    odd.mkdir()
    path = write_yaml(odd)
    seed_disk(plan_start(load_config(path), path, initial=False).config)
    assert "disk database" in plan_start(load_config(path), path, initial=False).source
