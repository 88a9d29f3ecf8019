"""Helpers of the auto-pipelining tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis, RedisCluster

from redkit._autopipeline import ClientStats, PipelinedRedis
from redkit._cluster_pipelining import PipelinedRedisCluster
from redkit.connection import Client

# Spins for ARGV[1] milliseconds of server time and returns ARGV[2]: the
# server answers nobody meanwhile, so every command written after it on
# any connection is still unanswered when it ends.
BUSY = """
local start = redis.call('TIME')
while true do
  local now = redis.call('TIME')
  if (now[1] - start[1]) * 1000 + (now[2] - start[2]) / 1000 >= tonumber(ARGV[1]) then
    return ARGV[2]
  end
end
"""


async def eventually(
    check: Callable[[], Awaitable[object]] | Callable[[], object],
    what: str,
    timeout: float = 10.0,
) -> None:
    """Poll ``check`` (sync or async) until it is truthy; fail after
    ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout:g}s: {what}")
        await asyncio.sleep(0.005)


def pipelined(client: Client) -> PipelinedRedis | PipelinedRedisCluster:
    """``client``, checked to be one of the auto-pipelining classes."""
    assert isinstance(client, (PipelinedRedis, PipelinedRedisCluster)), type(client)
    return client


def stats(client: Client) -> ClientStats:
    return pipelined(client).stats()


def delta(before: ClientStats, after: ClientStats) -> dict[str, int]:
    """How much each counter grew between two snapshots."""
    return {
        name: getattr(after, name) - getattr(before, name)
        for name in ("commands", "batches", "dedicated", "dropped", "reconnects")
    }


def address_of(client: Client, key: str) -> tuple[str, int]:
    """Where the server that holds ``key`` listens."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)
        return node.host, int(node.port)
    kwargs = client.connection_pool.connection_kwargs
    return kwargs["host"], int(kwargs["port"])


def plain_to(client: Client, key: str) -> Redis:
    """A plain redis-py client of the server (the node) that holds ``key``."""
    host, port = address_of(client, key)
    return Redis(host=host, port=port)


async def blocked_clients(host: str, port: int) -> int:
    return int((await _clients_info(host, port))["blocked_clients"])


async def _clients_info(host: str, port: int) -> dict[str, Any]:
    probe = Redis(host=host, port=port)
    try:
        info: dict[str, Any] = await probe.info("clients")
        return info
    finally:
        await probe.aclose()


def shared_connections(client: Client) -> list[Any]:
    """Every SharedConnection the client has opened so far (internal)."""
    if isinstance(client, PipelinedRedisCluster):
        groups = list(client._nodes.by_address.values())
    else:
        assert isinstance(client, PipelinedRedis)
        groups = [client._shared] if client._shared is not None else []
    return [connection for group in groups for connection in group._connections]


def unwritten(client: Client) -> int:
    """Commands handed to a shared connection and not written yet."""
    return sum(len(connection._queued) for connection in shared_connections(client))


async def connected_clients(host: str, port: int) -> int:
    """The server's connected clients, the probe asking among them."""
    return int((await _clients_info(host, port))["connected_clients"])
