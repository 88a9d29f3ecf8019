"""Fail open: with Redis stopped or paused, reads are misses, writes are
logged and counted, get_or_set serves the loader, all within the timeout."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

import redkit
from redkit.cache import MISSING, Cache, InvalidationStrategy, Invalidator
from redkit.server import EmbeddedCluster
from redkit.testing import settings_for

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
    loads = 0
    on_event = Invalidator(cache, InvalidationStrategy.ON_EVENT)

    async def load() -> dict[str, str]:
        nonlocal loads
        loads += 1
        return {"from": "loader"}

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
    assert loads == 1


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
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return "loaded"

    try:
        await cache.get("warm-up")
        with fresh_server.paused():
            started = time.monotonic()
            results = await asyncio.gather(
                *(cache.get_or_set("cold", load, ttl=60) for _ in range(20))
            )
            elapsed = time.monotonic() - started
        assert results == ["loaded"] * 20
        assert calls == 1  # single flight holds without Redis too
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
    loads = 0

    async def load() -> dict[str, int]:
        nonlocal loads
        loads += 1
        return {"v": 1}

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
