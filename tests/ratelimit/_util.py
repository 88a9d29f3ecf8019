"""Helpers for the rate-limit tests: Redis time and bounded waits on it."""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def redis_now(client: Any) -> float:
    """Redis TIME in seconds (any node of a cluster: they share this host's clock)."""
    value = await client.time()
    if isinstance(value, dict):
        value = next(iter(value.values()))
    return int(value[0]) + int(value[1]) / 1e6


async def wait_for_redis_time(client: Any, predicate: Any, *, limit: float = 15.0) -> float:
    """Poll Redis TIME until ``predicate(now)`` holds; return that time.
    Bounded by ``limit`` seconds of host time."""
    deadline = time.monotonic() + limit
    while True:
        now = await redis_now(client)
        if predicate(now):
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"Redis time never satisfied the condition within {limit}s")
        await asyncio.sleep(0.004)


def clear_period(now: float, *, margin: float = 600.0) -> int:
    """A period in seconds (about an hour) whose current window, aligned on
    the epoch like the limiter's, still has ``margin`` seconds to run, so a
    test burst cannot straddle a window boundary."""
    for period in range(3600, 7200, 60):
        if now % period < period - margin:
            return period
    raise AssertionError("no suitable period")  # pragma: no cover - arithmetic
