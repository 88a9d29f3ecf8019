"""Side-by-side benchmark harness.

Each ``bench/bench_*.py`` module defines ``async def cases(env: Env) ->
list[Case]``. The runner starts one embedded Redis, builds every case, then
runs them interleaved (round 1 of every case, round 2 of every case, ...) so
that machine drift hits all of them alike, and reports per case the median
ops/s, the ratio to its group's baseline, client round trips per operation
(packets written by the counted client) and server commands per operation
(``INFO commandstats`` deltas, which count commands run inside Lua too).
An auto-pipelined client writes on sockets of its own, not counted ones: for
it the round trips are the shared writes its ``stats()`` counts, and the
table adds how many commands each of those writes carried.
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
    # the name of a case of the same group this one is also compared with
    # (the "vs" column), e.g. autopipelining on against off
    versus: str = ""
    # the auto-pipelined client the op runs on, whose stats() the probe reads
    autopipelined: Any = None


@dataclasses.dataclass
class Env:
    url: str
    host: str
    port: int
    closers: list[Callable[[], Awaitable[Any]]] = dataclasses.field(default_factory=list)
    # lines printed under the table, read once every case has run
    footers: list[Callable[[], list[str]]] = dataclasses.field(default_factory=list)

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

    async def redkit_client(self, *, autopipeline: bool = False) -> Redis:
        """A client as :func:`redkit.connect` builds it (same pool, retry and
        timeouts). Auto-pipelining is off unless asked for, so that the
        benchmarks which compare round trips per command keep counting them:
        a pooled client's connections are counted from its first command on;
        an auto-pipelined one (it has ``stats()``) keeps its own sockets."""
        from redkit import RedisSettings
        from redkit.connection import build_client

        settings = RedisSettings(
            host=self.host, port=self.port, min_idle_conns=0, autopipeline=autopipeline
        )
        client = build_client(settings)
        assert isinstance(client, Redis)
        if pipeline_stats(client) is None:
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


def pipeline_stats(client: Any) -> Any | None:
    """``client.stats()`` of an auto-pipelined client; None for any other
    (redis-py's, or redkit's before the auto-pipelining client exists)."""
    stats = getattr(client, "stats", None)
    return stats() if callable(stats) else None


def _pipeline_counts(client: Any) -> tuple[int, int, int] | None:
    # commands, batches (shared writes) and dedicated commands so far; None
    # where stats() lacks any of them, so a change of shape shows as n/a.
    stats = pipeline_stats(client)
    counts = tuple(getattr(stats, name, None) for name in ("commands", "batches", "dedicated"))
    if not all(isinstance(n, int) for n in counts):
        return None
    return counts  # type: ignore[return-value]


@dataclasses.dataclass
class Result:
    case: Case
    rates: list[float]
    sends_per_op: float | None
    cmds_per_op: float
    # an auto-pipelined case's shared writes and dedicated commands per op,
    # and commands per shared write (None: not auto-pipelined, or no writes)
    cmds_per_write: float | None = None
    dedicated_per_op: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


async def _commandstats(admin: Redis) -> dict[str, int]:
    info = await admin.info("commandstats")
    return {k: int(v["calls"]) for k, v in info.items() if isinstance(v, dict)}


def _delta(before: dict[str, int], after: dict[str, int]) -> int:
    ignored = {"cmdstat_info"}
    return sum(after[k] - before.get(k, 0) for k in after if k not in ignored)


async def _drive(case: Case, iterations: int) -> int:
    # The op as it is measured: in steps of ``concurrency`` copies at once.
    # Returns how many ops ran.
    if case.concurrency == 1:
        for _ in range(iterations):
            await case.op()
        return iterations
    steps = max(1, iterations // case.concurrency)
    for _ in range(steps):
        await asyncio.gather(*(case.op() for _ in range(case.concurrency)))
    return steps * case.concurrency


async def _run_once(case: Case, iterations: int) -> float:
    started = time.perf_counter()
    ops = await _drive(case, iterations)
    return ops / (time.perf_counter() - started)


async def _probe(case: Case, admin: Redis, ops: int = 200) -> Result:
    """Round trips and commands per op, at the case's own concurrency: an
    auto-pipelined client coalesces only commands that are in flight at
    once, so a sequential probe would hide what it saves."""
    before = await _commandstats(admin)
    counts = _pipeline_counts(case.autopipelined)
    CountingConnection.sends = 0
    ran = await _drive(case, ops)
    result = Result(case, [], None, _delta(before, await _commandstats(admin)) / ran)
    if case.counted:
        result.sends_per_op = CountingConnection.sends / ran
    after = _pipeline_counts(case.autopipelined)
    if counts is not None and after is not None:
        commands, batches, dedicated = (b - a for a, b in zip(counts, after, strict=True))
        result.sends_per_op = batches / ran
        result.cmds_per_write = commands / batches if batches else None
        result.dedicated_per_op = dedicated / ran
    return result


async def run_cases(
    cases: list[Case], admin: Redis, *, rounds: int = 5, iterations: int = 2000
) -> list[Result]:
    # Warm-up: script caches, local tiers, and connections: at the case's
    # concurrency, so that a pool grows here rather than in the first case
    # measured at a new task count (each new connection adds its handshake
    # commands and round trips to that case alone).
    for case in cases:
        await _drive(case, max(20, 2 * case.concurrency))
    results = []
    for round_no in range(rounds):
        for i, case in enumerate(cases):
            if round_no == 0:
                results.append(await _probe(case, admin))
            results[i].rates.append(await _run_once(case, iterations))
    return results


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}x" if base else "-"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def report(results: list[Result]) -> str:
    """The table: ``ratio`` against the group's baseline, ``vs`` against the
    case named in ``versus``; ``RT/op`` is packets written per op, or for an
    auto-pipelined case shared writes per op; ``cmd/wr`` is commands per
    shared write (auto-pipelined cases only)."""
    baselines = {r.case.group: r.median for r in results if r.case.baseline}
    medians = {(r.case.group, r.case.name): r.median for r in results}
    width = max([40, *(len(r.case.name) for r in results)])
    lines = [
        f"{'group':<12} {'case':<{width}} {'ops/s':>9} {'ratio':>6} {'vs':>6} "
        f"{'RT/op':>6} {'cmd/op':>6} {'cmd/wr':>6}  note",
        "-" * (width + 72),
    ]
    for r in results:
        versus = medians.get((r.case.group, r.case.versus))
        note = r.case.note
        if r.dedicated_per_op:
            note = f"{note}; " if note else ""
            note += f"dedicated {r.dedicated_per_op:.2f}/op"
        lines.append(
            f"{r.case.group:<12} {r.case.name:<{width}} {r.median:>9.0f} "
            f"{_ratio(r.median, baselines.get(r.case.group)):>6} {_ratio(r.median, versus):>6} "
            f"{_number(r.sends_per_op):>6} {r.cmds_per_op:>6.2f} "
            f"{_number(r.cmds_per_write):>6}  {note}"
        )
    return "\n".join(lines)
