from __future__ import annotations

import time

import redkit
from redkit import HealthStatus
from redkit.connection import Client
from redkit.server import EmbeddedRedis
from redkit.testing import settings_for


async def test_healthy_report(client: Client) -> None:
    status = await redkit.health(client)
    assert status.status == "healthy" and status.healthy
    assert status.error is None
    assert status.latency_ms is not None and status.latency_ms >= 0
    assert status.server_version and status.server_version[0].isdigit()
    assert status.role in ("master", "cluster")
    assert status.used_memory and status.used_memory > 0
    assert status.maxmemory_policy == "noeviction"


async def test_stopped_server_is_unhealthy_not_an_exception(fresh_server: EmbeddedRedis) -> None:
    client = await redkit.connect(settings_for(fresh_server, max_retries=0))
    fresh_server.stop()
    status = await redkit.health(client, timeout=2)
    assert status == HealthStatus("unhealthy", error=status.error)
    assert status.error
    await client.aclose()


async def test_paused_server_is_unhealthy_within_the_timeout(fresh_server: EmbeddedRedis) -> None:
    client = await redkit.connect(settings_for(fresh_server))
    with fresh_server.paused():
        started = time.monotonic()
        status = await redkit.health(client, timeout=0.5)
        elapsed = time.monotonic() - started
    assert status.status == "unhealthy"
    assert status.error == "no answer within 0.5s"
    assert elapsed < 2.0
    # The client recovers once the server answers again.
    assert (await redkit.health(client)).healthy
    await client.aclose()
