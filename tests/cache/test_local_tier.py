"""The in-process tier: coherent across instances through the invalidation
channel, flushed whenever the channel drops, bounded in memory."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from redis.asyncio import RedisCluster

import redkit
from redkit.cache import MISSING, Cache, LocalCache
from redkit.testing import settings_for

from ._helpers import another_client as _another_client
from ._helpers import command_calls
from ._helpers import until as _until

# The Go service's golden records (a copy of the shared seed fixtures).
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "go"
GO_BARE_INVALIDATE = (FIXTURES / "event_utc_nopayload.json").read_bytes().strip()


async def _gets(client: Any) -> int:
    return await command_calls(client, "get")


async def test_instances_see_each_others_updates(client: Any) -> None:
    other_client = await _another_client(client)
    a = Cache(client, local=LocalCache())
    b = Cache(other_client, local=LocalCache())
    plain = Cache(other_client)  # no local tier of its own, still announces writes
    try:
        assert await a.start()
        assert await b.start()
        await a.set("user:42", {"v": 1}, ttl=60, tags=["users"])

        async def b_serves_locally() -> bool:
            # the first read may race a's announcement and skip the local fill
            return await b.get("user:42") == {"v": 1} and b.stats().local_hits > 0

        await _until(b_serves_locally, timeout=2.0)

        async def b_sees(expected: Any) -> Any:
            async def check() -> bool:
                return await b.get("user:42", default=MISSING) == expected

            return check

        # a set anywhere evicts everywhere, well within 100 ms on loopback
        await a.set("user:42", {"v": 2}, ttl=60, tags=["users"])
        assert await _until(await b_sees({"v": 2}), timeout=2.0) < 0.5
        await plain.set("user:42", {"v": 3}, ttl=60, tags=["users"])
        assert await _until(await b_sees({"v": 3}), timeout=2.0) < 0.5
        assert await a.get("user:42") == {"v": 3}
        await a.delete("user:42")
        assert await _until(await b_sees(MISSING), timeout=2.0) < 0.5

        await a.set("user:42", {"v": 4}, ttl=60, tags=["users"])
        await _until(await b_sees({"v": 4}), timeout=2.0)
        await b.get("user:42")  # in b's local tier now
        await plain.invalidate_tags("users")
        assert await _until(await b_sees(MISSING), timeout=2.0) < 0.5
    finally:
        await a.aclose()
        await b.aclose()
        await other_client.aclose()


async def test_local_hit_makes_no_round_trip(client: Any) -> None:
    cache = Cache(client, local=LocalCache())
    async with cache:
        await cache.set("k", [1, 2, 3], ttl=60)
        first = await cache.get("k")
        before = await _gets(client)
        for _ in range(50):
            got = await cache.get("k")
            assert got == [1, 2, 3]
            got.append(4)  # each hit is a fresh object
        assert await _gets(client) == before
        assert first == [1, 2, 3]
        assert cache.stats().local_hits == 51  # the set filled the local tier
        # get_or_set is served locally too
        assert await cache.get_or_set("k", lambda: [9], ttl=60) == [1, 2, 3]
        assert await _gets(client) == before


async def test_local_entries_expire_and_respect_redis_ttl(client: Any) -> None:
    cache = Cache(client, local=LocalCache(ttl=0.2), jitter=0)
    async with cache:
        await cache.set("k", 1, ttl=60)
        assert await cache.get("k") == 1
        hits = cache.stats().local_hits
        await asyncio.sleep(0.3)  # past the local TTL on purpose
        assert await cache.get("k") == 1
        assert cache.stats().local_hits == hits
        assert cache.stats().hits == 1
        # a value whose Redis TTL is shorter than the local TTL
        long_local = Cache(client, prefix="p2", local=LocalCache(ttl=60), jitter=0)
        async with long_local:
            await long_local.set("brief", 1, ttl=0.3)

            async def gone() -> bool:
                return await long_local.get("brief", default=MISSING) is MISSING

            assert await _until(gone, timeout=3.0) < 1.5


def test_local_cache_bounds() -> None:
    local = LocalCache(max_entries=5, max_bytes=1000, max_value_bytes=300)
    for i in range(10):
        token = local.fill_token(f"k{i}")
        assert local.store(f"k{i}", b"x" * 10, 60, token)
    assert len(local) == 5
    assert local.lookup("k0") is None
    assert local.lookup("k9") == b"x" * 10
    # least recently used goes first
    local.lookup("k5")
    local.store("new", b"y", 60, local.fill_token("new"))
    assert local.lookup("k5") is not None
    assert local.lookup("k6") is None
    # too large for the tier
    assert not local.store("big", b"z" * 301, 60, local.fill_token("big"))
    # the byte budget evicts too
    for i in range(4):
        local.store(f"b{i}", b"w" * 290, 60, local.fill_token(f"b{i}"))
    assert local.size_bytes <= 1000
    # an invalidation between token and store voids the store
    token = local.fill_token("raced")
    local.evict(["raced"])
    assert not local.store("raced", b"stale", 60, token)
    token = local.fill_token("raced")
    local.flush()
    assert not local.store("raced", b"stale", 60, token)
    assert len(local) == 0
    assert local.size_bytes == 0


async def test_go_bare_invalidate_event_flushes_the_local_tier(client: Any) -> None:
    cache = Cache(client, local=LocalCache())
    async with cache:
        await cache.set("k", 1, ttl=60)
        assert await cache.get("k") == 1
        assert len(cache.local or []) == 1
        await client.publish(cache.channel, GO_BARE_INVALIDATE)

        async def flushed() -> bool:
            return len(cache.local or []) == 0

        await _until(flushed, timeout=2.0)
        # junk on the channel is ignored, the tier keeps working
        await client.publish(cache.channel, b"not json")
        await client.publish(cache.channel, b'{"type": "user.created", "payload": {}}')
        assert await cache.get("k") == 1
        assert await cache.get("k") == 1
        assert cache.coherent


async def test_stopped_server_flushes_local_tier_and_reconnects(fresh_server: Any) -> None:
    client = await redkit.connect(settings_for(fresh_server, read_timeout=0.5))
    cache = Cache(client, local=LocalCache(), heartbeat=0.2)
    try:
        assert await cache.start()
        await cache.set("k", "v", ttl=60)
        assert await cache.get("k") == "v"
        assert len(cache.local or []) == 1
        fresh_server.stop()

        async def dropped() -> bool:
            return not cache.coherent

        await _until(dropped, timeout=5.0)
        assert len(cache.local or []) == 0
        # nothing stale is served: with Redis gone, a read is a miss
        assert await cache.get("k", default=MISSING) is MISSING
        fresh_server.restart()

        async def back() -> bool:
            return cache.coherent

        await _until(back, timeout=10.0)
        assert cache.stats().channel_reconnects >= 1
        assert cache.stats().local_flushes >= 2
        await cache.set("k", "again", ttl=60)
        assert await cache.get("k") == "again"
    finally:
        await cache.aclose()
        await client.aclose()


async def test_paused_server_is_detected_by_heartbeat(fresh_server: Any) -> None:
    client = await redkit.connect(settings_for(fresh_server, read_timeout=0.5))
    cache = Cache(client, local=LocalCache(), heartbeat=0.2)
    try:
        assert await cache.start()
        await cache.set("k", "v", ttl=60)
        assert await cache.get("k") == "v"
        with fresh_server.paused():

            async def dropped() -> bool:
                return not cache.coherent

            await _until(dropped, timeout=5.0)
            assert len(cache.local or []) == 0
        assert await cache.start(timeout=10.0)
        assert await cache.get("k") == "v"
    finally:
        await cache.aclose()
        await client.aclose()


async def test_missed_messages_during_a_reconnect_are_not_served(client: Any) -> None:
    cache = Cache(client, local=LocalCache())
    silent = Cache(client, publish=False)  # writes that announce nothing
    async with cache:
        await cache.set("k", "old", ttl=60)
        assert await cache.get("k") == "old"
        assert len(cache.local or []) == 1
        await silent.set("k", "new", ttl=60)
        # the local tier has not heard of the write ...
        assert await cache.get("k") == "old"
        # ... until its subscription is cut and comes back: then it starts over
        if isinstance(client, RedisCluster):
            await client.client_kill_filter(_type="pubsub", target_nodes=RedisCluster.PRIMARIES)
        else:
            await client.client_kill_filter(_type="pubsub")

        async def fresh() -> bool:
            # Once subscribed again (the tier is bypassed meanwhile).
            return cache.coherent and await cache.get("k") == "new"

        await _until(fresh, timeout=10.0)
        assert cache.stats().channel_reconnects >= 1
