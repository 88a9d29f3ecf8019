"""A running Subscriber comes back on the new primary and reports every
stretch it missed as a gap; a StreamConsumer goes on and leaves no
replicated entry lost or pending; publishers raise during the move only."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from redis.asyncio import Redis

from redkit import (
    ConnectionUnavailable,
    Event,
    Gap,
    Publisher,
    StreamConsumer,
    StreamPublisher,
    Subscriber,
)

from ._recovery import BOUND, Workload, close_all, report, until, until_async
from .conftest import Rig

pytestmark = pytest.mark.failover

# An event published this close to a reported gap counts as inside it: the
# gap starts when the loss is noticed, a little after the link failed.
_GAP_MARGIN = 0.25
_CLAIM_IDLE = 2.0
_CLAIM_INTERVAL = 0.5


async def test_subscriber(rig: Rig) -> None:
    sub_client, pub_client = await rig.connect(), await rig.connect()
    gaps: list[Gap] = []
    received: dict[int, float] = {}
    subscriber = Subscriber(sub_client, on_reconnect=gaps.append)

    @subscriber.on("tick")
    async def tick(event: Event) -> None:
        received.setdefault(event.payload["n"], time.monotonic())

    publisher = Publisher(pub_client, source="failover")

    async def publish(n: int) -> tuple[int, float]:
        await publisher.publish("fo-events", "tick", {"n": n})
        return n, time.time()

    try:
        async with subscriber.running("fo-events"), Workload(publish) as sent:
            tag = rig.pubsub_key()  # the node the subscriber is on
            await until(lambda: len(received) >= 5, "events before the move")
            promotion = await rig.trigger(tag)
            await sent.served(promotion, lambda c: c.ok and c.value[0] in received)
            await until(
                lambda: (
                    sum(c.ok and c.value[0] in received for c in sent.after(promotion.promoted))
                    >= 20
                ),
                "events after the move",
            )
        first = min(
            received[c.value[0]]
            for c in sent.after(promotion.promoted)
            if c.ok and c.value[0] in received
        )
        missed = [c.value for c in sent.calls if c.ok and c.value[0] not in received]
        unreported = [
            (n, at)
            for n, at in missed
            if not any(
                g.started.timestamp() - _GAP_MARGIN <= at <= g.ended.timestamp() + _GAP_MARGIN
                for g in gaps
            )
        ]
        recovery = report(
            "subscriber",
            promotion,
            first,
            missed=len(missed),
            outside_gaps=len(unreported),
            gaps=",".join(f"{g.seconds:.2f}s" for g in gaps) or "none",
        )
        assert all(isinstance(e, ConnectionUnavailable) for e in sent.errors()), sent.errors()
        assert unreported == [], "events were lost outside every reported gap"
        assert recovery <= BOUND
    finally:
        await close_all(sub_client, pub_client)


async def test_stream_consumer(rig: Rig) -> None:
    client, pub_client = await rig.connect(), await rig.connect()
    (stream,) = rig.keys_near("fo-stream", "fo-stream")
    handled: dict[str, float] = {}
    consumer = StreamConsumer(
        client,
        stream,
        group="workers",
        consumer="w1",
        claim_idle=_CLAIM_IDLE,
        claim_interval=_CLAIM_INTERVAL,
    )

    @consumer.on("job")
    async def job(event: Event) -> None:
        handled.setdefault(event.id, time.monotonic())

    publisher = StreamPublisher(pub_client, maxlen=None, source="failover")

    async def publish(n: int) -> str:
        return await publisher.publish(stream, "job", {"n": n})

    try:
        before = [await publisher.publish(stream, "job", {"n": -n}) for n in range(1, 21)]
        await rig.replicated(pub_client, stream)
        async with consumer.running():
            await until(lambda: set(before) <= handled.keys(), "entries before the move")
            async with Workload(publish) as sent:
                promotion = await rig.trigger(stream)
                await sent.served(promotion, lambda c: c.ok and c.value in handled)
            first = min(
                handled[c.value] for c in sent.after(promotion.promoted) if c.value in handled
            )
            assert rig.new is not None
            async with rig.direct(rig.new) as direct:
                settled = await until_async(
                    lambda: _settled(direct, stream, handled), "every entry handled, none pending"
                )
            settled_at = time.monotonic()
        recovery = report(
            "stream",
            promotion,
            first,
            settled_after=f"{settled_at - promotion.promoted:.3f}s",
            entries=len(settled),
            publish_errors=len(sent.errors()),
        )
        assert set(before) <= settled, "a replicated entry was lost"
        after = {c.value for c in sent.after(promotion.promoted) if c.ok}
        assert after <= settled, "an entry acknowledged after the promotion was lost"
        assert all(isinstance(e, ConnectionUnavailable) for e in sent.errors()), sent.errors()
        assert settled_at - promotion.promoted <= _CLAIM_IDLE + 2 * _CLAIM_INTERVAL + BOUND
        assert recovery <= BOUND
    finally:
        await close_all(client, pub_client)


async def _settled(direct: Redis, stream: str, handled: dict[str, float]) -> set[str] | None:
    """The ids of the events in the stream on the new primary, once every
    one was handled and none is pending; None before."""
    ids = {json.loads(fields[b"event"])["id"] for _, fields in await direct.xrange(stream)}
    pending = (await direct.xpending(stream, "workers"))["pending"]
    await asyncio.sleep(0)
    return ids if ids <= handled.keys() and pending == 0 else None
