"""pytest plugin: real Redis servers for tests.

Enable it with ``pytest_plugins = ["redkit.testing"]`` in a ``conftest.py``.
It needs ``pytest-asyncio``. Fixtures:

``redis_server``
    a session-wide standalone :class:`~redkit.server.EmbeddedRedis`.
``redis_cluster``
    a session-wide 3-master :class:`~redkit.server.EmbeddedCluster`, started
    the first time a test asks for it.
``redis_client`` / ``cluster_client``
    a fresh async client per test on those servers, the data flushed first.
``client``
    parametrized over ``standalone`` and ``cluster``: a test that takes it
    runs once against each topology.
``fresh_server``
    a private standalone server for one test, to stop, pause or restart.
``server_factory``
    starts extra private servers (``server_factory(password="x")``).

The binary is chosen by :func:`redkit.server.find_redis_server`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis, RedisCluster

from .connection import Client, connect
from .server import EmbeddedCluster, EmbeddedRedis
from .settings import RedisSettings

__all__ = [
    "client",
    "cluster_client",
    "flush",
    "fresh_server",
    "redis_client",
    "redis_cluster",
    "redis_server",
    "server_factory",
    "settings_for",
]


def settings_for(server: EmbeddedRedis | EmbeddedCluster, **overrides: Any) -> RedisSettings:
    """Settings that reach ``server``; short timeouts suit tests."""
    base: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "password": getattr(server, "password", None),
        "cluster": isinstance(server, EmbeddedCluster),
        "min_idle_conns": 0,
        "read_timeout": 2.0,
        "write_timeout": 2.0,
        "connect_timeout": 2.0,
        "max_retries": 1,
    }
    base.update(overrides)
    return RedisSettings(**base)


async def flush(client: Client) -> None:
    """Empty every database the client can reach (all primaries on a cluster)."""
    if isinstance(client, RedisCluster):
        await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.flushall()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(masters=3) as cluster:
        yield cluster


@pytest.fixture
def server_factory() -> Iterator[Callable[..., EmbeddedRedis]]:
    started: list[EmbeddedRedis] = []

    def start(**kwargs: Any) -> EmbeddedRedis:
        server = EmbeddedRedis(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.cleanup()


@pytest.fixture
def fresh_server(server_factory: Callable[..., EmbeddedRedis]) -> EmbeddedRedis:
    return server_factory()


async def _client_for(server: EmbeddedRedis | EmbeddedCluster) -> Client:
    client = await connect(settings_for(server))
    await flush(client)
    return client


@pytest_asyncio.fixture
async def redis_client(redis_server: EmbeddedRedis) -> AsyncIterator[Redis]:
    client = await _client_for(redis_server)
    assert isinstance(client, Redis)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def cluster_client(redis_cluster: EmbeddedCluster) -> AsyncIterator[RedisCluster]:
    client = await _client_for(redis_cluster)
    assert isinstance(client, RedisCluster)
    yield client
    await client.aclose()


@pytest_asyncio.fixture(params=["standalone", "cluster"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    server_fixture = "redis_server" if request.param == "standalone" else "redis_cluster"
    server = request.getfixturevalue(server_fixture)
    conn = await _client_for(server)
    yield conn
    await conn.aclose()
