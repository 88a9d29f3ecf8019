"""Every hot path at 1, 8, 64 and 256 concurrent tasks sharing one client,
beside raw redis-py on its default pool (cap raised so 256 tasks do not
fail) in the same run. Each group is one task count; its baseline is the
raw GET + decode at that count."""

from __future__ import annotations

import itertools

import msgspec

from bench.harness import Case, Env
from redkit import Cache, DistributedLock, Publisher, RateLimiter, SessionStore

TASKS = (1, 8, 64, 256)
VALUE = {"id": 42, "name": "Ada Lovelace", "email": "ada@example.com", "roles": ["admin"]}


async def cases(env: Env) -> list[Case]:
    raw = env.raw_client(max_connections=1024)
    client = await env.redkit_client()
    await raw.set("bench:conc:value", msgspec.json.encode(VALUE))
    decode = msgspec.json.decode

    cache = Cache(client, prefix="bench-conc", default_ttl=3600)
    await cache.set("user:42", VALUE)
    env.closers.append(cache.aclose)
    store = SessionStore(client, secret="bench-store-secret-0123456789", prefix="bench-conc")
    session = await store.create("42", {"theme": "dark"})
    limiter = RateLimiter(client, prefix="bench-conc")
    publisher = Publisher(client, source="bench")
    locks = DistributedLock(client, prefix="bench-conc")
    env.closers.append(locks.aclose)
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
                lambda: publisher.publish("bench:conc", "bench.ping", VALUE),
                concurrency=n,
            ),
            Case(group, f"lock()+release(), {n}", lock_cycle, concurrency=n),
        ]
    return out
