"""Tag invalidation, clear() by namespace generation, delete_pattern."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import RedisCluster

from redkit.cache import MISSING, Cache, LocalCache

from ._helpers import command_calls, until


async def test_invalidate_tags_deletes_every_tagged_key(client: Any) -> None:
    cache = Cache(client)
    for i in range(60):
        await cache.set(f"user:{i}", {"id": i}, ttl=60, tags=["users", f"team:{i % 3}"])
    await cache.set("product:1", {"id": 1}, ttl=60, tags=["products"])
    await cache.set("untagged", 1, ttl=60)
    if isinstance(client, RedisCluster):
        nodes = {client.get_node_from_key(f"app:user:{i}").name for i in range(60)}
        assert len(nodes) == 3  # one tag's keys span every primary
    scans_before = await command_calls(client, "scan")
    keys_before = await command_calls(client, "keys")

    assert await cache.invalidate_tags("team:0") == 20
    assert await cache.get("user:0") is None
    assert await cache.get("user:1") == {"id": 1}
    assert await cache.invalidate_tags("users") == 40
    for i in range(60):
        assert await cache.get(f"user:{i}", default=MISSING) is MISSING
    assert await cache.get("product:1") == {"id": 1}
    assert await cache.get("untagged") == 1
    assert await cache.invalidate_tags("users") == 0
    assert await cache.invalidate_tags("never-used") == 0
    # O(keys with the tag): no keyspace walk happened
    assert await command_calls(client, "scan") == scans_before
    assert await command_calls(client, "keys") == keys_before
    # the tag sets themselves are gone once emptied
    assert await client.exists("app:_cache:tag:users") == 0
    assert await client.exists("app:_cache:tag:team:0") == 0


async def test_tag_sets_expire_with_their_members(client: Any) -> None:
    cache = Cache(client, jitter=0)
    await cache.set("short", 1, ttl=0.3, tags=["t"])
    tag_key = "app:_cache:tag:t"
    ttl_ms = await client.pttl(tag_key)
    assert 300 <= ttl_ms <= 300 + 1000 + 50
    await cache.set("long", 2, ttl=30, tags=["t"])
    assert await client.pttl(tag_key) >= 30_000

    async def short_gone() -> bool:
        return not await client.exists("app:short")

    await until(short_gone, timeout=5.0)
    await cache.set("other", 3, ttl=20, tags=["t"])
    # expired members are pruned on the next write to the tag
    members = await client.zrange(tag_key, 0, -1)
    assert sorted(members) == [b"app:long", b"app:other"]
    # and a tag whose members all expired disappears by itself
    await cache.set("brief", 1, ttl=0.2, tags=["fleeting"])

    async def tag_gone() -> bool:
        return not await client.exists("app:_cache:tag:fleeting")

    await until(tag_gone, timeout=5.0)


async def test_tags_re_set_after_invalidation_are_tracked_again(client: Any) -> None:
    cache = Cache(client)
    await cache.set("a", 1, ttl=60, tags=["g"])
    assert await cache.invalidate_tags("g") == 1
    await cache.set("a", 2, ttl=60, tags=["g"])
    assert await cache.get("a") == 2
    assert await cache.invalidate_tags("g") == 1
    assert await cache.get("a") is None


async def test_clear_is_one_increment_and_hides_everything(client: Any) -> None:
    cache = Cache(client)
    for i in range(30):
        await cache.set(f"k:{i}", i, ttl=60)
    dels = await command_calls(client, "del")
    scans = await command_calls(client, "scan")
    incrs = await command_calls(client, "incrby")
    assert await cache.clear() is True
    assert await command_calls(client, "del") == dels
    assert await command_calls(client, "scan") == scans
    assert await command_calls(client, "incrby") == incrs + 1
    for i in range(30):
        assert await cache.get(f"k:{i}", default=MISSING) is MISSING
        assert not await cache.exists(f"k:{i}")
    await cache.set("k:0", "new", ttl=60)
    assert await cache.get("k:0") == "new"
    # other prefixes are untouched
    other = Cache(client, prefix="other")
    await other.set("x", 1, ttl=60)
    await cache.clear()
    assert await other.get("x") == 1


async def test_clear_survives_a_lost_generation_key(client: Any) -> None:
    """If the generation key vanishes (evicted under memory pressure),
    values written before are not resurrected."""
    cache = Cache(client, sync_interval=0.1)
    await cache.set("k", "old", ttl=60)
    await client.delete("app:_cache:gen")
    other = Cache(client)
    assert await other.get("k", default=MISSING) is MISSING  # new random generation

    async def first_sees_miss() -> bool:
        return await cache.get("k", default=MISSING) is MISSING

    await until(first_sees_miss, timeout=3.0)


async def test_clear_on_a_shared_channel_stays_with_its_prefix(client: Any) -> None:
    a = Cache(client, prefix="a", channel="shared", local=LocalCache())
    b = Cache(client, prefix="b", channel="shared", local=LocalCache())
    assert await a.start()
    assert await b.start()
    await b.set("k", 1, ttl=60)
    await a.clear()
    await a.clear()
    # b never adopts a's generation: its values stay readable, locally too
    for _ in range(20):
        assert await b.get("k") == 1
        await asyncio.sleep(0.01)
    assert b.stats().local_hits > 0
    await a.aclose()
    await b.aclose()


async def test_clear_reaches_other_instances(client: Any) -> None:
    writer = Cache(client)
    # no channel: learns the generation by re-reading it every sync_interval
    polling = Cache(client, sync_interval=0.2)
    # with a local tier: learns it from the invalidation channel
    local = Cache(client, local=LocalCache())
    assert await local.start()
    await writer.set("k", "v", ttl=60)
    assert await polling.get("k") == "v"
    assert await local.get("k") == "v"
    assert await local.get("k") == "v"
    assert local.stats().local_hits == 1
    started = time.monotonic()
    await writer.clear()

    async def local_sees_it() -> bool:
        return await local.get("k", default=MISSING) is MISSING

    async def polling_sees_it() -> bool:
        return await polling.get("k", default=MISSING) is MISSING

    await until(local_sees_it, timeout=2.0)
    await until(polling_sees_it, timeout=3.0)
    assert time.monotonic() - started < 3.0
    await local.aclose()


async def test_delete_pattern_scans_every_primary(client: Any) -> None:
    cache = Cache(client)
    for i in range(40):
        await cache.set(f"user:list:{i}", [i], ttl=60)
    await cache.set("user:1", 1, ttl=60, tags=["users"])
    await cache.set("user:listing", 2, ttl=60)
    await cache.clear()
    generation = await client.get("app:_cache:gen")
    assert generation is not None
    await cache.set("user:list:0", [0], ttl=60)
    if isinstance(client, RedisCluster):
        nodes = {client.get_node_from_key(f"app:user:list:{i}").name for i in range(40)}
        assert len(nodes) == 3
    assert await cache.delete_pattern("user:list:*") == 40
    assert await client.exists("app:user:listing") == 1
    for i in range(40):
        assert await client.exists(f"app:user:list:{i}") == 0
    # a catch-all pattern never touches the cache's own bookkeeping
    deleted = await cache.delete_pattern("*")
    assert deleted == 2
    assert await client.get("app:_cache:gen") == generation
    assert await client.exists("app:_cache:tag:users") == 1
    # literal prefix: glob characters in the prefix are not wildcards
    odd = Cache(client, prefix="a*")
    await odd.set("x", 1, ttl=60)
    await client.set("ab:x", b"not ours")
    assert await odd.delete_pattern("*") == 1
    assert await client.get("ab:x") == b"not ours"
