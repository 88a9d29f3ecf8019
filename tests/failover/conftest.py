"""One Sentinel group and one replicated cluster for the whole directory
(pytest keeps one topology up at a time), a :class:`Rig` per test that moves
the primary while the test's component runs, and puts the topology back
(killed servers revived, deposed primaries demoted, data flushed) after it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

import redkit
from redkit.connection import Client
from redkit.server import EmbeddedCluster, EmbeddedRedis, EmbeddedSentinelGroup
from redkit.settings import RedisSettings
from redkit.testing import settings_for

from ._recovery import Promotion, until_async

Topology = EmbeddedSentinelGroup | EmbeddedCluster


@pytest.fixture(
    scope="session",
    params=["sentinel", pytest.param("cluster", marks=pytest.mark.cluster)],
)
def topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    server: Topology = (
        EmbeddedSentinelGroup()
        if request.param == "sentinel"
        else EmbeddedCluster(masters=3, replicas=1, node_timeout_ms=1000)
    )
    with server:
        yield server


@pytest.fixture(params=["failover", "kill"])
def rig(topology: Topology, request: pytest.FixtureRequest) -> Iterator[Rig]:
    rig = Rig(topology, request.param)
    rig.flush()
    yield rig
    # Revive on this (the main) thread: a server dies with the thread that
    # started it, and the event loop's worker threads end with the loop.
    rig.restore()


class Rig:
    """The topology of one test and the trigger it is parametrized with."""

    def __init__(self, server: Topology, kind: str) -> None:
        self.server = server
        self.kind = kind
        self.sentinel = isinstance(server, EmbeddedSentinelGroup)
        self.topology = "sentinel" if self.sentinel else "cluster"
        self.cluster = not self.sentinel
        self.killed: list[EmbeddedRedis] = []
        self.new: EmbeddedRedis | None = None

    def settings(self, **overrides: Any) -> RedisSettings:
        return settings_for(self.server, **overrides)

    async def connect(self, **overrides: Any) -> Client:
        return await redkit.connect(self.settings(**overrides))

    def primary(self, key: str = "") -> EmbeddedRedis:
        if isinstance(self.server, EmbeddedSentinelGroup):
            return self.server.primary()
        return self.server.primary_for(key)

    def direct(self, node: EmbeddedRedis) -> Redis:
        """A plain client on one server, bypassing Sentinel and cluster routing."""
        return Redis(host=node.host, port=node.port, socket_timeout=5)

    async def trigger(self, key: str = "") -> Promotion:
        """Move the primary serving ``key`` (a graceful failover or a
        SIGKILL, as parametrized) in a worker thread, so that the test's
        components keep running, and return once the new primary serves."""
        old = self.primary(key)
        started = time.monotonic()
        if isinstance(self.server, EmbeddedSentinelGroup):
            move = self.server.failover if self.kind == "failover" else self.server.kill_primary
            self.new = await asyncio.to_thread(move)
        else:
            cluster = self.server
            move = cluster.failover if self.kind == "failover" else cluster.kill_primary
            self.new = await asyncio.to_thread(move, key)
        promoted = time.monotonic()
        if self.kind == "kill":
            self.killed.append(old)
        return Promotion(self.kind, self.topology, started, promoted)

    def pubsub_key(self) -> str:
        """A key served by the cluster primary that holds the most pub/sub
        connections now (the one a subscriber or a cache listener is on),
        so that moving it moves their subscriptions too."""
        if isinstance(self.server, EmbeddedSentinelGroup):
            return "pubsub"
        counts = {}
        for node in self.server.nodes:
            if node.running:
                with SyncRedis(host=node.host, port=node.port) as admin:
                    counts[node.port] = len(admin.client_list(_type="pubsub"))
        busiest = max(counts, key=lambda port: counts[port])
        return self._key_on(busiest, "pubsub")

    def keys_near(self, key: str, *names: str) -> list[str]:
        """One key per name (``name-<n>``) served by the same primary as
        ``key``, for components whose keys carry no hash tag of ours."""
        if isinstance(self.server, EmbeddedSentinelGroup):
            return list(names)
        port = self.server.primary_for(key).port
        return [self._key_on(port, name) for name in names]

    def _key_on(self, port: int, name: str) -> str:
        assert isinstance(self.server, EmbeddedCluster)
        for n in range(10_000):
            key = f"{name}-{n}"
            if self.server.primary_for(key).port == port:
                return key
        raise AssertionError(f"no key found on node {port}")

    async def replicated(self, client: Client, key: str = "") -> None:
        """Wait (at most 10 s) until the replica of ``key``'s primary has
        every write so far. Each WAIT stays under the client's read timeout:
        a replica still resyncing after the last test is waited for here."""
        options = (
            {} if isinstance(client, Redis) else {"target_nodes": client.get_node_from_key(key)}
        )

        async def acked() -> bool:
            return bool(await client.execute_command("WAIT", 1, 500, **options) == 1)

        await until_async(acked, "replica acknowledgement", 10.0)

    def flush(self) -> None:
        nodes = (
            [self.server.primary()]
            if isinstance(self.server, EmbeddedSentinelGroup)
            else [n for n in self.server.nodes if n.running]
        )
        for node in nodes:
            with SyncRedis(host=node.host, port=node.port) as admin:
                if admin.execute_command("ROLE")[0] in (b"master", "master"):
                    admin.flushall()

    def restore(self) -> None:
        for node in self.killed:
            self.server.revive(node)
        self.killed.clear()
        if isinstance(self.server, EmbeddedSentinelGroup):
            self.server.settle()
