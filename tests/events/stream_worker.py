"""A stream consumer process for the at-least-once test.

``python stream_worker.py URL STREAM NAME [--die-after N]`` consumes events of
type ``job`` and records each handled event id in the set ``STREAM:handled``
(and counts every handler call in ``STREAM:calls``). With ``--die-after N``
the process SIGKILLs itself inside its N-th handler call, while the rest of
its batch is in flight and nothing of it has been acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

from redkit import RedisSettings, connect
from redkit.events import Event, StreamConsumer


async def main(args: argparse.Namespace) -> None:
    client = await connect(RedisSettings.from_url(args.url, min_idle_conns=0, pool_size=40))
    consumer = StreamConsumer(
        client,
        args.stream,
        group="workers",
        consumer=args.name,
        claim_idle=args.claim_idle,
        handler_timeout=args.claim_idle / 2,
        max_concurrency=32,
        batch_size=64,
    )
    calls = 0

    @consumer.on("job")
    async def job(event: Event[Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == args.die_after:
            os.kill(os.getpid(), signal.SIGKILL)
        pipe = client.pipeline(transaction=False)
        pipe.sadd(f"{args.stream}:handled", event.id)
        pipe.incr(f"{args.stream}:calls")
        await pipe.execute()

    await consumer.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("stream")
    parser.add_argument("name")
    parser.add_argument("--claim-idle", type=float, default=1.0)
    parser.add_argument("--die-after", type=int, default=0)
    asyncio.run(main(parser.parse_args()))
