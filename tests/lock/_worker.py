"""A separate process that takes a lock or semaphore many times.

Run by the multi-process tests as ``python -m tests.lock._worker '<json>'``;
prints one JSON line with what it saw. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from redkit import connect
from redkit.lock import DistributedLock
from redkit.settings import RedisSettings


async def _barrier(client: Any, key: str, count: int) -> None:
    await client.incr(key)
    deadline = time.monotonic() + 60
    while int(await client.get(key) or 0) < count:
        if time.monotonic() > deadline:
            raise TimeoutError("not every worker started")
        await asyncio.sleep(0.01)


async def run_lock(client: Any, job: dict[str, Any]) -> dict[str, Any]:
    me = f"{os.getpid()}"
    overlaps = 0
    fences: list[int] = []
    async with DistributedLock(client, prefix=job["prefix"]) as locks:
        await _barrier(client, job["barrier"], job["workers"])
        for _ in range(job["rounds"]):
            async with locks.acquire(job["name"], ttl=5, timeout=60) as lease:
                # The shared record: empty on entry, ours on exit.
                previous = await client.set(job["holder"], me, get=True)
                if previous is not None:
                    overlaps += 1
                await client.rpush(job["log"], lease.fencing_token)
                fences.append(lease.fencing_token)
                if await client.getdel(job["holder"]) != me.encode():
                    overlaps += 1
        stats = locks.stats()
    return {
        "overlaps": overlaps,
        "fences": fences,
        "acquired": stats.acquired,
        "released": stats.released,
        "lost": stats.lost,
        "wakeups": stats.wakeups,
    }


async def run_semaphore(client: Any, job: dict[str, Any]) -> dict[str, Any]:
    worst = 0
    async with DistributedLock(client, prefix=job["prefix"]) as locks:
        sem = locks.semaphore(job["name"], job["limit"], ttl=5)
        await _barrier(client, job["barrier"], job["workers"])
        for _ in range(job["rounds"]):
            async with sem.acquire(timeout=60):
                inside = int(await client.incr(job["holder"]))
                worst = max(worst, inside)
                await asyncio.sleep(0.002)
                await client.decr(job["holder"])
        stats = sem.stats()
    return {"worst": worst, "acquired": stats.acquired, "lost": stats.lost}


async def hold_forever(client: Any, job: dict[str, Any]) -> dict[str, Any]:
    """Take the lock (renewing it) and a permit, say so, then wait to be killed."""
    locks = DistributedLock(client, prefix=job["prefix"])
    lease = await locks.acquire(job["name"], ttl=job["ttl"], timeout=10)
    permit = await locks.semaphore(job["name"], 1, ttl=job["ttl"]).acquire(timeout=10)
    print(json.dumps({"fence": lease.fencing_token, "permit": permit.fencing_token}), flush=True)
    await asyncio.sleep(120)
    return {}


async def main(job: dict[str, Any]) -> None:
    settings = RedisSettings(
        host=job["host"], port=job["port"], cluster=job["cluster"], min_idle_conns=0
    )
    client = await connect(settings)
    try:
        runner = {"lock": run_lock, "semaphore": run_semaphore, "hold": hold_forever}[job["kind"]]
        result = await runner(client, job)
    finally:
        await client.aclose()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
