"""Side-by-side benchmark harness.

Each ``bench/bench_*.py`` module defines ``async def cases(env: Env) ->
list[Case]``. The runner starts one embedded Redis, builds every case, then
runs them interleaved (round 1 of every case, round 2 of every case, ...) so
that machine drift hits all of them alike, and reports per case the median
ops/s, the ratio to its group's baseline, client round trips per operation
(packets written by the counted client) and server commands per operation
(``INFO commandstats`` deltas, which count commands run inside Lua too).
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection

if TYPE_CHECKING:
    from redkit import Cache, DistributedLock, Publisher, RateLimiter, Session, SessionStore

Op = Callable[[], Awaitable[Any]]


class CountingConnection(Connection):
    """A redis-py connection that counts the packets it writes: one per
    command, one per pipeline. Only the benchmark uses it, to report round
    trips; the commands themselves are untouched."""

    sends = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        await super().send_packed_command(command, check_health)


@dataclasses.dataclass
class Case:
    """One measured operation. ``group`` cases are compared with the group's
    case whose ``baseline`` is true. ``concurrency`` runs that many copies of
    ``op`` at once per step; ops/s then counts every copy."""

    group: str
    name: str
    op: Op
    baseline: bool = False
    concurrency: int = 1
    note: str = ""
    counted: bool = True


@dataclasses.dataclass
class Env:
    url: str
    host: str
    port: int
    closers: list[Callable[[], Awaitable[Any]]] = dataclasses.field(default_factory=list)

    def raw_client(self, *, counted: bool = True, **kwargs: Any) -> Redis:
        """A plain redis-py client on the bench server (counted connections)."""
        pool = ConnectionPool(
            host=self.host,
            port=self.port,
            connection_class=CountingConnection if counted else Connection,
            **kwargs,
        )
        client = Redis(connection_pool=pool)
        self.closers.append(client.aclose)
        return client

    async def redkit_client(self) -> Redis:
        """A client as :func:`redkit.connect` builds it (same pool, retry and
        timeouts), with counted connections from its first command on."""
        from redkit import RedisSettings
        from redkit.connection import build_client

        client = build_client(RedisSettings(host=self.host, port=self.port, min_idle_conns=0))
        assert isinstance(client, Redis)
        client.connection_pool.connection_class = CountingConnection
        await client.ping()
        self.closers.append(client.aclose)
        return client

    async def components(self, client: Redis, prefix: str, value: Any = None) -> Components:
        """One of each component on ``client``, closed with the run; the
        cache holds ``user:42`` (``value``, :data:`USER` by default) and a
        session exists, for hit benchmarks."""
        from redkit import Cache, DistributedLock, Publisher, RateLimiter, SessionStore

        cache = Cache(client, prefix=prefix, default_ttl=3600)
        self.closers.append(cache.aclose)
        await cache.set("user:42", USER if value is None else value)
        store = SessionStore(client, secret="bench-store-secret-0123456789", prefix=prefix)
        session = await store.create("42", {"theme": "dark"})
        locks = DistributedLock(client, prefix=prefix)
        self.closers.append(locks.aclose)
        limiter = RateLimiter(client, prefix=prefix)
        publisher = Publisher(client, source="bench")
        return Components(cache, store, session, limiter, publisher, locks)


# the cached value of the hit benchmarks
USER = {"id": 42, "name": "Ada Lovelace", "email": "ada@example.com", "roles": ["admin"]}


@dataclasses.dataclass
class Components:
    cache: Cache
    store: SessionStore
    session: Session
    limiter: RateLimiter
    publisher: Publisher
    locks: DistributedLock


@dataclasses.dataclass
class Result:
    case: Case
    rates: list[float]
    sends_per_op: float
    cmds_per_op: float

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


async def _commandstats(admin: Redis) -> dict[str, int]:
    info = await admin.info("commandstats")
    return {k: int(v["calls"]) for k, v in info.items() if isinstance(v, dict)}


def _delta(before: dict[str, int], after: dict[str, int]) -> int:
    ignored = {"cmdstat_info"}
    return sum(after[k] - before.get(k, 0) for k in after if k not in ignored)


async def _run_once(case: Case, iterations: int) -> float:
    started = time.perf_counter()
    if case.concurrency == 1:
        for _ in range(iterations):
            await case.op()
        ops = iterations
    else:
        steps = max(1, iterations // case.concurrency)
        for _ in range(steps):
            await asyncio.gather(*(case.op() for _ in range(case.concurrency)))
        ops = steps * case.concurrency
    return ops / (time.perf_counter() - started)


async def run_cases(
    cases: list[Case], admin: Redis, *, rounds: int = 5, iterations: int = 2000
) -> list[Result]:
    for case in cases:  # warm-up: connections, script caches, local tiers
        for _ in range(20):
            await case.op()
    rates: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    sends: dict[int, float] = {}
    cmds: dict[int, float] = {}
    for round_no in range(rounds):
        for i, case in enumerate(cases):
            if round_no == 0:
                probe = 200
                before = await _commandstats(admin)
                CountingConnection.sends = 0
                for _ in range(probe):
                    await case.op()
                sends[i] = CountingConnection.sends / probe
                cmds[i] = _delta(before, await _commandstats(admin)) / probe
            rates[i].append(await _run_once(case, iterations))
    return [Result(c, rates[i], sends[i], cmds[i]) for i, c in enumerate(cases)]


def report(results: list[Result]) -> str:
    baselines = {r.case.group: r.median for r in results if r.case.baseline}
    lines = [
        f"{'group':<12} {'case':<40} {'ops/s':>9} {'ratio':>6} {'RT/op':>6} {'cmd/op':>6}  note",
        "-" * 96,
    ]
    for r in results:
        base = baselines.get(r.case.group)
        ratio = f"{r.median / base:.2f}x" if base else "-"
        rt = f"{r.sends_per_op:.2f}" if r.case.counted else "n/a"
        lines.append(
            f"{r.case.group:<12} {r.case.name:<40} {r.median:>9.0f} {ratio:>6} "
            f"{rt:>6} {r.cmds_per_op:>6.2f}  {r.case.note}"
        )
    return "\n".join(lines)
