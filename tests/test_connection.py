from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from urllib.parse import quote

import pytest
from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

import redkit
from redkit import ConfigError, ConnectionUnavailable, RedisSettings
from redkit._failures import read_timeout, request_bound
from redkit.server import EmbeddedCluster, EmbeddedRedis, free_port
from redkit.testing import settings_for


async def test_connect_standalone_pings_and_opens_idle_connections(
    redis_server: EmbeddedRedis,
) -> None:
    client = await redkit.connect(settings_for(redis_server, min_idle_conns=3))
    try:
        assert isinstance(client, Redis)
        assert await client.ping()
        pool = client.connection_pool
        # The warm-up connections are open and back in the pool, unused.
        assert len(pool._available_connections) == 3  # type: ignore[attr-defined]
        assert all(c.is_connected for c in pool._available_connections)  # type: ignore[attr-defined]
    finally:
        await client.aclose()


async def test_connect_accepts_url_overrides(redis_server: EmbeddedRedis) -> None:
    client = await redkit.connect(url=redis_server.url, min_idle_conns=0)
    try:
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    finally:
        await redkit.close(client)


async def test_cluster_client_is_ready_for_a_burst_of_first_commands(
    redis_cluster: EmbeddedCluster,
) -> None:
    client = await redkit.connect(settings_for(redis_cluster))
    try:
        assert isinstance(client, RedisCluster)
        # Hundreds of concurrent first commands on a fresh client: each must
        # find the slot map already loaded.
        await asyncio.gather(*(client.set(f"burst:{i}", i) for i in range(200)))
        values = await asyncio.gather(*(client.get(f"burst:{i}") for i in range(200)))
        assert values == [str(i).encode() for i in range(200)]
        assert len(client.get_primaries()) == 3
    finally:
        await client.aclose()


async def test_unix_socket(server_factory: Callable[..., EmbeddedRedis], tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "redis.sock"
    server = server_factory(extra_args=("--unixsocket", str(path), "--unixsocketperm", "700"))
    client = await redkit.connect(RedisSettings(url=f"unix://{path}", min_idle_conns=1))
    try:
        await client.set("via", "socket")
        tcp = Redis(host=server.host, port=server.port)
        assert await tcp.get("via") == b"socket"
        await tcp.aclose()
    finally:
        await client.aclose()


def test_tls_url_builds_tls_connections() -> None:
    from redis.asyncio.connection import SSLConnection

    from redkit.connection import _build

    client = _build(RedisSettings(url="rediss://localhost:6390", ssl_cert_reqs="none"))
    assert isinstance(client, Redis)
    assert issubclass(client.connection_pool.connection_class, SSLConnection)


async def test_refused_port_names_address_and_cause() -> None:
    port = free_port()
    settings = RedisSettings(port=port, host="127.0.0.1", max_retries=2, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(ConnectionUnavailable) as info:
        await redkit.connect(settings)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "refused" in str(info.value).lower() or "111" in str(info.value)
    assert time.monotonic() - started < 5


async def test_unresolvable_host() -> None:
    settings = RedisSettings(host="no-such-host.invalid", max_retries=0, connect_timeout=2)
    with pytest.raises(ConnectionUnavailable, match=r"no-such-host\.invalid:6379"):
        await redkit.connect(settings)


async def test_wrong_password_is_reported_without_the_password(
    server_factory: Callable[..., EmbeddedRedis],
) -> None:
    server = server_factory(password="right-horse-battery")
    bad = settings_for(server, password="wrong-staple-guess")
    started = time.monotonic()
    with pytest.raises(ConnectionUnavailable) as info:
        await redkit.connect(bad)
    message = str(info.value)
    assert "authentication failed" in message
    assert "wrong-staple-guess" not in message and "right-horse-battery" not in message
    # Authentication failures are final: no retries with backoff.
    assert time.monotonic() - started < 1.5
    good = await redkit.connect(settings_for(server))
    assert await good.ping()
    await good.aclose()


async def test_url_password_with_reserved_characters(
    server_factory: Callable[..., EmbeddedRedis],
) -> None:
    password = "t/p#q?r@s%:+ \u00e9"
    server = server_factory(password=password)
    encoded = quote(password, safe="")
    client = await redkit.connect(url=f"redis://:{encoded}@{server.host}:{server.port}/0")
    try:
        assert await client.ping()
    finally:
        await client.aclose()
    # Unencoded, the URL is refused before any I/O, the password unquoted.
    with pytest.raises(ConfigError) as info:
        await redkit.connect(url=f"redis://:t0pX/s3cretY@{server.host}:{server.port}/0")
    assert "t0pX" not in str(info.value) and "s3cretY" not in str(info.value)


async def test_missing_password_is_reported(server_factory: Callable[..., EmbeddedRedis]) -> None:
    server = server_factory(password="pw")
    with pytest.raises(ConnectionUnavailable, match="password"):
        await redkit.connect(settings_for(server, password=None))


async def test_paused_server_fails_within_connect_timeout(fresh_server: EmbeddedRedis) -> None:
    settings = settings_for(fresh_server, connect_timeout=0.5, max_retries=1)
    with fresh_server.paused():
        started = time.monotonic()
        with pytest.raises(ConnectionUnavailable, match=r"no answer to PING within 0\.5s"):
            await redkit.connect(settings)
        elapsed = time.monotonic() - started
    # Two attempts of 0.5 s plus at most 0.1 s of backoff, with slack for a
    # loaded machine.
    assert 1.0 <= elapsed < 3.0


async def test_connect_retries_until_the_server_comes_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    settings = RedisSettings(host="127.0.0.1", port=port, max_retries=8, min_idle_conns=0)
    first_failure = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "retrying" in record.getMessage():
                first_failure.set()

    handler = Watch()
    logging.getLogger("redkit.connection").addHandler(handler)
    logging.getLogger("redkit.connection").setLevel(logging.INFO)
    server = EmbeddedRedis(port=port)
    try:
        task = asyncio.create_task(redkit.connect(settings))
        await asyncio.wait_for(first_failure.wait(), 5)
        await asyncio.to_thread(server.start)
        client = await asyncio.wait_for(task, 20)
        assert await client.ping()
        await client.aclose()
    finally:
        logging.getLogger("redkit.connection").removeHandler(handler)
        server.cleanup()


async def test_commands_retry_once_the_server_is_back(fresh_server: EmbeddedRedis) -> None:
    client = await redkit.connect(settings_for(fresh_server, max_retries=3))
    try:
        await client.set("k", "1")
        await asyncio.to_thread(fresh_server.restart)
        # The pooled connection is dead after the restart; the command retries
        # on a fresh one instead of failing.
        assert await client.set("k", "2")
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "make",
    [
        lambda: Redis(),
        lambda: Redis(socket_timeout=1.5),
        lambda: Redis(socket_timeout=None),
        lambda: Redis.from_url("redis://localhost"),
        lambda: Redis(connection_pool=ConnectionPool()),
    ],
    ids=["default", "explicit", "none", "from-url", "bare-pool"],
)
async def test_read_timeout_is_what_the_clients_connections_apply(
    make: Callable[[], Redis],
) -> None:
    client = make()
    connection = client.connection_pool.make_connection()
    applied = connection.socket_timeout
    assert read_timeout(client) == (float(applied) if applied else None)
    await client.aclose()


async def test_read_timeout_of_a_cluster_client(redis_cluster: EmbeddedCluster) -> None:
    client = await redkit.connect(
        settings_for(redis_cluster, read_timeout=1.25, write_timeout=1.25)
    )
    try:
        assert read_timeout(client) == 1.25
        node = client.get_default_node()
        assert node.acquire_connection().socket_timeout == 1.25
    finally:
        await client.aclose()


def _repeats_timeouts(client: Redis) -> bool:
    """What redis-py's own connection object does after a read timeout."""
    retry = client.connection_pool.make_connection().retry
    return retry._retries != 0 and any(  # type: ignore[attr-defined]
        issubclass(e, TimeoutError) or e.__name__ == "TimeoutError"
        for e in retry._supported_errors  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: Redis(socket_timeout=1.5),
        lambda: Redis(socket_timeout=1.5, retry=Retry(NoBackoff(), 0)),
        lambda: Redis(connection_pool=ConnectionPool(socket_timeout=1.5)),
    ],
    ids=["default-retry", "no-retries", "bare-pool"],
)
async def test_request_bound_only_when_a_timed_out_command_is_not_sent_again(
    make: Callable[[], Redis],
) -> None:
    client = make()
    expected = None if _repeats_timeouts(client) else 1.5
    assert request_bound(client) == expected
    await client.aclose()


async def test_request_bound_of_connect_clients_is_their_read_timeout(
    redis_server: EmbeddedRedis, redis_cluster: EmbeddedCluster
) -> None:
    for server in (redis_server, redis_cluster):
        client = await redkit.connect(settings_for(server, read_timeout=1.25, write_timeout=1.25))
        try:
            assert request_bound(client) == 1.25
        finally:
            await client.aclose()
