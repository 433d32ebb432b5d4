"""Config validation: errors name the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import ConfigError, load_config, parse_config

BASE = {
    "servers": [{"name": "m1", "host": "127.0.0.1", "port": 3306, "role": "master"}],
    "users": [{"username": "app", "password": "${APP_PW:-secret}"}],
}


def test_minimal_config_and_env_default() -> None:
    cfg = parse_config(BASE)
    assert cfg.users[0].password == "secret"
    assert cfg.listeners.mysql.port == 6033


def test_client_limit_defaults() -> None:
    limits = parse_config(BASE).limits
    assert limits.connect_timeout_s == 10.0  # MySQL's connect_timeout
    assert limits.max_unauthenticated_connections == 1000
    assert parse_config(BASE).users[0].max_connections == 10_000
    with pytest.raises(ConfigError, match=r"limits\.connect_timeout_s"):
        parse_config({**BASE, "limits": {"connect_timeout_s": 0}})


def test_env_substitution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_PW", "from-env")
    assert parse_config(BASE).users[0].password == "from-env"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"servers": [{"name": "m1", "host": "h", "port": 70000, "role": "master"}]},
            "servers[0].port: Input should be less than or equal to 65535",
        ),
        ({"servers": [{"name": "m1", "host": "h", "role": "boss"}]}, "servers[0].role:"),
        ({"surprise": 1}, "surprise: unknown key"),
        (
            {"limits": {"max_allowed_packet": 1 << 63}},
            "limits.max_allowed_packet: Input should be less than or equal to 1073741824",
        ),
        ({"users": [{"username": "app"}]}, "users[0].password: is required"),
        (
            {"servers": [{"name": "r", "host": "h", "role": "replica"}]},
            "at least one server must have role: master",
        ),
    ],
)
def test_errors_name_the_key(patch: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, **patch})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unset_env_var_is_named() -> None:
    data = {**BASE, "users": [{"username": "app", "password": "${NOPE_NOT_SET_X}"}]}
    with pytest.raises(ConfigError, match=r"users\[0\].password: environment variable NOPE"):
        parse_config(data)


def test_file_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("password", ["", "admin"])
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "proxy.example.com"])
def test_default_admin_password_only_on_loopback(password: str, host: str) -> None:
    for loopback in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        parse_config(
            {
                **BASE,
                "admin": {"username": "admin", "password": password},
                "listeners": {"admin": {"host": loopback, "port": 6032}},
            }
        )
    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                **BASE,
                "admin": {"username": "admin", "password": password},
                "listeners": {"admin": {"host": host, "port": 6032}},
            }
        )
    assert str(err.value).startswith("admin.password: must be set, and not to the default")
    assert "listeners.admin.host" in str(err.value)
    no_admin = {**BASE, "listeners": {"admin": {"host": host, "port": 6032}}}
    with pytest.raises(ConfigError, match=r"^admin\.password: "):
        parse_config(no_admin)  # admin/admin is the default
    parse_config({**no_admin, "admin": {"password": "s3cret"}})


def test_admin_settings() -> None:
    cfg = parse_config(BASE)
    assert (cfg.admin.username, cfg.admin.query_timeout_ms, cfg.admin.http_token) == (
        "admin",
        5000,
        None,
    )
    with pytest.raises(ConfigError, match=r"^admin\.query_timeout_ms: "):
        parse_config({**BASE, "admin": {"query_timeout_ms": 0}})


def test_example_configs_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).resolve().parents[2]
    for name in ("APP_PASSWORD", "MONITOR_PASSWORD", "BACKEND_ADMIN_PASSWORD", "ADMIN_PASSWORD"):
        monkeypatch.setenv(name, "x")
    for path in ("config/pyproxy.yaml", "config/pyproxy.docker.yaml"):
        assert load_config(root / path).servers


def test_rule_ids_are_unique_and_in_order() -> None:
    rules = [
        {"match_digest": "^a", "block": "a"},
        {"rule_id": 10, "match_digest": "^b", "block": "b"},
        {"match_digest": "^c", "block": "c"},
    ]
    assert parse_config({**BASE, "query_rules": rules}).rule_ids() == [1, 10, 11]
    rules[2]["rule_id"] = 10
    with pytest.raises(ConfigError, match=r"query_rules\[2\]\.rule_id: 10 is not above"):
        parse_config({**BASE, "query_rules": rules})


def test_a_server_can_start_drained() -> None:
    servers = [{**BASE["servers"][0], "status": "OFFLINE_SOFT"}]
    assert parse_config({**BASE, "servers": servers}).servers[0].status == "OFFLINE_SOFT"
    with pytest.raises(ConfigError, match=r"servers\[0\]\.status"):
        parse_config({**BASE, "servers": [{**servers[0], "status": "OFFLINE_HARD"}]})


def test_causal_consistency_settings() -> None:
    cfg = parse_config({**BASE, "routing": {"consistency": "causal_global"}})
    assert cfg.routing.consistency == "causal_global"
    assert cfg.routing.causal_wait_ms == 50
    assert cfg.routing.causal_position_max_age_us == 0
    user = {"username": "u", "password": "p", "consistency": "causal"}
    assert parse_config({**BASE, "users": [user]}).users[0].consistency == "causal"
    with pytest.raises(ConfigError, match=r"routing\.causal_wait_ms"):
        parse_config({**BASE, "routing": {"causal_wait_ms": -1}})
