"""A cluster client from connect() never sends a command again after it timed
out: the command was written and may have run, so INCR or a script would run
twice. A connection that failed is still retried."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio.cluster as redis_cluster_module
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

import redkit
from redkit.scripts import Script
from redkit.server import EmbeddedCluster
from redkit.testing import flush, settings_for

pytestmark = pytest.mark.cluster

# Spins for ARGV[1] microseconds of server time, the node answering nobody
# meanwhile; returns the value KEYS[1] had when it started.
BUSY = """
local start = redis.call('TIME')
local before = redis.call('GET', KEYS[1])
while true do
  local now = redis.call('TIME')
  if (now[1] - start[1]) * 1000000 + (now[2] - start[2]) >= tonumber(ARGV[1]) then
    return before
  end
end
"""
BUSY_SECONDS = 1.5
READ_TIMEOUT = 0.5

INCR_SCRIPT = Script("test:incr", "return redis.call('INCR', KEYS[1])")


@pytest_asyncio.fixture
async def client(redis_cluster: EmbeddedCluster) -> AsyncIterator[RedisCluster]:
    conn = await redkit.connect(
        settings_for(
            redis_cluster, read_timeout=READ_TIMEOUT, write_timeout=READ_TIMEOUT, max_retries=3
        )
    )
    assert isinstance(conn, RedisCluster)
    await flush(conn)
    yield conn
    await conn.aclose()


MakeBusy = Callable[[RedisCluster, str], Awaitable["asyncio.Task[Any]"]]


@pytest_asyncio.fixture
async def make_busy() -> AsyncIterator[MakeBusy]:
    """``await make_busy(client, key)`` runs BUSY on ``key``'s node from
    another connection and returns once the node has stopped answering
    (bounded). Every busy script has ended when the test is over, so a failed
    test leaves no node busy for the next."""
    started: list[asyncio.Task[Any]] = []

    async def make(client: RedisCluster, key: str) -> asyncio.Task[Any]:
        node = client.get_node_from_key(key)
        other = Redis(host=node.host, port=node.port)
        busy = asyncio.create_task(other.eval(BUSY, 1, key, int(BUSY_SECONDS * 1e6)))
        busy.add_done_callback(lambda _: asyncio.ensure_future(other.aclose()))
        started.append(busy)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            probe = Redis(host=node.host, port=node.port)
            try:
                await asyncio.wait_for(probe.ping(), 0.05)
            except asyncio.TimeoutError:
                return busy  # the script holds the node
            finally:
                await probe.aclose()
            assert not busy.done(), busy
        raise AssertionError("the busy script never started")

    yield make
    await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), BUSY_SECONDS + 5)


async def _settled_value(client: RedisCluster, key: str, busy: asyncio.Task[Any]) -> int:
    """The counter once the busy script is over and whatever was queued
    behind it has run."""
    await asyncio.wait_for(busy, BUSY_SECONDS + 5)
    deadline = time.monotonic() + 3
    while (value := await client.get(key)) is None:
        assert time.monotonic() < deadline, "the timed-out command never ran"
        await asyncio.sleep(0.01)
    return int(value)


async def test_timed_out_incr_is_not_sent_again(client: RedisCluster, make_busy: MakeBusy) -> None:
    busy = await make_busy(client, "count")
    started = time.monotonic()
    with pytest.raises(RedisTimeoutError):
        await client.incr("count")
    assert time.monotonic() - started < BUSY_SECONDS
    assert await busy is None  # the INCR was queued behind the script
    assert await _settled_value(client, "count", busy) == 1


async def test_timed_out_evalsha_is_not_sent_again(
    client: RedisCluster, make_busy: MakeBusy
) -> None:
    # The first run caches the script on the node: the timed run is EVALSHA.
    assert await INCR_SCRIPT(client, ["{s}count"]) == 1
    busy = await make_busy(client, "{s}count")
    with pytest.raises(RedisTimeoutError):
        await INCR_SCRIPT(client, ["{s}count"])
    assert await busy == b"1"
    assert await _settled_value(client, "{s}count", busy) == 2


# redis-py runs cluster transactions since 6.2; before, it refuses them.
KINDS = [False, True] if hasattr(redis_cluster_module, "TransactionStrategy") else [False]


@pytest.mark.parametrize("transaction", KINDS, ids=["pipeline", "transaction"][: len(KINDS)])
async def test_timed_out_pipeline_is_not_sent_again(
    client: RedisCluster, make_busy: MakeBusy, transaction: bool
) -> None:
    # A pooled connection to the node, open before it stops answering, for
    # the pipeline to be written on (pipelines take pooled connections).
    warm = client.pipeline(transaction=transaction)
    warm.get("{p}count")
    assert await warm.execute() == [None]
    busy = await make_busy(client, "{p}count")
    pipe = client.pipeline(transaction=transaction)
    pipe.incr("{p}count")
    pipe.incr("{p}count")
    with pytest.raises(RedisTimeoutError):
        await pipe.execute()
    assert await busy is None
    assert await _settled_value(client, "{p}count", busy) == 2


async def test_pipeline_over_two_nodes_stops_at_a_timeout(
    client: RedisCluster, make_busy: MakeBusy
) -> None:
    # The first command's node drops its connection (a retryable error, and
    # the one redis-py raises, being first), the second's node is busy and
    # times out: the batch must not go out again.
    dropped, slow = "{a}count", "{b}count"
    dropped_node, slow_node = client.get_node_from_key(dropped), client.get_node_from_key(slow)
    assert dropped_node.name != slow_node.name
    await client.set(dropped, 0)  # a pooled connection to kill
    admin = Redis(host=dropped_node.host, port=dropped_node.port)
    try:
        await admin.client_kill_filter(_type="normal", skipme=True)
    finally:
        await admin.aclose()
    busy = await make_busy(client, slow)
    pipe = client.pipeline(transaction=False)
    pipe.incr(dropped)
    pipe.incr(slow)
    with pytest.raises((RedisConnectionError, RedisTimeoutError)):
        await pipe.execute()
    assert await busy is None
    assert await _settled_value(client, slow, busy) == 1


async def test_a_killed_connection_is_still_retried(client: RedisCluster) -> None:
    # Each node's pooled connection is closed by the server; the next command
    # fails before the server read it, and goes out again on a new connection.
    assert await client.incr("again") == 1
    node = client.get_node_from_key("again")
    admin = Redis(host=node.host, port=node.port)
    try:
        await admin.client_kill_filter(_type="normal", skipme=True)
    finally:
        await admin.aclose()
    assert await client.incr("again") == 2
