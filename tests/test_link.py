"""The one pub/sub link (redkit._link) on real servers: where it connects,
its heartbeat, its reconnect schedule and its gap report; and the three
components that use it across a primary change."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from redis import Redis as SyncRedis
from redis.asyncio import Redis, RedisCluster

import redkit
from redkit import Cache, LocalCache
from redkit._link import Link, Outage, Timing, connection_kwargs, endpoint
from redkit._timing import RECOVERY_CAP
from redkit.connection import Client
from redkit.events import Gap, Publisher, Subscriber
from redkit.server import EmbeddedCluster, EmbeddedRedis, EmbeddedSentinelGroup
from redkit.testing import settings_for

log = logging.getLogger("tests.link")


async def eventually(check: Callable[[], object], timeout: float = 10.0) -> float:
    """Poll ``check`` until truthy; the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"not true within {timeout:g}s"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


class Probe:
    """A link on ``client`` that records what it delivers and reports."""

    def __init__(self, client: Client, *channels: str, **timing: float) -> None:
        self.messages: list[tuple[bytes, bytes]] = []
        self.ups: list[Outage | None] = []
        self.downs: list[str] = []
        self.confirmed: list[str] = []
        options = {
            "ping_interval": 0.2,
            "ping_timeout": 0.3,
            "connect_timeout": 1.0,
            "backoff_base": 0.05,
            "backoff_max": 10.0,
        } | timing
        self.link = Link(
            endpoint(client),
            lambda channel, data: self.messages.append((channel, data)),
            channels=channels,
            timing=Timing(**options),
            log=log,
            label="probe",
            on_up=self.ups.append,
            on_down=self.downs.append,
            on_confirm=self.confirmed.append,
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Probe:
        self.task = asyncio.ensure_future(self.link.run())
        await eventually(lambda: self.link.subscribed)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


@pytest_asyncio.fixture
async def fresh_client(fresh_server: EmbeddedRedis) -> AsyncIterator[Client]:
    client = await redkit.connect(settings_for(fresh_server))
    yield client
    await client.aclose()


async def _kill_pubsub(client: Client) -> None:
    if isinstance(client, RedisCluster):
        await client.client_kill_filter(_type="pubsub", target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.client_kill_filter(_type="pubsub")


def test_connections_never_retry_inside_redis_py(client: Client) -> None:
    conn = endpoint(client).connection()
    assert conn.retry.get_retries() == 0
    assert conn.health_check_interval == 0
    kwargs = connection_kwargs({"retry_on_timeout": True, "protocol": 3, "decode_responses": True})
    assert kwargs["protocol"] == 2 and not kwargs["decode_responses"]
    assert not kwargs["retry_on_timeout"]


async def test_a_connect_to_a_dead_server_fails_once_and_at_once(
    fresh_server: EmbeddedRedis, fresh_client: Client
) -> None:
    fresh_server.stop()
    conn = endpoint(fresh_client).connection()
    started = time.monotonic()
    with pytest.raises(Exception, match=r"(?i)connect"):
        await conn.connect()  # type: ignore[no-untyped-call]
    took = time.monotonic() - started
    print(f"a refused connect failed after {took * 1000:.1f} ms")
    assert took < 0.5


async def test_messages_channels_added_and_removed(client: Client) -> None:
    async with Probe(client, "a") as probe:
        await client.publish("a", "1")  # a cluster counts only the node's own subscribers
        await eventually(lambda: probe.messages == [(b"a", b"1")])
        probe.link.add("b")
        await eventually(lambda: "b" in probe.confirmed)
        await client.publish("b", "2")
        await eventually(lambda: (b"b", b"2") in probe.messages)
        probe.link.remove("a")
        probe.link.remove("b")
        probe.link.add("b")  # back before the UNSUBSCRIBE was even answered
        await eventually(lambda: probe.confirmed.count("b") == 2)
        await client.publish("a", "3")
        await client.publish("b", "4")
        await eventually(lambda: (b"b", b"4") in probe.messages)
        assert (b"a", b"3") not in probe.messages
        # Unsubscribes it asked for are no loss.
        assert probe.downs == [] and probe.link.subscribed


async def test_a_killed_connection_is_reported_and_restored(client: Client) -> None:
    async with Probe(client, "a") as probe:
        await _kill_pubsub(client)
        await eventually(lambda: len(probe.ups) == 2)
        outage = probe.ups[1]
        assert outage is not None and outage.seconds >= 0
        assert "closed" in outage.error.lower()
        assert len(probe.downs) == 1
        assert probe.link.counts["disconnects"] == probe.link.counts["reconnects"] == 1
        await client.publish("a", "after")
        await eventually(lambda: probe.messages == [(b"a", b"after")])


async def test_the_heartbeat_notices_a_paused_server(
    fresh_server: EmbeddedRedis, fresh_client: Client
) -> None:
    async with Probe(fresh_client, "a") as probe:
        with fresh_server.paused():
            took = await eventually(lambda: probe.downs, timeout=5)
        print(f"paused server noticed after {took:.2f}s (ping 0.2 s, timeout 0.3 s)")
        assert "PING" in probe.downs[0]
        assert took < 2 * 0.2 + 0.3 + 0.5
        await eventually(lambda: probe.link.subscribed, timeout=5)


async def test_after_an_outage_the_link_is_back_promptly_not_after_a_grown_backoff(
    fresh_server: EmbeddedRedis, fresh_client: Client
) -> None:
    # backoff_max=10 s: a schedule that kept doubling through a 2.3 s outage
    # would wait seconds after the server is back.
    async with Probe(fresh_client, "a", backoff_max=10.0) as probe:
        fresh_server.stop()
        await eventually(lambda: probe.downs)
        await asyncio.sleep(2.3)
        fresh_server.start()
        back = await eventually(lambda: len(probe.ups) == 2)
        print(f"subscribed again {back * 1000:.0f} ms after the server was back")
        assert back < RECOVERY_CAP + 0.5
        assert probe.link.counts["connect_failures"] >= 3


async def test_a_link_that_never_subscribed_backs_off_to_backoff_max(
    fresh_server: EmbeddedRedis, fresh_client: Client
) -> None:
    fresh_server.stop()
    probe = Probe(fresh_client, "a", backoff_base=0.05, backoff_max=0.1)
    task = asyncio.ensure_future(probe.link.run())
    try:
        await eventually(lambda: probe.link.counts["connect_failures"] >= 5)
        assert probe.link.failing and probe.ups == [] and probe.downs == []
        fresh_server.start()
        await eventually(lambda: probe.link.subscribed)
        assert probe.ups == [None]  # no gap: it never had a subscription
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# -- across a primary change --------------------------------------------------


async def _delivery_resumes(pub: Publisher, seen: list[Any], label: str) -> float:
    """Seconds until an event published now reaches the handler."""
    start = time.monotonic()
    n = 0
    while True:
        n += 1
        with contextlib.suppress(redkit.ConnectionUnavailable):
            await pub.publish("users", "e", f"{label}-{n}")
        if any(str(p).startswith(label) for p in seen):
            return time.monotonic() - start
        assert time.monotonic() - start < 10, "delivery did not resume"
        await asyncio.sleep(0.02)


@pytest.mark.failover
@pytest.mark.parametrize("trigger", ["failover", "kill_primary"])
async def test_subscriber_resumes_within_a_second_of_a_sentinel_promotion(
    sentinel_group: EmbeddedSentinelGroup, trigger: str
) -> None:
    client = await redkit.connect(settings_for(sentinel_group))
    gaps: list[Gap] = []
    seen: list[Any] = []
    sub = Subscriber(client, on_reconnect=gaps.append, backoff_max=10.0)
    sub.on("e", lambda e: seen.append(e.payload))
    pub = Publisher(client)
    try:
        async with sub.running("users"):
            await _delivery_resumes(pub, seen, "before")
            await asyncio.to_thread(getattr(sentinel_group, trigger))
            took = await _delivery_resumes(pub, seen, "after")
            print(f"Sentinel {trigger}: delivery resumed {took * 1000:.0f} ms after promotion")
            assert took < 1.0
            await eventually(lambda: gaps)
            assert gaps[0].seconds > 0
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def _caches(
    server: EmbeddedSentinelGroup | EmbeddedCluster,
) -> AsyncIterator[tuple[Client, Cache, Cache]]:
    """A started cache with a local tier, and a writer on another client."""
    client = await redkit.connect(settings_for(server))
    other = await redkit.connect(settings_for(server))
    cache = Cache(client, local=LocalCache())
    try:
        assert await cache.start()
        yield client, cache, Cache(other)
    finally:
        await cache.aclose()
        await client.aclose()
        await other.aclose()


@pytest.mark.failover
async def test_a_sentinel_cache_tier_follows_the_new_primary(
    sentinel_group: EmbeddedSentinelGroup,
) -> None:
    async with _caches(sentinel_group) as (_, cache, writer):
        await cache.set("k", "old", ttl=60)
        assert await cache.get("k") == "old"
        await asyncio.to_thread(sentinel_group.failover)
        promoted = time.monotonic()
        await writer.set("k", "new", ttl=60)

        async def fresh() -> bool:
            return await cache.get("k") == "new"

        while not await fresh():
            assert time.monotonic() - promoted < 1.0, "served a value older than a write"
            await asyncio.sleep(0.01)
        took = time.monotonic() - promoted
        print(f"Sentinel failover: local tier fresh {took * 1000:.0f} ms after promotion")
        await eventually(lambda: cache.coherent, timeout=2)


def _subscribed_node(cluster: EmbeddedCluster, channel: str) -> EmbeddedRedis:
    for node in cluster.nodes:
        if not node.running:
            continue
        with SyncRedis(host=node.host, port=node.port) as direct:
            if direct.execute_command("PUBSUB", "NUMSUB", channel)[1]:
                return node
    raise AssertionError(f"no node has a subscriber of {channel}")


@pytest.mark.failover
@pytest.mark.cluster
async def test_cluster_primary_killed_under_a_cache_listener(
    replicated_cluster: EmbeddedCluster,
) -> None:
    async with _caches(replicated_cluster) as (client, cache, writer):
        assert isinstance(client, RedisCluster)
        node = _subscribed_node(replicated_cluster, cache.channel)
        key = next(
            f"k{i}"
            for i in range(10_000)
            if client.get_node_from_key(f"{cache.prefix}:k{i}").port == node.port
        )
        await cache.set(key, "old", ttl=60)
        assert await cache.get(key) == "old"
        flushes = cache.stats().local_flushes
        flushed: list[float] = []

        async def watch() -> None:
            # Polled: the cache offers no event for its flushes.
            while cache.stats().local_flushes == flushes:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            flushed.append(time.monotonic())

        watcher = asyncio.ensure_future(watch())
        killed = time.monotonic()
        await asyncio.to_thread(replicated_cluster.kill_primary, f"{cache.prefix}:{key}")
        promoted = time.monotonic()
        await asyncio.wait_for(watcher, 1.0)
        print(f"local tier flushed {(flushed[0] - killed) * 1000:.0f} ms after the kill")
        assert flushed[0] - killed < 1.0
        assert len(cache.local or []) == 0 or await cache.get(key) != "old"
        while True:
            try:
                await writer.set(key, "new", ttl=60)
                break
            except redkit.ConnectionUnavailable:
                await asyncio.sleep(0.02)
        while await cache.get(key) != "new":
            assert time.monotonic() - promoted < 1.0, "served a value older than a write"
            await asyncio.sleep(0.01)
        print(f"fresh {(time.monotonic() - promoted) * 1000:.0f} ms after promotion")
        await eventually(lambda: cache.coherent, timeout=2)


@pytest.mark.failover
@pytest.mark.cluster
async def test_subscriber_resumes_after_a_cluster_primary_is_killed(
    replicated_cluster: EmbeddedCluster,
) -> None:
    client = await redkit.connect(settings_for(replicated_cluster))
    seen: list[Any] = []
    sub = Subscriber(client, backoff_max=10.0)
    sub.on("e", lambda e: seen.append(e.payload))
    pub = Publisher(client)
    try:
        async with sub.running("users"):
            await _delivery_resumes(pub, seen, "before")
            node = _subscribed_node(replicated_cluster, "users")
            assert isinstance(client, RedisCluster)
            key = next(
                f"k{i}"
                for i in range(10_000)
                if client.get_node_from_key(f"k{i}").port == node.port
            )
            await asyncio.to_thread(replicated_cluster.kill_primary, key)
            took = await _delivery_resumes(pub, seen, "after")
            print(f"cluster kill: delivery resumed {took * 1000:.0f} ms after promotion")
            assert took < 1.0
    finally:
        await client.aclose()


async def test_a_standalone_redis_py_client_without_redkit_settings_works(
    redis_server: EmbeddedRedis,
) -> None:
    plain = Redis(host=redis_server.host, port=redis_server.port, decode_responses=True)
    try:
        async with Probe(plain, "a") as probe:
            await plain.publish("a", "x")
            await eventually(lambda: probe.messages == [(b"a", b"x")])
    finally:
        await plain.aclose()
