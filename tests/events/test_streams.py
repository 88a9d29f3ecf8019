"""Durable events on Redis Streams, on real servers (standalone and cluster)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from redkit.connection import Client, connect
from redkit.errors import ConfigError, ConnectionUnavailable, SerializationError
from redkit.events import (
    Event,
    StreamConsumer,
    StreamPublisher,
    dead_letter_stream_for,
    decode_event,
)
from redkit.server import EmbeddedRedis
from redkit.testing import settings_for

from .helpers import eventually

SRC = Path(__file__).resolve().parents[2] / "src"
WORKER = Path(__file__).resolve().parent / "stream_worker.py"


@dataclasses.dataclass
class OrderPaid:
    id: int
    amount: float


def consumer_for(client: Client, name: str = "c1", **kwargs: Any) -> StreamConsumer:
    kwargs.setdefault("group", "billing")
    kwargs.setdefault("claim_idle", 2.0)
    return StreamConsumer(client, "orders", consumer=name, **kwargs)


async def test_publish_consume_ack(client: Client) -> None:
    stream = StreamPublisher(client, maxlen=1000, source="shop")
    ids = [await stream.publish("orders", "order.paid", {"id": i, "amount": 9.5}) for i in range(3)]
    ids += await stream.publish_many("orders", [("order.paid", {"id": 3, "amount": 1.0})])
    seen: list[Event[OrderPaid]] = []
    consumer = consumer_for(client)
    consumer.on("order.paid", seen.append, payload_type=OrderPaid)
    async with consumer.running():
        await eventually(lambda: len(seen) == 4)
        await eventually(lambda: consumer.stats().handled == 4)
    assert [e.id for e in seen] == ids
    assert [e.payload.id for e in seen] == [0, 1, 2, 3]
    assert all(isinstance(e.payload, OrderPaid) for e in seen)
    assert all(e.source == "shop" and e.channel == "orders" and e.entry_id for e in seen)
    pending = await client.xpending("orders", "billing")
    assert pending["pending"] == 0
    # The entry is the Go envelope plus id, readable by anyone.
    entry = (await client.xrange("orders", count=1))[0][1]
    assert decode_event(entry[b"event"]).id == ids[0]


async def test_group_reads_from_start_by_default_or_new_only(client: Client) -> None:
    stream = StreamPublisher(client)
    await stream.publish("orders", "order.paid", {"id": 1})  # before any group
    old_and_new: list[Any] = []
    new_only: list[Any] = []
    first = consumer_for(client, group="from-start")
    first.on("order.paid", lambda e: old_and_new.append(e.payload["id"]))
    second = consumer_for(client, group="new-only", from_start=False)
    second.on("order.paid", lambda e: new_only.append(e.payload["id"]))
    async with first.running(), second.running():
        await stream.publish("orders", "order.paid", {"id": 2})
        await eventually(lambda: old_and_new == [1, 2] and new_only == [2])


async def test_failed_handler_is_retried_after_claim_idle(client: Client) -> None:
    stream = StreamPublisher(client)
    await stream.publish("orders", "order.paid", {"id": 1})
    attempts: list[float] = []

    async def flaky(event: Event[Any]) -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RuntimeError("payment service down")

    consumer = consumer_for(client, claim_idle=0.5, handler_timeout=0.2)
    consumer.on("order.paid", flaky)
    async with consumer.running():
        await eventually(lambda: consumer.stats().handled == 1)
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.45  # not before the entry was idle long enough
    stats = consumer.stats()
    assert stats.handler_errors == 1
    assert stats.claimed == 1
    assert (await client.xpending("orders", "billing"))["pending"] == 0
    assert await client.xlen(consumer.dead_letter_stream) == 0


async def test_after_max_deliveries_the_event_goes_to_the_dead_letter_stream(
    client: Client,
) -> None:
    stream = StreamPublisher(client)
    event_id = await stream.publish("orders", "order.paid", {"id": 13})
    calls = 0

    async def broken(event: Event[Any]) -> None:
        nonlocal calls
        calls += 1
        raise ValueError(f"card declined #{calls}")

    consumer = consumer_for(client, max_deliveries=3, claim_idle=0.3, handler_timeout=0.1)
    consumer.on("order.paid", broken)
    async with consumer.running():
        await eventually(lambda: consumer.stats().dead_lettered == 1, timeout=15)
    assert calls == 3
    assert consumer.dead_letter_stream == "{orders}:dead-letter"
    dead = await client.xrange(consumer.dead_letter_stream)
    assert len(dead) == 1
    fields = dead[0][1]
    assert decode_event(fields[b"event"]).id == event_id
    assert b"card declined #3" in fields[b"error"]
    assert fields[b"deliveries"] == b"3"
    assert fields[b"group"] == b"billing"
    assert (await client.xpending("orders", "billing"))["pending"] == 0


async def test_malformed_unknown_and_timed_out_entries(client: Client) -> None:
    stream = StreamPublisher(client)
    await client.xadd("orders", {"foo": "bar"})  # a foreign writer
    await client.xadd("orders", {"event": "not json"})
    await stream.publish("orders", "order.refunded", {"id": 1})  # nobody handles it here
    await stream.publish("orders", "order.slow", {"id": 2})
    await stream.publish("orders", "order.paid", {"id": 3})
    seen: list[Any] = []

    async def slow(event: Event[Any]) -> None:
        await asyncio.sleep(10)

    consumer = consumer_for(client, max_deliveries=1, claim_idle=1.0, handler_timeout=0.2)
    consumer.on("order.paid", lambda e: seen.append(e.payload))
    consumer.on("order.slow", slow)
    async with consumer.running():
        await eventually(lambda: consumer.stats().dead_lettered == 3)
    stats = consumer.stats()
    assert seen == [{"id": 3}]
    assert stats.malformed == 2
    assert stats.unhandled == 1
    assert stats.handler_timeouts == 1
    errors = sorted(f[b"error"] for _, f in await client.xrange(consumer.dead_letter_stream))
    assert errors[0].startswith(b"handler")
    assert b"timed out" in errors[0]
    assert errors[1].startswith(b"malformed")
    assert errors[2] == b"no 'event' field"
    assert (await client.xpending("orders", "billing"))["pending"] == 0


async def test_entries_of_a_dead_consumer_are_claimed(client: Client) -> None:
    stream = StreamPublisher(client)
    await stream.publish_many("orders", [("order.paid", {"id": i}) for i in range(5)])
    consumer = consumer_for(client, "alive", claim_idle=0.5, handler_timeout=0.2)
    await consumer.ensure_group()
    # A consumer that read the entries and died before acknowledging them.
    await client.xreadgroup("billing", "dead", {"orders": ">"}, count=5)
    seen: list[int] = []
    consumer.on("order.paid", lambda e: seen.append(e.payload["id"]))
    async with consumer.running():
        await eventually(lambda: sorted(seen) == [0, 1, 2, 3, 4])
    assert consumer.stats().claimed == 5
    assert (await client.xpending("orders", "billing"))["pending"] == 0


async def test_a_restarted_consumer_reruns_its_own_pending_entries(client: Client) -> None:
    stream = StreamPublisher(client)
    await stream.publish_many("orders", [("order.paid", {"id": i}) for i in range(3)])
    consumer = consumer_for(client, "worker-1", claim_idle=60.0)
    await consumer.ensure_group()
    await client.xreadgroup("billing", "worker-1", {"orders": ">"}, count=3)  # then "crashed"
    seen: list[int] = []
    consumer.on("order.paid", lambda e: seen.append(e.payload["id"]))
    async with consumer.running():
        # Right away, not after claim_idle (60 s).
        await eventually(lambda: seen == [0, 1, 2], timeout=5)


async def test_stream_is_trimmed_to_about_maxlen(client: Client) -> None:
    stream = StreamPublisher(client, maxlen=100)
    for start in range(0, 2000, 200):
        await stream.publish_many("orders", [("e", i) for i in range(start, start + 200)])
    length = await client.xlen("orders")
    assert 100 <= length < 400  # approximate trimming removes whole nodes only


async def test_cancellation_drains_and_acks_what_finished(redis_client: Redis) -> None:
    stream = StreamPublisher(redis_client)
    await stream.publish_many("orders", [("order.paid", {"id": i}) for i in range(4)])
    started = 0

    async def slowish(event: Event[Any]) -> None:
        nonlocal started
        started += 1
        await asyncio.sleep(0.3)

    consumer = consumer_for(redis_client, claim_idle=5.0, drain_timeout=5.0)
    consumer.on("order.paid", slowish)
    task = asyncio.ensure_future(consumer.run())
    await eventually(lambda: started == 4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert consumer.stats().handled == 4
    assert (await redis_client.xpending("orders", "billing"))["pending"] == 0


async def test_consumer_survives_a_server_restart(fresh_server: EmbeddedRedis) -> None:
    client = await connect(settings_for(fresh_server))
    try:
        stream = StreamPublisher(client)
        seen: list[int] = []
        consumer = StreamConsumer(
            client, "orders", group="g", consumer="c", claim_idle=2.0, backoff_max=0.3
        )
        consumer.on("e", lambda e: seen.append(e.payload))
        async with consumer.running():
            await stream.publish("orders", "e", 1)
            await eventually(lambda: seen == [1])
            fresh_server.restart()  # no persistence: stream and group are gone

            async def publish_after_restart() -> bool:
                try:
                    await stream.publish("orders", "e", 2)
                except ConnectionUnavailable:
                    return False
                return True

            deadline = time.monotonic() + 15
            while not await publish_after_restart():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await eventually(lambda: seen == [1, 2], timeout=15)
    finally:
        await client.aclose()


async def test_publisher_errors(fresh_server: EmbeddedRedis) -> None:
    client = await connect(settings_for(fresh_server, read_timeout=1.0, write_timeout=1.0))
    try:
        stream = StreamPublisher(client)
        with pytest.raises(SerializationError):
            await stream.publish("orders", "e", {"x": object()})
        with pytest.raises(SerializationError):
            await stream.publish_many("orders", [("e", 1), ("e", object())])
        assert await client.exists("orders") == 0  # nothing was written
        fresh_server.stop()
        started = time.monotonic()
        with pytest.raises(ConnectionUnavailable, match="orders"):
            await stream.publish("orders", "e", 1)
        assert time.monotonic() - started < 5
    finally:
        await client.aclose()


async def test_configuration_is_checked(client: Client) -> None:
    with pytest.raises(ConfigError, match="claim_idle"):
        StreamConsumer(client, "s", group="g", consumer="c", claim_idle=1.0, handler_timeout=2.0)
    with pytest.raises(ConfigError, match="max_deliveries"):
        StreamConsumer(client, "s", group="g", consumer="c", max_deliveries=0)
    with pytest.raises(ConfigError, match="stream name"):
        StreamConsumer(client, "", group="g", consumer="c")
    with pytest.raises(ConfigError, match="maxlen"):
        StreamPublisher(client, maxlen=0)
    assert dead_letter_stream_for("app:{orders}") == "app:{orders}:dead-letter"
    assert dead_letter_stream_for("orders") == "{orders}:dead-letter"


# -- at-least-once across processes ----------------------------------------------


def start_worker(url: str, stream: str, name: str, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, stream, name, "--claim-idle", "1.0", *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_ten_thousand_events_survive_killed_consumers(
    redis_server: EmbeddedRedis, redis_client: Redis
) -> None:
    total = 10_000
    stream = StreamPublisher(redis_client, maxlen=None)
    published: set[str] = set()
    for start in range(0, total, 500):
        published.update(
            await stream.publish_many("jobs", [("job", i) for i in range(start, start + 500)])
        )
    assert len(published) == total
    handled_key = "jobs:handled"
    workers: list[subprocess.Popen[bytes]] = []

    async def handled() -> int:
        return int(await redis_client.scard(handled_key))

    async def wait_for(predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not await predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout:g}s; handled={await handled()}")
            await asyncio.sleep(0.05)

    try:
        # w1 SIGKILLs itself inside its 2500th handler call, mid-batch.
        w1 = start_worker(redis_server.url, "jobs", "w1", "--die-after", "2500")
        w2 = start_worker(redis_server.url, "jobs", "w2")
        workers += [w1, w2]
        await asyncio.to_thread(w1.wait, 60)
        assert w1.returncode == -signal.SIGKILL
        pending_w1 = await redis_client.xpending_range("jobs", "workers", "-", "+", 1000, "w1")
        assert pending_w1, "w1 died holding unacknowledged entries"
        # w2 is killed from outside while it is busy.
        await wait_for(lambda: _at_least(handled, 5000), 60, "5000 handled")
        w2.send_signal(signal.SIGKILL)
        await asyncio.to_thread(w2.wait, 10)
        assert await handled() < total, "the kill came too late to prove anything"
        # A restarted w1 re-runs its own pending entries, claims w2's and
        # finishes the stream.
        workers.append(start_worker(redis_server.url, "jobs", "w1"))
        await wait_for(lambda: _at_least(handled, total), 60, "every event handled")
        members = {m.decode() for m in await redis_client.smembers(handled_key)}
        assert members == published
        calls = int(await redis_client.get("jobs:calls") or 0)
        assert calls >= total
        await wait_for(lambda: _no_pending(redis_client), 20, "nothing left pending")
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


async def _at_least(count: Any, target: int) -> bool:
    return bool(await count() >= target)


async def _no_pending(client: Redis) -> bool:
    return int((await client.xpending("jobs", "workers"))["pending"]) == 0


async def test_consumer_rides_out_a_paused_server(fresh_server: EmbeddedRedis) -> None:
    client = await connect(settings_for(fresh_server, read_timeout=1.0, write_timeout=1.0))
    try:
        stream = StreamPublisher(client)
        seen: list[int] = []
        consumer = StreamConsumer(
            client, "orders", group="g", consumer="c", claim_idle=2.0, block=0.3, backoff_max=0.3
        )
        consumer.on("e", lambda e: seen.append(e.payload))
        async with consumer.running():
            await stream.publish("orders", "e", 1)
            await eventually(lambda: seen == [1])
            with fresh_server.paused():
                await eventually(lambda: consumer.stats().redis_errors >= 1, timeout=10)
            await stream.publish("orders", "e", 2)
            await eventually(lambda: seen == [1, 2], timeout=10)
    finally:
        await client.aclose()


async def test_pending_entries_deleted_from_the_stream_are_cleared(client: Client) -> None:
    stream = StreamPublisher(client)
    ids = await stream.publish_many("orders", [("order.paid", {"id": i}) for i in range(4)])
    consumer = consumer_for(client, "alive", claim_idle=0.3, handler_timeout=0.1)
    await consumer.ensure_group()
    read = await client.xreadgroup("billing", "dead", {"orders": ">"}, count=4)
    entry_ids = [entry_id for entry_id, _ in read[0][1]]
    await client.xdel("orders", *entry_ids[:2])  # trimmed while pending
    seen: list[str] = []
    consumer.on("order.paid", lambda e: seen.append(e.id))
    async with consumer.running():
        await eventually(lambda: sorted(seen) == sorted(ids[2:]))
        await eventually_pending_zero(client)


async def eventually_pending_zero(client: Client) -> None:
    deadline = time.monotonic() + 10
    while int((await client.xpending("orders", "billing"))["pending"]) != 0:
        assert time.monotonic() < deadline, "entries still pending"
        await asyncio.sleep(0.05)
