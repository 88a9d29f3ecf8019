"""What several cache test modules need: a second client on the same
server, command counts, waiting for a condition, a loader that counts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import RedisCluster

import redkit
from redkit.connection import Client


def address(client: Any) -> tuple[str, int, bool]:
    """Host and port ``client`` talks to, and whether it is a cluster's."""
    if isinstance(client, RedisCluster):
        node = client.get_default_node()
        return node.host, int(node.port), True
    kwargs = client.connection_pool.connection_kwargs
    return kwargs["host"], int(kwargs["port"]), False


async def another_client(client: Any, **overrides: Any) -> Client:
    """A client of its own (its own pool and connections) on ``client``'s
    server or cluster."""
    host, port, cluster = address(client)
    settings = redkit.RedisSettings(
        host=host,
        port=port,
        cluster=cluster,
        min_idle_conns=0,
        read_timeout=5.0,
        write_timeout=5.0,
        connect_timeout=5.0,
        **overrides,
    )
    return await redkit.connect(settings)


async def command_calls(client: Any, name: str) -> int:
    """How many times the server (every primary of a cluster) ran ``name``."""
    if isinstance(client, RedisCluster):
        per_node = await client.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        sections = list(per_node.values())
    else:
        sections = [await client.info("commandstats")]
    return sum(int(s.get(f"cmdstat_{name}", {}).get("calls", 0)) for s in sections)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> float:
    """Seconds until ``await check()`` is true; fails after ``timeout``."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


class Loader:
    """A loader that counts its calls and returns ``value`` (or, with
    ``make``, ``make(calls)``), after ``delay`` seconds when given."""

    def __init__(
        self,
        value: Any = None,
        *,
        delay: float = 0.0,
        make: Callable[[int], Any] | None = None,
    ) -> None:
        self.value = value
        self.delay = delay
        self.make = make
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.value if self.make is None else self.make(self.calls)
