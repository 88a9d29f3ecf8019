"""Locks when Redis is stopped, paused (SIGSTOP) or restarted: fail closed,
bounded waits, loss detected by the lease's own clock, releases that
finish after a cancellation."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from redkit import ConnectionUnavailable, LockLost, connect
from redkit.lock import DistributedLock, _waker
from redkit.server import EmbeddedRedis
from redkit.testing import settings_for

from ._helpers import eventually, hold_until_cancelled, holding_block, subscribers, value_is


@pytest.fixture
async def client(fresh_server: EmbeddedRedis) -> AsyncIterator[Any]:
    conn = await connect(settings_for(fresh_server))
    yield conn
    await conn.aclose()


@pytest.fixture
async def locks(client: Any) -> AsyncIterator[DistributedLock]:
    service = DistributedLock(client, prefix="t", request_timeout=2)
    yield service
    await service.aclose()


async def test_acquire_fails_closed_when_redis_is_stopped(
    fresh_server: EmbeddedRedis, locks: DistributedLock
) -> None:
    fresh_server.stop()
    started = time.monotonic()
    with pytest.raises(ConnectionUnavailable, match="cannot acquire lock 'x'"):
        async with locks.acquire("x", ttl=5, timeout=2):
            pass
    assert time.monotonic() - started < 2 + 3  # the timeout, plus slack for a busy machine
    with pytest.raises(ConnectionUnavailable):
        await locks.lock("x", ttl=5)
    sem = locks.semaphore("s", 2, ttl=5)
    with pytest.raises(ConnectionUnavailable, match="cannot acquire semaphore 's'"):
        await sem.acquire(timeout=1)
    assert locks.stats().errors == 2
    assert locks.stats().acquired == 0


async def test_acquire_fails_closed_within_the_timeout_when_redis_is_paused(
    fresh_server: EmbeddedRedis, locks: DistributedLock
) -> None:
    with fresh_server.paused():
        started = time.monotonic()
        with pytest.raises(ConnectionUnavailable, match="cannot acquire lock 'x'"):
            await locks.acquire("x", ttl=1, timeout=1)
        assert time.monotonic() - started < 1 + 3
    # A request Redis ran after the caller gave up holds the lock at most
    # for its ttl; the lock is usable again.
    async with locks.acquire("x", ttl=5, timeout=5) as lease:
        assert lease.fencing_token >= 1


async def test_a_plain_redis_py_client_is_bounded_too_when_redis_is_paused(
    fresh_server: EmbeddedRedis,
) -> None:
    # redis-py's default client sends a timed-out command again, up to 10
    # times in 8.x, so its socket timeout does not bound a request: the lock
    # sets its own bound.
    plain = Redis(host=fresh_server.host, port=fresh_server.port, socket_timeout=1)
    locks = DistributedLock(plain, prefix="t", request_timeout=1)
    try:
        await locks.lock("warm-up", ttl=1)  # connected, scripts cached
        with fresh_server.paused():
            started = time.monotonic()
            with pytest.raises(ConnectionUnavailable, match="cannot acquire lock 'x'"):
                await locks.lock("x", ttl=5)
            assert time.monotonic() - started < 1 + 3
    finally:
        await locks.aclose()
        await plain.aclose()


async def test_lease_lost_only_after_its_validity_when_redis_is_paused(
    fresh_server: EmbeddedRedis, locks: DistributedLock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="redkit.lock")
    lost_at: list[float] = []
    before_acquire = time.monotonic()
    async with locks.acquire(
        "paused", ttl=1, timeout=1, on_lost=lambda lease: lost_at.append(time.monotonic())
    ) as lease:
        after_acquire = time.monotonic()
        fresh_server.pause()
        try:
            await asyncio.wait_for(lease.lost.wait(), 10)
        finally:
            fresh_server.resume()
        assert "could not be reached" in (lease.lost_reason or "")
        # Lost no earlier than the lease's validity (ttl less 1% drift
        # allowance), counted from before the acquire request was sent.
        assert lost_at[0] - before_acquire >= 0.98
        assert lost_at[0] - after_acquire < 10
        with pytest.raises(LockLost):
            await lease.extend()
    assert any("'paused' lost" in r.getMessage() for r in caplog.records)


async def test_on_lost_cancel_while_redis_is_paused(
    fresh_server: EmbeddedRedis, locks: DistributedLock
) -> None:
    async def pause() -> None:
        fresh_server.pause()

    try:
        with pytest.raises(LockLost, match="'body' was lost and its block was cancelled"):
            await hold_until_cancelled(locks, "body", pause)
    finally:
        fresh_server.resume()


async def test_release_finishes_after_the_caller_is_cancelled(
    fresh_server: EmbeddedRedis, client: Any, locks: DistributedLock
) -> None:
    lease = await locks.lock("r", ttl=30)
    with fresh_server.paused():
        releasing = asyncio.create_task(lease.release())
        await eventually(lambda: lease.released)
        await asyncio.sleep(0.1)  # let the request reach the (stopped) server
        releasing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await releasing
    # Long before the 30 s ttl: the release went through after all.
    await eventually(lambda: value_is(client.exists("t:lock:{r}"), 0), timeout=10)


async def test_cancelled_block_releases_even_if_cancelled_again_while_releasing(
    fresh_server: EmbeddedRedis, client: Any, locks: DistributedLock
) -> None:
    task = await holding_block(locks, "twice")
    with fresh_server.paused():
        task.cancel()  # the block's exit starts a release that cannot finish
        await asyncio.sleep(0.2)
        assert not task.done()
        task.cancel()  # and the release itself is cancelled
        with pytest.raises(asyncio.CancelledError):
            await task
    await eventually(lambda: value_is(client.exists("t:lock:{twice}"), 0), timeout=10)


async def test_release_with_redis_stopped(
    fresh_server: EmbeddedRedis, locks: DistributedLock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="redkit.lock")

    async def work() -> str:
        async with locks.acquire("down", ttl=30, timeout=1):
            fresh_server.stop()
            return "done"

    # Leaving the block does not raise: the failed release is logged and the
    # block's own result stands.
    assert await work() == "done"
    assert any("cannot release lock 'down'" in r.getMessage() for r in caplog.records)
    fresh_server.restart()
    lease = await locks.lock("again", ttl=30)
    fresh_server.stop()
    with pytest.raises(ConnectionUnavailable, match="cannot release lock 'again'"):
        await lease.release()
    assert locks.stats().released == 0


async def test_waiter_fails_closed_when_redis_stops_while_it_waits(
    fresh_server: EmbeddedRedis, client: Any, locks: DistributedLock
) -> None:
    await locks.lock("w", ttl=30)
    waiter = asyncio.create_task(locks.acquire("w", ttl=5, timeout=60).__aenter__())
    await eventually(lambda: value_is(subscribers(client, "t:lock:{w}:released"), 1))
    fresh_server.kill()
    with pytest.raises(ConnectionUnavailable):
        await asyncio.wait_for(waiter, 20)


async def test_waiters_resubscribe_after_the_subscription_drops(
    client: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="redkit.lock")
    monkeypatch.setattr(_waker, "FAILURE_PAUSE", 0.05)
    # Backoff alone would sleep for seconds: only a wake-up makes it quick.
    slow = DistributedLock(client, prefix="t", retry_base=2, retry_cap=2)
    channel = "t:lock:{again}:released"
    try:
        holder = await slow.lock("again", ttl=30)
        waiter = asyncio.create_task(slow.acquire("again", ttl=5, timeout=30).__aenter__())
        await eventually(lambda: value_is(subscribers(client, channel), 1))
        # Take pub/sub away from the client's user and drop the subscriber:
        # redis-py reconnects at once, but its SUBSCRIBE is refused. Only
        # channels are refused; connections and the lock's own commands
        # (its scripts publish only on release) go on working.
        await client.execute_command("ACL", "SETUSER", "default", "resetchannels")
        try:
            await client.client_kill_filter(_type="pubsub")
            await eventually(lambda: any("backoff only" in r.getMessage() for r in caplog.records))
            assert await subscribers(client, channel) == 0
        finally:
            await client.execute_command("ACL", "SETUSER", "default", "allchannels")
        # The same waiter subscribes again ...
        await eventually(lambda: value_is(subscribers(client, channel), 1), timeout=15)
        assert not waiter.done()
        # ... and a message on the channel wakes it: the event it waits on is
        # cleared before each attempt, so this counts even if the message
        # lands while the waiter is asking Redis.
        before = slow.stats().wakeups
        await client.publish(channel, "1")
        await eventually(lambda: slow.stats().wakeups > before)
        assert await holder.release()
        lease = await asyncio.wait_for(waiter, 10)
        await lease.release()
    finally:
        await slow.aclose()


async def test_waiter_cancelled_mid_request_gives_back_what_it_took(
    fresh_server: EmbeddedRedis, client: Any
) -> None:
    locks = DistributedLock(client, prefix="t", request_timeout=5)
    await (await locks.lock("warm-up", ttl=1)).release()  # the scripts are cached now
    with fresh_server.paused():
        waiter = asyncio.create_task(locks.acquire("mid", ttl=30, timeout=30).__aenter__())
        await asyncio.sleep(0.1)  # the request is written; the server runs it on resume
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    await locks.aclose()  # waits for the background give-back
    # The abandoned request did take the lock (the fencing counter moved) ...
    assert await client.get("t:lock:{mid}:fence") == b"1"
    # ... and it was given back, long before its 30 s ttl.
    assert await client.exists("t:lock:{mid}") == 0


async def test_short_outage_within_the_validity_keeps_the_lease(
    fresh_server: EmbeddedRedis, client: Any, locks: DistributedLock
) -> None:
    async with locks.acquire("blip", ttl=4, timeout=1) as lease:
        with fresh_server.paused():
            # The renewal due at ttl/3 waits for the server meanwhile.
            await asyncio.sleep(1.8)
        await eventually(lambda: locks.stats().extended >= 1)
        assert not lease.lost.is_set()
        assert await client.get("t:lock:{blip}") == lease.token.encode()
    assert lease.lost_reason is None
