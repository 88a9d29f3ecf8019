from __future__ import annotations

import subprocess
import time

import redkit
from redkit import HealthStatus
from redkit.connection import Client
from redkit.server import EmbeddedRedis, find_redis_server, server_version
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


def _expected_server() -> tuple[str, str]:
    """Name and version of the binary every test server runs, from its banner."""
    binary = find_redis_server()
    banner = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    name = "valkey" if banner.startswith("Valkey") else "redis"
    return name, ".".join(str(n) for n in server_version(binary))


async def test_health_says_which_server_answers(client: Client) -> None:
    name, version = _expected_server()
    status = await redkit.health(client)
    assert status.server_name == name
    # Valkey reports redis_version 7.2.4 for old clients; its own number is the one shown.
    assert status.server_version == version


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
