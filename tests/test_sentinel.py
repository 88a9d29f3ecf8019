"""connect() through a real Sentinel monitoring a real master."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

import redkit
from redkit import ConnectionUnavailable, RedisSettings
from redkit.server import EmbeddedRedis, _answers, find_redis_server, free_port


@contextlib.contextmanager
def _run_sentinel(master_port: int, directory: Path) -> Iterator[int]:
    """A Sentinel process monitoring ``mymaster`` at ``master_port``, quorum 1."""
    port = free_port()
    conf = directory / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
    )
    proc = subprocess.Popen(
        [find_redis_server(), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers("127.0.0.1", port):
            assert proc.poll() is None, "sentinel exited at start-up"
            assert time.monotonic() < deadline, "sentinel did not answer"
            time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.fixture
def sentinel(fresh_server: EmbeddedRedis, tmp_path: Path) -> Iterator[int]:
    with _run_sentinel(fresh_server.port, tmp_path) as port:
        yield port


def _through(sentinel: int, **overrides: Any) -> RedisSettings:
    settings = RedisSettings(
        sentinels=(("127.0.0.1", sentinel),),
        sentinel_master="mymaster",
        min_idle_conns=0,
        connect_timeout=5,
    )
    return settings.replace(**overrides)


async def _until(condition: Callable[[], Awaitable[bool]], what: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"{what} within {within:g}s"
        await asyncio.sleep(0.02)


async def test_connect_through_sentinel(fresh_server: EmbeddedRedis, sentinel: int) -> None:
    settings = RedisSettings(
        sentinels=(("127.0.0.1", sentinel),),
        sentinel_master="mymaster",
        min_idle_conns=1,
        connect_timeout=2,
    )
    client = await redkit.connect(settings)
    try:
        await client.set("through", "sentinel")
        direct = await redkit.connect(url=fresh_server.url, min_idle_conns=0)
        assert await direct.get("through") == b"sentinel"
        await direct.aclose()
    finally:
        await client.aclose()


async def test_unknown_master_name(sentinel: int) -> None:
    settings = RedisSettings(
        sentinels=(("127.0.0.1", sentinel),),
        sentinel_master="nosuchmaster",
        max_retries=0,
        connect_timeout=2,
    )
    with pytest.raises(ConnectionUnavailable, match=r"sentinel nosuchmaster@127\.0\.0\.1"):
        await redkit.connect(settings)


async def test_blocked_pool_makes_callers_wait(fresh_server: EmbeddedRedis, sentinel: int) -> None:
    # Twice as many BLPOPs as connections: the second ten wait for the
    # first ten to finish instead of failing with "Too many connections".
    client = await redkit.connect(_through(sentinel, pool_size=10))
    direct = Redis(host=fresh_server.host, port=fresh_server.port)
    try:
        pops = [asyncio.create_task(client.blpop([f"q{i}"], timeout=10)) for i in range(20)]

        async def ten_blocked() -> bool:
            return int((await direct.info("clients"))["blocked_clients"]) >= 10

        await _until(ten_blocked, "ten BLPOPs blocked")
        assert not any(task.done() for task in pops)
        for i in range(20):
            await direct.rpush(f"q{i}", i)
        results = await asyncio.wait_for(asyncio.gather(*pops), 10)
        assert sorted(int(value) for _, value in results) == list(range(20))
    finally:
        await direct.aclose()
        await client.aclose()


async def test_burst_of_gets_waits_for_connections(sentinel: int) -> None:
    client = await redkit.connect(_through(sentinel, pool_size=10))
    try:
        await client.set("shared", "v")
        values = await asyncio.gather(*(client.get("shared") for _ in range(200)))
        assert values == [b"v"] * 200
        pool = client.connection_pool
        assert len(pool._available_connections) <= 10  # type: ignore[attr-defined]
    finally:
        await client.aclose()


async def test_waiting_for_a_connection_is_bounded(
    fresh_server: EmbeddedRedis, sentinel: int
) -> None:
    # The pool alone: with autopipelining a GET takes no pooled connection.
    client = await redkit.connect(
        _through(sentinel, pool_size=1, connect_timeout=0.3, autopipeline=False)
    )
    direct = Redis(host=fresh_server.host, port=fresh_server.port)
    try:
        blocker = asyncio.create_task(client.blpop(["never"], timeout=3))

        async def one_blocked() -> bool:
            return int((await direct.info("clients"))["blocked_clients"]) >= 1

        await _until(one_blocked, "the BLPOP blocked")
        with pytest.raises(RedisConnectionError, match=r"no free connection within 0\.3s"):
            await client.get("k")
        blocker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocker
        assert await asyncio.wait_for(client.ping(), 3)  # the slot came back
    finally:
        await direct.aclose()
        await client.aclose()


async def test_client_follows_the_master_after_a_failover(
    server_factory: Callable[..., EmbeddedRedis], tmp_path: Path
) -> None:
    master = server_factory()
    replica = server_factory(extra_args=("--replicaof", master.host, str(master.port)))
    replica_client = Redis(host=replica.host, port=replica.port)
    try:

        async def replicating() -> bool:
            info = await replica_client.info("replication")
            return info.get("master_link_status") == "up"

        await _until(replicating, "the replica in sync")
        with _run_sentinel(master.port, tmp_path) as port:
            admin = Redis(host="127.0.0.1", port=port)
            client = await redkit.connect(_through(port, pool_size=2, max_retries=3))
            try:
                await client.set("before", "1")

                async def failover_started() -> bool:
                    # NOGOODSLAVE until Sentinel has heard from the replica.
                    try:
                        await admin.execute_command("SENTINEL FAILOVER", "mymaster")
                    except ResponseError as exc:
                        if "NOGOODSLAVE" not in str(exc):
                            raise
                        return False
                    return True

                await _until(failover_started, "Sentinel starting a failover", within=30)

                async def promoted() -> bool:
                    address = await admin.sentinel_get_master_addr_by_name("mymaster")
                    return int(address[1]) == replica.port

                await _until(promoted, "the replica promoted", within=30)
                # The old master would take writes until Sentinel demotes it
                # (up to 10 s); gone, the pooled connections fail over now.
                await asyncio.to_thread(master.stop)

                async def write_lands_on_new_master() -> bool:
                    try:
                        await client.set("after", "2")
                    except RedisConnectionError:
                        return False
                    return await replica_client.get("after") == b"2"

                await _until(write_lands_on_new_master, "a write on the new master", within=30)
                assert await client.get("before") == b"1"
            finally:
                await client.aclose()
                await admin.aclose()
    finally:
        await replica_client.aclose()
