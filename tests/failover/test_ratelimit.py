"""Rate limiters fail open (or closed, as configured) while the primary
moves, and count exactly again after it, across instances."""

from __future__ import annotations

import pytest

from redkit import ConnectionUnavailable, Decision, RateLimiter

from ._recovery import BOUND, Workload, close_all, report
from .conftest import Rig

pytestmark = pytest.mark.failover

_RATE = "5/minute"


async def test_rate_limits(rig: Rig) -> None:
    client_a, client_b = await rig.connect(), await rig.connect()
    # Two instances of one service, and one that fails closed.
    one, two = RateLimiter(client_a, prefix="fo"), RateLimiter(client_b, prefix="fo")
    closed = RateLimiter(client_a, prefix="fo", fail_open=False)
    counted, busy, fresh = rig.keys_near("counted", "counted", "busy", "fresh")
    try:
        for _ in range(3):
            assert (await one.hit(counted, _RATE)).allowed
        await rig.replicated(client_a, counted)

        async def decide(n: int) -> tuple[Decision, Decision | Exception]:
            try:
                strict: Decision | Exception = await closed.hit(busy, "1000/minute")
            except ConnectionUnavailable as exc:
                strict = exc
            return await one.hit(busy, "1000/minute"), strict

        async with Workload(decide) as decisions:
            promotion = await rig.trigger(busy)
            first = await decisions.served(promotion, lambda c: c.ok and not c.value[0].degraded)
        report(
            "ratelimit",
            promotion,
            first.ended,
            failed_open=sum(c.value[0].degraded for c in decisions.calls),
            failed_closed=sum(isinstance(c.value[1], Exception) for c in decisions.calls),
        )

        assert decisions.errors() == [], "a fail-open limiter must not raise"
        assert all(c.value[0].allowed for c in decisions.calls)
        assert not [
            c for c in decisions.calls if isinstance(c.value[1], Decision) and c.value[1].degraded
        ]
        # Exact again, across both instances: the replicated count is kept ...
        assert [(await lim.hit(counted, _RATE)).allowed for lim in (two, one, two)] == [
            True,
            True,
            False,
        ]
        # ... and a new key admits exactly its limit.
        admitted = [(await lim.hit(fresh, _RATE)).allowed for lim in (one, two) * 5]
        assert admitted.count(True) == 5 and not any(admitted[5:])
        assert first.ended - promotion.promoted <= BOUND
    finally:
        await close_all(client_a, client_b)
