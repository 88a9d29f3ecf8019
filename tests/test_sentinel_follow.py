"""A Sentinel client follows the master the moment the sentinels announce
a failover, instead of writing to the deposed primary until it is
reconfigured."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

import redkit
from redkit.connection import Client
from redkit.server import EmbeddedSentinelGroup
from redkit.testing import settings_for

pytestmark = pytest.mark.failover


async def _answering_port(client: Client) -> int:
    return int((await client.config_get("port"))["port"])


async def test_a_client_built_before_a_graceful_failover_follows_the_new_primary(
    sentinel_group: EmbeddedSentinelGroup,
) -> None:
    client = await redkit.connect(settings_for(sentinel_group))
    try:
        old = sentinel_group.primary()
        # Several pooled connections to the old primary, idle and reused.
        await asyncio.gather(*(client.incr("before") for _ in range(8)))
        assert await _answering_port(client) == old.port

        new = sentinel_group.failover()  # the sentinels have announced it
        announced = time.monotonic()
        while await _answering_port(client) != new.port:
            assert time.monotonic() - announced < 1.0, "still talking to the deposed primary"
            await asyncio.sleep(0.01)
        followed = time.monotonic() - announced
        print(f"followed the new primary {followed * 1000:.0f} ms after the announcement")

        # From then on every command goes to the new primary, from every
        # pooled connection, while the old one would still take writes.
        ports = await asyncio.gather(*(_answering_port(client) for _ in range(16)))
        assert set(ports) == {new.port}
        await client.set("after", "1")
        async with Redis(host=new.host, port=new.port) as direct:
            assert await direct.get("after") == b"1"
    finally:
        await client.aclose()
