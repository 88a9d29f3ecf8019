"""Locks: uncontended acquire + release beside raw redis-py and redis-py's
asyncio ``Lock``, and the hand-off between two waiters with and without
early wake-up.

The hand-off cases run two copies of "take the lock, hold it 2 ms, let go"
at once, so every step has one hand-off; besides ops/s, a closer prints the
measured hand-off latency (time from the holder's release returning to the
waiter holding the lock).
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time

from bench.harness import Case, Env
from redkit import Script
from redkit.lock import DistributedLock

_RAW_RELEASE = Script(
    "bench_release",
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
)
HOLD = 0.002


async def cases(env: Env) -> list[Case]:
    raw = env.raw_client()
    await raw.script_load(_RAW_RELEASE.source)
    # The same kind of client for every case (counted, plain pool), so that
    # the ratios compare the lock code rather than pool flavours.
    client = env.raw_client()
    locks = DistributedLock(client, prefix="bench")
    polling = DistributedLock(client, prefix="bench", early_wakeup=False)
    sem = locks.semaphore("sem", limit=5, ttl=10)
    env.closers.append(locks.aclose)
    env.closers.append(polling.aclose)

    async def raw_set_nx_and_release() -> None:
        token = secrets.token_hex(16)
        assert await raw.set("bench:raw-lock", token, nx=True, px=10_000)
        await raw.evalsha(_RAW_RELEASE.sha, 1, "bench:raw-lock", token)

    async def redis_py_lock() -> None:
        lock = raw.lock("bench:redis-py-lock", timeout=10)
        assert await lock.acquire(blocking=False)
        await lock.release()

    async def redkit_lock() -> None:
        release = await locks.lock("uncontended", ttl=10)
        await release()

    async def redkit_acquire() -> None:
        async with locks.acquire("uncontended-cm", ttl=10, timeout=1):
            pass

    async def redkit_semaphore() -> None:
        async with sem.acquire(timeout=1):
            pass

    latencies: dict[str, list[float]] = {"early wake-up": [], "backoff only": []}

    def handoff(service: DistributedLock, label: str) -> Case:
        released_at: list[float] = []
        samples = latencies[label]

        async def step() -> None:
            async with service.acquire(f"handoff-{label}", ttl=10, timeout=10) as lease:
                if released_at:
                    samples.append(time.perf_counter() - released_at.pop())
                await asyncio.sleep(HOLD)
            assert lease.released
            released_at.append(time.perf_counter())

        return Case(
            "lock",
            f"hand-off, 2 waiters ({label})",
            step,
            concurrency=2,
            note="2 ms hold; ops/s counts acquisitions",
        )

    async def report_latency() -> None:
        for label, samples in latencies.items():
            if samples:
                ordered = sorted(samples)
                p90 = ordered[int(len(ordered) * 0.9)]
                print(
                    f"hand-off latency ({label}): median {statistics.median(samples) * 1e3:.2f} ms,"
                    f" p90 {p90 * 1e3:.2f} ms over {len(samples)} hand-offs"
                )

    env.closers.insert(0, report_latency)

    return [
        Case("lock", "raw SET NX PX + EVALSHA release", raw_set_nx_and_release, baseline=True),
        Case("lock", "redis-py asyncio Lock acquire+release", redis_py_lock),
        Case("lock", "redkit lock() + release()", redkit_lock),
        Case("lock", "redkit async with acquire() (renewing)", redkit_acquire),
        Case("lock", "redkit semaphore acquire+release", redkit_semaphore),
        handoff(locks, "early wake-up"),
        handoff(polling, "backoff only"),
    ]
