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
        ("REDIS_SENTINELS", "a:\u00b2"),
        ("REDIS_PORT", "0"),
        ("REDIS_POOL_SIZE", "-3"),
        ("REDIS_MIN_IDLE_CONNS", "1e400"),
        ("REDIS_CONNECT_TIMEOUT", "NaN"),
        ("REDIS_HOST", " "),
        ("REDIS_SENTINEL_MASTER", "mymaster"),
        ("REDIS_URL", "http://h:6379"),
        ("REDIS_URL", "redis://h:70000/0"),
        ("REDIS_URL", "redis://h:6379/x"),
    ],
)
def test_bad_env_value_names_variable_and_value(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        RedisSettings.from_env({var: value, "REDIS_PASSWORD": "hunter2"})
    message = str(info.value)
    assert repr(value) in message
    assert var in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"REDIS_CLUSTER": "true", "REDIS_DB": "2"}, ["REDIS_CLUSTER='true'", "REDIS_DB='2'"]),
        (
            {"REDIS_CLUSTER": "1", "REDIS_URL": "redis://:hunter2@h/3"},
            ["REDIS_CLUSTER='1'", "REDIS_URL='redis://:***@h/3'"],
        ),
        (
            {"REDIS_CLUSTER": "yes", "REDIS_URL": "unix:///run/redis.sock"},
            ["REDIS_CLUSTER='yes'", "REDIS_URL='unix:///run/redis.sock'"],
        ),
        (
            {"REDIS_CLUSTER": "on", "REDIS_SENTINELS": "a:1", "REDIS_SENTINEL_MASTER": "m"},
            ["REDIS_CLUSTER='on'", "REDIS_SENTINELS='a:1'"],
        ),
        ({"REDIS_PASSWORD": "\ud800hunter2"}, ["REDIS_PASSWORD"]),
    ],
)
def test_env_errors_from_several_fields_name_each_variable(
    env: dict[str, str], names: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        RedisSettings.from_env(env)
    message = str(info.value)
    assert all(name in message for name in names), message
    assert "hunter2" not in message


def test_password_never_in_repr_or_errors() -> None:
    s = RedisSettings(url="redis://user:hunter2@h:1/0")
    assert "hunter2" not in repr(s)
    with pytest.raises(ConfigError) as info:
        RedisSettings(url="redis://user:hunter2@h:notaport/0")
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)


# A password holding a raw "/", "#" or "?" made urllib read part of it as the
# port and quote it; the query form printed the whole query.
LEAKY_URLS = [
    "redis://:t0pX/s3cretY@host:6379/0",
    "redis://:t0pX#s3cretY@host:6379/0",
    "redis://:t0pX?s3cretY@host:6379/0",
    "redis://app:t0pX/s3cretY@host:notaport/0",
    "redis://host:6379/0?password=t0pXs3cretY",
    "redis://host:1/notadb?password=t0pX&s3cretY",
    "redis://host:6379/0?password=t0pX#s3cretY",
    "redis://:t0pXs3cretY",  # the host forgotten
    "unix://:t0pX/s3cretY@/run/redis.sock",
    "app:t0pXs3cretY@host:6379",
    "redis://app:t0pX\u212as3cretY@host:port",
]


@pytest.mark.parametrize("url", LEAKY_URLS)
def test_url_errors_never_quote_the_password(url: str) -> None:
    for attempt in (
        lambda: RedisSettings.from_url(url),
        lambda: RedisSettings(url=url),
        lambda: RedisSettings().replace(url=url),
        lambda: RedisSettings.from_env({"REDIS_URL": url}),
    ):
        with pytest.raises(ConfigError) as info:
            attempt()
        message = str(info.value)
        assert "t0pX" not in message and "s3cretY" not in message, message


@pytest.mark.parametrize(
    ("url", "password"),
    [
        # Characters urllib refused, quoting the netloc or "Invalid IPv6 URL".
        ("redis://:t0pX\u212as3cretY@host", "t0pX\u212as3cretY"),
        ("redis://:t0pX[s3cretY@host", "t0pX[s3cretY"),
        ("redis://app:]t0pX[@host", "]t0pX["),
    ],
)
def test_raw_unambiguous_passwords_are_read_and_hidden(url: str, password: str) -> None:
    s = RedisSettings(url=url)
    assert s.password == password and s.host == "host"
    assert "t0pX" not in repr(s)


def test_env_url_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^REDIS_URL: Redis URL 'redis://:\*\*\*@host/0'"):
        RedisSettings.from_env({"REDIS_URL": "redis://:top/secret@host/0"})


def test_percent_encoded_password_keeps_every_character() -> None:
    s = RedisSettings(url="redis://app:t%2Fp%23q%3Fr%40s%25%3A%20%C3%A9@h:7000/2")
    assert (s.username, s.password) == ("app", "t/p#q?r@s%: \u00e9")
    assert (s.host, s.port, s.db) == ("h", 7000, 2)
    raw = RedisSettings(url="redis://:p@ss:w@h")  # a raw "@" or ":" is unambiguous
    assert (raw.password, raw.host) == ("p@ss:w", "h")


def test_password_in_the_query_is_refused() -> None:
    with pytest.raises(ConfigError, match="password in its query") as info:
        RedisSettings(url="unix:///run/redis.sock?db=1&password=hunter2")
    assert "hunter2" not in str(info.value)
    assert RedisSettings(url="unix://:hunter2@/run/redis.sock?db=1").password == "hunter2"


def test_unknown_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'pasword'"):
        RedisSettings().replace(pasword="x")
    with pytest.raises(ConfigError, match="unknown setting"):
        RedisSettings.from_url("redis://h", bogus=1)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:6379",
        "redis://",
        "redis://host:1/notadb",
        "unix://",
        "localhost:6379",
        "redis://h/\u00b2",
        "redis://h?db=\u00b2",
        pytest.param("redis://h/" + "9" * 5000, id="db-of-5000-digits"),
        "redis://h:70000",
        "redis://[::1",
        "redis://h:63\n79/0",
        "redis://:pa ss@h",
        "redis://:%ff@h",
    ],
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
