"""connect() through a real Sentinel monitoring a real master."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import redkit
from redkit import ConnectionUnavailable, RedisSettings
from redkit.server import EmbeddedRedis, _answers, find_redis_server, free_port


@pytest.fixture
def sentinel(fresh_server: EmbeddedRedis, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {fresh_server.port} 1\n"
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
