"""Child process for the cross-process exactness test: fires 100 hits at
once per scenario after a barrier shared with the other children."""

from __future__ import annotations

import asyncio
from typing import Any


def run(
    host: str, port: int, cluster: bool, scenarios: list[Any], barrier: Any, queue: Any
) -> None:
    asyncio.run(_run(host, port, cluster, scenarios, barrier, queue))


async def _run(
    host: str, port: int, cluster: bool, scenarios: list[Any], barrier: Any, queue: Any
) -> None:
    from redkit import RedisSettings, connect
    from redkit.ratelimit import RateLimiter

    from ._util import redis_now

    settings = RedisSettings(
        host=host, port=port, cluster=cluster, pool_size=16, read_timeout=20, min_idle_conns=0
    )
    client = await connect(settings)
    loop = asyncio.get_running_loop()
    try:
        for algorithm, key, rate, hits in scenarios:
            limiter = RateLimiter(client, algorithm=algorithm, fail_open=False, timeout=30)
            await limiter.peek("warm-up", rate)  # connections open, script cached
            await loop.run_in_executor(None, barrier.wait, 60)
            started = await redis_now(client)
            decisions = await asyncio.gather(*(limiter.hit(key, rate) for _ in range(hits)))
            finished = await redis_now(client)
            queue.put((algorithm, sum(d.allowed for d in decisions), started, finished))
    finally:
        await client.aclose()
