"""The failover fixtures of redkit.testing: each trigger really moves the
primary, and returns only once the new one serves."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

import redkit
from redkit.server import EmbeddedCluster, EmbeddedRedis, EmbeddedSentinelGroup
from redkit.testing import settings_for

pytestmark = pytest.mark.failover


async def _role(server: EmbeddedRedis) -> str:
    async with Redis(host=server.host, port=server.port) as direct:
        role = await direct.execute_command("ROLE")
    return role[0].decode() if isinstance(role[0], bytes) else str(role[0])


@pytest.mark.parametrize("trigger", ["failover", "kill_primary"])
async def test_sentinel_group_moves_the_primary(
    sentinel_group: EmbeddedSentinelGroup, trigger: str
) -> None:
    old = sentinel_group.primary()
    client = await redkit.connect(settings_for(sentinel_group))
    try:
        await client.set("before", "1")
        assert await client.execute_command("WAIT", 1, 2000) == 1
    finally:
        await client.aclose()
    replicas = [s for s in sentinel_group.servers if s is not old]
    assert [await _role(s) for s in replicas] == ["slave"]

    new = getattr(sentinel_group, trigger)()

    assert new is replicas[0] and new is not old
    assert await _role(new) == "master"
    assert sentinel_group.primary() is new
    assert old.running is (trigger == "failover")
    fresh = await redkit.connect(settings_for(sentinel_group))
    try:
        assert await fresh.get("before") == b"1"
        assert await fresh.set("after", "2")
    finally:
        await fresh.aclose()


@pytest.mark.cluster
@pytest.mark.parametrize("trigger", ["failover", "kill_primary"])
async def test_replicated_cluster_moves_a_slot(
    replicated_cluster: EmbeddedCluster, trigger: str
) -> None:
    key = "order:{42}"
    old = replicated_cluster.primary_for(key)
    client = await redkit.connect(settings_for(replicated_cluster))
    try:
        await client.set(key, "1")
        assert (
            await client.execute_command(
                "WAIT", 1, 2000, target_nodes=client.get_node_from_key(key)
            )
            == 1
        )
    finally:
        await client.aclose()

    new = getattr(replicated_cluster, trigger)(key)

    assert new is not old and await _role(new) == "master"
    assert replicated_cluster.primary_for(key) is new
    assert old.running is (trigger == "failover")
    if trigger == "failover":
        assert await _role(old) == "slave"
    fresh = await redkit.connect(settings_for(replicated_cluster, host=new.host, port=new.port))
    try:
        assert await fresh.get(key) == b"1"
        assert fresh.get_node_from_key(key).port == new.port
    finally:
        await fresh.aclose()


async def test_a_killed_primary_comes_back_as_a_replica(
    sentinel_group: EmbeddedSentinelGroup,
) -> None:
    old = sentinel_group.primary()
    new = sentinel_group.kill_primary()
    assert sentinel_group.revive(old) is old
    assert await _role(old) == "slave"
    assert sentinel_group.primary() is new


@pytest.mark.cluster
def test_a_killed_node_comes_back_as_a_replica(replicated_cluster: EmbeddedCluster) -> None:
    key = "job:{7}"
    old = replicated_cluster.primary_for(key)
    new = replicated_cluster.kill_primary(key)
    assert replicated_cluster.revive(old) is old
    # Back with its cluster config, it rejoins under the node that replaced it,
    # so the slot can be failed back to it.
    assert replicated_cluster.failover(key) is old
    assert replicated_cluster.primary_for(key) is old
    assert new.running
