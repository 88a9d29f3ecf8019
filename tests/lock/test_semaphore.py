"""Semaphore: N permits, expiry of dead holders, the lease guarantees."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from redkit import LockLost, LockNotAcquired
from redkit.lock import DistributedLock, Permit

from ._helpers import all_keys, eventually, subscribers, value_is


@pytest.fixture
async def locks(client: Any) -> Any:
    service = DistributedLock(client, prefix="t")
    yield service
    await service.aclose()


async def test_limit_permits_then_wait(client: Any, locks: DistributedLock) -> None:
    sem = locks.semaphore("exports", limit=3, ttl=30)
    permits = [await sem.acquire(timeout=1) for _ in range(3)]
    assert all(isinstance(p, Permit) for p in permits)
    assert [p.fencing_token for p in permits] == [1, 2, 3]
    assert await sem.count() == 3
    assert await client.zcard("t:semaphore:{exports}") == 3
    with pytest.raises(LockNotAcquired, match="all 3 permits of semaphore 'exports' are held"):
        await sem.acquire(timeout=0)
    assert await permits[0].release() is True
    async with sem.acquire(timeout=1) as fourth:
        assert fourth.fencing_token == 4
        assert await sem.count() == 3
    for permit in permits[1:]:
        assert await permit.release()
    assert await sem.count() == 0
    assert sem.stats().acquired == 4
    assert sem.stats().timeouts == 1


async def test_never_more_than_limit_under_concurrency(client: Any, locks: DistributedLock) -> None:
    sem = locks.semaphore("pool", limit=3, ttl=10)
    inside = 0
    worst = 0

    async def worker() -> None:
        nonlocal inside, worst
        for _ in range(6):
            async with sem.acquire(timeout=30):
                inside += 1
                worst = max(worst, inside)
                assert await sem.count() <= 3
                await asyncio.sleep(0.005)
                inside -= 1

    # 8 tasks: redis-py's cluster client refuses requests beyond its pool.
    await asyncio.gather(*(worker() for _ in range(8)))
    assert worst == 3
    assert sem.stats().acquired == 48
    assert await sem.count() == 0


async def test_expired_permits_of_dead_holders_are_reclaimed(locks: DistributedLock) -> None:
    # A ttl long enough that the live permit's renewals (every ttl/3) keep
    # it under a loaded machine's stalls; the dead ones still expire in 1 s.
    sem = locks.semaphore("jobs", limit=2, ttl=1.0)
    # Two holders that never renew nor release, like crashed processes.
    dead = [await sem.acquire(timeout=1, auto_renew=False) for _ in range(2)]
    async with sem.acquire(timeout=5) as permit:
        assert permit.fencing_token == 3
        assert await sem.count() == 1
    await eventually(lambda: all(p.lost.is_set() for p in dead))


async def test_permit_renewal_and_loss(client: Any, locks: DistributedLock) -> None:
    sem = locks.semaphore("renew", limit=2, ttl=0.3)
    async with sem.acquire(timeout=1) as permit:
        await eventually(lambda: sem.stats().extended >= 3)
        assert await sem.count() == 1
        await client.zrem("t:semaphore:{renew}", permit.token)
        await asyncio.wait_for(permit.lost.wait(), 5)
        with pytest.raises(LockLost):
            await permit.extend()
    assert sem.stats().lost == 1


async def test_release_of_expired_permit_returns_false(
    locks: DistributedLock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="redkit.lock")
    sem = locks.semaphore("stale", limit=1, ttl=0.2)
    old = await sem.acquire(timeout=1, auto_renew=False)
    new = await sem.acquire(timeout=5)  # takes the place once the old one expired
    assert await old.release() is False
    assert await sem.count() == 1
    assert await new.release() is True
    assert any(
        "no longer held" in r.getMessage() or "lost" in r.getMessage() for r in caplog.records
    )


async def test_extend_permit(client: Any, locks: DistributedLock) -> None:
    sem = locks.semaphore("ext", limit=1, ttl=1)
    permit = await sem.acquire(timeout=1, auto_renew=False)
    await permit.extend(30)
    assert await client.pttl("t:semaphore:{ext}") > 20_000
    assert await permit.release()
    assert await all_keys(client) == {"t:semaphore:{ext}:fence"}


async def test_waiter_wakes_on_release_and_cancelled_waiter_leaves_nothing(
    client: Any,
) -> None:
    locks = DistributedLock(client, prefix="t", retry_base=20, retry_cap=20)
    try:
        sem = locks.semaphore("one", limit=1, ttl=30)
        holder = await sem.acquire(timeout=1)
        channel = "t:semaphore:{one}:released"
        before = await all_keys(client)

        waiter = asyncio.create_task(sem.acquire(timeout=30).__aenter__())
        await eventually(lambda: value_is(subscribers(client, channel), 1))
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await eventually(lambda: value_is(subscribers(client, channel), 0))
        assert await all_keys(client) == before
        assert await client.zrange("t:semaphore:{one}", 0, -1) == [holder.token.encode()]

        waiter = asyncio.create_task(sem.acquire(timeout=15).__aenter__())
        await eventually(lambda: value_is(subscribers(client, channel), 1))
        assert await holder.release()
        permit = await asyncio.wait_for(waiter, 5)
        assert sem.stats().wakeups == 1
        await permit.release()
    finally:
        await locks.aclose()


@pytest.mark.parametrize(
    ("limit", "shown"), [(0, "0"), (-1, "-1"), (1.5, "1.5"), (True, "True"), ("3", "'3'")]
)
async def test_bad_limit(client: Any, locks: DistributedLock, limit: Any, shown: str) -> None:
    with pytest.raises(ValueError, match=f"limit must be an int >= 1, got {shown}"):
        locks.semaphore("x", limit=limit, ttl=1)
    assert await all_keys(client) == set()


async def test_bad_semaphore_ttl_and_name(locks: DistributedLock) -> None:
    with pytest.raises(ValueError, match=r"ttl must be .* got 0"):
        locks.semaphore("x", limit=1, ttl=0)
    with pytest.raises(ValueError, match="semaphore name must not be empty"):
        locks.semaphore("", limit=1, ttl=1)
    with pytest.raises(ValueError, match="timeout must be"):
        locks.semaphore("x", limit=1, ttl=1).acquire(timeout=-2)
