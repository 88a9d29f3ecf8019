"""Events: pub/sub publish-to-handler throughput and latency, and stream
publish+consume+ack throughput, beside raw redis-py and broadcaster 0.3.1.

The harness times one call of ``op`` per operation. Throughput cases make
one operation a batch: encode ``BATCH`` envelopes, send them in one pipeline,
and wait until the receiving side has run its handler for every one of them
(so ops/s x ``BATCH`` = messages/s, publish to handler). Latency cases send
one event and wait for its handler; their note shows p50/p99 of that
publish-to-handler time over every call the harness made (all rounds).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import msgspec
from redis.asyncio import Redis

from bench.harness import Case, Env
from redkit.events import (
    Event,
    Publisher,
    StreamConsumer,
    StreamPublisher,
    Subscriber,
    encode_event,
    new_event,
)

BATCH = 100
PAYLOAD = {"id": "7f9c2a4e", "email": "ana@example.com", "roles": ["admin", "ops"]}
WAIT = 10.0  # seconds: a batch that is not delivered by then fails the run


class Arrivals:
    """Counts handler calls and wakes the op when the batch is complete."""

    def __init__(self) -> None:
        self.expected = 0
        self.seen = 0
        self.done = asyncio.Event()

    def expect(self, count: int) -> None:
        self.expected = count
        self.seen = 0
        self.done.clear()

    def arrived(self) -> None:
        self.seen += 1
        if self.seen >= self.expected:
            self.done.set()

    async def wait(self, what: str) -> None:
        try:
            await asyncio.wait_for(self.done.wait(), WAIT)
        except asyncio.TimeoutError:
            raise RuntimeError(
                f"{what}: {self.seen} of {self.expected} delivered within {WAIT:g}s"
            ) from None


class Latencies:
    """Publish-to-handler times; ``str()`` is the note the report prints, so
    it covers every call made up to the report."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.samples: list[float] = []
        self.sent_at = 0.0

    def record(self) -> None:
        self.samples.append(time.perf_counter() - self.sent_at)

    def __str__(self) -> str:
        if len(self.samples) < 100:
            return f"{self.label} (too few samples)"
        cuts = statistics.quantiles(self.samples, n=100)
        return f"{self.label} p50 {cuts[49] * 1e6:.0f}us p99 {cuts[98] * 1e6:.0f}us"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def raw_envelope(kind: str, payload: Any) -> bytes:
    """What a hand-written publisher would send: the same JSON envelope."""
    stamp = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    return msgspec.json.encode(
        {
            "type": kind,
            "payload": payload,
            "timestamp": stamp,
            "source": "bench",
            "id": str(uuid.uuid4()),
        }
    )


async def _background(env: Env, coro: Any) -> None:
    task = asyncio.ensure_future(coro)

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    env.closers.append(stop)


async def _wait_subscribed(client: Redis, channel: str, count: int = 1) -> None:
    for _ in range(500):
        numsub = dict(await client.pubsub_numsub(channel))
        if numsub.get(channel.encode(), 0) >= count:
            return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"nobody subscribed to {channel} in time")


async def pubsub_cases(env: Env) -> list[Case]:
    publisher_client = env.raw_client()
    decode = msgspec.json.decode

    async def publish_batch(channel: str, encode: Callable[[int], bytes]) -> None:
        pipe = publisher_client.pipeline(transaction=False)
        for i in range(BATCH):
            pipe.publish(channel, encode(i))
        await pipe.execute()

    # raw redis-py PubSub: a reader loop decoding each message and calling
    # the handler inline.
    raw_arrivals = Arrivals()
    raw_lat = Latencies("raw")
    raw_sub_client = env.raw_client(counted=False)
    pubsub = raw_sub_client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("bench:raw", "bench:raw-lat")
    env.closers.append(pubsub.aclose)

    async def raw_reader() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is None or message["type"] != "message":
                continue
            event = decode(message["data"])
            if event["type"] == "bench.tick":
                raw_arrivals.arrived()
            else:
                raw_lat.record()
                raw_arrivals.arrived()

    await _background(env, raw_reader())

    # redkit Subscriber with its defaults (16 concurrent handlers, 30 s timeout).
    redkit_client = await env.redkit_client()
    rk_arrivals = Arrivals()
    rk_lat = Latencies("redkit")
    subscriber = Subscriber(redkit_client)

    @subscriber.on("bench.tick")
    async def tick(event: Event[Any]) -> None:
        rk_arrivals.arrived()

    @subscriber.on("bench.ping")
    async def ping(event: Event[Any]) -> None:
        rk_lat.record()
        rk_arrivals.arrived()

    await _background(env, subscriber.run("bench:redkit", "bench:redkit-lat"))
    if not await subscriber.wait_subscribed(10):
        raise RuntimeError("redkit subscriber did not subscribe")
    publisher = Publisher(redkit_client, source="bench")

    async def raw_batch() -> None:
        raw_arrivals.expect(BATCH)
        await publish_batch("bench:raw", lambda i: raw_envelope("bench.tick", PAYLOAD))
        await raw_arrivals.wait("raw PubSub")

    async def redkit_batch() -> None:
        rk_arrivals.expect(BATCH)
        await publish_batch(
            "bench:redkit",
            lambda i: encode_event(new_event("bench.tick", PAYLOAD, "bench")),
        )
        await rk_arrivals.wait("redkit Subscriber")

    async def raw_one() -> None:
        raw_arrivals.expect(1)
        raw_lat.sent_at = time.perf_counter()
        await publisher_client.publish("bench:raw-lat", raw_envelope("bench.ping", PAYLOAD))
        await raw_arrivals.wait("raw PubSub")

    async def redkit_one() -> None:
        rk_arrivals.expect(1)
        rk_lat.sent_at = time.perf_counter()
        await publisher.publish("bench:redkit-lat", "bench.ping", PAYLOAD)
        await rk_arrivals.wait("redkit Subscriber")

    cases = [
        Case(
            "events",
            f"raw PubSub: {BATCH} published -> handled",
            raw_batch,
            baseline=True,
            note=f"1 op = {BATCH} msgs (msgs/s = ops/s x {BATCH}); get_message loop, "
            "inline handler",
        ),
        Case(
            "events",
            f"redkit Subscriber: {BATCH} -> handled",
            redkit_batch,
            note="same pipelined publish; 16 handler workers (default max_concurrency)",
        ),
    ]
    cases.append(await broadcaster_case(env, publish_batch))
    cases += [
        Case(
            "events-lat",
            "raw publish -> PubSub handler, 1 msg",
            raw_one,
            baseline=True,
            note=raw_lat,
        ),  # type: ignore[arg-type]
        Case("events-lat", "redkit Publisher -> Subscriber, 1 msg", redkit_one, note=rk_lat),  # type: ignore[arg-type]
    ]
    return cases


async def broadcaster_case(env: Env, publish_batch: Any) -> Case:
    """broadcaster 0.3.1 on the same server. Its Redis listener can end
    before the first SUBSCRIBE lands and then never reads again; probe that
    first and say so instead of timing a wait for nothing."""
    from broadcaster import Broadcast

    broadcast = Broadcast(env.url)
    await broadcast.connect()
    env.closers.append(broadcast.disconnect)
    arrivals = Arrivals()
    ready = asyncio.Event()

    async def reader() -> None:
        async with broadcast.subscribe("bench:bc") as subscription:
            ready.set()
            async for _ in subscription:  # type: ignore[union-attr]
                arrivals.arrived()

    await _background(env, reader())
    await ready.wait()
    probe_client = env.raw_client(counted=False)
    await _wait_subscribed(probe_client, "bench:bc")
    arrivals.expect(1)
    await broadcast.publish("bench:bc", raw_envelope("bench.tick", PAYLOAD).decode())
    try:
        await asyncio.wait_for(arrivals.done.wait(), 2.0)
        delivers = True
    except asyncio.TimeoutError:
        delivers = False

    async def bc_batch() -> None:
        arrivals.expect(BATCH)
        await publish_batch("bench:bc", lambda i: raw_envelope("bench.tick", PAYLOAD))
        await arrivals.wait("broadcaster")

    async def bc_publish_only() -> None:
        await publish_batch("bench:bc", lambda i: raw_envelope("bench.tick", PAYLOAD))

    if delivers:
        return Case(
            "events",
            f"broadcaster 0.3.1: {BATCH} -> received",
            bc_batch,
            note="async for over its queue",
        )
    return Case(
        "events",
        "broadcaster 0.3.1: publish only",
        bc_publish_only,
        note="DELIVERS NOTHING with redis-py 8.1 (0 of 1 in 2 s); rate is publishing alone",
    )


async def stream_cases(env: Env) -> list[Case]:
    # raw redis-py: pipelined XADD, a consumer loop XREADGROUP -> decode ->
    # handler -> XACK per batch.
    raw = env.raw_client()
    raw_consumer_client = env.raw_client()
    await raw.delete("bench:raw-stream", "bench:rk-stream")
    await raw.xgroup_create("bench:raw-stream", "g", id="0", mkstream=True)
    raw_arrivals = Arrivals()
    decode = msgspec.json.decode

    async def raw_consumer() -> None:
        while True:
            reply = await raw_consumer_client.xreadgroup(
                "g", "c", {"bench:raw-stream": ">"}, count=BATCH, block=100
            )
            if not reply:
                continue
            entries = reply[0][1]
            ids = []
            for entry_id, fields in entries:
                decode(fields[b"event"])
                raw_arrivals.arrived()
                ids.append(entry_id)
            await raw_consumer_client.xack("bench:raw-stream", "g", *ids)

    await _background(env, raw_consumer())

    redkit_client = await env.redkit_client()
    consumer_client = await env.redkit_client()
    stream = StreamPublisher(redkit_client, maxlen=100_000, source="bench")
    rk_arrivals = Arrivals()
    consumer = StreamConsumer(
        consumer_client, "bench:rk-stream", group="g", consumer="c", batch_size=BATCH
    )

    @consumer.on("bench.tick")
    async def tick(event: Event[Any]) -> None:
        rk_arrivals.arrived()

    await consumer.ensure_group()
    await _background(env, consumer.run())

    async def raw_batch() -> None:
        raw_arrivals.expect(BATCH)
        pipe = raw.pipeline(transaction=False)
        for _ in range(BATCH):
            pipe.xadd(
                "bench:raw-stream",
                {"event": raw_envelope("bench.tick", PAYLOAD)},
                maxlen=100_000,
                approximate=True,
            )
        await pipe.execute()
        await raw_arrivals.wait("raw stream")

    async def redkit_batch() -> None:
        rk_arrivals.expect(BATCH)
        await stream.publish_many("bench:rk-stream", [("bench.tick", PAYLOAD)] * BATCH)
        await rk_arrivals.wait("redkit stream")

    return [
        Case(
            "events-stream",
            f"raw XADD/XREADGROUP/XACK: {BATCH} msgs",
            raw_batch,
            baseline=True,
            note=f"1 op = {BATCH} msgs; one consumer loop, inline handler, XACK per batch",
        ),
        Case(
            "events-stream",
            f"redkit StreamPublisher+Consumer: {BATCH}",
            redkit_batch,
            note="publish_many + StreamConsumer(batch_size=100), ack after handler",
        ),
    ]


async def cases(env: Env) -> list[Case]:
    return [*await pubsub_cases(env), *await stream_cases(env)]
