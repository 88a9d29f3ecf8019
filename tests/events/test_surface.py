"""The public surface of redkit.events and clients configured differently."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

import redkit.events
from redkit.events import Publisher, StreamConsumer, StreamPublisher, Subscriber
from redkit.server import EmbeddedRedis

from .helpers import eventually


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name in dir(redkit.events)
        if not name.startswith("_")
        and getattr(getattr(redkit.events, name), "__module__", "").startswith("redkit.events")
    }
    assert set(redkit.events.__all__) == public
    for name in redkit.events.__all__:
        assert getattr(redkit.events, name).__doc__, f"{name} has no docstring"


async def test_clients_that_decode_responses_work_too(redis_server: EmbeddedRedis) -> None:
    client = Redis(host=redis_server.host, port=redis_server.port, decode_responses=True)
    try:
        await client.flushall()
        pub = Publisher(client, source="api")
        sub = Subscriber(client)
        seen: list[Any] = []
        sub.on("e", lambda e: seen.append(("pubsub", e.payload)))
        stream = StreamPublisher(client)
        consumer = StreamConsumer(client, "orders", group="g", consumer="c", claim_idle=2.0)
        consumer.on("e", lambda e: seen.append(("stream", e.payload, e.id)))
        async with sub.running("users"), consumer.running():
            assert await pub.publish("users", "e", 1) == 1
            event_id = await stream.publish("orders", "e", 2)
            await eventually(lambda: len(seen) == 2)
        assert sorted(seen, key=str) == [("pubsub", 1), ("stream", 2, event_id)]
        assert (await client.xpending("orders", "g"))["pending"] == 0
    finally:
        await client.aclose()
