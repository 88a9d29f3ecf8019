"""Subprocess for the crash and cross-process tests:
``python _crash_worker.py MODE HOST PORT CLUSTER [ARGS...]``.

create   creates sessions for user "crash" from 16 tasks until killed,
         printing "ready" after the first few.
between  (cluster) logs an anonymous session in as user "crash", dying by
         SIGKILL after the first of the two cross-slot steps; prints the
         anonymous id first.
update   ARGS = session id, worker name: waits for a line on stdin, then
         updates keys <name>-0 .. <name>-29 (and refreshes in between) from
         8 tasks; prints "done".
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from redis.crc import key_slot

from redkit import RedisSettings, connect
from redkit.session import SessionStore

SECRET = "session-test-secret-0123456789abcdef"  # _helpers.SECRET


async def main(mode: str, host: str, port: int, cluster: bool, extra: list[str]) -> None:
    client = await connect(
        RedisSettings(host=host, port=port, cluster=cluster, min_idle_conns=0, max_retries=1)
    )
    store = SessionStore(client, secret=SECRET)
    if mode == "create":
        for _ in range(5):
            await store.create("crash", {"n": 0})
        print("ready", flush=True)

        async def loop() -> None:
            n = 0
            while True:
                n += 1
                await store.create("crash", {"n": n})

        await asyncio.gather(*(loop() for _ in range(8)))
    elif mode == "between":
        target = key_slot(f"{{{store._layout.tags.current('crash')}}}".encode())
        anon = await store.create("", {"cart": [1, 2]})
        while key_slot(f"{{{anon.id.split('.')[0]}}}".encode()) == target:
            anon = await store.create("", {"cart": [1, 2]})  # need two slots
        print(anon.id, flush=True)
        real_create = store._create

        async def die(*args: Any) -> Any:
            os.kill(os.getpid(), signal.SIGKILL)
            return await real_create(*args)

        store._create = die  # type: ignore[method-assign]
        await store.rotate(anon.id, user_id="crash")
        print("survived", flush=True)
    elif mode == "update":
        session_id, name = extra
        print("ready", flush=True)
        sys.stdin.readline()
        gate = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with gate:
                await store.update(session_id, {f"{name}-{i}": i})
                await store.refresh(session_id)

        await asyncio.gather(*(one(i) for i in range(30)))
        print("done", flush=True)
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5:]))
