"""Pub/sub works whichever parser redis-py uses: hiredis is an optional
extra, and without it redis-py parses RESP2 in Python."""

from __future__ import annotations

from redis._parsers import _AsyncRESP2Parser
from redis.asyncio import ConnectionPool, Redis

from redkit.events import Event, Publisher, Subscriber
from redkit.server import EmbeddedRedis

from .helpers import eventually


async def test_subscriber_on_a_client_with_the_pure_python_parser(
    redis_server: EmbeddedRedis,
) -> None:
    pool = ConnectionPool(
        host=redis_server.host, port=redis_server.port, parser_class=_AsyncRESP2Parser
    )
    client = Redis(connection_pool=pool)
    seen: list[Event] = []
    subscriber = Subscriber(client)
    subscriber.on("ping", seen.append)
    try:
        async with subscriber.running("parsers", ready_timeout=5):
            assert await Publisher(client, source="t").publish("parsers", "ping", {"n": 1}) == 1
            await eventually(lambda: seen, what="the event arrives")
        assert seen[0].payload == {"n": 1}
        assert subscriber.stats().connect_failures == 0
    finally:
        await client.aclose()
