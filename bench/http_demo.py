"""HTTP load on the reference service over loopback.

``python -m bench.http_demo [--requests N] [--concurrency C] [--rounds R]
[--autopipeline on|off|both] [--loop asyncio|uvloop|both]`` starts an
embedded Redis and the demo app in a separate process per scenario (all of
them up for the whole run, each on a Redis database of its own), then sends
a bounded number of requests per round (and stops a round after 60 s
whatever happens) from this process, the scenarios taking turns in each
round, and prints requests/s and latency p50/p99:

- ``GET /users/{id}`` uncached: each request a different, never-read id;
- ``GET /users/{id}`` cached: the same ids again (local tier, then Redis);
- the cached read with and without the session and rate-limit middleware;
- each of them with the demo's Redis client auto-pipelined and not (both by
  default), and with uvicorn on asyncio's loop or uvloop's (asyncio by
  default; uvloop is in the ``bench`` extra). The loop is the server's
  only: the load is sent from asyncio's loop in every scenario, so that
  only the server changes.

The server and the load share this machine's cores, so read ratios between
scenarios of one run, not absolute numbers. ``vs off`` is an auto-pipelined
scenario's rate against the same scenario with auto-pipelining off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import itertools
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
port, redis_port, redis_db, db = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
middleware, autopipeline, loop = sys.argv[5] == "1", sys.argv[6] == "1", sys.argv[7]
config = DemoConfig(
    redis=RedisSettings(
        host="127.0.0.1", port=redis_port, db=redis_db, autopipeline=autopipeline
    ),
    db_path=db, instance="bench", middleware=middleware, api_rate="1000000/minute",
)
# The loop is named: uvicorn's "auto" would pick uvloop wherever it is installed.
app = create_app(config)
DemoServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", loop=loop)).run()
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


async def _get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, bytes]:
    # One keep-alive HTTP/1.1 GET: the status and the body (read by its
    # Content-Length, which every JSON response of the demo has).
    writer.write(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *fields = head[:-4].split(b"\r\n")
    length = None
    for field in fields:
        name, _, value = field.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise RuntimeError(f"{path}: a response without Content-Length: {head[:200]!r}")
    return int(status_line.split()[1]), await reader.readexactly(length)


async def _load(port: int, paths: list[str], concurrency: int) -> tuple[float, list[float]]:
    """The requests over ``concurrency`` keep-alive connections at once.

    Sent with asyncio's streams, not httpx: on this machine httpx's client
    tops out near 1,000 requests/s at 8 connections and falls to a few
    hundred at 64 against an app that only answers "ok", which this loop
    serves ten times faster, so httpx would measure itself. No cookies are
    kept: the demo's reads of /users/{id} neither need nor set a session."""
    latencies: list[float] = []
    queue = list(reversed(paths))
    deadline = time.monotonic() + 60

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue and time.monotonic() < deadline:
                path = queue.pop()
                started = time.perf_counter()
                status, body = await asyncio.wait_for(_get(reader, writer, path), 10)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    raise RuntimeError(f"{path}: {status} {body[:200]!r}")
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies


@dataclasses.dataclass(frozen=True)
class Server:
    """How one demo process is started."""

    loop: str
    autopipeline: bool
    middleware: bool

    @property
    def argv(self) -> list[str]:
        return ["1" if self.middleware else "0", "1" if self.autopipeline else "0", self.loop]

    @property
    def label(self) -> str:
        return (
            f"{'with' if self.middleware else 'without'} middleware, "
            f"autopipeline {'on' if self.autopipeline else 'off'}, {self.loop}"
        )


@dataclasses.dataclass
class Row:
    kind: str  # "uncached" or "cached"
    server: Server
    rates: list[float] = dataclasses.field(default_factory=list)
    latencies: list[float] = dataclasses.field(default_factory=list)

    def add(self, rate: float, latencies: list[float]) -> None:
        self.rates.append(rate)
        self.latencies += latencies

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def name(self) -> str:
        return f"GET /users/{{id}} {self.kind} ({self.server.label})"


def _serve(
    port: int, redis_port: int, redis_db: int, db: str, server: Server
) -> subprocess.Popen[bytes]:
    argv = [str(port), str(redis_port), str(redis_db), db, *server.argv]
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, *argv],
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


def _ratio(rate: float, base: float | None) -> str:
    return f"{rate / base:.2f}x" if base else "-"


def _report(rows: list[Row], width: int) -> list[str]:
    # ratio: against the first cached scenario; vs off: an auto-pipelined
    # scenario against the same one with auto-pipelining off.
    base = next(r.rate for r in rows if r.kind == "cached")
    rates = {(r.kind, r.server): r.rate for r in rows}
    lines = []
    for r in rows:
        qs = statistics.quantiles(r.latencies, n=100)
        off = dataclasses.replace(r.server, autopipeline=False)
        versus = rates.get((r.kind, off)) if r.server.autopipeline else None
        lines.append(
            f"{r.name:<{width}} {r.rate:>8.0f} {_ratio(r.rate, base):>6} "
            f"{_ratio(r.rate, versus):>6} {qs[49] * 1000:>8.2f} {qs[98] * 1000:>8.2f}"
        )
    return lines


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)


async def _measure(
    ports: dict[Server, int], paths: list[str], concurrency: int, rounds: int
) -> list[Row]:
    """Each server's first reads (a miss for every id, as each server has a
    Redis database of its own), then ``rounds`` rounds of cached reads in
    which every server takes its turn, so that the machine's drift during
    the run hits all of them alike."""
    rows: list[Row] = []
    cached: dict[Server, Row] = {}
    for server, port in ports.items():
        if server.middleware:
            rows.append(Row("uncached", server))
            rows[-1].add(*await _load(port, paths, concurrency))
        await _load(port, paths, concurrency)  # make sure every id is cached
        rows.append(cached.setdefault(server, Row("cached", server)))
    for _ in range(rounds):
        for server, port in ports.items():
            cached[server].add(*await _load(port, paths, concurrency))
    return rows


async def main(requests: int, concurrency: int, rounds: int, autopipeline: str, loop: str) -> None:
    ids = list(range(10, 10 + requests))
    paths = [f"/users/{i}" for i in ids]
    loops = ["asyncio", "uvloop"] if loop == "both" else [loop]
    if "uvloop" in loops and importlib.util.find_spec("uvloop") is None:
        raise SystemExit("uvloop is not installed: pip install -e '.[bench]' (or uvloop)")
    pipelining = {"on": [True], "off": [False], "both": [False, True]}[autopipeline]
    servers = [
        Server(lp, ap, mw) for lp, ap, mw in itertools.product(loops, pipelining, (True, False))
    ]
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(EmbeddedRedis())
        db = str(Path(stack.enter_context(tempfile.TemporaryDirectory())) / "bench.db")
        await _seed(db, requests + 20)
        # Every server runs for the whole run (idle between its turns), each
        # on a Redis database of its own: at most 8 of Redis's 16.
        ports: dict[Server, int] = {}
        for number, server in enumerate(servers):
            ports[server] = free_port()
            stack.callback(_stop, _serve(ports[server], redis.port, number, db, server))
        rows = await _measure(ports, paths, concurrency, rounds)
    width = max(len(r.name) for r in rows)
    print(
        f"requests per scenario and round: {requests}, concurrency {concurrency}, "
        f"rounds {rounds} (uncached: 1); req/s is the median round, p50/p99 of all rounds"
    )
    print(
        f"{'scenario':<{width}} {'req/s':>8} {'ratio':>6} {'vs off':>6} {'p50 ms':>8} {'p99 ms':>8}"
    )
    for line in _report(rows, width):
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.http_demo")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--autopipeline", choices=("on", "off", "both"), default="both")
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="asyncio")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency, args.rounds, args.autopipeline, args.loop))
