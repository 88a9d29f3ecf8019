from __future__ import annotations

import pytest

from redkit import ConfigError, RedisSettings
from redkit.settings import parse_duration


def test_defaults_match_the_go_service() -> None:
    s = RedisSettings.from_env({})
    assert (s.host, s.port, s.password, s.db) == ("localhost", 6379, None, 0)
    assert (s.max_retries, s.pool_size, s.min_idle_conns) == (3, 10, 5)
    assert (s.read_timeout, s.write_timeout) == (3.0, 3.0)
    assert s.address == "localhost:6379"


def test_from_env_reads_every_variable() -> None:
    s = RedisSettings.from_env(
        {
            "REDIS_HOST": "cache.internal",
            "REDIS_PORT": "6380",
            "REDIS_PASSWORD": "s3cret",
            "REDIS_DB": "2",
            "REDIS_MAX_RETRIES": "5",
            "REDIS_POOL_SIZE": "20",
            "REDIS_MIN_IDLE_CONNS": "1",
            "REDIS_READ_TIMEOUT": "500ms",
            "REDIS_WRITE_TIMEOUT": "1m30s",
            "REDIS_USERNAME": "app",
        }
    )
    assert (s.host, s.port, s.password, s.db, s.username) == (
        "cache.internal",
        6380,
        "s3cret",
        2,
        "app",
    )
    assert (s.max_retries, s.pool_size, s.min_idle_conns) == (5, 20, 1)
    assert s.read_timeout == pytest.approx(0.5)
    assert s.write_timeout == pytest.approx(90.0)


def test_redis_url_wins_over_host_and_port() -> None:
    s = RedisSettings.from_env(
        {"REDIS_URL": "redis://u:pw@db.example:7000/3", "REDIS_HOST": "x", "REDIS_PORT": "1"}
    )
    assert (s.host, s.port, s.db, s.username, s.password) == ("db.example", 7000, 3, "u", "pw")


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("REDIS_PORT", "http"),
        ("REDIS_PORT", "70000"),
        ("REDIS_DB", "-1"),
        ("REDIS_POOL_SIZE", "0"),
        ("REDIS_MAX_RETRIES", "3.5"),
        ("REDIS_READ_TIMEOUT", "3 parsecs"),
        ("REDIS_WRITE_TIMEOUT", "0s"),
        ("REDIS_READ_TIMEOUT", "-1s"),
        ("REDIS_CLUSTER", "maybe"),
        ("REDIS_SENTINELS", "host-without-port"),
    ],
)
def test_bad_env_value_names_variable_and_value(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        RedisSettings.from_env({var: value, "REDIS_PASSWORD": "hunter2"})
    message = str(info.value)
    assert value in message
    assert var in message or var.removeprefix("REDIS_").lower() in message
    assert "hunter2" not in message


def test_password_never_in_repr_or_errors() -> None:
    s = RedisSettings(url="redis://user:hunter2@h:1/0")
    assert "hunter2" not in repr(s)
    with pytest.raises(ConfigError) as info:
        RedisSettings(url="redis://user:hunter2@h:notaport/0")
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["http://localhost:6379", "redis://", "redis://host:1/notadb", "unix://", "localhost:6379"],
)
def test_malformed_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        RedisSettings(url=url)


def test_url_schemes() -> None:
    tls = RedisSettings(url="rediss://h:6390")
    assert tls.ssl and tls.port == 6390
    sock = RedisSettings(url="unix:///run/redis.sock?db=4")
    assert sock.unix_socket_path == "/run/redis.sock" and sock.db == 4
    assert sock.address == "unix:/run/redis.sock"


def test_cluster_and_sentinel_validation() -> None:
    with pytest.raises(ConfigError, match="db 0"):
        RedisSettings(cluster=True, db=1)
    with pytest.raises(ConfigError, match="together"):
        RedisSettings(sentinel_master="mymaster")
    s = RedisSettings.from_env(
        {"REDIS_SENTINELS": "a:26379, b:26380", "REDIS_SENTINEL_MASTER": "mymaster"}
    )
    assert s.sentinels == (("a", 26379), ("b", 26380))
    assert s.address == "sentinel mymaster@a:26379,b:26380"
    assert RedisSettings.from_env({"REDIS_CLUSTER": "true"}).cluster


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3s", 3.0), ("500ms", 0.5), ("1m30s", 90.0), ("2", 2.0), ("1.5h", 5400.0), ("250us", 250e-6)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "3 s", "3x", "1m-3s", "nan", "inf", "-2"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
