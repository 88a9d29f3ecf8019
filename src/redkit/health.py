"""health(): is Redis answering, how fast, and what kind of server is it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Literal

from redis.asyncio import RedisCluster

from ._failures import describe_error
from .connection import Client

__all__ = ["HealthStatus", "health"]


@dataclasses.dataclass(frozen=True)
class HealthStatus:
    """What :func:`health` found. ``status`` is ``"healthy"`` when PING and
    INFO answered in time; otherwise ``"unhealthy"`` with ``error`` saying
    why and the server fields ``None``. On a cluster the fields describe the
    node that answered INFO and ``role`` is ``"cluster"``. ``server_name`` is
    ``"redis"`` or ``"valkey"``: their version numbers overlap (Valkey 8.1 and
    Redis 8.0 both exist), so ``server_version`` alone does not say which."""

    status: Literal["healthy", "unhealthy"]
    latency_ms: float | None = None
    server_version: str | None = None
    role: str | None = None
    used_memory: int | None = None
    maxmemory: int | None = None
    maxmemory_policy: str | None = None
    error: str | None = None
    server_name: str | None = None

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


async def health(client: Client, *, timeout: float = 2.0) -> HealthStatus:
    """PING and INFO with a deadline of ``timeout`` seconds for both. Never
    raises for an unreachable, paused or failing server: it returns an
    unhealthy status with the reason."""
    try:
        info = await asyncio.wait_for(_probe(client), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        return HealthStatus("unhealthy", error=f"no answer within {timeout:g}s")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return HealthStatus("unhealthy", error=describe_error(exc))
    latency_ms, fields = info
    role = "cluster" if isinstance(client, RedisCluster) else str(fields.get("role", "unknown"))
    return HealthStatus(
        "healthy",
        latency_ms=round(latency_ms, 3),
        server_version=_server_version(fields),
        role=role,
        used_memory=_int(fields.get("used_memory")),
        maxmemory=_int(fields.get("maxmemory")),
        maxmemory_policy=_str(fields.get("maxmemory_policy")),
        server_name=_server_name(fields),
    )


async def _probe(client: Client) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    if isinstance(client, RedisCluster):
        await client.ping(target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.ping()
    latency_ms = (time.perf_counter() - started) * 1000
    if isinstance(client, RedisCluster):
        raw = await client.info(target_nodes=RedisCluster.RANDOM)
    else:
        raw = await client.info()
    fields: dict[str, Any] = raw if isinstance(raw, dict) else {}
    # A cluster client may answer with {node_name: info}.
    if fields and all(isinstance(v, dict) for v in fields.values()):
        fields = next(iter(fields.values()))
    return latency_ms, fields


def _server_version(fields: dict[str, Any]) -> str | None:
    version = fields.get("valkey_version") or fields.get("redis_version")
    return str(version) if version is not None else None


def _server_name(fields: dict[str, Any]) -> str | None:
    # Valkey names itself in INFO; Redis (through 7.x at least) has no such
    # field, so a redis_version alone means Redis.
    name = fields.get("server_name")
    if name is not None:
        return str(name)
    return "redis" if "redis_version" in fields else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
