"""DistributedLock on a real standalone server and a real 3-master cluster."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from redkit import LockLost, LockNotAcquired
from redkit.lock import DistributedLock, Lease

from ._helpers import (
    all_keys,
    eventually,
    hold_until_cancelled,
    holding_block,
    slot,
    subscribers,
    value_is,
)


@pytest.fixture
async def locks(client: Any) -> Any:
    service = DistributedLock(client, prefix="t")
    yield service
    await service.aclose()


# -- Go parity: lock() / release / try_lock_with_retry ----------------------


async def test_lock_returns_a_release_callable_and_keys_share_aslot(
    client: Any, locks: DistributedLock
) -> None:
    release = await locks.lock("payment:order-123", ttl=10)
    assert isinstance(release, Lease)
    assert await client.get("t:lock:{payment:order-123}") == release.token.encode()
    assert int(await client.get("t:lock:{payment:order-123}:fence")) == release.fencing_token
    ttl_ms = await client.pttl("t:lock:{payment:order-123}")
    assert 0 < ttl_ms <= 10_000
    assert slot(client, "t:lock:{payment:order-123}") == slot(
        client, "t:lock:{payment:order-123}:fence"
    )
    assert await locks.is_locked("payment:order-123")

    assert await release() is True
    assert not await locks.is_locked("payment:order-123")
    assert await release() is True  # a second call repeats the first result
    assert locks.stats().released == 1


async def test_lock_held_by_another_raises_lock_not_acquired(locks: DistributedLock) -> None:
    first = await locks.lock("job", ttl=10)
    with pytest.raises(LockNotAcquired, match=r"'job' is held by another holder$"):
        await locks.lock("job", ttl=10)
    assert locks.stats().busy == 1
    await first.release()
    second = await locks.lock("job", ttl=10)
    assert second.fencing_token == first.fencing_token + 1
    await second.release()


async def test_try_lock_with_retry_gives_up_after_its_attempts(locks: DistributedLock) -> None:
    holder = await locks.lock("job", ttl=10)
    before = locks.stats().busy
    with pytest.raises(LockNotAcquired, match="after 3 attempts"):
        await locks.try_lock_with_retry("job", ttl=10, max_retries=2, retry_delay=0.01)
    assert locks.stats().busy - before == 3
    assert await holder.release()


async def test_try_lock_with_retry_gets_the_lock_once_released(locks: DistributedLock) -> None:
    holder = await locks.lock("job", ttl=30)

    async def release_soon() -> None:
        await asyncio.sleep(0.1)
        await holder.release()

    releaser = asyncio.create_task(release_soon())
    # A long retry delay: only the release notification makes this quick.
    lease = await locks.try_lock_with_retry("job", ttl=10, max_retries=1, retry_delay=20)
    await releaser
    assert lease.fencing_token == holder.fencing_token + 1
    assert locks.stats().wakeups == 1
    await lease.release()


# -- acquire(): context manager, waiting, wake-up ---------------------------


async def test_acquire_releases_on_exit_and_on_error(client: Any, locks: DistributedLock) -> None:
    async with locks.acquire("report", ttl=10, timeout=5) as lease:
        assert await client.get("t:lock:{report}") == lease.token.encode()
        assert lease.remaining > 9
    assert not await locks.is_locked("report")
    assert lease.released
    assert not lease.lost.is_set()

    with pytest.raises(RuntimeError, match="boom"):
        async with locks.acquire("report", ttl=10, timeout=5):
            raise RuntimeError("boom")
    assert not await locks.is_locked("report")


async def test_awaited_acquire_leaves_the_release_to_the_caller(
    locks: DistributedLock,
) -> None:
    lease = await locks.acquire("manual", ttl=10, timeout=1)
    assert await locks.is_locked("manual")
    assert await lease.release()
    assert not await locks.is_locked("manual")


async def test_acquire_times_out_with_lock_not_acquired(locks: DistributedLock) -> None:
    holder = await locks.lock("busy", ttl=30)
    with pytest.raises(LockNotAcquired, match="'busy' is held by another holder; gave up waiting"):
        async with locks.acquire("busy", ttl=10, timeout=0.3):
            pass
    with pytest.raises(LockNotAcquired):
        await locks.acquire("busy", ttl=10, timeout=0)
    assert locks.stats().timeouts == 2
    assert await holder.release()


async def test_waiter_wakes_when_the_holder_releases(client: Any) -> None:
    # Backoff alone would sleep for seconds: retry_base is huge.
    locks = DistributedLock(client, prefix="t", retry_base=20, retry_cap=20)
    try:
        holder = await locks.lock("handoff", ttl=30)
        waiter = asyncio.create_task(locks.acquire("handoff", ttl=10, timeout=15).__aenter__())
        await eventually(lambda: value_is(subscribers(client, "t:lock:{handoff}:released"), 1))
        await asyncio.sleep(0.05)
        await holder.release()
        lease = await asyncio.wait_for(waiter, 5)
        assert lease.fencing_token == holder.fencing_token + 1
        assert locks.stats().wakeups == 1
        await lease.release()
    finally:
        await locks.aclose()


async def test_without_early_wakeup_waiters_poll_and_subscribe_to_nothing(client: Any) -> None:
    locks = DistributedLock(client, prefix="t", early_wakeup=False, retry_cap=0.05)
    try:
        holder = await locks.lock("poll", ttl=30)
        waiter = asyncio.create_task(locks.acquire("poll", ttl=10, timeout=10).__aenter__())
        await eventually(lambda: locks.stats().busy >= 3)
        assert await subscribers(client, "t:lock:{poll}:released") == 0
        await holder.release()
        lease = await asyncio.wait_for(waiter, 5)
        assert locks.stats().wakeups == 0
        await lease.release()
    finally:
        await locks.aclose()


async def test_waiter_takes_over_when_a_crashed_holder_expires(locks: DistributedLock) -> None:
    # The holder never releases (no publish): the waiter follows its expiry.
    crashed = await locks.lock("orphan", ttl=0.4)
    async with locks.acquire("orphan", ttl=5, timeout=5) as lease:
        assert lease.fencing_token == crashed.fencing_token + 1
    await eventually(lambda: crashed.lost.is_set())


async def test_many_tasks_take_turns(client: Any, locks: DistributedLock) -> None:
    inside = 0
    overlaps = 0
    tokens: list[int] = []

    async def worker() -> None:
        nonlocal inside, overlaps
        for _ in range(10):
            async with locks.acquire("turns", ttl=5, timeout=30) as lease:
                inside += 1
                if inside > 1:
                    overlaps += 1
                tokens.append(lease.fencing_token)
                await client.incr("t:turns:count")
                inside -= 1

    # 8 tasks: redis-py's cluster client refuses (rather than queues) a
    # request beyond its pool of 10 connections per node.
    await asyncio.gather(*(worker() for _ in range(8)))
    assert overlaps == 0
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 80
    assert int(await client.get("t:turns:count")) == 80
    assert locks.stats().acquired == 80


async def test_fencing_tokens_are_per_name_and_strictly_increase(
    client: Any, locks: DistributedLock
) -> None:
    other = DistributedLock(client, prefix="t")
    try:
        seen = []
        for service in (locks, other, locks, other):
            async with service.acquire("fenced", ttl=5, timeout=1) as lease:
                seen.append(lease.fencing_token)
        assert seen == [1, 2, 3, 4]
        async with locks.acquire("another", ttl=5, timeout=1) as lease:
            assert lease.fencing_token == 1
    finally:
        await other.aclose()


# -- renewal, extend, loss -------------------------------------------------


async def test_auto_renew_keeps_the_lease_past_its_ttl(client: Any, locks: DistributedLock) -> None:
    async with locks.acquire("long", ttl=0.3, timeout=1) as lease:
        await eventually(lambda: locks.stats().extended >= 4, timeout=10)
        assert await client.get("t:lock:{long}") == lease.token.encode()
        assert not lease.lost.is_set()
    assert lease.lost_reason is None


async def test_extend_sets_a_new_ttl(client: Any, locks: DistributedLock) -> None:
    lease = await locks.lock("ext", ttl=1)
    await lease.extend(30)
    assert await client.pttl("t:lock:{ext}") > 20_000
    assert lease.ttl == 30
    assert lease.remaining > 20
    assert await lease.release()
    with pytest.raises(LockLost, match="released"):
        await lease.extend()


async def test_lease_lost_when_key_is_deleted_underneath(
    client: Any, locks: DistributedLock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="redkit.lock")
    async with locks.acquire("gone", ttl=0.6, timeout=1) as lease:
        await client.delete("t:lock:{gone}")
        await asyncio.wait_for(lease.lost.wait(), 5)
        assert lease.lost_reason is not None
        assert "expired or another holder" in lease.lost_reason
        with pytest.raises(LockLost):
            await lease.extend()
    assert locks.stats().lost == 1
    assert any("'gone' lost" in r.getMessage() for r in caplog.records)


async def test_lease_lost_when_key_expires_underneath(client: Any, locks: DistributedLock) -> None:
    lease = await locks.lock("short", ttl=0.3)
    await eventually(lambda: lease.lost.is_set(), timeout=5)
    assert "ran out" in (lease.lost_reason or "")
    await eventually(lambda: value_is(client.exists("t:lock:{short}"), 0), timeout=5)
    with pytest.raises(LockLost):
        await lease.extend(10)
    assert not await locks.is_locked("short")


async def test_lost_lease_never_deletes_the_next_holders_lock(
    client: Any, locks: DistributedLock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="redkit.lock")
    old = await locks.lock("stolen", ttl=0.2)
    await eventually(lambda: value_is(client.exists("t:lock:{stolen}"), 0), timeout=5)
    new = await locks.lock("stolen", ttl=30)
    assert await old.release() is False
    assert any(
        "'stolen' was no longer held when released" in r.getMessage()
        and r.levelno == logging.WARNING
        for r in caplog.records
    )
    assert locks.stats().release_not_held == 1
    assert await client.get("t:lock:{stolen}") == new.token.encode()
    with pytest.raises(LockLost):
        await old.extend()
    assert await new.release() is True


async def test_renewal_notices_another_holder_took_the_key(
    client: Any, locks: DistributedLock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="redkit.lock")
    async with locks.acquire("taken", ttl=0.6, timeout=1) as lease:
        await client.set("t:lock:{taken}", "someone-else", px=30_000)
        await asyncio.wait_for(lease.lost.wait(), 5)
    # Leaving the block did not delete the other holder's key.
    assert await client.get("t:lock:{taken}") == b"someone-else"
    assert locks.stats().released == 0
    assert any("'taken' lost" in r.getMessage() for r in caplog.records)


async def test_on_lost_cancel_stops_the_block_with_lock_lost(
    client: Any, locks: DistributedLock
) -> None:
    with pytest.raises(LockLost, match="'cancelled' was lost"):
        await hold_until_cancelled(locks, "cancelled", lambda: client.delete("t:lock:{cancelled}"))
    task = asyncio.current_task()
    assert task is not None
    # Our cancellation was taken back: the task is not left "being cancelled"
    # (Task.cancelling exists from Python 3.11).
    assert getattr(task, "cancelling", lambda: 0)() == 0


async def test_on_lost_callable_is_called_with_the_lease(
    client: Any, locks: DistributedLock
) -> None:
    called: list[Lease] = []
    async with locks.acquire("cb", ttl=0.6, timeout=1, on_lost=called.append) as lease:
        await client.delete("t:lock:{cb}")
        await asyncio.wait_for(lease.lost.wait(), 5)
    assert called == [lease]


# -- cancellation ----------------------------------------------------------


async def test_cancelled_waiter_leaves_nothing_behind(client: Any, locks: DistributedLock) -> None:
    holder = await locks.lock("wait", ttl=30)
    before = await all_keys(client)
    waiter = asyncio.create_task(locks.acquire("wait", ttl=10, timeout=30).__aenter__())
    await eventually(lambda: value_is(subscribers(client, "t:lock:{wait}:released"), 1))
    await eventually(lambda: locks.stats().busy >= 2)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await eventually(lambda: value_is(subscribers(client, "t:lock:{wait}:released"), 0))
    assert await all_keys(client) == before
    assert await client.get("t:lock:{wait}") == holder.token.encode()
    assert int(await client.get("t:lock:{wait}:fence")) == holder.fencing_token
    assert await holder.release()


async def test_cancelled_body_still_releases(client: Any, locks: DistributedLock) -> None:
    task = await holding_block(locks, "work")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not await locks.is_locked("work")
    assert locks.stats().released == 1


# -- bad input -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl": 0}, "ttl must be .* > 0, got 0"),
        ({"ttl": -1}, "ttl must be .* > 0, got -1"),
        ({"ttl": float("nan")}, "ttl must be .*got nan"),
        ({"ttl": "10"}, "ttl must be a number .* got '10'"),
        ({"name": ""}, "lock name must not be empty"),
        ({"name": "x" * 513}, "lock name is 513 characters long"),
        ({"name": "a{b}"}, "lock name must not contain"),
        ({"name": "a\nb"}, "lock name contains a control character"),
        ({"timeout": -1}, "timeout must be .*>= 0, got -1"),
        ({"on_lost": "bogus"}, "on_lost must be .* got 'bogus'"),
    ],
)
async def test_bad_input_raises_value_error_and_touches_nothing(
    client: Any, locks: DistributedLock, kwargs: dict[str, Any], message: str
) -> None:
    call = {"name": "ok", "ttl": 10, **kwargs}
    name, ttl = call.pop("name"), call.pop("ttl")
    with pytest.raises(ValueError, match=message):
        locks.acquire(name, ttl, **call)
    if "on_lost" not in call and "timeout" not in call:
        with pytest.raises(ValueError, match=message):
            await locks.lock(name, ttl)
    assert await all_keys(client) == set()


async def test_bad_retry_arguments(client: Any, locks: DistributedLock) -> None:
    with pytest.raises(ValueError, match="max_retries must be an int >= 0, got -1"):
        await locks.try_lock_with_retry("x", ttl=1, max_retries=-1)
    with pytest.raises(ValueError, match=r"retry_delay must be .* got -0\.5"):
        await locks.try_lock_with_retry("x", ttl=1, retry_delay=-0.5)
    with pytest.raises(ValueError, match="key prefix must not contain"):
        DistributedLock(client, prefix="a{b}")
    assert await all_keys(client) == set()
