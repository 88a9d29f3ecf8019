"""Hostile input on real servers (standalone and cluster): whatever anyone
writes on a channel or into a stream, the subscriber and the consumer group
carry on; the publishers refuse what JSON cannot carry faithfully and say
which kind of failure Redis had."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import strategies as st
from redis.asyncio import Redis, RedisCluster

from redkit.connection import Client, connect
from redkit.errors import (
    ConfigError,
    ConnectionUnavailable,
    RedisReplyError,
    SerializationError,
)
from redkit.events import (
    Event,
    Publisher,
    StreamConsumer,
    StreamPublisher,
    Subscriber,
    dead_letter_stream_for,
)
from redkit.server import EmbeddedCluster, EmbeddedRedis, server_version
from redkit.testing import settings_for

from .helpers import eventually
from .hostile import BAD_STRINGS, SHARP_DEPTH, decodes, envelopes, examples, nested
from .test_pubsub import publish_count

# Far past the recursion limit of any interpreter (the 1,000 levels
# already end run() at Python's default limit of 1,000).
DEEP = 1_000_000
SHARDED = [False, True] if server_version() >= (7, 0, 0) else [False]


def nested_envelope(depth: int = DEEP) -> bytes:
    return (
        b'{"type":"t","payload":'
        + b"[" * depth
        + b"]" * depth
        + b',"timestamp":"2026-11-26T11:04:05Z","source":"anyone"}'
    )


async def raw_publish(client: Client, channel: str, data: bytes, *, sharded: bool) -> None:
    """What a foreign publisher sends, the bytes as they are."""
    if not sharded:
        await client.publish(channel, data)
    elif isinstance(client, RedisCluster):
        await client.spublish(channel, data)
    else:
        await client.execute_command("SPUBLISH", channel, data)


async def stopped(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- pub/sub ----------------------------------------------------------------


@pytest.mark.parametrize("sharded", SHARDED, ids=lambda s: "sharded" if s else "classic")
async def test_a_deeply_nested_message_is_skipped_and_the_subscriber_goes_on(
    client: Client, sharded: bool, caplog: pytest.LogCaptureFixture
) -> None:
    sub = Subscriber(client, sharded=sharded)
    seen: list[Any] = []
    sub.on("t", lambda event: seen.append(event.payload))
    task = asyncio.ensure_future(sub.run("users"))
    try:
        assert await sub.wait_subscribed(10)
        await raw_publish(client, "users", nested_envelope(), sharded=sharded)
        await Publisher(client, source="api", sharded=sharded).publish("users", "t", "good")
        await eventually(lambda: seen == ["good"], what="the good event after the hostile one")
        stats = sub.stats()
        assert stats.malformed == 1
        assert stats.received == 2
        assert not task.done(), "run() ended"
        assert sub.subscribed
        assert "nested too deeply" in caplog.text
    finally:
        await stopped(task)


@dataclasses.dataclass
class Picky:
    """A payload type whose own validation raises something msgspec does not
    turn into a validation error."""

    id: int

    def __post_init__(self) -> None:
        if self.id < 0:
            raise LookupError(f"no order {self.id}")


async def test_any_failure_building_a_typed_payload_is_a_malformed_message(
    client: Client,
) -> None:
    sub = Subscriber(client)
    typed: list[int] = []
    sub.on("t", lambda event: typed.append(event.payload.id), payload_type=Picky)
    async with sub.running("users"):
        await Publisher(client).publish("users", "t", {"id": -1})
        await Publisher(client).publish("users", "t", {"id": 1})
        await eventually(lambda: typed == [1])
        await eventually(lambda: sub.stats().malformed == 1)
    assert sub.stats().handler_errors == 0


async def test_any_failure_building_a_typed_payload_dead_letters_the_entry_at_once(
    client: Client,
) -> None:
    stream = StreamPublisher(client)
    bad_id = await stream.publish("orders", "t", {"id": -1})
    await stream.publish("orders", "t", {"id": 1})
    typed: list[int] = []
    consumer = consumer_for(client, claim_idle=0.5, handler_timeout=0.2)
    consumer.on("t", lambda event: typed.append(event.payload.id), payload_type=Picky)
    async with consumer.running():
        await eventually(lambda: typed == [1] and consumer.stats().dead_lettered == 1)
        await no_pending(client)
    stats = consumer.stats()
    assert stats.malformed == 1
    assert stats.handler_errors == 0
    assert stats.claimed == 0  # not retried: no delivery can build it
    ((_, fields),) = await client.xrange(consumer.dead_letter_stream)
    assert fields[b"error"].startswith(b"payload is not a Picky")
    assert b"LookupError" in fields[b"error"]
    assert fields[b"event"].find(bad_id.encode()) != -1


class BuggySubscriber(Subscriber):
    """A subscriber whose loop has a bug (standing in for any future one)."""

    def _prepare(self, channel: bytes, data: bytes) -> Any:
        if data == b"trigger the bug":
            raise RuntimeError("a bug in the loop")
        return super()._prepare(channel, data)


async def test_when_run_fails_the_running_block_is_cancelled_and_told(redis_client: Redis) -> None:
    sub = BuggySubscriber(redis_client)
    await assert_block_interrupted(
        sub.running("users"), lambda: redis_client.publish("users", "trigger the bug")
    )


async def assert_block_interrupted(
    running: contextlib.AbstractAsyncContextManager[Any], trigger: Callable[[], Awaitable[Any]]
) -> None:
    """``trigger()`` inside ``running`` makes run() fail: the block is
    cancelled where it waits, and run()'s exception comes out of it."""

    async def block() -> None:
        async with running:
            await trigger()
            try:
                await asyncio.wait_for(asyncio.Event().wait(), 10)
            except asyncio.TimeoutError:
                raise AssertionError("the block carried on after run() had ended") from None

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="a bug in the loop"):
        await block()
    assert time.monotonic() - started < 5
    assert_not_left_cancelled()


def assert_not_left_cancelled() -> None:
    """The cancellation that interrupted the block was withdrawn."""
    task = asyncio.current_task()
    if sys.version_info >= (3, 11) and task is not None:
        assert task.cancelling() == 0


# -- streams ----------------------------------------------------------------


def consumer_for(client: Client, name: str = "c1", **kwargs: Any) -> StreamConsumer:
    kwargs.setdefault("group", "billing")
    kwargs.setdefault("claim_idle", 2.0)
    kwargs.setdefault("max_deliveries", 5)
    return StreamConsumer(client, "orders", consumer=name, **kwargs)


async def no_pending(client: Client) -> None:
    deadline = time.monotonic() + 10
    while int((await client.xpending("orders", "billing"))["pending"]) != 0:
        assert time.monotonic() < deadline, "entries still pending"
        await asyncio.sleep(0.05)


async def hostile_between_good_ones(client: Client) -> bytes:
    stream = StreamPublisher(client, source="shop")
    await stream.publish("orders", "order.paid", {"id": 1})
    bad_id: bytes = await client.xadd("orders", {"event": nested_envelope()})
    await stream.publish("orders", "order.paid", {"id": 2})
    return bad_id


async def assert_dead_lettered_once(
    client: Client, consumer: StreamConsumer, bad_id: Any, deliveries: int = 1
) -> None:
    dead = await client.xrange(consumer.dead_letter_stream)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"entry_id"] == bad_id
    assert fields[b"event"] == nested_envelope()
    assert fields[b"error"].startswith(b"malformed")
    assert b"nested too deeply" in fields[b"error"]
    # At once, not after max_deliveries (5) attempts.
    assert fields[b"deliveries"] == str(deliveries).encode()
    assert consumer.stats().malformed == 1
    assert consumer.stats().dead_lettered == 1


async def test_a_deeply_nested_entry_is_dead_lettered_and_the_group_goes_on(
    client: Client,
) -> None:
    bad_id = await hostile_between_good_ones(client)
    seen: list[int] = []
    consumer = consumer_for(client)
    consumer.on("order.paid", lambda event: seen.append(event.payload["id"]))
    async with consumer.running():
        await eventually(lambda: sorted(seen) == [1, 2] and consumer.stats().dead_lettered == 1)
        await no_pending(client)
    await assert_dead_lettered_once(client, consumer, bad_id)


@pytest.mark.parametrize("left_by", ["itself", "a dead consumer"])
async def test_a_deeply_nested_entry_already_pending_is_dead_lettered(
    client: Client, left_by: str
) -> None:
    # The entry was read by a consumer that died on it: the same name
    # restarting replays it, another consumer claims it.
    bad_id = await hostile_between_good_ones(client)
    name = "c1" if left_by == "itself" else "alive"
    consumer = consumer_for(client, name, claim_idle=0.5, handler_timeout=0.2)
    await consumer.ensure_group()
    await client.xreadgroup("billing", "c1" if left_by == "itself" else "dead", {"orders": ">"})
    seen: list[int] = []
    consumer.on("order.paid", lambda event: seen.append(event.payload["id"]))
    async with consumer.running():
        await eventually(lambda: sorted(seen) == [1, 2] and consumer.stats().dead_lettered == 1)
        await no_pending(client)
    # Read once before, once now.
    await assert_dead_lettered_once(client, consumer, bad_id, deliveries=2)
    if left_by == "a dead consumer":
        assert consumer.stats().claimed == 3


def decoding_client(server: EmbeddedRedis | EmbeddedCluster) -> Client:
    if isinstance(server, EmbeddedCluster):
        return RedisCluster(host=server.host, port=server.port, decode_responses=True)
    return Redis(host=server.host, port=server.port, decode_responses=True)


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
async def test_an_entry_that_is_not_utf8_on_a_client_that_decodes_responses(
    request: pytest.FixtureRequest, topology: str
) -> None:
    # redis-py decodes replies while parsing them: one such entry failed the
    # whole read, every time, before the consumer could see which it was.
    server = request.getfixturevalue(
        "redis_server" if topology == "standalone" else "redis_cluster"
    )
    admin = await connect(settings_for(server))
    client = decoding_client(server)
    try:
        if isinstance(admin, RedisCluster):
            await admin.flushall(target_nodes=RedisCluster.PRIMARIES)
        else:
            await admin.flushall()
        await StreamPublisher(admin).publish("orders", "order.paid", {"id": 1})
        bad_id = await admin.xadd("orders", {"event": b"\xff\xfe not text"})
        foreign_id = await admin.xadd("orders", {b"\xc3": b"\xff"})
        await StreamPublisher(client).publish("orders", "order.paid", {"id": 2})
        seen: list[int] = []
        consumer = consumer_for(client)
        consumer.on("order.paid", lambda event: seen.append(event.payload["id"]))
        async with consumer.running():
            await eventually(lambda: seen == [1, 2] and consumer.stats().dead_lettered == 2)
            await no_pending(admin)
        dead = {
            fields[b"entry_id"]: fields
            for _, fields in await admin.xrange(consumer.dead_letter_stream)
        }
        assert dead[bad_id][b"event"] == b"\xff\xfe not text"
        assert dead[bad_id][b"error"].startswith(b"malformed")
        assert foreign_id in dead
        assert consumer.stats().malformed == 2
    finally:
        await client.aclose()
        await admin.aclose()


class BuggyConsumer(StreamConsumer):
    """A consumer whose loop has a bug (standing in for any future one)."""

    async def _process(self, entries: list[tuple[Any, Any]], deliveries: Any) -> None:
        if any(fields.get(b"event") == b"trigger the bug" for _, fields in entries):
            raise RuntimeError("a bug in the loop")
        await super()._process(entries, deliveries)


async def test_when_the_consumer_fails_the_running_block_is_cancelled_and_told(
    redis_client: Redis,
) -> None:
    consumer = BuggyConsumer(redis_client, "orders", group="g", consumer="c", claim_idle=2.0)
    await assert_block_interrupted(
        consumer.running(), lambda: redis_client.xadd("orders", {"event": "trigger the bug"})
    )


# -- a batch of hostile messages --------------------------------------------

# Types the test registers, or that never decode: every message that decodes
# reaches a handler, so "malformed" counts exactly the ones that do not.
BATCH_TYPES = st.one_of(
    st.sampled_from([b'"t"', b'"t"', b'"t"', b'""', b"7", b"null"]), BAD_STRINGS
)
NESTED_PAST_THE_LIMIT = nested(st.just(20_000)).map(
    lambda payload: (
        b'{"type":"t","payload":' + payload + b',"timestamp":"2026-11-26T11:04:05Z","source":"x"}'
    )
)


def hostile_batch() -> list[bytes]:
    """50 messages: envelopes of every shape, some nested past the recursion
    limit, some plain bytes."""
    batch: list[bytes] = []
    for strategy, count in [
        (envelopes(SHARP_DEPTH, types=BATCH_TYPES), 36),
        (NESTED_PAST_THE_LIMIT, 4),
        (st.binary(max_size=64), 10),
    ]:
        drawn = list(dict.fromkeys(examples(strategy, count * 3)))
        batch += drawn[:: max(1, len(drawn) // count)][:count]
    return batch


async def test_a_batch_of_hostile_messages_stops_neither_loop(client: Client) -> None:
    batch = hostile_batch()
    bad = sum(decodes(data) is None for data in batch)
    assert len(batch) >= 40
    assert len(batch) - bad >= 5, "the batch should hold some good events too"
    assert any(len(data) > 40_000 for data in batch), "and some nested past the limit"
    sub = Subscriber(client)
    consumer = consumer_for(client)
    pubsub_seen: list[str] = []
    stream_seen: list[str] = []
    sub.on("t", lambda event: None)
    sub.on("sentinel", lambda event: pubsub_seen.append(event.payload))
    consumer.on("t", lambda event: None)
    consumer.on("sentinel", lambda event: stream_seen.append(event.payload))
    sub_task = asyncio.ensure_future(sub.run("users"))
    consumer_task = asyncio.ensure_future(consumer.run())
    try:
        assert await sub.wait_subscribed(10)
        for data in batch:
            await client.publish("users", data)
            await client.xadd("orders", {"event": data})
        await Publisher(client).publish("users", "sentinel", "end")
        await StreamPublisher(client).publish("orders", "sentinel", "end")
        await eventually(lambda: pubsub_seen == ["end"] and stream_seen == ["end"])
        await eventually(lambda: sub.stats().received == len(batch) + 1)
        await eventually(lambda: sub.stats().handled == len(batch) - bad + 1)
        await eventually(lambda: consumer.stats().handled == len(batch) - bad + 1)
        await eventually(lambda: consumer.stats().dead_lettered == bad)
        await no_pending(client)
        assert sub.stats().malformed == bad
        assert consumer.stats().malformed == bad
        assert consumer.stats().dead_lettered == bad
        assert await client.xlen(consumer.dead_letter_stream) == bad
        assert not sub_task.done() and not consumer_task.done()
    finally:
        await stopped(sub_task)
        await stopped(consumer_task)


# -- publishers ---------------------------------------------------------------


def deep_list(depth: int = 100_000) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


UNFAITHFUL = {
    "nan": math.nan,
    "infinity": math.inf,
    "-infinity": -math.inf,
    "nan-inside": {"price": [1.0, math.nan]},
    "deep": deep_list(),
}


@pytest.mark.parametrize("value", list(UNFAITHFUL.values()), ids=list(UNFAITHFUL))
async def test_publisher_refuses_what_json_cannot_carry_and_sends_nothing(
    client: Client, value: Any
) -> None:
    pub = Publisher(client, source="api")
    before = await publish_count(client)
    with pytest.raises(SerializationError):
        await pub.publish("users", "t", value)
    assert await publish_count(client) == before
    assert pub.stats().serialization_errors == 1


@pytest.mark.parametrize("value", list(UNFAITHFUL.values()), ids=list(UNFAITHFUL))
async def test_stream_publisher_refuses_what_json_cannot_carry_and_writes_nothing(
    client: Client, value: Any
) -> None:
    stream = StreamPublisher(client)
    await stream.publish("orders", "t", 1)
    with pytest.raises(SerializationError):
        await stream.publish("orders", "t", value)
    with pytest.raises(SerializationError):
        await stream.publish_many("orders", [("t", 2), ("t", value), ("t", 3)])
    assert await client.xlen("orders") == 1


async def test_stream_publisher_tells_an_error_answer_from_an_unreachable_redis(
    client: Client,
) -> None:
    await client.set("orders", "not a stream")
    stream = StreamPublisher(client)
    for attempt in (stream.publish("orders", "t", 1), stream.publish_many("orders", [("t", 1)])):
        with pytest.raises(RedisReplyError, match="WRONGTYPE"):
            await attempt
    assert await client.get("orders") == b"not a stream"
    assert stream.stats().errors == 2


async def test_publishers_report_an_out_of_memory_server_as_unavailable(
    fresh_server: EmbeddedRedis,
) -> None:
    client = await connect(settings_for(fresh_server))
    try:
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", "1")
        with pytest.raises(ConnectionUnavailable, match="maxmemory"):
            await StreamPublisher(client).publish("orders", "t", 1)
    finally:
        await client.config_set("maxmemory", "0")
        await client.aclose()


async def test_publisher_tells_an_error_answer_from_an_unreachable_redis(
    fresh_server: EmbeddedRedis,
) -> None:
    admin = await connect(settings_for(fresh_server))
    # A user that may not publish anywhere: PUBLISH is answered with NOPERM.
    await admin.execute_command("ACL", "SETUSER", "muted", "on", "nopass", "~*", "+@all")
    await admin.execute_command("ACL", "SETUSER", "muted", "resetchannels")
    muted = await connect(settings_for(fresh_server, username="muted", password="any"))
    try:
        pub = Publisher(muted, source="api")
        with pytest.raises(RedisReplyError, match="permission"):
            await pub.publish("users", "t", 1)
        assert pub.stats().errors == 1
    finally:
        await muted.aclose()
        await admin.aclose()


# -- bad arguments ------------------------------------------------------------


async def test_every_bad_argument_is_a_config_error(client: Client) -> None:
    pub = Publisher(client)
    stream = StreamPublisher(client)
    calls: list[Any] = [
        pub.publish("", "t"),
        pub.publish(7, "t"),  # type: ignore[arg-type]
        pub.publish("a\ud800", "t"),
        pub.publish("c", ""),
        pub.publish("c", "t\udfff"),
        pub.publish("c", None),  # type: ignore[arg-type]
        pub.publish("c", "t", id=7),  # type: ignore[arg-type]
        pub.publish("c", "t", id=""),
        pub.publish("c", "t", timestamp=_naive()),
        pub.publish("c", "t", timestamp="now"),  # type: ignore[arg-type]
        stream.publish("orders", "", 1),
        stream.publish("orders", "t", 1, id=7),  # type: ignore[arg-type]
        stream.publish("orders", "t", 1, timestamp=_naive()),
        stream.publish_many("orders", [("t", 1, "extra")]),  # type: ignore[list-item]
        stream.publish_many("orders", ["t"]),  # type: ignore[list-item]
        Subscriber(client).run(),
        Subscriber(client).run("c", patterns=[""]),
        Subscriber(client).wait_subscribed("soon"),  # type: ignore[arg-type]
        stream.publish("a{b", "t", 1),  # braces only as one {tag}
        stream.publish("a}{b}", "t", 1),
    ]
    for call in calls:
        with pytest.raises(ConfigError):
            await call
    constructors: list[Any] = [
        lambda: Publisher(client, source=7),
        lambda: Publisher(client, source="\ud800"),
        lambda: Publisher(client, timeout=math.inf),
        lambda: Publisher(client, timeout=-1),
        lambda: Publisher(client, timeout="1"),
        lambda: StreamPublisher(client, source=None),
        lambda: Subscriber(client, handler_timeout=1e300),  # past any Redis expiry
        lambda: Subscriber(client, ping_interval=math.nan),
        lambda: Subscriber(client).on("t", "not callable"),
        lambda: Subscriber(client).on("", print),
        lambda: Subscriber(client).on("t", print, payload_type=7),
        lambda: StreamConsumer(client, "s", group="g", consumer="c", claim_idle=math.inf),
        lambda: consumer_for(client).on("t", print, payload_type="not a type"),
        lambda: StreamConsumer(client, "{}x", group="g", consumer="c"),
        lambda: dead_letter_stream_for(7),
    ]
    for make in constructors:
        with pytest.raises(ConfigError):
            make()
    with pytest.raises(ConfigError, match="ready_timeout"):
        async with Subscriber(client).running("c", ready_timeout=-1):
            pass
    with pytest.raises(ConfigError, match="ready_timeout"):
        async with consumer_for(client).running(ready_timeout=math.nan):
            pass
    assert await client.exists("orders") == 0


def _naive() -> Any:
    from datetime import datetime

    return datetime(2026, 1, 2, 3, 4, 5)


async def test_seconds_take_a_timedelta_like_everywhere_else(redis_client: Redis) -> None:
    from datetime import timedelta

    sub = Subscriber(redis_client, handler_timeout=timedelta(seconds=2))
    assert sub.handler_timeout == 2.0
    seen: list[Event[Any]] = []
    sub.on("t", seen.append)
    async with sub.running("c", ready_timeout=timedelta(seconds=5)):
        await Publisher(redis_client, timeout=timedelta(seconds=1)).publish("c", "t", 1)
        await eventually(lambda: len(seen) == 1)


@dataclasses.dataclass
class Garbled:
    """A payload type whose validation error cannot be written as UTF-8."""

    id: int

    def __post_init__(self) -> None:
        raise LookupError(f"no order {self.id} \udcff")


async def test_a_dead_letter_reason_that_is_not_utf8_is_written_anyway(client: Client) -> None:
    await StreamPublisher(client).publish("orders", "t", {"id": 7})
    consumer = consumer_for(client)
    consumer.on("t", lambda event: None, payload_type=Garbled)
    async with consumer.running():
        await eventually(lambda: consumer.stats().dead_lettered == 1)
    ((_, fields),) = await client.xrange(consumer.dead_letter_stream)
    assert b"no order 7" in fields[b"error"]
