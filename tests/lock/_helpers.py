"""Small helpers shared by the lock tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import RedisCluster
from redis.crc import key_slot

from redkit.lock import DistributedLock


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 10.0
) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


async def value_is(awaitable: Awaitable[Any], expected: Any) -> bool:
    """For :func:`eventually`: ``await awaitable == expected``."""
    return bool(await awaitable == expected)


async def all_keys(client: Any) -> set[str]:
    """Every key on the server (every primary of a cluster)."""
    if isinstance(client, RedisCluster):
        keys = await client.keys("*", target_nodes=RedisCluster.PRIMARIES)
    else:
        keys = await client.keys("*")
    return {k.decode() for k in keys}


async def subscribers(client: Any, channel: str) -> int:
    """Subscribers of ``channel`` over the whole server or cluster."""
    if isinstance(client, RedisCluster):
        total = 0
        for node in client.get_primaries():
            reply = await client.execute_command("PUBSUB NUMSUB", channel, target_nodes=node)
            total += _numsub(reply, channel)
        return total
    return _numsub(await client.pubsub_numsub(channel), channel)


def _numsub(reply: Any, channel: str) -> int:
    if isinstance(reply, dict):
        reply = list(reply.items())
    for name, count in reply:
        if (name.decode() if isinstance(name, bytes) else name) == channel:
            return int(count)
    return 0


def slot(client: Any, key: str) -> int:
    """The cluster slot of ``key`` (as a cluster client or a standalone
    server's keys would have it)."""
    if isinstance(client, RedisCluster):
        return int(client.keyslot(key))
    return int(key_slot(key.encode()))


async def hold_until_cancelled(
    locks: DistributedLock, name: str, lose: Callable[[], Awaitable[object]]
) -> None:
    """Hold ``name`` with ``on_lost="cancel"``, lose it by awaiting
    ``lose()``, then sleep far past its ttl: the block must end with
    :class:`~redkit.LockLost` and never reach its end."""
    async with locks.acquire(name, ttl=0.6, timeout=1, on_lost="cancel"):
        await lose()
        await asyncio.sleep(30)
    raise AssertionError(f"the block holding {name!r} ran to its end")


async def holding_block(locks: DistributedLock, name: str) -> asyncio.Task[None]:
    """A task inside ``async with locks.acquire(name)``, sleeping there until
    cancelled; returned once it holds the lock."""
    entered = asyncio.Event()

    async def body() -> None:
        async with locks.acquire(name, ttl=30, timeout=1):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(body())
    await entered.wait()
    return task
