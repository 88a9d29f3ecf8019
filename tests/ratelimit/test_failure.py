"""Redis stopped or paused: fail open (default) or closed, bounded in time,
counted and logged; recovery once Redis is back."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from redis.asyncio import Redis

from redkit import ConnectionUnavailable, connect
from redkit.ratelimit import RateLimiter
from redkit.testing import settings_for

pytestmark = pytest.mark.timeout(60)


async def _client(server, **overrides):
    options = {"read_timeout": 1.0, "connect_timeout": 1.0, **overrides}
    return await connect(settings_for(server, **options))


async def test_fail_open_when_stopped(fresh_server, caplog):
    client = await _client(fresh_server)
    try:
        limiter = RateLimiter(client, timeout=0.5)
        assert (await limiter.hit("k", "1/minute")).allowed
        assert not (await limiter.hit("k", "1/minute")).allowed
        fresh_server.stop()
        caplog.set_level(logging.WARNING, logger="redkit.ratelimit")
        started = time.monotonic()
        decisions = [await limiter.hit("k", "1/minute") for _ in range(3)]
        elapsed = time.monotonic() - started
        assert all(d.allowed and d.degraded for d in decisions)
        assert all(d.reason and "fail-open" in d.reason for d in decisions)
        assert elapsed < 3 * 0.5 + 3.0
        stats = limiter.stats()
        assert stats.errors == 3
        assert stats.failed_open == 3
        assert stats.failed_closed == 0
        assert stats.hits == 5
        assert stats.allowed == 4
        assert stats.rejected == 1
        warnings = [r for r in caplog.records if r.name == "redkit.ratelimit"]
        assert len(warnings) == 1  # throttled: one line, not one per hit
        assert "failing open" in warnings[0].getMessage()
        assert "'k'" in warnings[0].getMessage()
        peeked = await limiter.peek("k", "1/minute")
        assert peeked.allowed
        assert peeked.degraded
    finally:
        await client.aclose()


async def test_fail_closed_when_stopped(fresh_server):
    client = await _client(fresh_server)
    try:
        limiter = RateLimiter(client, fail_open=False, timeout=0.5)
        assert (await limiter.hit("k", "5/minute")).allowed
        fresh_server.stop()
        started = time.monotonic()
        with pytest.raises(ConnectionUnavailable, match="'k'") as info:
            await limiter.hit("k", "5/minute")
        assert time.monotonic() - started < 0.5 + 3.0
        assert info.value.__cause__ is not None
        with pytest.raises(ConnectionUnavailable):
            await limiter.peek("k", "5/minute")
        with pytest.raises(ConnectionUnavailable):
            await limiter.reset("k")
        assert limiter.stats().failed_closed == 2
    finally:
        await client.aclose()


@pytest.mark.parametrize("fail_open", [True, False])
async def test_paused_server_is_bounded_by_the_timeout(fresh_server, fail_open):
    client = await _client(fresh_server, read_timeout=10.0)
    try:
        limiter = RateLimiter(client, fail_open=fail_open, timeout=0.3)
        assert (await limiter.hit("k", "5/minute")).allowed
        with fresh_server.paused():
            started = time.monotonic()
            if fail_open:
                d = await limiter.hit("k", "5/minute")
                assert d.allowed
                assert d.degraded
                assert "0.3s" in (d.reason or "")
            else:
                with pytest.raises(ConnectionUnavailable, match=r"0\.3s"):
                    await limiter.hit("k", "5/minute")
            # well under the client's own 10 s read timeout
            assert time.monotonic() - started < 0.3 + 2.5
        # once resumed, decisions come from Redis again
        d = await limiter.hit("k", "5/minute")
        assert d.allowed
        assert not d.degraded
        assert d.remaining in (3, 2)  # the hit cut off by the timeout may have landed
    finally:
        await client.aclose()


async def test_cost_above_limit_is_refused_even_when_failing_open(fresh_server):
    client = await _client(fresh_server)
    try:
        limiter = RateLimiter(client, timeout=0.5)
        fresh_server.stop()
        d = await limiter.hit("k", "5/minute", cost=6)
        assert not d.allowed
        assert d.retry_after is None
        assert "cost 6" in (d.reason or "")
    finally:
        await client.aclose()


async def test_recovers_after_restart_with_an_empty_script_cache(fresh_server):
    client = await _client(fresh_server)
    try:
        for algorithm in ("sliding_window", "gcra"):
            limiter = RateLimiter(client, algorithm=algorithm, prefix=algorithm, timeout=0.5)
            assert (await limiter.hit("k", "2/minute")).allowed
        fresh_server.restart()  # new process: no scripts, no data (no persistence)
        for algorithm in ("sliding_window", "gcra"):
            limiter = RateLimiter(client, algorithm=algorithm, prefix=algorithm, timeout=2.0)
            d = await limiter.hit("k", "2/minute")
            assert d.allowed
            assert not d.degraded
    finally:
        await client.aclose()


async def test_many_waiting_hits_all_fail_open_within_the_timeout(fresh_server):
    client = await _client(fresh_server, read_timeout=10.0, pool_size=50)
    try:
        limiter = RateLimiter(client, timeout=0.4)
        assert (await limiter.hit("k", "5/minute")).allowed
        with fresh_server.paused():
            started = time.monotonic()
            decisions = await asyncio.gather(*(limiter.hit(f"k{i}", "5/minute") for i in range(30)))
            elapsed = time.monotonic() - started
        assert all(d.allowed and d.degraded for d in decisions)
        assert elapsed < 0.4 * 1.25 + 2.5
        assert limiter.stats().failed_open == 30
    finally:
        await client.aclose()


async def test_cancelling_a_waiting_hit_from_outside_still_cancels_it(fresh_server):
    client = await _client(fresh_server, read_timeout=10.0)
    try:
        limiter = RateLimiter(client, timeout=5.0)
        assert (await limiter.hit("k", "5/minute")).allowed
        with fresh_server.paused():
            task = asyncio.create_task(limiter.hit("k", "5/minute"))
            done, _ = await asyncio.wait([task], timeout=0.3)
            assert not done  # waiting on the paused server
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        stats = limiter.stats()
        assert stats.errors == 0
        assert stats.failed_open == 0
    finally:
        await client.aclose()


async def test_a_plain_redis_py_client_is_bounded_too(fresh_server):
    # redis-py's default client sends a timed-out command again (10 times
    # in 8.x); with its read timeout equal to the limiter's, both fire
    # together. The decision still comes within the limiter's timeout.
    plain = Redis(host=fresh_server.host, port=fresh_server.port, socket_timeout=1)
    try:
        limiter = RateLimiter(plain, timeout=1)
        assert (await limiter.hit("k", "5/minute")).allowed
        with fresh_server.paused():
            started = time.monotonic()
            d = await limiter.hit("k", "5/minute")
            assert d.allowed
            assert d.degraded
            assert time.monotonic() - started < 1 + 3
    finally:
        await plain.aclose()
