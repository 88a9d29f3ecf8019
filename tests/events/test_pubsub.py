"""Publisher and Subscriber on real servers (standalone and cluster)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster

from redkit.connection import Client, connect
from redkit.errors import ConfigError, ConnectionUnavailable, SerializationError
from redkit.events import Event, Publisher, Subscriber
from redkit.server import EmbeddedRedis, server_version
from redkit.testing import settings_for

from .helpers import eventually


@dataclasses.dataclass
class UserDeleted:
    id: str
    reason: str


async def publish_count(client: Client) -> int:
    if isinstance(client, RedisCluster):
        infos = await client.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        return sum(int(info.get("cmdstat_publish", {}).get("calls", 0)) for info in infos.values())
    info = await client.info("commandstats")
    return int(info.get("cmdstat_publish", {}).get("calls", 0))


async def test_publish_reaches_handlers_with_the_envelope(client: Client) -> None:
    pub = Publisher(client, source="api")
    sub = Subscriber(client)
    seen: list[Event[Any]] = []

    @sub.on("user.created")
    async def created(event: Event[Any]) -> None:
        seen.append(event)

    async with sub.running("users"):
        receivers = await pub.publish("users", "user.created", {"id": "42"})
        await eventually(lambda: len(seen) == 1)
    if isinstance(client, Redis):
        assert receivers == 1
    event = seen[0]
    assert event.type == "user.created"
    assert event.payload == {"id": "42"}
    assert event.source == "api"
    assert event.channel == "users"
    assert event.timestamp.tzinfo is not None
    assert len(event.id) == 36
    assert pub.stats().published == 1
    assert sub.stats().handled == 1


async def test_patterns_typed_payloads_and_several_handlers(client: Client) -> None:
    pub = Publisher(client, source="api")
    sub = Subscriber(client)
    typed: list[UserDeleted] = []
    raw: list[Any] = []

    async def typed_handler(event: Event[UserDeleted]) -> None:
        typed.append(event.payload)

    sub.on("user.deleted", typed_handler, payload_type=UserDeleted)
    sub.on("user.deleted", lambda event: raw.append((event.channel, event.payload)))
    async with sub.running("users", patterns=["audit.*"]):
        await pub.publish("audit.users", "user.deleted", {"id": "7", "reason": "gdpr"})
        await pub.publish("users", "user.deleted", {"id": "8", "reason": "spam"})
        await eventually(lambda: len(typed) == 2 and len(raw) == 2)
    assert sorted(u.id for u in typed) == ["7", "8"]
    assert all(isinstance(u, UserDeleted) for u in typed)
    assert sorted(raw) == [
        ("audit.users", {"id": "7", "reason": "gdpr"}),
        ("users", {"id": "8", "reason": "spam"}),
    ]


async def test_sync_handlers_run_off_the_event_loop(redis_client: Redis) -> None:
    pub = Publisher(redis_client)
    sub = Subscriber(redis_client)
    loop_thread = threading.get_ident()
    threads: list[int] = []

    @sub.on("tick")
    def tick(event: Event[Any]) -> None:
        time.sleep(0.05)  # blocking work must not stall the loop
        threads.append(threading.get_ident())

    async with sub.running("clock"):
        for _ in range(3):
            await pub.publish("clock", "tick", None)
        await eventually(lambda: len(threads) == 3)
    assert loop_thread not in threads


async def test_bad_input_is_counted_and_skipped(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    pub = Publisher(client, source="api")
    sub = Subscriber(client)
    seen: list[Any] = []
    sub.on("user.created", lambda e: seen.append(e.payload))
    sub.on("user.deleted", lambda e: seen.append(e.payload), payload_type=UserDeleted)
    caplog.set_level(logging.WARNING, "redkit.events")
    async with sub.running("users"):
        await client.publish("users", "hello")  # a foreign publisher
        await client.publish("users", b"\xff\xfe")
        await client.publish("users", '{"type":"user.created"}')  # fields missing
        await pub.publish("users", "user.deleted", {"id": 1})  # payload of the wrong shape
        await pub.publish("users", "order.paid", {"id": 1})  # no handler
        await pub.publish("users", "user.created", {"id": "ok"})
        await eventually(lambda: seen == [{"id": "ok"}])
        await eventually(lambda: sub.stats().malformed == 4)
    stats = sub.stats()
    assert stats.received == 6
    assert stats.unhandled == 1
    assert stats.handled == 1
    assert stats.handler_errors == 0
    assert "channel 'users'" in caplog.text
    assert "hello" in caplog.text


async def test_handler_errors_and_timeouts_never_stop_the_subscriber(
    redis_client: Redis,
) -> None:
    pub = Publisher(redis_client)
    sub = Subscriber(redis_client, handler_timeout=0.2)
    done: list[int] = []

    @sub.on("boom")
    async def boom(event: Event[Any]) -> None:
        raise RuntimeError("handler bug")

    @sub.on("slow")
    async def slow(event: Event[Any]) -> None:
        await asyncio.sleep(30)

    @sub.on("ok")
    async def ok(event: Event[Any]) -> None:
        done.append(event.payload)

    async with sub.running("jobs"):
        await pub.publish("jobs", "boom")
        await pub.publish("jobs", "slow")
        await pub.publish("jobs", "ok", 1)
        await eventually(lambda: sub.stats().handler_timeouts == 1, timeout=5)
        await pub.publish("jobs", "ok", 2)
        await eventually(lambda: done == [1, 2])
    stats = sub.stats()
    assert stats.handler_errors == 1
    assert stats.handler_timeouts == 1
    assert stats.handled == 2


async def test_concurrency_is_bounded_and_reading_stops_when_full(redis_client: Redis) -> None:
    pub = Publisher(redis_client)
    sub = Subscriber(redis_client, max_concurrency=4)
    gate = asyncio.Event()
    running = 0
    peak = 0
    finished = 0

    @sub.on("work")
    async def work(event: Event[Any]) -> None:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1
        finished += 1

    async with sub.running("q"):
        for i in range(20):
            await pub.publish("q", "work", i)
        await eventually(lambda: sub.stats().in_flight == 4)
        # Give an unbounded reader time to show itself: it would read all 20.
        await asyncio.sleep(0.3)
        assert sub.stats().received == 5  # 4 running + 1 waiting for a slot
        assert running == 4
        gate.set()
        await eventually(lambda: finished == 20)
    assert peak == 4


async def test_cancellation_drains_running_handlers(redis_client: Redis) -> None:
    pub = Publisher(redis_client)
    sub = Subscriber(redis_client, drain_timeout=5.0)
    started = 0
    finished = 0

    @sub.on("job")
    async def job(event: Event[Any]) -> None:
        nonlocal started, finished
        started += 1
        await asyncio.sleep(0.3)
        finished += 1

    task = asyncio.ensure_future(sub.run("jobs"))
    assert await sub.wait_subscribed(5)
    for i in range(5):
        await pub.publish("jobs", "job", i)
    await eventually(lambda: started == 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == 5
    assert sub.stats().in_flight == 0


async def test_cancellation_gives_up_on_stuck_handlers_after_grace(redis_client: Redis) -> None:
    pub = Publisher(redis_client)
    sub = Subscriber(redis_client, drain_timeout=0.2, handler_timeout=60)
    cancelled = asyncio.Event()

    @sub.on("stuck")
    async def stuck(event: Event[Any]) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.ensure_future(sub.run("jobs"))
    assert await sub.wait_subscribed(5)
    await pub.publish("jobs", "stuck")
    await eventually(lambda: sub.stats().in_flight == 1)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 3.0
    assert cancelled.is_set()


async def test_stop_returns_normally(redis_client: Redis) -> None:
    sub = Subscriber(redis_client)
    task = asyncio.ensure_future(sub.run("x"))
    assert await sub.wait_subscribed(5)
    sub.stop()
    await asyncio.wait_for(task, 5)
    assert task.result() is None
    assert not sub.subscribed


async def test_publish_unencodable_payload_sends_nothing(client: Client) -> None:
    pub = Publisher(client, source="api")
    before = await publish_count(client)
    with pytest.raises(SerializationError, match="type object"):
        await pub.publish("users", "user.created", {"x": object()})
    assert await publish_count(client) == before
    assert pub.stats().serialization_errors == 1


async def test_publish_with_redis_down_raises_connection_unavailable(
    fresh_server: EmbeddedRedis,
) -> None:
    client = await connect(settings_for(fresh_server, read_timeout=1.0, write_timeout=1.0))
    try:
        pub = Publisher(client, source="api")
        assert await pub.publish("users", "x") == 0
        fresh_server.stop()
        started = time.monotonic()
        with pytest.raises(ConnectionUnavailable, match="users"):
            await pub.publish("users", "x", {"id": 1})
        assert time.monotonic() - started < 5
    finally:
        await client.aclose()


async def test_publish_to_a_paused_server_times_out(fresh_server: EmbeddedRedis) -> None:
    client = await connect(settings_for(fresh_server, read_timeout=1.0, write_timeout=1.0))
    try:
        pub = Publisher(client, source="api", timeout=1.5)
        await assert_unavailable_while_paused(fresh_server, pub, within=4)
        assert pub.stats().errors == 1
    finally:
        await client.aclose()


async def test_publish_with_a_plain_redis_py_client_is_bounded_too(
    fresh_server: EmbeddedRedis,
) -> None:
    # redis-py's default client sends a timed-out command again; with its
    # read timeout equal to the publisher's, both fire together.
    plain = Redis(host=fresh_server.host, port=fresh_server.port, socket_timeout=1)
    try:
        pub = Publisher(plain, source="api", timeout=1)
        await assert_unavailable_while_paused(fresh_server, pub, within=1 + 3)
    finally:
        await plain.aclose()


async def assert_unavailable_while_paused(
    server: EmbeddedRedis, pub: Publisher, *, within: float
) -> None:
    """A publish to ``server`` paused raises ConnectionUnavailable in time."""
    await pub.publish("users", "x")
    with server.paused():
        started = time.monotonic()
        with pytest.raises(ConnectionUnavailable):
            await pub.publish("users", "x", {"id": 1})
        assert time.monotonic() - started < within


async def test_bad_arguments_are_refused(redis_client: Redis) -> None:
    pub = Publisher(redis_client)
    with pytest.raises(ConfigError, match="channel"):
        await pub.publish("", "x")
    with pytest.raises(ConfigError, match="event type"):
        await pub.publish("c", "")
    with pytest.raises(ConfigError, match="max_concurrency"):
        Subscriber(redis_client, max_concurrency=0)
    with pytest.raises(ConfigError, match="handler_timeout"):
        Subscriber(redis_client, handler_timeout=-1)
    sub = Subscriber(redis_client)
    with pytest.raises(ConfigError, match="at least one channel"):
        await sub.run()
    with pytest.raises(ConfigError, match="callable"):
        sub.on("x", "not a function")  # type: ignore[call-overload]


# -- self-healing -------------------------------------------------------------


async def kill_pubsub_connections(client: Client) -> None:
    if isinstance(client, RedisCluster):
        await client.execute_command(
            "CLIENT KILL", "TYPE", "pubsub", target_nodes=RedisCluster.PRIMARIES
        )
    else:
        await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")


async def test_client_kill_reconnects_resubscribes_and_reports_the_gap(client: Client) -> None:
    gaps: list[Any] = []
    pub = Publisher(client, source="api")
    sub = Subscriber(client, on_reconnect=gaps.append)
    seen: list[Any] = []
    sub.on("e", lambda e: seen.append((e.channel, e.payload)))
    async with sub.running("a", patterns=["p.*"]):
        await kill_pubsub_connections(client)
        await eventually(lambda: len(gaps) == 1, what="gap reported")
        assert sub.subscribed
        await pub.publish("a", "e", 1)
        await pub.publish("p.x", "e", 2)
        await eventually(lambda: len(seen) == 2)
    assert sorted(seen) == [("a", 1), ("p.x", 2)]
    gap = gaps[0]
    assert gap.channels == ("a",)
    assert gap.patterns == ("p.*",)
    assert gap.seconds >= 0
    assert gap.ended >= gap.started
    assert "closed" in gap.error.lower()
    stats = sub.stats()
    assert stats.disconnects == 1
    assert stats.reconnects == 1


async def test_server_restart_resumes_delivery(fresh_server: EmbeddedRedis) -> None:
    client = await connect(settings_for(fresh_server))
    gaps: list[Any] = []

    async def note_gap(gap: Any) -> None:
        gaps.append(gap)

    try:
        pub = Publisher(client, source="api")
        sub = Subscriber(client, on_reconnect=note_gap, backoff_max=0.5)
        seen: list[Any] = []
        sub.on("e", lambda e: seen.append(e.payload))
        async with sub.running("users"):
            await pub.publish("users", "e", "before")
            await eventually(lambda: seen == ["before"])
            fresh_server.restart()
            await eventually(lambda: len(gaps) == 1, timeout=15, what="resubscribed")
            assert await pub.publish("users", "e", "after") == 1
            await eventually(lambda: seen == ["before", "after"])
        assert sub.stats().reconnects == 1
        assert sub.stats().disconnects == 1
    finally:
        await client.aclose()


async def test_paused_server_is_detected_by_ping_deadline(fresh_server: EmbeddedRedis) -> None:
    client = await connect(settings_for(fresh_server))
    gaps: list[Any] = []
    try:
        pub = Publisher(client)
        sub = Subscriber(
            client,
            ping_interval=0.3,
            ping_timeout=0.5,
            connect_timeout=0.5,
            backoff_max=0.3,
            on_reconnect=gaps.append,
        )
        seen: list[Any] = []
        sub.on("e", lambda e: seen.append(e.payload))
        async with sub.running("users"):
            with fresh_server.paused():
                # The socket stays open; only the missing PONG reveals it.
                await eventually(lambda: sub.stats().disconnects == 1, timeout=10)
                assert not sub.subscribed
                await eventually(lambda: sub.stats().connect_failures >= 1, timeout=10)
            await eventually(lambda: len(gaps) == 1, timeout=15)
            await pub.publish("users", "e", "after")
            await eventually(lambda: seen == ["after"])
        assert "PING" in gaps[0].error
    finally:
        await client.aclose()


async def test_subscriber_waits_for_a_server_that_is_down(fresh_server: EmbeddedRedis) -> None:
    client = await connect(settings_for(fresh_server))
    try:
        fresh_server.stop()
        sub = Subscriber(client, connect_timeout=0.5, backoff_max=0.2)
        seen: list[Any] = []
        sub.on("e", lambda e: seen.append(e.payload))
        with pytest.raises(ConnectionUnavailable, match="not subscribed"):
            async with sub.running("users", ready_timeout=0.5):
                pass
        task = asyncio.ensure_future(sub.run("users"))
        await eventually(lambda: sub.stats().connect_failures >= 2)
        fresh_server.start()
        assert await sub.wait_subscribed(10)
        await Publisher(client).publish("users", "e", 1)
        await eventually(lambda: seen == [1])
        assert sub.stats().reconnects == 0  # never subscribed before: no gap
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await client.aclose()


# -- sharded pub/sub ----------------------------------------------------------


async def test_sharded_pubsub_where_supported(client: Client) -> None:
    pub = Publisher(client, source="api", sharded=True)
    sub = Subscriber(client, sharded=True)
    seen: list[Any] = []
    sub.on("e", lambda e: seen.append((e.channel, e.payload)))
    channels = [f"orders-{i}" for i in range(6)]
    if server_version() < (7, 0, 0):
        with pytest.raises(ConfigError, match=r"7\.0"):
            await pub.publish("orders-1", "e", 1)
        with pytest.raises(ConfigError, match=r"7\.0"):
            await asyncio.wait_for(sub.run(*channels), 10)
        return
    async with sub.running(*channels):
        for i, channel in enumerate(channels):
            assert await pub.publish(channel, "e", i) == 1
        await eventually(lambda: len(seen) == len(channels))
    assert sorted(seen) == [(c, i) for i, c in enumerate(channels)]
    with pytest.raises(ConfigError, match="patterns"):
        await sub.run("x", patterns=["y*"])


async def test_busy_handlers_are_not_mistaken_for_a_dead_connection(redis_client: Redis) -> None:
    # All workers busy for longer than ping_interval + ping_timeout while
    # messages wait: the reader is not reading, yet the connection is fine.
    pub = Publisher(redis_client)
    sub = Subscriber(redis_client, max_concurrency=1, ping_interval=0.2, ping_timeout=0.2)
    done: list[int] = []

    @sub.on("slow")
    async def slow(event: Event[Any]) -> None:
        await asyncio.sleep(0.8)
        done.append(event.payload)

    async with sub.running("q"):
        for i in range(3):
            await pub.publish("q", "slow", i)
        await eventually(lambda: done == [0, 1, 2], timeout=10)
    assert sub.stats().disconnects == 0


async def test_slow_sync_handler_is_cut_off_and_counted(redis_client: Redis) -> None:
    pub = Publisher(redis_client)
    sub = Subscriber(redis_client, handler_timeout=0.2)
    release = threading.Event()

    @sub.on("block")
    def block(event: Event[Any]) -> None:
        release.wait(10)  # a thread cannot be stopped; it ends when released

    try:
        async with sub.running("q"):
            await pub.publish("q", "block")
            await eventually(lambda: sub.stats().handler_timeouts == 1, timeout=5)
            assert sub.stats().in_flight == 0
    finally:
        release.set()


async def test_a_failing_gap_callback_does_not_stop_the_subscriber(redis_client: Redis) -> None:
    calls: list[Any] = []

    def broken(gap: Any) -> None:
        calls.append(gap)
        raise RuntimeError("callback bug")

    pub = Publisher(redis_client)
    sub = Subscriber(redis_client, on_reconnect=broken)
    seen: list[Any] = []
    sub.on("e", lambda e: seen.append(e.payload))
    async with sub.running("q"):
        await kill_pubsub_connections(redis_client)
        await eventually(lambda: len(calls) == 1)
        await pub.publish("q", "e", 1)
        await eventually(lambda: seen == [1])
        await kill_pubsub_connections(redis_client)
        await eventually(lambda: len(calls) == 2)
    assert sub.stats().reconnects == 2
