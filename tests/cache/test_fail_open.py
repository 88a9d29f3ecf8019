"""Fail open: with Redis stopped or paused, reads are misses, writes are
logged and counted, get_or_set serves the loader, all within the timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import RedisCluster

import redkit
from redkit.cache import MISSING, Cache, InvalidationStrategy, Invalidator
from redkit.server import EmbeddedCluster, EmbeddedRedis
from redkit.testing import settings_for

from ._helpers import Loader

TIMEOUT = 0.5


async def _cache_on(server: Any, **options: Any) -> tuple[Any, Cache]:
    client = await redkit.connect(
        settings_for(server, read_timeout=TIMEOUT, write_timeout=TIMEOUT, connect_timeout=TIMEOUT)
    )
    return client, Cache(client, **options)


async def _exercise_down_redis(cache: Cache) -> None:
    """Every operation with Redis unreachable: no Redis exception escapes,
    each call returns within a few timeouts."""
    budget = 4 * TIMEOUT + 1.0
    on_event = Invalidator(cache, InvalidationStrategy.ON_EVENT)
    load = Loader({"from": "loader"})

    checks: list[tuple[str, Any, Any]] = [
        ("get", lambda: cache.get("k", default=MISSING), MISSING),
        ("get", lambda: cache.get("k"), None),
        ("exists", lambda: cache.exists("k"), False),
        ("set", lambda: cache.set("k", 1, ttl=60), False),
        ("set tagged", lambda: cache.set("k", 1, ttl=60, tags=["t"]), False),
        ("delete", lambda: cache.delete("k"), 0),
        ("get_or_set", lambda: cache.get_or_set("k", load, ttl=60), {"from": "loader"}),
        ("invalidate_tags", lambda: cache.invalidate_tags("t"), 0),
        ("delete_pattern", lambda: cache.delete_pattern("k*"), 0),
        ("clear", lambda: cache.clear(), False),
        ("after_update", lambda: on_event.after_update("user", "1"), None),
        ("after_create", lambda: Invalidator(cache).after_create("user"), None),
    ]
    for name, call, expected in checks:
        started = time.monotonic()
        assert await call() == expected, name
        elapsed = time.monotonic() - started
        assert elapsed < budget, f"{name} took {elapsed:.2f}s"

    class LoaderError(Exception):
        pass

    async def broken() -> None:
        raise LoaderError("from the loader")

    with pytest.raises(LoaderError, match="from the loader"):
        await cache.get_or_set("other", broken, ttl=60)
    assert load.calls == 1


async def test_stopped_server(fresh_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    client, cache = await _cache_on(fresh_server)
    try:
        await cache.set("k", "cached", ttl=60)
        assert await cache.get("k") == "cached"
        fresh_server.stop()
        caplog.set_level(logging.DEBUG, logger="redkit.cache")
        await _exercise_down_redis(cache)
        stats = cache.stats()
        assert stats.errors >= 12
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        # one warning when Redis goes away, details at debug level after that
        assert len(warnings) == 1
        assert "serving without Redis" in warnings[0].getMessage()
        fresh_server.restart()

        async def answers() -> bool:
            return await cache.set("k", "again", ttl=60)

        deadline = time.monotonic() + 10
        while not await answers():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert await cache.get("k") == "again"
        assert "reaches Redis again" in caplog.text
    finally:
        await cache.aclose()
        await client.aclose()


async def test_paused_server(fresh_server: Any) -> None:
    client, cache = await _cache_on(fresh_server)
    try:
        await cache.set("k", "cached", ttl=60)
        with fresh_server.paused():
            await _exercise_down_redis(cache)
        assert cache.stats().errors >= 10

        # the server is back: connections that timed out are replaced
        async def works() -> bool:
            return await cache.get("k") == "cached"

        deadline = time.monotonic() + 10
        while not await works():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        await cache.aclose()
        await client.aclose()


async def test_pause_during_concurrent_get_or_set(fresh_server: Any) -> None:
    client, cache = await _cache_on(fresh_server)
    load = Loader("loaded", delay=0.05)

    try:
        await cache.get("warm-up")
        with fresh_server.paused():
            started = time.monotonic()
            results = await asyncio.gather(
                *(cache.get_or_set("cold", load, ttl=60) for _ in range(20))
            )
            elapsed = time.monotonic() - started
        assert results == ["loaded"] * 20
        assert load.calls == 1  # single flight holds without Redis too
        assert elapsed < 4 * TIMEOUT + 1.0
    finally:
        await cache.aclose()
        await client.aclose()


async def test_decorated_function_still_answers_without_redis(fresh_server: Any) -> None:
    client, cache = await _cache_on(fresh_server)
    calls = 0

    @cache.cached(ttl=60, key="user:{user_id}")
    async def get_user(user_id: str) -> dict[str, str]:
        nonlocal calls
        calls += 1
        return {"id": user_id}

    try:
        assert await get_user("1") == {"id": "1"}
        fresh_server.stop()
        assert await get_user("1") == {"id": "1"}
        assert await get_user.invalidate("1") is False
        assert calls == 2
    finally:
        await cache.aclose()
        await client.aclose()


async def test_paused_mid_run(fresh_server: Any) -> None:
    """A steady stream of reads and writes while the server is paused and
    resumed under it: every call returns a correct value, none raises."""
    client, cache = await _cache_on(fresh_server)
    load = Loader({"v": 1})

    results: list[Any] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        while not stop.is_set():
            results.append(await cache.get_or_set("hot", load, ttl=60))
            results.append(await cache.set("written", {"v": 1}, ttl=60))
            results.append(await cache.get("written", default=MISSING))
            await asyncio.sleep(0.005)

    try:
        workers = [asyncio.ensure_future(traffic()) for _ in range(4)]

        async def served(count: int) -> None:
            deadline = time.monotonic() + 10
            start = len(results)
            while len(results) - start < count:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)

        await served(30)
        errors_before = cache.stats().errors
        with fresh_server.paused():
            await served(12)  # calls keep completing, through timeouts
        await served(60)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 10)
        assert cache.stats().errors > errors_before
        for value in results:
            assert value in ({"v": 1}, True, False, MISSING)
        # back to normal: hits again
        hits = cache.stats().hits
        assert await cache.get_or_set("hot", load, ttl=60) == {"v": 1}
        assert cache.stats().hits == hits + 1
    finally:
        stop.set()
        await cache.aclose()
        await client.aclose()


def test_cluster_node_paused_and_stopped() -> None:
    """On a private 3-master cluster: keys on a paused or stopped primary
    read as misses and load through, keys on the other primaries still hit."""
    with EmbeddedCluster(masters=3, node_timeout_ms=60_000) as cluster:
        asyncio.run(_cluster_scenario(cluster))


async def _cluster_scenario(cluster: EmbeddedCluster) -> None:
    client = await redkit.connect(
        settings_for(cluster, read_timeout=TIMEOUT, write_timeout=TIMEOUT, connect_timeout=TIMEOUT)
    )
    cache = Cache(client)
    try:
        keys = [f"user:{i}" for i in range(30)]
        for key in keys:
            assert await cache.set(key, key, ttl=60)
        by_port: dict[int, list[str]] = {}
        for key in keys:
            node = client.get_node_from_key(cache.key(key))
            by_port.setdefault(int(node.port), []).append(key)
        assert len(by_port) == 3
        # node 1 also holds app:_cache:gen (slot 6823): the generation key
        # being down must not take the other nodes' keys with it
        victim = cluster.nodes[1]
        assert client.get_node_from_key("app:_cache:gen").port == victim.port
        down, up = by_port[victim.port], by_port[cluster.nodes[0].port]
        budget = 8 * TIMEOUT + 2.0  # redis-py's cluster client retries a failed node

        async def load() -> str:
            return "loaded"

        # a new cache whose first generation read times out on the paused
        # node: moments after the node is back, get_or_set still loads
        fresh = Cache(client)
        try:
            victim.pause()
            try:
                assert await fresh.get_or_set("first", load, ttl=60) == "loaded"
            finally:
                victim.resume()
            assert await fresh.get_or_set("second", load, ttl=60) == "loaded"
            assert await fresh.get_or_set("third", load, ttl=60, tags=["t"]) == "loaded"
        finally:
            await fresh.aclose()

        for action in ("pause", "stop"):
            if action == "pause":
                victim.pause()
            else:
                victim.stop()
            try:
                started = time.monotonic()
                assert await cache.get(down[0], default=MISSING) is MISSING
                assert await cache.get_or_set(down[1], load, ttl=60) == "loaded"
                assert await cache.set(down[2], "x", ttl=60) is False
                assert time.monotonic() - started < 3 * budget
                assert await cache.get(up[0]) == up[0]
            finally:
                victim.resume()
        assert cache.stats().errors >= 6
    finally:
        await cache.aclose()
        await client.aclose()


# --------------------------------------------------------------------------
# A server that answers but refuses writes: out of memory, a read-only
# replica, or one that was unreachable at the cache's very first contact.


@contextlib.asynccontextmanager
async def _out_of_memory(client: Any) -> AsyncIterator[None]:
    """Every primary refuses commands that may grow memory (maxmemory far
    below what the server uses, noeviction); reads and deletes still work."""
    nodes: dict[str, Any] = {}
    if isinstance(client, RedisCluster):
        nodes["target_nodes"] = RedisCluster.PRIMARIES
    await client.config_set("maxmemory-policy", "noeviction", **nodes)
    await client.config_set("maxmemory", "1", **nodes)
    try:
        yield
    finally:
        await client.config_set("maxmemory", "0", **nodes)


async def _writes_refused(cache: Cache, client: Any) -> None:
    """Every public method of a cache on a server that answers reads and
    refuses writes: nothing raises, writes report False/0, get_or_set and
    cached() serve their loader, nothing is left in Redis."""
    load = Loader(make=lambda n: {"n": n})

    @cache.cached(ttl=60, key="deco:{n}")
    async def decorated(n: int) -> dict[str, int]:
        return {"deco": n}

    # Several calls in a row, each within the retry delay of the previous
    # failed generation read: every one is served by its loader.
    for n in range(3):
        assert await cache.get_or_set("k", load, ttl=60) == {"n": 2 * n + 1}
        assert await cache.get_or_set("k", load, ttl=60, tags=["t"]) == {"n": 2 * n + 2}
        assert await decorated(n) == {"deco": n}
    assert load.calls == 6
    assert await cache.get("k", default=MISSING) is MISSING
    assert await cache.exists("k") is False
    assert await cache.set("k", {"v": 1}, ttl=60) is False
    assert await cache.set("k", {"v": 1}, ttl=60, tags=["t"]) is False
    assert await cache.delete("k") == 0
    assert await cache.invalidate_tags("t") == 0
    assert await cache.delete_pattern("k*") == 0
    assert await cache.clear() is False
    await Invalidator(cache, InvalidationStrategy.ON_EVENT).after_update("user", "1")
    assert cache.stats().sets == 0
    assert cache.stats().errors > 0
    for key in ("app:k", "app:_cache:tag:t", "app:_cache:lease:{app:k}", "app:deco:1"):
        assert await client.exists(key) == 0, key


async def test_fresh_cache_on_a_server_out_of_memory(client: Any) -> None:
    """The first generation read fails (it has to create the generation
    key): get_or_set serves the loader on every call instead of raising."""
    cache = Cache(client)
    try:
        async with _out_of_memory(client):
            await _writes_refused(cache, client)
            assert await client.exists("app:_cache:gen") == 0
        # memory is back: after the retry delay the cache works again
        deadline = time.monotonic() + 10
        while not await cache.set("k", "stored", ttl=60):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert await cache.get("k") == "stored"
    finally:
        await cache.aclose()


async def test_known_generation_on_a_server_out_of_memory(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Values stored before memory ran out keep being served, also by a new
    cache instance; writes fail open and leave nothing half-written, and
    the refusals do not flood the log."""
    cache = Cache(client)
    load = Loader("loaded")

    try:
        assert await cache.set("kept", "v", ttl=60, tags=["t"])
        members = await client.zrange("app:_cache:tag:t", 0, -1)
        caplog.set_level(logging.DEBUG, logger="redkit.cache")
        async with _out_of_memory(client):
            fresh = Cache(client)
            try:
                for c in (cache, fresh):
                    assert await c.get("kept") == "v"
                    assert await c.exists("kept")
                    assert await c.get_or_set("kept", load, ttl=60) == "v"
                    assert await c.set("new", 1, ttl=60) is False
                    assert await c.set("kept", "other", ttl=60, tags=["t", "u"]) is False
                    assert await c.get_or_set("cold", load, ttl=60) == "loaded"
                    assert await c.clear() is False
                assert load.calls == 2
                assert await client.exists("app:new", "app:cold", "app:_cache:tag:u") == 0
                assert await client.exists("app:_cache:lease:{app:cold}") == 0
                assert await client.zrange("app:_cache:tag:t", 0, -1) == members
                assert await cache.get("kept") == "v"
                # reads keep working between the refused writes: one warning
                # per instance, the rest at debug level
                warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
                assert len(warnings) == 2, [r.getMessage() for r in warnings]
                assert all("refused" in r.getMessage() for r in warnings)
                # deletes free memory, so Redis still runs them
                assert await fresh.invalidate_tags("t") == 1
                assert await cache.get("kept", default=MISSING) is MISSING
            finally:
                await fresh.aclose()
    finally:
        await cache.aclose()


async def _replica_of(
    server_factory: Callable[..., EmbeddedRedis], master: EmbeddedRedis
) -> tuple[EmbeddedRedis, Any]:
    replica = server_factory(extra_args=["--replicaof", master.host, str(master.port)])
    client = await redkit.connect(settings_for(replica))
    deadline = time.monotonic() + 10
    while (await client.info("replication"))["master_link_status"] != "up":
        assert time.monotonic() < deadline, "the replica did not sync"
        await asyncio.sleep(0.02)
    return replica, client


async def test_cache_on_a_read_only_replica(
    server_factory: Callable[..., EmbeddedRedis],
) -> None:
    master = server_factory()
    _replica, replica_client = await _replica_of(server_factory, master)
    master_client = await redkit.connect(settings_for(master))
    fresh = Cache(replica_client)
    writer = Cache(master_client)
    on_replica = Cache(replica_client)
    try:
        # the master never had a cache: the replica cache cannot even create
        # the generation key, and fails open throughout
        await _writes_refused(fresh, replica_client)
        assert await master_client.dbsize() == 0

        assert await writer.set("user:1", {"id": 1}, ttl=60, tags=["users"])
        deadline = time.monotonic() + 10
        while await replica_client.exists("app:user:1") == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        # a replica serves what the master stored
        assert await on_replica.get("user:1") == {"id": 1}

        async def load() -> str:
            return "loaded"

        assert await on_replica.get_or_set("user:1", load, ttl=60) == {"id": 1}
        assert await on_replica.get_or_set("user:2", load, ttl=60) == "loaded"
        assert await on_replica.set("user:1", {"id": 2}, ttl=60, tags=["users", "x"]) is False
        assert await on_replica.exists("user:1")
        assert await on_replica.delete("user:1") == 0
        assert await on_replica.delete_pattern("user:*") == 0
        assert await on_replica.invalidate_tags("users") == 0
        assert await on_replica.clear() is False
        assert await writer.get("user:1") == {"id": 1}
        assert await master_client.zrange("app:_cache:tag:users", 0, -1) == [b"app:user:1"]
        assert await master_client.exists("app:user:2", "app:_cache:tag:x") == 0
    finally:
        for c in (fresh, writer, on_replica):
            await c.aclose()
        await replica_client.aclose()
        await master_client.aclose()


async def test_redis_back_right_after_a_failed_first_contact(fresh_server: Any) -> None:
    """The very first generation read times out, and Redis answers again at
    once: the next get_or_set, moments later, still serves its loader."""
    client, cache = await _cache_on(fresh_server)
    load = Loader(make=lambda n: n)

    try:
        with fresh_server.paused():
            assert await cache.get_or_set("k", load, ttl=60) == 1
        # cold keys: loaded whether the retry delay is still running or not
        assert await cache.get_or_set("k", load, ttl=60) == 2
        assert await cache.get_or_set("k2", load, ttl=60, tags=["t"]) == 3
        # and once the retry delay is over, it syncs and caches again
        deadline = time.monotonic() + 10
        while await cache.get("k", default=MISSING) is MISSING:
            assert time.monotonic() < deadline
            await cache.get_or_set("k", load, ttl=60)
            await asyncio.sleep(0.05)
        assert await cache.get("k") == load.calls
    finally:
        await cache.aclose()
        await client.aclose()
