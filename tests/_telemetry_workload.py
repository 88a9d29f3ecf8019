"""One call of each observable operation on a real server, shared by the
metrics, Prometheus and OpenTelemetry tests."""

from __future__ import annotations

from typing import Any

from redkit import (
    Cache,
    Client,
    DistributedLock,
    Publisher,
    RateLimiter,
    SessionStore,
    StreamPublisher,
)

SECRET = "telemetry-tests-secret-0123456789"

# What one run of exercise() times, operation by operation.
EXPECTED_CALLS = {
    "cache.set": 1,
    "cache.get": 1,
    "cache.get_or_set": 1,
    "cache.delete": 1,
    "session.create": 1,
    "session.get": 1,
    "session.touch": 1,
    "ratelimit.hit": 1,
    "ratelimit.peek": 1,
    "events.publish": 1,
    "streams.publish": 2,  # one publish, one publish_many
    "lock.acquire": 3,  # lock(), acquire() entered, acquire() awaited
    "lock.extend": 1,
    "lock.release": 3,  # the release function, leaving the block, release()
    "semaphore.acquire": 1,
    "semaphore.release": 1,
}


async def exercise(client: Client, tag: str = "tm") -> dict[str, Any]:
    """Run each operation once (as EXPECTED_CALLS counts) and return the
    components by name."""
    cache = Cache(client, prefix=tag, default_ttl=60)
    await cache.set("user:1", {"id": 1})
    assert await cache.get("user:1") == {"id": 1}

    async def load() -> dict[str, int]:
        return {"id": 2}

    assert await cache.get_or_set("user:2", load) == {"id": 2}
    assert await cache.delete("user:1") == 1
    await cache.aclose()

    store = SessionStore(client, secret=SECRET, prefix=tag)
    session = await store.create("u1", {"theme": "dark"})
    assert await store.get(session.id) is not None
    assert await store.touch(session.id, 60) is not None

    limiter = RateLimiter(client, prefix=tag)
    assert (await limiter.hit("client-1", "10/minute")).allowed
    assert (await limiter.peek("client-1", "10/minute")).remaining == 9

    publisher = Publisher(client, source="tests")
    await publisher.publish(f"{tag}-users", "user.created", {"id": 1})
    streams = StreamPublisher(client, source="tests")
    await streams.publish(f"{tag}-orders", "order.placed", {"id": 1})
    await streams.publish_many(f"{tag}-orders", [("order.placed", {"id": 2})])

    locks = DistributedLock(client, prefix=tag)
    release = await locks.lock("job-a", ttl=5)
    await release()
    async with locks.acquire("job-b", ttl=5, timeout=1, auto_renew=False) as lease:
        await lease.extend()
    lease = await locks.acquire("job-c", ttl=5, timeout=1, auto_renew=False)
    await lease.release()
    semaphore = locks.semaphore("pool", limit=2, ttl=5)
    async with semaphore.acquire(timeout=1, auto_renew=False):
        pass
    await locks.aclose()
    return {
        "cache": cache,
        "sessions": store,
        "ratelimit": limiter,
        "publisher": publisher,
        "streams": streams,
        "locks": locks,
        "semaphore": semaphore,
    }
