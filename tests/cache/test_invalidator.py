"""Invalidator: ON_WRITE, TTL_ONLY and ON_EVENT after create/update/delete,
and warm-up."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio import RedisCluster

import redkit
from redkit import ConfigError
from redkit.cache import (
    MISSING,
    Cache,
    InvalidationStrategy,
    Invalidator,
    InvalidatorStats,
    LocalCache,
)

from ._helpers import command_calls


async def _fill(cache: Cache) -> None:
    await cache.set("user:42", {"id": 42}, ttl=60)
    await cache.set("user:43", {"id": 43}, ttl=60)
    await cache.set("user:list:page:1", [42, 43], ttl=60)  # untagged: found by SCAN
    await cache.set("user:list:all", [42, 43], ttl=60, tags=["user:list"])
    await cache.set("order:list:1", [1], ttl=60)


async def _present(cache: Cache) -> set[str]:
    keys = ["user:42", "user:43", "user:list:page:1", "user:list:all", "order:list:1"]
    return {k for k in keys if await cache.get(k, default=MISSING) is not MISSING}


async def test_on_write(client: Any) -> None:
    cache = Cache(client)
    inv = Invalidator(cache, strategy=InvalidationStrategy.ON_WRITE)
    await _fill(cache)
    await inv.after_update("user", "42")
    assert await _present(cache) == {"user:43", "order:list:1"}
    await _fill(cache)
    await inv.after_create("user")
    assert await _present(cache) == {"user:42", "user:43", "order:list:1"}
    await _fill(cache)
    await inv.after_delete("user", 43)
    assert await _present(cache) == {"user:42", "order:list:1"}
    assert inv.stats() == InvalidatorStats(invalidations=3)


async def test_tagged_lists_without_scanning(client: Any) -> None:
    cache = Cache(client)
    inv = Invalidator(cache, InvalidationStrategy.ON_WRITE, scan_lists=False)
    await _fill(cache)
    scans = await command_calls(client, "scan")
    await inv.after_update("user", "42")
    assert await command_calls(client, "scan") == scans
    # only the tagged list key goes; the untagged one waits for its TTL
    assert await _present(cache) == {"user:43", "user:list:page:1", "order:list:1"}


async def test_ttl_only_does_nothing(client: Any) -> None:
    cache = Cache(client)
    inv = Invalidator(cache, "ttl_only")
    await _fill(cache)
    await inv.after_create("user")
    await inv.after_update("user", "42")
    await inv.after_delete("user", "43")
    assert len(await _present(cache)) == 5
    assert inv.stats().invalidations == 0


async def test_on_event_reaches_another_service(client: Any) -> None:
    """Two services with their own prefixes share an event channel: one's
    update invalidates the other's copy of the entity."""
    if isinstance(client, RedisCluster):
        node = client.get_default_node()
        host, port, cluster = node.host, int(node.port), True
    else:
        kwargs = client.connection_pool.connection_kwargs
        host, port, cluster = kwargs["host"], int(kwargs["port"]), False
    other_client = await redkit.connect(
        redkit.RedisSettings(host=host, port=port, cluster=cluster, min_idle_conns=0)
    )
    api = Cache(client, prefix="api", channel="events:cache", source="api")
    worker = Cache(
        other_client, prefix="worker", channel="events:cache", source="worker", local=LocalCache()
    )
    try:
        async with (
            Invalidator(api, InvalidationStrategy.ON_EVENT) as api_inv,
            Invalidator(worker, InvalidationStrategy.ON_EVENT, scan_lists=False) as worker_inv,
        ):
            await _fill(api)
            await _fill(worker)
            assert await worker.get("user:42") == {"id": 42}
            scans = await command_calls(client, "scan")
            await api_inv.after_update("user", "42")
            assert await _present(api) == {"user:43", "order:list:1"}

            async def applied() -> bool:
                return worker_inv.stats().events_applied == 1

            deadline = time.monotonic() + 5
            while not await applied():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            # applied without a SCAN: the entity key and the tagged list
            assert await _present(worker) == {"user:43", "user:list:page:1", "order:list:1"}
            # only api's own pattern walk: one SCAN per primary
            assert await command_calls(client, "scan") == scans + (3 if cluster else 1)
            assert api_inv.stats().events_published == 1
            assert api_inv.stats().events_applied == 0  # its own event is not re-applied
            await worker_inv.after_delete("user", "43")
            deadline = time.monotonic() + 5
            while api_inv.stats().events_applied < 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert "user:43" not in await _present(api)
    finally:
        await api.aclose()
        await worker.aclose()
        await other_client.aclose()


async def test_warm_up(client: Any) -> None:
    cache = Cache(client)
    inv = Invalidator(cache)
    calls = 0

    async def load_user() -> dict[str, int]:
        nonlocal calls
        calls += 1
        return {"id": 42}

    assert await inv.warm_up("user:42", ttl=300, loader=load_user) == {"id": 42}
    assert await cache.get("user:42") == {"id": 42}
    assert 0 < await client.pttl("app:user:42") <= 300_000
    assert await cache.get_or_set("user:42", load_user, ttl=300) == {"id": 42}
    assert calls == 1


async def test_bad_arguments(client: Any) -> None:
    cache = Cache(client)
    with pytest.raises(ConfigError, match="strategy"):
        Invalidator(cache, "sometimes")
    with pytest.raises(ConfigError, match="Cache"):
        Invalidator(object())  # type: ignore[arg-type]
    inv = Invalidator(cache)
    with pytest.raises(ConfigError, match="entity"):
        await inv.after_create("")
    with pytest.raises(ConfigError, match="id"):
        await inv.after_update("user", "a\nb")
