"""HTTP load on the reference service over loopback.

``python -m bench.http_demo [--requests N] [--concurrency C]`` starts an
embedded Redis and the demo app in a separate process per scenario, then
sends a bounded number of requests (and stops after 60 s whatever happens)
from this process with httpx, and prints requests/s and latency p50/p99:

- ``GET /users/{id}`` uncached: each request a different, never-read id;
- ``GET /users/{id}`` cached: the same ids again (local tier, then Redis);
- the cached read with and without the session and rate-limit middleware.

The server and the load share this machine's cores, so read ratios between
scenarios of one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from redkit.demo.repository import UserRepository
from redkit.server import EmbeddedRedis, free_port

SERVE = """
import sys
from redkit import RedisSettings
from redkit.demo.app import DemoConfig, DemoServer, create_app
import uvicorn
port, redis_port, db = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
config = DemoConfig(
    redis=RedisSettings(host="127.0.0.1", port=redis_port), db_path=db, instance="bench",
    middleware=sys.argv[4] == "1", api_rate="1000000/minute",
)
DemoServer(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="error")).run()
"""


async def _seed(db: str, users: int) -> None:
    repo = UserRepository(db)
    await repo.init()
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO users (username, name, email, password_hash, created_at) "
            "VALUES (?, ?, ?, 'x', '2026-01-01T00:00:00+00:00')",
            [(f"user{i}", f"User {i}", f"user{i}@example.com") for i in range(users)],
        )


async def _load(url: str, paths: list[str], concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = list(reversed(paths))
    deadline = time.monotonic() + 60
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:

        async def worker() -> None:
            while queue and time.monotonic() < deadline:
                path = queue.pop()
                started = time.perf_counter()
                response = await client.get(path)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies


def _serve(port: int, redis_port: int, db: str, middleware: bool) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(port), str(redis_port), db, "1" if middleware else "0"],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the demo did not start")


def _row(name: str, rate: float, latencies: list[float], base: float | None) -> str:
    qs = statistics.quantiles(latencies, n=100)
    ratio = f"{rate / base:.2f}x" if base else "1.00x"
    return f"{name:<44} {rate:>8.0f} {ratio:>6} {qs[49] * 1000:>8.2f} {qs[98] * 1000:>8.2f}"


async def main(requests: int, concurrency: int) -> None:
    ids = list(range(10, 10 + requests))
    paths = [f"/users/{i}" for i in ids]
    with EmbeddedRedis() as redis, tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        await _seed(db, requests + 20)
        rows = []
        for middleware in (True, False):
            await asyncio.to_thread(_flush, redis)
            port = free_port()
            proc = _serve(port, redis.port, db, middleware)
            try:
                url = f"http://127.0.0.1:{port}"
                label = "with" if middleware else "without"
                if middleware:
                    rate, lat = await _load(url, paths, concurrency)
                    rows.append(("GET /users/{id} uncached (with middleware)", rate, lat))
                await _load(url, paths, concurrency)  # make sure every id is cached
                rate, lat = await _load(url, paths, concurrency)
                rows.append((f"GET /users/{{id}} cached ({label} middleware)", rate, lat))
            finally:
                proc.terminate()
                proc.wait(10)
    base = rows[1][1]
    print(f"requests per scenario: {requests}, concurrency {concurrency}")
    print(f"{'scenario':<44} {'req/s':>8} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for name, rate, lat in rows:
        print(_row(name, rate, lat, base))


def _flush(redis: EmbeddedRedis) -> None:
    from redis import Redis

    Redis(host=redis.host, port=redis.port).flushall()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.http_demo")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency))
