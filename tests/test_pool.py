"""The standalone pool waits for a free connection instead of failing, for a
bounded time, and gives its slots back whatever happens to a caller."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from redkit.server import EmbeddedRedis
from redkit.testing import connected


async def _until_blocked(server: EmbeddedRedis, count: int) -> None:
    """Wait (bounded) until the server has ``count`` clients blocked in BLPOP."""
    async with connected(server) as admin:
        for _ in range(200):
            if (await admin.info("clients"))["blocked_clients"] >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{count} clients never blocked")


async def test_a_full_pool_makes_callers_wait(redis_server: EmbeddedRedis) -> None:
    # The pool alone: with autopipelining a GET takes no pooled connection.
    async with connected(
        redis_server, pool_size=2, connect_timeout=5, autopipeline=False
    ) as client:
        # Two BLPOPs hold both connections until their lists get an item.
        blockers = [asyncio.create_task(client.blpop([f"wait:{i}"], timeout=5)) for i in range(2)]
        await _until_blocked(redis_server, 2)
        getter = asyncio.create_task(client.get("free"))
        await asyncio.sleep(0.2)
        assert not getter.done()  # waiting for a connection, not failed
        async with connected(redis_server) as admin:
            await admin.rpush("wait:0", "x")
            assert await asyncio.wait_for(getter, 5) is None
            await admin.rpush("wait:1", "x")
        assert [r[0] for r in await asyncio.gather(*blockers)] == [b"wait:0", b"wait:1"]


async def test_waiting_is_bounded(redis_server: EmbeddedRedis) -> None:
    async with connected(
        redis_server, pool_size=1, connect_timeout=0.3, autopipeline=False
    ) as client:
        blocker = asyncio.create_task(client.blpop(["never"], timeout=2))
        await _until_blocked(redis_server, 1)
        with pytest.raises(RedisConnectionError, match=r"no free connection within 0\.3s"):
            await client.get("k")
        blocker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocker
        # The cancelled holder gave its slot back.
        assert await asyncio.wait_for(client.ping(), 3)


async def test_cancelled_waiters_leave_every_slot_free(redis_server: EmbeddedRedis) -> None:
    async with connected(redis_server, pool_size=3, connect_timeout=5) as client:
        tasks = [asyncio.create_task(client.blpop([f"w{i}"], timeout=3)) for i in range(10)]
        await _until_blocked(redis_server, 3)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # All three slots are usable again at once.
        results = await asyncio.wait_for(asyncio.gather(*(client.ping() for _ in range(3))), 3)
        assert results == [True, True, True]
        pool = client.connection_pool
        assert len(pool._in_use_connections) == 0  # type: ignore[attr-defined]


async def test_cluster_bursts_wait_instead_of_failing(redis_cluster) -> None:  # type: ignore[no-untyped-def]
    # redis-py's cluster client alone fails past 100 busy connections on a
    # node; 600 concurrent commands over 3 nodes exceed that.
    async with connected(redis_cluster, pool_size=10) as client:
        await asyncio.gather(*(client.set(f"burst:{i}", i) for i in range(600)))
        values = await asyncio.gather(*(client.get(f"burst:{i}") for i in range(600)))
        assert values == [str(i).encode() for i in range(600)]
