"""A cache with a local tier fails open while the primary moves, hits again
after, and never serves a value older than a write made after the move."""

from __future__ import annotations

import asyncio
import time

import pytest

from redkit import Cache, LocalCache

from ._recovery import BOUND, PATIENCE, Workload, close_all, report, until_async, within
from .conftest import Rig

pytestmark = pytest.mark.failover

# docs/cache.md: an invalidation reaches the other local tiers within 100 ms.
_COHERENCE = 0.1


async def test_cache(rig: Rig) -> None:
    client_a, client_b = await rig.connect(), await rig.connect()
    # Instance A reads through its local tier; instance B writes.
    a = Cache(client_a, prefix="fo", local=LocalCache(ttl=60))
    b = Cache(client_b, prefix="fo")
    try:
        assert await a.start()
        tag = rig.pubsub_key()  # the node A's invalidation listener is on
        key = f"item{{{tag}}}"
        assert await b.set(key, "v0", ttl=60)
        await rig.replicated(client_b, f"{{{tag}}}")
        assert await a.get(key) == "v0"  # now in A's local tier

        async def loader() -> str:
            return "loaded"

        async def read(n: int) -> object:
            return await a.get_or_set(key, loader, ttl=60)

        async with Workload(read) as reads:
            promotion = await rig.trigger(tag)
            served_at, writes = await _serves_a_later_write(a, b, key, promotion.promoted)
        waited = await within(lambda: a.coherent, PATIENCE)
        live_at = None if waited is None else time.monotonic() - promotion.promoted
        recovery = report(
            "cache",
            promotion,
            served_at,
            writes_needed=writes,
            local_tier_live_after="never" if live_at is None else f"{live_at:.3f}s",
        )
        assert live_at is not None, "the local tier never became live again"

        assert reads.errors() == [], "the cache must fail open"
        assert {c.value for c in reads.calls} <= {"v0", "loaded"} | {
            f"post-{n}" for n in range(writes + 1)
        }
        # From now on every write is what the other instance reads next.
        for n in range(10):
            assert await b.set(key, f"check-{n}", ttl=60)
            await until_async(
                lambda n=n: _equals(a.get(key), f"check-{n}"), "fresh read", _COHERENCE
            )
        before = a.stats()
        assert await a.get_or_set(key, loader, ttl=60) == "check-9"
        after = a.stats()
        assert after.hits + after.local_hits > before.hits + before.local_hits
        assert after.loads == before.loads
        assert recovery <= BOUND
    finally:
        await close_all(a, b, client_a, client_b)


async def _equals(read: object, expected: str) -> bool:
    return await read == expected  # type: ignore[misc]


async def _serves_a_later_write(a: Cache, b: Cache, key: str, since: float) -> tuple[float, int]:
    """Write through B after the promotion until A serves the write (within
    the coherence bound of a healthy tier); when A served it, and how many
    writes it took."""
    deadline = since + PATIENCE
    n = 0
    while time.monotonic() < deadline:
        n += 1
        value = f"post-{n}"
        if await b.set(key, value, ttl=60):
            seen_by = time.monotonic() + _COHERENCE
            while time.monotonic() < seen_by:
                if await a.get(key) == value:
                    return time.monotonic(), n
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.01)
    raise AssertionError(f"A never served a write made after the promotion ({n} writes)")
