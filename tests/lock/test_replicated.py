"""DistributedLock(replicas=1): a lease (and its fencing token) is handed out
only once a replica holds it, a take the replica does not acknowledge is
given back and fails closed, and an unacknowledged renewal ends in
``lost`` rather than a lease the holder wrongly trusts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

import redkit
from redkit import ConfigError, DistributedLock, LockNotAcquired, NotReplicated
from redkit.connection import Client
from redkit.server import EmbeddedRedis
from redkit.testing import settings_for


class Servers:
    def __init__(self, primary: EmbeddedRedis, replica: EmbeddedRedis, client: Client) -> None:
        self.primary = primary
        self.replica = replica
        self.client = client

    async def on_replica(self, *keys: str) -> list[bytes | None]:
        async with Redis(host=self.replica.host, port=self.replica.port) as direct:
            values: list[Any] = await direct.mget(keys)
            return values


@pytest_asyncio.fixture
async def servers(server_factory: Callable[..., EmbeddedRedis]) -> AsyncIterator[Servers]:
    primary = server_factory(extra_args=("--repl-diskless-sync-delay", "0"))
    replica = server_factory(extra_args=("--replicaof", primary.host, str(primary.port)))
    client = await redkit.connect(settings_for(primary))
    deadline = time.monotonic() + 10
    while await client.execute_command("WAIT", 1, 100) != 1:
        assert time.monotonic() < deadline, "the replica never synced"
    yield Servers(primary, replica, client)
    replica.resume()
    await client.aclose()


async def test_a_lease_and_its_token_are_on_the_replica(servers: Servers) -> None:
    async with DistributedLock(servers.client, replicas=1) as locks:
        lease = await locks.acquire("job", ttl=10, auto_renew=False)
        key = locks.key("job")
        assert await servers.on_replica(key, key + ":fence") == [
            lease.token.encode(),
            str(lease.fencing_token).encode(),
        ]
        await lease.extend(60)
        async with Redis(host=servers.replica.host, port=servers.replica.port) as direct:
            assert await direct.pttl(key) > 10_000
        assert await lease.release()
        # A busy attempt changes nothing and is an ordinary refusal.
        other = await locks.lock("job", ttl=10)
        with pytest.raises(LockNotAcquired):
            await locks.lock("job", ttl=10)
        await other.release()
        sem = locks.semaphore("pool", limit=2, ttl=10)
        async with sem.acquire(auto_renew=False) as permit:
            fence = (await servers.on_replica(sem_fence := "app:semaphore:{pool}:fence"))[0]
            assert fence == str(permit.fencing_token).encode(), sem_fence
        assert locks.stats().errors == 0


async def test_a_paused_replica_fails_the_acquire_and_gives_the_lock_back(
    servers: Servers,
) -> None:
    locks = DistributedLock(servers.client, replicas=1, replica_timeout=0.2)
    try:
        servers.replica.pause()
        started = time.monotonic()
        with pytest.raises(NotReplicated, match=r"took lock 'job', but only 0 of 1"):
            await locks.acquire("job", ttl=30, timeout=5)
        # Failed closed at once, within the replica timeout (Redis's WAIT
        # timer ticks every 100 ms), not retried for the 5 s wait.
        assert time.monotonic() - started < 0.2 + 0.5
        sem = locks.semaphore("pool", limit=1, ttl=30)
        with pytest.raises(NotReplicated, match="permit"):
            await sem.acquire(timeout=1)
        await locks.aclose()  # the background give-backs have run
        assert not await locks.is_locked("job")
        assert await sem.count() == 0
        assert locks.stats().errors == 1 and sem.stats().errors == 1
    finally:
        servers.replica.resume()
        await locks.aclose()


async def test_an_unacknowledged_renewal_ends_in_lost(servers: Servers) -> None:
    # A replica_timeout a loaded machine's replica meets when it runs.
    locks = DistributedLock(servers.client, replicas=1, replica_timeout=0.3)
    try:
        lease = await locks.acquire("job", ttl=2.0)
        servers.replica.pause()
        with pytest.raises(NotReplicated, match="extended lock 'job'"):
            await lease.extend(30)
        # The explicit extension did not move the validity the holder trusts.
        assert lease.remaining < 2.0
        started = time.monotonic()
        await asyncio.wait_for(lease.lost.wait(), timeout=3)
        # The renewals kept failing; the holder stops trusting the lease
        # when its last acknowledged validity runs out.
        # (Within the ttl, plus slack for a loaded machine's event loop.)
        assert time.monotonic() - started < 2.0 + 0.5
        assert "replicas did not acknowledge" in (lease.lost_reason or ""), lease.lost_reason
    finally:
        servers.replica.resume()
        await locks.aclose()


async def test_settings_are_checked(servers: Servers) -> None:
    with pytest.raises(ConfigError, match="replicas must be an int"):
        DistributedLock(servers.client, replicas=-1)
    with pytest.raises(ConfigError, match="replica_timeout"):
        DistributedLock(servers.client, replicas=1, replica_timeout=0)
    with pytest.raises(ConfigError, match="read timeout"):
        DistributedLock(servers.client, replicas=1, replica_timeout=10)
