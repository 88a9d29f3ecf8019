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
``sentinel_group``
    a private :class:`~redkit.server.EmbeddedSentinelGroup` for one test:
    a primary, a replica and three sentinels (quorum 2);
    ``sentinel_group.failover()`` and ``sentinel_group.kill_primary()``
    return the new primary once it serves.
``replicated_cluster``
    a private :class:`~redkit.server.EmbeddedCluster` of three primaries
    with one replica each for one test; ``failover(key)`` and
    ``kill_primary(key)`` move ``key``'s slot to a replica and return it
    once every node routes the slot there.

Failover fixtures start their own processes for each test (2-3 s), so a
suite keeps such tests few; mark them (redkit's own suite uses a
``failover`` marker) to run or skip them as a group.

Helpers: :func:`settings_for` (settings that reach a server), :func:`flush`
and :func:`connected` (a client for one ``async with`` block).

The binary is chosen by :func:`redkit.server.find_redis_server`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis, RedisCluster

from .connection import Client, connect
from .server import EmbeddedCluster, EmbeddedRedis, EmbeddedSentinelGroup
from .settings import RedisSettings

__all__ = [
    "client",
    "cluster_client",
    "connected",
    "flush",
    "fresh_server",
    "redis_client",
    "redis_cluster",
    "redis_server",
    "replicated_cluster",
    "sentinel_group",
    "server_factory",
    "settings_for",
]


def settings_for(
    server: EmbeddedRedis | EmbeddedCluster | EmbeddedSentinelGroup, **overrides: Any
) -> RedisSettings:
    """Settings that reach ``server`` (through its sentinels for a Sentinel
    group); short timeouts suit tests."""
    base: dict[str, Any]
    if isinstance(server, EmbeddedSentinelGroup):
        base = {"sentinels": server.sentinels, "sentinel_master": server.master_name}
    else:
        base = {
            "host": server.host,
            "port": server.port,
            "password": getattr(server, "password", None),
            "cluster": isinstance(server, EmbeddedCluster),
        }
    base |= {
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
def sentinel_group() -> Iterator[EmbeddedSentinelGroup]:
    with EmbeddedSentinelGroup() as group:
        yield group


@pytest.fixture
def replicated_cluster() -> Iterator[EmbeddedCluster]:
    # A short node timeout so that a killed primary is replaced in seconds.
    with EmbeddedCluster(masters=3, replicas=1, node_timeout_ms=1000) as cluster:
        yield cluster


@pytest.fixture
def fresh_server(server_factory: Callable[..., EmbeddedRedis]) -> EmbeddedRedis:
    return server_factory()


@contextlib.asynccontextmanager
async def connected(
    server: EmbeddedRedis | EmbeddedCluster | EmbeddedSentinelGroup,
    *,
    flushed: bool = False,
    **overrides: Any,
) -> AsyncIterator[Client]:
    """``async with connected(server) as client``: a client of ``server``
    (:func:`settings_for` with ``overrides``), closed when the block ends;
    with ``flushed=True`` every database is emptied first."""
    client = await connect(settings_for(server, **overrides))
    try:
        if flushed:
            await flush(client)
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def redis_client(redis_server: EmbeddedRedis) -> AsyncIterator[Redis]:
    async with connected(redis_server, flushed=True) as client:
        assert isinstance(client, Redis)
        yield client


@pytest_asyncio.fixture
async def cluster_client(redis_cluster: EmbeddedCluster) -> AsyncIterator[RedisCluster]:
    async with connected(redis_cluster, flushed=True) as client:
        assert isinstance(client, RedisCluster)
        yield client


@pytest_asyncio.fixture(params=["standalone", "cluster"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    server_fixture = "redis_server" if request.param == "standalone" else "redis_cluster"
    async with connected(request.getfixturevalue(server_fixture), flushed=True) as conn:
        yield conn
