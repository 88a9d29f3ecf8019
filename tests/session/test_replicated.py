"""SessionStore(replicas=1): every write returns once a replica holds it,
and raises NotReplicated, bounded by replica_timeout, when the replica does
not answer. Real servers: a primary and one replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from redis import Redis as SyncRedis
from redis.asyncio import Redis

import redkit
from redkit import ConfigError, ConnectionUnavailable, NotReplicated, SessionStore
from redkit.server import EmbeddedCluster, EmbeddedRedis
from redkit.testing import settings_for

SECRET = "replicated-test-secret-0123456789"


class Pair:
    def __init__(self, primary: EmbeddedRedis, replica: EmbeddedRedis) -> None:
        self.primary = primary
        self.replica = replica


@pytest_asyncio.fixture
async def pair(server_factory: Callable[..., EmbeddedRedis]) -> AsyncIterator[Pair]:
    # No diskless-sync delay: the replica syncs at once rather than in 5 s.
    primary = server_factory(extra_args=("--repl-diskless-sync-delay", "0"))
    replica = server_factory(extra_args=("--replicaof", primary.host, str(primary.port)))
    async with Redis(host=primary.host, port=primary.port) as admin:
        deadline = time.monotonic() + 10
        while await admin.execute_command("WAIT", 1, 100) != 1:
            assert time.monotonic() < deadline, "the replica never synced"
    yield Pair(primary, replica)
    replica.resume()


async def _on_replica(pair: Pair, key: str) -> bytes | None:
    # READONLY replica reads need nothing special outside a cluster.
    async with Redis(host=pair.replica.host, port=pair.replica.port) as direct:
        value: Any = await direct.get(key)
        return value


def _record_key(store: SessionStore, session_id: str) -> str:
    tag, _, secret = session_id.partition(".")
    return f"{store.prefix}:session:{{{tag}}}:{secret}"


async def test_every_write_is_on_the_replica_when_it_returns(pair: Pair) -> None:
    client = await redkit.connect(settings_for(pair.primary))
    store = SessionStore(client, secret=SECRET, replicas=1, replica_timeout=1.0)
    try:
        session = await store.create("ada", {"n": 1})
        key = _record_key(store, session.id)
        assert await _on_replica(pair, key) is not None
        updated = await store.update(session.id, {"n": 2})
        assert updated is not None
        assert b'"n":2' in (await _on_replica(pair, key) or b"")
        rotated = await store.rotate(session.id)
        assert rotated is not None
        assert await _on_replica(pair, key) is None
        assert await _on_replica(pair, _record_key(store, rotated.id)) is not None
        assert await store.refresh(rotated.id) is not None
        assert await store.destroy(rotated.id)
        assert await _on_replica(pair, _record_key(store, rotated.id)) is None
        others = [await store.create("ada") for _ in range(2)]
        assert await store.destroy_all_for_user("ada") == 2
        for other in others:
            assert await _on_replica(pair, _record_key(store, other.id)) is None
        # Nothing to change: no wait is needed, and a miss is still None.
        assert await store.update(session.id, {"n": 3}) is None
        assert not await store.destroy(session.id)
        assert store.stats().errors == 0
    finally:
        await client.aclose()


async def test_a_paused_replica_fails_writes_within_the_timeout(pair: Pair) -> None:
    client = await redkit.connect(settings_for(pair.primary))
    store = SessionStore(client, secret=SECRET, replicas=1, replica_timeout=0.3)
    try:
        # Made while the replica answers, with room for a loaded machine.
        patient = SessionStore(client, secret=SECRET, replicas=1, replica_timeout=1.0)
        kept = await patient.create("ada", {"n": 1})
        pair.replica.pause()
        # A server without the script (a new primary after a failover):
        # the retry with EVAL waits only for what is left of the timeout.
        await client.script_flush()
        started = time.monotonic()
        with pytest.raises(NotReplicated, match=r"only 0 of 1 replicas") as caught:
            await store.create("ada", {"n": 2})
        # Redis times WAIT out on its 100 ms clock.
        assert time.monotonic() - started < 0.3 + 0.5
        assert isinstance(caught.value, ConnectionUnavailable)
        assert (caught.value.acknowledged, caught.value.required) == (0, 1)
        for write in (
            store.update(kept.id, {"n": 3}),
            store.refresh(kept.id),
            store.rotate(kept.id),
        ):
            with pytest.raises(NotReplicated):
                await write
        # The writes were applied on the primary: the rotation ended the old id.
        assert await store.get(kept.id) is None
        # Reads do not wait: get and touch serve while the replica is away.
        fresh = (await store.list_for_user("ada"))[0]
        assert await store.get(fresh.id) == fresh
        assert await store.touch(fresh.id, 0.001) is not None
        assert store.stats().errors == 4
    finally:
        pair.replica.resume()
        await client.aclose()


async def test_scripts_unknown_to_the_server_still_run(pair: Pair) -> None:
    client = await redkit.connect(settings_for(pair.primary))
    store = SessionStore(client, secret=SECRET, replicas=1, replica_timeout=1.0)
    try:
        await client.script_flush()
        session = await store.create("ada")
        assert await _on_replica(pair, _record_key(store, session.id)) is not None
    finally:
        await client.aclose()


async def test_settings_are_checked(redis_client: Redis) -> None:
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ConfigError, match="replicas must be an int"):
            SessionStore(redis_client, secret=SECRET, replicas=bad)  # type: ignore[arg-type]
    for timeout in (0, -1, float("nan"), "1"):
        with pytest.raises(ConfigError, match="replica_timeout"):
            SessionStore(redis_client, secret=SECRET, replicas=1, replica_timeout=timeout)  # type: ignore[arg-type]
    # WAIT holds the reply: it must come before the client gives up reading.
    with pytest.raises(ConfigError, match="read timeout"):
        SessionStore(redis_client, secret=SECRET, replicas=1, replica_timeout=4.9)
    assert SessionStore(redis_client, secret=SECRET, replicas=0).replicas == 0


def _replica_of(cluster: EmbeddedCluster, key: str) -> EmbeddedRedis:
    primary = cluster.primary_for(key)
    for node in cluster.nodes:
        with SyncRedis(host=node.host, port=node.port) as admin:
            role = admin.execute_command("ROLE")
        if role[0] == b"slave" and role[2] == primary.port:
            return node
    raise AssertionError(f"no replica of {primary}")


@pytest.mark.cluster
async def test_on_a_cluster_the_wait_reaches_the_node_of_the_write(
    replicated_cluster: EmbeddedCluster,
) -> None:
    client = await redkit.connect(settings_for(replicated_cluster))
    store = SessionStore(client, secret=SECRET, replicas=1, replica_timeout=1.0)
    try:
        users = [f"user-{n}" for n in range(12)]  # tags spread over the three primaries
        sessions = await asyncio.gather(*(store.create(user) for user in users))
        for session in sessions:
            key = _record_key(store, session.id)
            replica = _replica_of(replicated_cluster, key)
            async with Redis(host=replica.host, port=replica.port) as direct:
                await direct.execute_command("READONLY")
                assert await direct.get(key) is not None
        for node in replicated_cluster.nodes:  # as if every primary were new
            with SyncRedis(host=node.host, port=node.port) as admin:
                admin.script_flush()
        assert await store.update(sessions[0].id, {"after": "flush"}) is not None
        # A paused replica fails the writes of its primary's slots only.
        key = _record_key(store, sessions[0].id)
        paused = _replica_of(replicated_cluster, key).paused()
        with paused, pytest.raises(NotReplicated):
            await store.update(sessions[0].id, {"n": 1})
    finally:
        await client.aclose()
