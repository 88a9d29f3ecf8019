"""Exactness across processes, window boundaries, gcra burst and steady
rate: the claims about time and concurrency, measured on Redis time."""

from __future__ import annotations

import math
import multiprocessing
import queue as queue_module

import pytest

from redkit.ratelimit import Rate, RateLimiter

from . import _worker
from ._util import clear_period, redis_now, wait_for_redis_time

pytestmark = pytest.mark.timeout(120)

PROCESSES = 4
HITS_PER_PROCESS = 100
LIMIT = 50


def _address(request: pytest.FixtureRequest) -> tuple[str, int, bool]:
    topology = request.node.callspec.params["client"]
    if topology == "cluster":
        server = request.getfixturevalue("redis_cluster")
        return server.host, server.port, True
    server = request.getfixturevalue("redis_server")
    return server.host, server.port, False


async def test_four_processes_400_hits_admit_exactly_the_limit(client, request):
    host, port, cluster = _address(request)
    period = clear_period(await redis_now(client))
    gcra_period = 5  # one token per 100 ms after the burst
    scenarios = [
        ("fixed_window", "x:fixed", Rate(LIMIT, period), HITS_PER_PROCESS),
        ("sliding_window", "x:sliding", Rate(LIMIT, period), HITS_PER_PROCESS),
        ("sliding_log", "x:log", Rate(LIMIT, period), HITS_PER_PROCESS),
        ("gcra", "x:gcra", Rate(LIMIT, gcra_period), HITS_PER_PROCESS),
    ]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker.run, args=(host, port, cluster, scenarios, barrier, results))
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    try:
        collected: dict[str, list[tuple[int, float, float]]] = {}
        for _ in range(PROCESSES * len(scenarios)):
            try:
                algorithm, admitted, started, finished = results.get(timeout=90)
            except queue_module.Empty:
                codes = [p.exitcode for p in procs]
                raise AssertionError(f"workers stopped answering (exit codes {codes})") from None
            collected.setdefault(algorithm, []).append((admitted, started, finished))
        for proc in procs:
            proc.join(timeout=30)
            assert proc.exitcode == 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    for algorithm in ("fixed_window", "sliding_window", "sliding_log"):
        admitted = sum(r[0] for r in collected[algorithm])
        assert admitted == LIMIT, algorithm
    runs = collected["gcra"]
    admitted = sum(r[0] for r in runs)
    span = max(r[2] for r in runs) - min(r[1] for r in runs)
    interval = gcra_period / LIMIT
    # the burst, plus one token per interval of Redis time the run lasted
    assert LIMIT <= admitted <= LIMIT + math.floor(span / interval), (admitted, span)


async def _burst(limiter: RateLimiter, key: str, rate: Rate, hits: int) -> int:
    return sum([(await limiter.hit(key, rate)).allowed for _ in range(hits)])


async def _around_boundary(client, limiter: RateLimiter, rate: Rate):
    """A burst late in one window, a burst early in the next. Returns
    (first admitted, second admitted, times) once both bursts landed where
    intended; retried (bounded) when the machine was too slow for that."""
    period = rate.period
    for attempt in range(4):
        key = f"edge:{attempt}"
        t0 = await wait_for_redis_time(client, lambda now: 0.55 <= (now % period) / period < 0.7)
        first = await _burst(limiter, key, rate, rate.limit)
        t1 = await redis_now(client)
        window = math.floor(t0 / period)
        t2 = await wait_for_redis_time(client, lambda now, w=window: math.floor(now / period) > w)
        second = await _burst(limiter, key, rate, rate.limit)
        t3 = await redis_now(client)
        same_first = math.floor(t1 / period) == window
        same_second = math.floor(t2 / period) == math.floor(t3 / period) == window + 1
        if same_first and same_second and (t3 % period) / period < 0.4:
            return first, second, (t0, t1, t2, t3)
    raise AssertionError("could not place both bursts around a window boundary in 4 tries")


async def test_fixed_window_allows_a_double_burst_at_the_boundary(redis_client):
    rate = Rate(10, 1)
    limiter = RateLimiter(redis_client, algorithm="fixed_window")
    first, second, (t0, _, _, t3) = await _around_boundary(redis_client, limiter, rate)
    # documented: twice the limit within less than one period
    assert first == second == 10
    assert t3 - t0 < rate.period


async def test_sliding_window_refuses_the_double_burst(redis_client):
    rate = Rate(10, 1)
    limiter = RateLimiter(redis_client, algorithm="sliding_window")
    first, second, (_, _, _, t3) = await _around_boundary(redis_client, limiter, rate)
    assert first == 10
    # the previous window still weighs (1 - elapsed fraction): only the
    # elapsed fraction of the limit is free again
    into = (t3 % rate.period) / rate.period
    assert second <= math.floor(10 * into), (second, into)
    assert first + second < 2 * rate.limit


async def test_sliding_log_refuses_the_double_burst(redis_client):
    rate = Rate(10, 1)
    limiter = RateLimiter(redis_client, algorithm="sliding_log")
    first, second, (t0, _, _, t3) = await _around_boundary(redis_client, limiter, rate)
    assert first == 10
    assert t3 - t0 < rate.period
    assert second == 0  # every hit of the first burst is less than a period old


async def test_gcra_refuses_the_double_burst(redis_client):
    rate = Rate(10, 1)
    limiter = RateLimiter(redis_client, algorithm="gcra")
    first, second, (t0, _, _, t3) = await _around_boundary(redis_client, limiter, rate)
    assert first == 10
    assert second <= math.floor((t3 - t0) / (rate.period / rate.limit))
    assert first + second < 2 * rate.limit


async def test_gcra_burst_then_steady_rate(client):
    rate = Rate(5, 1, burst=3)  # a token every 200 ms, at most 3 at once
    interval = rate.period / rate.limit
    limiter = RateLimiter(client, algorithm="gcra")
    t0 = await redis_now(client)
    burst = [(await limiter.hit("g", rate)).allowed for _ in range(5)]
    t1 = await redis_now(client)
    assert burst[:3] == [True] * 3
    assert sum(burst) <= 3 + math.floor((t1 - t0) / interval)
    # then hammer it for 1.5 s: admitted at the steady rate
    admitted = sum(burst)
    end = t1 + 1.5
    while await redis_now(client) < end:
        admitted += (await limiter.hit("g", rate)).allowed
    t2 = await redis_now(client)
    # 3 at once plus one per interval since the first hit, never more; a
    # token not taken at once waits in the bucket (up to 3 of them, 600 ms
    # of stalls), so a slow poll loses nothing (one token of slack for the
    # edges)
    assert admitted <= 3 + math.floor((t2 - t0) / interval)
    assert admitted >= 3 + math.floor((t2 - t1) / interval) - 1


async def test_gcra_default_burst_is_the_limit(client):
    limiter = RateLimiter(client, algorithm="gcra")
    t0 = await redis_now(client)
    admitted = sum([(await limiter.hit("g", "20/hour")).allowed for _ in range(25)])
    assert admitted == 20 + math.floor((await redis_now(client) - t0) / 180)
