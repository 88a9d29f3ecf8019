"""The pipelining cluster client: commands on every node, and a slot moved
between nodes while commands on its keys run (ASK during the migration,
MOVED after it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot

from redkit._cluster_pipelining import PipelinedRedisCluster
from redkit.connection import build_client, connect
from redkit.server import EmbeddedCluster
from redkit.testing import flush, settings_for

from ._helpers import delta, stats

pytestmark = pytest.mark.cluster

TASKS = 256


async def test_concurrent_tasks_on_every_node_get_their_replies(
    cluster_client: RedisCluster,
) -> None:
    client = cluster_client
    assert isinstance(client, PipelinedRedisCluster)
    keys = [f"{{spread{i}}}:value" for i in range(TASKS)]
    nodes = {client.get_node_from_key(k).name for k in keys}
    assert len(nodes) == 3  # every primary serves some of the keys

    async def work(i: int) -> None:
        key, counter = keys[i], f"{{spread{i}}}:counter"
        value = f"value-{i}".encode()
        assert await client.set(key, value) is True
        for n in range(1, 4):
            assert await client.incr(counter) == n
        assert await client.get(key) == value
        assert await client.hset(f"{{spread{i}}}:h", "task", i) == 1
        assert await client.hgetall(f"{{spread{i}}}:h") == {b"task": str(i).encode()}

    before = stats(client)
    await asyncio.gather(*(work(i) for i in range(TASKS)))
    grown = delta(before, stats(client))
    assert grown["commands"] == TASKS * 7
    assert grown["dedicated"] == 0
    assert grown["commands"] / grown["batches"] > 2
    assert stats(client).in_flight == 0


@pytest_asyncio.fixture(params=["connected", "built"])
async def fresh_cluster_client(
    request: pytest.FixtureRequest, scratch_cluster: EmbeddedCluster
) -> AsyncIterator[RedisCluster]:
    """A client from connect() (which PINGs every primary), or from
    build_client() with only the slot map loaded: no node has carried a
    command yet, so an ASK can lead to a node the client never used."""
    settings = settings_for(scratch_cluster)
    if request.param == "connected":
        client = await connect(settings)
        await flush(client)
    else:
        client = build_client(settings)
        assert isinstance(client, RedisCluster)
        await client.initialize()
    assert isinstance(client, PipelinedRedisCluster)
    try:
        yield client
    finally:
        await client.aclose()


async def test_commands_follow_a_slot_migrated_to_another_node(
    fresh_cluster_client: RedisCluster, scratch_cluster: EmbeddedCluster
) -> None:
    client = fresh_cluster_client
    tag = "{migrate}"
    slot = key_slot(tag.encode())
    source = scratch_cluster.primary_for(tag)
    destination = next(n for n in scratch_cluster.nodes if n is not source)
    admins = {
        node.port: Redis(host=node.host, port=node.port, decode_responses=True)
        for node in scratch_cluster.nodes
    }
    src, dst = admins[source.port], admins[destination.port]
    src_id = await src.execute_command("CLUSTER MYID")
    dst_id = await dst.execute_command("CLUSTER MYID")
    keys = [f"{tag}:{i}" for i in range(100)]
    values = [f"value-{i}".encode() for i in range(100)]
    counters = [f"{tag}:counter:{i}" for i in range(50)]
    finished = False
    try:
        await client.delete(*keys, *counters)  # on the source only
        stored = await asyncio.gather(*map(client.set, keys, values))
        assert stored == [True] * len(keys)
        before = stats(client)

        # Half the keys move; the slot is MIGRATING on the source and
        # IMPORTING on the destination: the source answers ASK for the keys
        # it no longer holds (and for new keys).
        await dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        await src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        moved = keys[:50]
        await src.execute_command(
            "MIGRATE", destination.host, destination.port, "", 0, 5000, "KEYS", *moved
        )
        assert await src.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == len(keys) - len(moved)
        assert await asyncio.gather(*(client.get(k) for k in keys)) == values
        assert await asyncio.gather(*(client.incr(c) for c in counters)) == [1] * len(counters)
        changed = [v + b"!" for v in values]
        stored = await asyncio.gather(*map(client.set, keys, changed))
        assert stored == [True] * len(keys)
        assert await asyncio.gather(*(client.get(k) for k in keys)) == changed

        # The rest moves and every node learns the new owner: the source
        # answers MOVED.
        rest = keys[50:]
        await src.execute_command(
            "MIGRATE", destination.host, destination.port, "", 0, 5000, "KEYS", *rest
        )
        for admin in admins.values():
            await admin.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
        finished = True
        assert await asyncio.gather(*(client.get(k) for k in keys)) == changed
        assert await asyncio.gather(*(client.incr(c) for c in counters)) == [2] * len(counters)

        # Every write landed once, on the node that owns the slot now.
        assert await dst.mget(keys) == [v.decode() for v in changed]
        assert await dst.mget(counters) == ["2"] * len(counters)
        assert await src.dbsize() == 0
        grown = delta(before, stats(client))
        assert grown["commands"] >= 4 * len(keys) + 2 * len(counters)
        assert grown["reconnects"] == 0
        assert stats(client).in_flight == 0
    finally:
        if not finished:
            for admin in (src, dst):
                await admin.execute_command("CLUSTER SETSLOT", slot, "STABLE")
        for admin in admins.values():
            await admin.aclose()
