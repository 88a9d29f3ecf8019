"""Every hot path at 1, 8, 64 and 256 concurrent tasks sharing one client,
beside raw redis-py on its default pool (cap raised so 256 tasks do not
fail) in the same run. Each group is one task count; its baseline is the
raw GET + decode at that count."""

from __future__ import annotations

import itertools

import msgspec

from bench.harness import USER, Case, Env

TASKS = (1, 8, 64, 256)


async def cases(env: Env) -> list[Case]:
    raw = env.raw_client(max_connections=1024)
    client = await env.redkit_client()
    await raw.set("bench:conc:value", msgspec.json.encode(USER))
    decode = msgspec.json.decode

    parts = await env.components(client, "bench-conc")
    cache, store, session, limiter = parts.cache, parts.store, parts.session, parts.limiter
    publisher, locks = parts.publisher, parts.locks
    names = itertools.count()

    async def raw_get() -> object:
        return decode(await raw.get("bench:conc:value"))

    async def redkit_get() -> object:
        return decode(await client.get("bench:conc:value"))

    async def lock_cycle() -> None:
        # Consecutive names: the copies of one step never contend.
        release = await locks.lock(f"job-{next(names) % 4096}", ttl=10)
        await release()

    out: list[Case] = []
    for n in TASKS:
        group = f"{n} tasks"
        out += [
            Case(
                group, f"raw GET+decode (redis-py pool), {n}", raw_get, baseline=True, concurrency=n
            ),
            Case(group, f"GET+decode on the connect() client, {n}", redkit_get, concurrency=n),
            Case(group, f"cache.get hit, {n}", lambda: cache.get("user:42"), concurrency=n),
            Case(group, f"SessionStore.get, {n}", lambda: store.get(session.id), concurrency=n),
            Case(
                group,
                f"RateLimiter.hit, {n}",
                lambda: limiter.hit("ip:10.0.0.1", "100000000/second"),
                concurrency=n,
            ),
            Case(
                group,
                f"Publisher.publish, {n}",
                lambda: publisher.publish("bench:conc", "bench.ping", USER),
                concurrency=n,
            ),
            Case(group, f"lock()+release(), {n}", lock_cycle, concurrency=n),
        ]
    return out
