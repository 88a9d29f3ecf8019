"""RateLimiter against real servers (standalone and cluster): the four
algorithms, several limits at once, cost, peek, reset, retry_after."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta

import pytest

from redkit import ConfigError
from redkit.ratelimit import ALGORITHMS, Decision, Rate, RateLimiter

from ._util import clear_period, redis_now, wait_for_redis_time

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=ALGORITHMS)
def algorithm(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_admits_exactly_the_limit_then_rejects(client, algorithm):
    limiter = RateLimiter(client, algorithm=algorithm)
    decisions = [await limiter.hit("ip:10.0.0.1", "5/day") for _ in range(8)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 and d.rate == Rate(5, 86400) for d in decisions)
    assert all(d.retry_after is None for d in decisions[:5])
    for d in decisions[5:]:
        assert d.retry_after is not None
        assert 0 < d.retry_after <= 2 * 86400
        assert d.reason is None
        assert not d.degraded
    assert 0 < decisions[-1].reset_after <= 2 * 86400
    assert limiter.stats().hits == 8
    assert limiter.stats().allowed == 5
    assert limiter.stats().rejected == 3


async def test_each_key_and_rate_has_its_own_state(client, algorithm):
    limiter = RateLimiter(client, algorithm=algorithm)
    for _ in range(3):
        assert (await limiter.hit("a", "3/day")).allowed
    assert not (await limiter.hit("a", "3/day")).allowed
    assert (await limiter.hit("b", "3/day")).allowed
    assert (await limiter.hit("a", "4/day")).allowed
    other = RateLimiter(client, algorithm=algorithm, prefix="other")
    assert (await other.hit("a", "3/day")).allowed


async def test_peek_consumes_nothing(client, algorithm):
    limiter = RateLimiter(client, algorithm=algorithm)
    fresh = await limiter.peek("k", "4/day")
    assert fresh.allowed
    assert fresh.remaining == 4
    assert fresh.reset_after == 0
    await limiter.hit("k", "4/day", cost=3)
    for _ in range(5):
        seen = await limiter.peek("k", "4/day")
        assert seen.allowed
        assert seen.remaining == 1
    assert not (await limiter.peek("k", "4/day", cost=2)).allowed
    assert (await limiter.hit("k", "4/day")).allowed
    assert not (await limiter.peek("k", "4/day")).allowed
    assert limiter.stats().peeks == 8


async def test_rejected_hits_consume_nothing(client, algorithm):
    limiter = RateLimiter(client, algorithm=algorithm)
    assert (await limiter.hit("k", "10/day", cost=7)).allowed
    for _ in range(20):
        assert not (await limiter.hit("k", "10/day", cost=4)).allowed
    done = await limiter.hit("k", "10/day", cost=3)
    assert done.allowed
    assert done.remaining == 0


async def test_several_limits_are_charged_all_or_nothing(client, algorithm):
    limiter = RateLimiter(client, algorithm=algorithm)
    rates = ["3/day", "5 per 7 days"]
    first = await limiter.hit("user:42", rates, cost=2)
    assert first.allowed
    assert [s.remaining for s in first.states] == [1, 3]
    assert first.limit == 3
    assert first.remaining == 1
    # the daily limit has 1 left: a cost-2 hit is refused and charges neither
    refused = await limiter.hit("user:42", rates, cost=2)
    assert not refused.allowed
    assert [s.allowed for s in refused.states] == [False, True]
    assert refused.rate == Rate(3, 86400)
    assert refused.retry_after is not None
    after = await limiter.peek("user:42", rates)
    assert [s.remaining for s in after.states] == [1, 3]
    # the weekly limit alone still sees only the admitted hit
    assert (await limiter.peek("user:42", "5 per 7 days")).remaining == 3


async def test_several_limits_are_one_round_trip(client, algorithm, monkeypatch):
    limiter = RateLimiter(client, algorithm=algorithm)
    calls = []
    script = limiter._script
    original = type(script).__call__

    async def counting(self, *args, **kwargs):
        calls.append(args)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(type(script), "__call__", counting)
    decision = await limiter.hit("k", ["10/second", "100/minute", "1000/hour", "5000/day"])
    assert decision.allowed
    assert len(decision.states) == 4
    assert len(calls) == 1


async def test_cost_above_the_limit_is_never_admitted(client, algorithm):
    limiter = RateLimiter(client, algorithm=algorithm)
    d = await limiter.hit("k", "5/day", cost=6)
    assert not d.allowed
    assert d.retry_after is None
    assert d.reason is not None
    assert "cost 6" in d.reason
    assert "5/day" in d.reason
    # nothing was charged
    assert (await limiter.peek("k", "5/day")).remaining == 5
    # the same with a second rate that would admit it
    d = await limiter.hit("k", ["5/day", "100 per 7 days"], cost=6)
    assert not d.allowed
    assert d.retry_after is None
    assert d.reason


async def test_reset_forgets_every_rate(client, algorithm):
    limiter = RateLimiter(client, algorithm=algorithm)
    await limiter.hit("ip:10.0.0.1", ["2/day", "3 per 7 days"], cost=2)
    await limiter.hit("ip:10.0.0.1", "1/second")
    await limiter.hit("ip:10.0.0.2", "2/day", cost=2)
    assert not (await limiter.hit("ip:10.0.0.1", "2/day")).allowed
    await limiter.reset("ip:10.0.0.1")
    assert (await limiter.peek("ip:10.0.0.1", ["2/day", "3 per 7 days", "1/second"])).remaining == 1
    assert [
        s.remaining for s in (await limiter.peek("ip:10.0.0.1", ["2/day", "3 per 7 days"])).states
    ] == [2, 3]
    assert (await limiter.peek("ip:10.0.0.2", "2/day")).remaining == 0
    await limiter.reset("never-seen")


async def test_state_expires_on_its_own(client, algorithm):
    limiter = RateLimiter(client, algorithm=algorithm)
    await limiter.hit("k", ["3/second", "5 per 2 seconds"])
    keys = [k async for k in client.scan_iter(match="app:ratelimit:*")]
    assert keys
    for key in keys:
        ttl = await client.pttl(key)
        # the longest state (2 s windows; sliding windows keep two) plus slack
        assert 0 < ttl <= 8000


async def test_retry_after_is_never_early(client, algorithm):
    limiter = RateLimiter(client, algorithm=algorithm)
    rate = "3/second"
    for _ in range(3):
        assert (await limiter.hit("k", rate)).allowed
    before = await redis_now(client)
    refused = await limiter.hit("k", rate)
    after = await redis_now(client)
    assert not refused.allowed
    assert refused.retry_after is not None
    wait = refused.retry_after
    assert 0 < wait <= 2.0
    # a little before the earliest moment it could be admitted: still refused
    early = before + wait - 0.05
    if wait > 0.1 and await redis_now(client) < early:
        await wait_for_redis_time(client, lambda now: now >= early)
        probe = await limiter.peek("k", rate)
        if await redis_now(client) < before + wait:
            assert not probe.allowed
    # at the advertised moment (counted from after the call): admitted
    await wait_for_redis_time(client, lambda now: now >= after + wait)
    assert (await limiter.hit("k", rate)).allowed


async def test_decision_is_a_frozen_value(client):
    d = await RateLimiter(client).hit("k", "1/second")
    assert isinstance(d, Decision)
    with pytest.raises(AttributeError):
        d.allowed = False  # type: ignore[misc]


async def test_works_with_decoded_responses(redis_server, algorithm):
    from redis.asyncio import Redis

    client = Redis(host=redis_server.host, port=redis_server.port, decode_responses=True)
    try:
        limiter = RateLimiter(client, algorithm=algorithm, prefix="decoded")
        assert (await limiter.hit("k", "1/day")).allowed
        assert not (await limiter.hit("k", "1/day")).allowed
        await limiter.reset("k")
        assert (await limiter.hit("k", "1/day")).allowed
        await limiter.reset("k")
    finally:
        await client.aclose()


async def test_concurrent_tasks_are_exact(client, algorithm):
    limiter = RateLimiter(client, algorithm=algorithm, timeout=20)
    rate = Rate(25, clear_period(await redis_now(client)))
    decisions = await asyncio.gather(*(limiter.hit("k", rate) for _ in range(120)))
    admitted = sum(d.allowed for d in decisions)
    # (gcra: the steady rate, one per 144 s or more, adds nothing in this short run)
    assert admitted == 25
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(25))


@pytest.mark.parametrize(
    ("algorithm", "rate"),
    [("fixed_window", "5/minute"), ("gcra", Rate(5, 60, burst=2))],
)
async def test_cost_above_gcra_burst_is_rejected(client, algorithm, rate):
    limiter = RateLimiter(client, algorithm=algorithm)
    capacity = Rate.coerce(rate).capacity
    d = await limiter.hit("k", rate, cost=capacity + 1)
    assert not d.allowed
    assert d.retry_after is None
    assert d.reason


def test_rejects_bad_configuration(redis_server):
    from redis.asyncio import Redis

    client = Redis(host=redis_server.host, port=redis_server.port)
    with pytest.raises(ConfigError, match="leaky"):
        RateLimiter(client, algorithm="leaky")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"unknown rate-limit algorithm \['gcra'\]"):
        RateLimiter(client, algorithm=["gcra"])  # type: ignore[arg-type]
    for timeout in (0, -1, float("inf"), float("nan"), 1e300, 10**400, True, "1"):
        with pytest.raises(ConfigError, match="rate limiter timeout"):
            RateLimiter(client, timeout=timeout)  # type: ignore[arg-type]
    assert RateLimiter(client, timeout=timedelta(milliseconds=250)).timeout == 0.25
    with pytest.raises(ConfigError, match="prefix"):
        RateLimiter(client, prefix="a{b")
    with pytest.raises(ConfigError, match="prefix"):
        RateLimiter(client, prefix="")


@pytest.mark.parametrize("cost", [0, -1, 1.5, True, "2", None])
async def test_bad_cost_raises_and_changes_nothing(client, cost):
    limiter = RateLimiter(client)
    with pytest.raises(ConfigError, match="cost"):
        await limiter.hit("k", "5/minute", cost=cost)
    with pytest.raises(ConfigError, match=re_escape(repr(cost))):
        await limiter.peek("k", "5/minute", cost=cost)
    assert (await limiter.peek("k", "5/minute")).remaining == 5


@pytest.mark.parametrize(
    "key", ["", "a{b}", "x" * 600, "line\nbreak", "nul\x00", "\ud800", 42, None, b"bytes"]
)
async def test_absurd_keys_raise_and_change_nothing(client, key):
    limiter = RateLimiter(client)
    with pytest.raises(ConfigError, match="rate-limit key"):
        await limiter.hit(key, "5/minute")
    with pytest.raises(ConfigError, match="rate-limit key"):
        await limiter.peek(key, "5/minute")
    with pytest.raises(ConfigError, match="rate-limit key"):
        await limiter.reset(key)
    assert [k async for k in client.scan_iter(match="app:*")] == []


@pytest.mark.parametrize("name", ["a|b", "\ud800", "nl\n", ["x"], 42])
async def test_bad_names_raise_before_redis_is_asked(client, name):
    limiter = RateLimiter(client)
    with pytest.raises(ConfigError, match="rate-limit name"):
        await limiter.hit("k", "5/minute", name=name)
    assert [k async for k in client.scan_iter(match="app:*")] == []


@pytest.mark.parametrize(
    "rates", ["5/fortnight", "0/minute", "five per minute", [], ["1/s", "1/s"], [42]]
)
async def test_bad_rates_raise_before_redis_is_asked(client, rates):
    limiter = RateLimiter(client)
    with pytest.raises(ConfigError):
        await limiter.hit("k", rates)
    assert [k async for k in client.scan_iter(match="app:*")] == []


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_ceil_helper_sanity():
    # Retry-After rounding used by the headers module rounds up
    from redkit.ratelimit.headers import seconds_up

    assert seconds_up(0.000001) == 1
    assert seconds_up(2.0) == 2
    assert seconds_up(2.000001) == math.ceil(2.000001)


_EXPIRY = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return {now, redis.call('PTTL', KEYS[1])}
"""


async def test_state_outlives_every_reset_while_in_use(client, algorithm):
    # The hash's expiry is pushed out only when needed: check that, across
    # many windows, it never falls short of what the state still matters for.
    limiter = RateLimiter(client, algorithm=algorithm)
    rate = Rate(4, 0.2)
    keys = ["app:ratelimit:{k}"]
    if algorithm == "sliding_log":
        keys.append("app:ratelimit:{k}:sl:4:200")
    started = await redis_now(client)
    checked = 0
    while (before := await redis_now(client)) < started + 1.0:
        d = await limiter.hit("k", rate)
        for key in keys:
            now_ms, ttl = await client.eval(_EXPIRY, 1, key)
            assert ttl != -1  # never without an expiry
            # each state lives at least until its rate is whole again (a
            # missing key is fine only once that moment has passed)
            expires_ms = now_ms + ttl if ttl >= 0 else now_ms
            assert expires_ms / 1000 >= before + d.reset_after - 0.002, (key, ttl, d)
        checked += 1
    assert checked >= 5


async def test_sliding_log_memory_is_bounded_by_the_limit(client):
    limiter = RateLimiter(client, algorithm="sliding_log")
    admitted = 0
    for i in range(60):
        d = await limiter.hit("k", "10/day", cost=1 + i % 3)
        admitted += (1 + i % 3) if d.allowed else 0
    assert admitted == 10
    members = await client.zcard("app:ratelimit:{k}:sl:10:86400000")
    assert members == 10  # one per unit of admitted cost, none for refusals
