"""Every hot path at 1, 8, 64 and 256 concurrent tasks sharing one client,
on three clients side by side in the same run:

- redis-py's own asyncio client on its default pool (cap raised so that 256
  tasks do not fail), the baseline;
- redkit's client with ``autopipeline=False`` (its pooled redis-py client);
- redkit's client with ``autopipeline=True``, :func:`redkit.connect`'s
  default, which coalesces the commands of concurrent tasks.

Each group is one task count. Every row's ratio is against the raw GET +
decode on redis-py at that count; the ``vs`` column of an auto-pipelined row
is its ratio to the same operation with auto-pipelining off."""

from __future__ import annotations

import itertools
from typing import cast

import msgspec
from redis.asyncio import Redis

from bench.harness import USER, Case, Env, Op, pipeline_stats

TASKS = (1, 8, 64, 256)
KEY = "bench:conc:value"
RAW, OFF, ON = "redis-py pool", "redkit, autopipeline off", "redkit, autopipeline on"


async def _ops(env: Env, client: Redis, prefix: str) -> dict[str, Op]:
    """The measured operations, in table order, each on ``client`` and
    components of its own (their own prefix, so no two clients share keys
    beyond the GET's)."""
    parts = await env.components(client, prefix)
    cache, store, session, limiter = parts.cache, parts.store, parts.session, parts.limiter
    publisher, locks = parts.publisher, parts.locks
    decode = msgspec.json.decode
    names = itertools.count()

    async def get() -> object:
        # the key is set before the run: a bytes value, never None
        return decode(cast(bytes, await client.get(KEY)))

    async def lock_cycle() -> None:
        # Consecutive names: the copies of one step never contend.
        release = await locks.lock(f"job-{next(names) % 4096}", ttl=10)
        await release()

    return {
        "GET+decode": get,
        "cache.get hit": lambda: cache.get("user:42"),
        "SessionStore.get": lambda: store.get(session.id),
        "RateLimiter.hit": lambda: limiter.hit("ip:10.0.0.1", "100000000/second"),
        "lock()+release()": lock_cycle,
        "Publisher.publish": lambda: publisher.publish("bench:conc", "bench.ping", USER),
    }


def _describe(raw: Redis, off: Redis, on: Redis) -> list[str]:
    # What the three clients were, read after the run: the pool caps (a wait
    # for a free connection is part of what the pooled rows measure), and
    # whether the auto-pipelining client was really there.
    stats = pipeline_stats(on)
    lines = [
        "ratio: against GET+decode [redis-py pool] at the same task count; "
        "vs: autopipeline on against off, same operation",
        f"{RAW}: redis-py ConnectionPool, max_connections={raw.connection_pool.max_connections}",
        f"{OFF}: {type(off).__name__}, pool of {off.connection_pool.max_connections} "
        "(RedisSettings.pool_size)",
    ]
    if stats is None:
        lines.append(
            f"{ON}: {type(on).__name__} has no stats(): not the auto-pipelining client, "
            "so its rows are the pooled client again (round trips counted as for the pool)"
        )
    else:
        per_write = getattr(stats, "commands_per_write", None)
        shown = "n/a" if per_write is None else f"{per_write:.2f}"
        lines.append(
            f"{ON}: {type(on).__name__}; RT/op = shared writes per op; "
            f"stats() over the whole run: {stats!r}, commands_per_write {shown}"
        )
    return lines


async def cases(env: Env) -> list[Case]:
    raw = env.raw_client(max_connections=1024)
    off = await env.redkit_client(autopipeline=False)
    on = await env.redkit_client(autopipeline=True)
    await raw.set(KEY, msgspec.json.encode(USER))
    clients: dict[str, Redis] = {RAW: raw, OFF: off, ON: on}
    ops = {
        label: await _ops(env, client, f"bench-conc-{i}")
        for i, (label, client) in enumerate(clients.items())
    }
    env.footers.append(lambda: _describe(raw, off, on))
    # The auto-pipelined client's sockets are its own, not counted ones; its
    # stats() tell the writes instead.
    pipelined = pipeline_stats(on) is not None
    out: list[Case] = []
    for n in TASKS:
        group = f"{n} tasks"
        for op_name in ops[RAW]:
            for label in clients:
                out.append(
                    Case(
                        group,
                        f"{op_name} [{label}]",
                        ops[label][op_name],
                        baseline=(label == RAW and op_name == "GET+decode"),
                        concurrency=n,
                        versus=f"{op_name} [{OFF}]" if label == ON else "",
                        counted=not (label == ON and pipelined),
                        autopipelined=on if label == ON and pipelined else None,
                    )
                )
    return out
