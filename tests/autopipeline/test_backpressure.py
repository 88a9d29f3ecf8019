"""Back-pressure: a shared connection holds at most so many unanswered
commands (the rest wait for room), and writes nothing more while the
socket's send buffer is full; everything goes out once there is room."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redkit import _autopipeline, _mux
from redkit.server import EmbeddedRedis
from redkit.testing import connected

from ._helpers import eventually, shared_connections, stats


async def test_commands_past_the_limit_wait_for_room(
    server_factory: Callable[..., EmbeddedRedis],
) -> None:
    server = server_factory()
    extra = 500
    limit = _autopipeline.SPREAD * _mux.MAX_OUTSTANDING  # every shared connection full
    count = limit + extra
    async with connected(server, flushed=True, read_timeout=30, write_timeout=30) as client:
        assert await client.ping()
        with server.paused():
            tasks = [asyncio.create_task(client.incr("bp:count")) for _ in range(count)]
            # The limit is reached and held: the rest wait, unsent.
            await eventually(
                lambda: (
                    len(shared_connections(client)) == _autopipeline.SPREAD
                    and all(c.full for c in shared_connections(client))
                    and stats(client).in_flight == limit
                ),
                f"{limit} in flight, {extra} waiting",
            )
            assert not any(t.done() for t in tasks)
        results = await asyncio.gather(*tasks)
        assert sorted(results) == list(range(1, count + 1))
        assert int(await client.get("bp:count")) == count
        assert stats(client).in_flight == 0
        assert not any(c.full for c in shared_connections(client))


async def test_a_full_send_buffer_pauses_writing_until_it_drains(
    server_factory: Callable[..., EmbeddedRedis],
) -> None:
    server = server_factory()
    value = b"v" * (1 << 20)
    count = 64  # far more than the kernel's socket buffers hold
    async with connected(server, flushed=True, read_timeout=30, write_timeout=30) as client:
        assert await client.ping()
        with server.paused():
            tasks = [asyncio.create_task(client.set(f"bp:big:{i}", value)) for i in range(count)]
            # The open connection stops writing once its send buffer is
            # full (a second one, opened meanwhile, cannot finish its
            # handshake); what is not written waits in the queues, unsent.
            opened = shared_connections(client)[0]
            await eventually(lambda: opened._paused, "writing paused")
            assert opened._queued
            held = sum(len(c._queued) for c in shared_connections(client))
            later = [asyncio.create_task(client.set(f"bp:later:{i}", i)) for i in range(10)]
            await eventually(
                lambda: sum(len(c._queued) for c in shared_connections(client)) >= held + 10,
                "later commands held back",
            )
        assert await asyncio.gather(*tasks, *later) == [True] * (count + 10)
        assert not any(c._paused for c in shared_connections(client))
        lengths = await asyncio.gather(*(client.strlen(f"bp:big:{i}") for i in range(count)))
        assert lengths == [len(value)] * count
        assert stats(client).in_flight == 0
