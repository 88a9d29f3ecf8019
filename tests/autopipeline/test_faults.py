"""A server that stalls or a shared connection that dies: the commands
written on it fail (a timeout, or a lost connection), none is sent twice,
no late reply meets another command, and the client works afterwards."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from redkit._failures import LostAfterWrite
from redkit.connection import build_client
from redkit.testing import connected, settings_for

from ._helpers import connected_clients, delta, eventually, stats, unwritten
from .conftest import Target

TIMEOUT = 0.5
COUNT = 100


async def test_a_paused_server_times_out_the_commands_in_flight(target: Target) -> None:
    tag = "{pause}"
    keys = [f"{tag}:{i}" for i in range(COUNT)]
    async with connected(
        target.topology, flushed=True, read_timeout=TIMEOUT, write_timeout=TIMEOUT
    ) as client:
        await asyncio.gather(*(client.set(k, f"before-{i}") for i, k in enumerate(keys)))
        before = stats(client)
        node = target.node_for(tag)
        with node.paused():
            started = time.monotonic()
            results = await asyncio.gather(
                *(client.get(k) for k in keys),
                *(client.incr(f"{tag}:counter:{i}") for i in range(COUNT)),
                return_exceptions=True,
            )
            elapsed = time.monotonic() - started
        for result in results:
            assert isinstance(result, RedisTimeoutError), result
        # The socket timeout bounds every command (not each in turn).
        assert elapsed < 3, elapsed
        grown = delta(before, stats(client))
        assert grown["reconnects"] >= 1  # the stalled socket was dropped
        assert stats(client).in_flight == 0

        # After SIGCONT: new values, each read back by the right command.
        fresh = [f"after-{i}".encode() for i in range(COUNT)]
        stored = await asyncio.gather(*map(client.set, keys, fresh))
        assert stored == [True] * COUNT
        assert await asyncio.gather(*(client.get(k) for k in keys)) == fresh
        # A timed-out INCR may have run when the server woke, but never twice.
        counters = await client.mget([f"{tag}:counter:{i}" for i in range(COUNT)])
        assert set(counters) <= {None, b"1"}, set(counters)


async def test_a_killed_shared_connection_fails_what_was_written_and_sends_nothing_twice(
    target: Target,
) -> None:
    tag = "{kill}"
    counters = [f"{tag}:counter:{i}" for i in range(COUNT)]
    async with connected(target.topology, flushed=True) as client:
        assert await client.set(f"{tag}:warm", "1") is True  # the shared connection is open
        node = target.node_for(tag)
        # The killer's connection is accepted and served before the pause,
        # so that after it both sockets are read in the same event-loop turn.
        reader, writer = await asyncio.open_connection(node.host, node.port)
        try:
            writer.write(b"PING\r\n")
            assert await reader.readline() == b"+PONG\r\n"
            before = stats(client)
            with node.paused():
                tasks = [asyncio.create_task(client.incr(c)) for c in counters]
                await eventually(
                    lambda: (
                        stats(client).commands - before.commands == COUNT and unwritten(client) == 0
                    ),
                    "every INCR written",
                )
                writer.write(b"CLIENT KILL TYPE normal SKIPME yes\r\n")
                await writer.drain()
            killed = await reader.readline()
            assert killed.startswith(b":") and int(killed[1:]) >= 1, killed
        finally:
            writer.close()
            await writer.wait_closed()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        # Every INCR was written and no reply came: each fails as lost.
        for result in results:
            assert isinstance(result, LostAfterWrite), result
            assert isinstance(result, RedisConnectionError)
        assert delta(before, stats(client))["reconnects"] >= 1
        # Each may have run before the kill, none ran twice...
        values = await client.mget(counters)
        assert set(values) <= {None, b"1"}, set(values)
        # ...and none runs later: one more INCR each lands exactly once.
        again = await asyncio.gather(*(client.incr(c) for c in counters))
        assert again == [(0 if v is None else int(v)) + 1 for v in values]
        assert await client.mget(counters) == [str(n).encode() for n in again]
        assert stats(client).in_flight == 0


async def test_closing_the_client_while_its_shared_connection_opens(target: Target) -> None:
    nodes = target.nodes
    baseline = [await connected_clients(node.host, node.port) for node in nodes]
    client = build_client(settings_for(target.topology))
    if isinstance(client, RedisCluster):
        await client.initialize()  # the slot map; no shared connection yet
    node = target.node_for("{closing}")
    with node.paused():
        # The shared connection's handshake cannot finish: the GET waits.
        getting = asyncio.create_task(client.get("{closing}:k"))
        await eventually(lambda: stats(client).in_flight == 1, "the GET queued")
        # Closing is not a cancellation of the caller, whatever it stops.
        await client.aclose()
        task = asyncio.current_task()
        assert task is not None and getattr(task, "cancelling", lambda: 0)() == 0
    with pytest.raises(RedisConnectionError):
        await getting

    # Every connection the client opened is closed: no server has more
    # clients than before.
    async def back_to_baseline() -> bool:
        now = [await connected_clients(node.host, node.port) for node in nodes]
        return all(n <= b for n, b in zip(now, baseline, strict=True))

    await eventually(back_to_baseline, f"connected clients back to {baseline}", timeout=5)
