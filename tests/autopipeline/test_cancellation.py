"""Callers that give up: a command written keeps its place and its reply is
read and dropped; one not written yet is never sent; nobody else's reply
moves."""

from __future__ import annotations

import asyncio
import random

from redis.asyncio import RedisCluster

from redkit.connection import Client, build_client
from redkit.testing import settings_for

from ._helpers import BUSY, delta, eventually, stats, unwritten
from .conftest import Target


async def test_replies_of_cancelled_written_commands_are_read_and_dropped(client: Client) -> None:
    count = 200
    chosen = set(random.Random(1).sample(range(count), count // 2))
    before = stats(client)
    # The server spins for 500 ms, so nothing written after the script is
    # answered before the cancellations below.
    busy = asyncio.create_task(client.eval(BUSY, 1, "{storm}:busy", 500, "done"))
    tasks = [asyncio.create_task(client.incr(f"{{storm}}:{i}")) for i in range(count)]
    await eventually(
        lambda: stats(client).commands - before.commands == count + 1 and unwritten(client) == 0,
        "every INCR written",
    )
    # No reply read yet (checked, then cancelled without yielding).
    assert stats(client).in_flight == count + 1
    for i in chosen:
        assert tasks[i].cancel()
    assert await busy == b"done"
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, result in enumerate(results):
        if i in chosen:
            assert isinstance(result, asyncio.CancelledError), (i, result)
        else:
            assert result == 1, (i, result)
    # Every INCR was written, so every one ran, the cancelled ones too; the
    # replies of the cancelled ones were read and thrown away.
    values = await client.mget([f"{{storm}}:{i}" for i in range(count)])
    assert values == [b"1"] * count
    grown = delta(before, stats(client))
    assert grown["dropped"] == len(chosen)
    assert grown["reconnects"] == 0
    assert stats(client).in_flight == 0
    # The connection still answers in order.
    assert await client.set("{storm}:after", "fine") is True
    assert await client.get("{storm}:after") == b"fine"


async def test_cancelled_commands_never_written_are_never_sent(target: Target) -> None:
    count = 100
    chosen = set(random.Random(2).sample(range(count), count // 2))
    client = build_client(settings_for(target.topology))
    try:
        if isinstance(client, RedisCluster):
            await client.initialize()  # the slot map; no shared connection yet
        node = target.node_for("{never}")
        with node.paused():
            # The shared connection cannot finish its handshake, so every
            # command waits, unwritten, behind it.
            tasks = [asyncio.create_task(client.incr(f"{{never}}:{i}")) for i in range(count)]
            await eventually(lambda: stats(client).in_flight == count, "every INCR queued")
            for i in chosen:
                assert tasks[i].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, result in enumerate(results):
            if i in chosen:
                assert isinstance(result, asyncio.CancelledError), (i, result)
            else:
                assert result == 1, (i, result)
        values = await client.mget([f"{{never}}:{i}" for i in range(count)])
        assert values == [None if i in chosen else b"1" for i in range(count)]
        after = stats(client)
        assert after.dropped == 0  # nothing cancelled was written
        assert after.in_flight == 0
    finally:
        await client.aclose()


async def test_a_cancellation_storm_leaves_every_other_reply_right(client: Client) -> None:
    rng = random.Random(3)
    before = stats(client)
    cancelled_total = 0
    for round_ in range(6):
        count = 300
        keys = [f"{{cancel}}:{round_}:{i}" for i in range(count)]
        values = [f"{round_}-{i}-{rng.randrange(1 << 30)}".encode() for i in range(count)]

        async def set_then_get(key: str, value: bytes) -> bytes | None:
            assert await client.set(key, value) is True
            got = await client.get(key)
            assert got is None or isinstance(got, bytes)
            return got

        tasks = [
            asyncio.create_task(set_then_get(*each)) for each in zip(keys, values, strict=True)
        ]
        # Cancel at a different point of the exchange each round: before
        # anything is written, while replies are in flight, or later.
        for _ in range(round_):
            await asyncio.sleep(0)
        chosen = set(rng.sample(range(count), count // 2))
        for i in chosen:
            tasks[i].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        stored = await client.mget(keys)
        for i, (result, value, now) in enumerate(zip(results, values, stored, strict=True)):
            if isinstance(result, asyncio.CancelledError):
                assert i in chosen
                # Either the SET never ran or it stored this task's value.
                assert now in (None, value), (i, now)
            else:
                # Not cancelled, or finished before the cancellation.
                assert result == value, (i, result)
                assert now == value
        cancelled_total += sum(isinstance(r, asyncio.CancelledError) for r in results)
    grown = delta(before, stats(client))
    # Every reply dropped belonged to a cancelled command (a cancelled task
    # drops at most one reply: it sends nothing after its cancellation).
    assert grown["dropped"] <= cancelled_total
    assert grown["reconnects"] == 0
    assert stats(client).in_flight == 0
    assert await client.set("{cancel}:after", "ok") is True
    assert await client.get("{cancel}:after") == b"ok"
