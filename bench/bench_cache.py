"""Cache hot paths beside raw redis-py GET + msgspec decode, cashews and
aiocache, all on the bench server.

Group ``cache``: one coroutine, a warm key. Group ``cache-hot64``: 64 tasks
reading one hot key at once (ops/s counts every task's read).

The redkit cases run on the same kind of client as the raw baseline (a
plain redis-py ``ConnectionPool``), so the ratio is the cost of the cache
layer itself. Two extra rows run on the client ``redkit.connect()`` builds
(a ``BlockingConnectionPool``, whose bounded wait costs every command the
same fixed amount in redis-py 8.1): raw GET and the cache on it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bench.harness import Case, Env
from redkit.cache import Cache, LocalCache

VALUE = {"id": 42, "name": "Ada Lovelace", "email": "ada@example.com", "roles": ["admin"]}


async def cases(env: Env) -> list[Case]:
    raw = env.raw_client()
    await raw.set("bench:cache:raw", msgspec.json.encode(VALUE))
    decode = msgspec.json.decode

    client = env.raw_client()
    cache = Cache(client, prefix="bench", default_ttl=3600)
    await cache.set("user:42", VALUE)

    @cache.cached(ttl=3600, key="user:{user_id}")
    async def get_user(user_id: str) -> dict[str, Any]:
        return VALUE

    async def load() -> dict[str, Any]:
        return VALUE

    local_client = env.raw_client()
    local = Cache(local_client, prefix="bench", default_ttl=3600, local=LocalCache())
    await local.start()
    env.closers.append(local.aclose)
    env.closers.append(cache.aclose)

    async def raw_get() -> object:
        return decode(await raw.get("bench:cache:raw"))

    # the client redkit.connect() builds, its connections counted
    connected = await env.redkit_client()
    on_connected = Cache(connected, prefix="bench", default_ttl=3600)
    env.closers.append(on_connected.aclose)

    async def connected_raw_get() -> object:
        return decode(await connected.get("bench:cache:raw"))

    async def connected_get() -> object:
        return await on_connected.get("user:42")

    async def redkit_get() -> object:
        return await cache.get("user:42")

    async def redkit_cached() -> object:
        return await get_user("42")

    async def redkit_get_or_set() -> object:
        return await cache.get_or_set("user:42", load)

    async def redkit_local() -> object:
        return await local.get("user:42")

    # cashews: its own client on the same server, default serializer
    from cashews import Cache as CashewsCache

    cashews = CashewsCache()
    cashews.setup(env.url, client_side=False)
    await cashews.init()
    await cashews.set("bench:cashews:user:42", VALUE, expire=3600)

    @cashews(ttl="1h", key="bench:cashews:deco:{user_id}")
    async def cashews_user(user_id: str) -> dict[str, Any]:
        return VALUE

    async def cashews_get() -> object:
        return await cashews.get("bench:cashews:user:42")

    async def cashews_cached() -> object:
        return await cashews_user("42")

    env.closers.append(cashews.close)

    # aiocache: RedisCache with its JSON serializer
    from aiocache import RedisCache
    from aiocache.serializers import JsonSerializer

    aio = RedisCache(
        endpoint=env.host, port=env.port, namespace="bench:aio", serializer=JsonSerializer()
    )
    await aio.set("user:42", VALUE, ttl=3600)

    async def aiocache_get() -> object:
        return await aio.get("user:42")

    env.closers.append(aio.close)

    group = "cache"
    hot = "cache-hot64"
    return [
        Case(group, "raw GET+decode (redis-py)", raw_get, baseline=True),
        Case(group, "redkit get hit", redkit_get),
        Case(group, "redkit cached() hit", redkit_cached),
        Case(group, "redkit get_or_set hit", redkit_get_or_set),
        Case(group, "redkit local-tier hit", redkit_local),
        Case(group, "raw GET+decode, redkit.connect() client", connected_raw_get),
        Case(group, "redkit get hit, redkit.connect() client", connected_get),
        Case(group, "cashews get hit", cashews_get, counted=False),
        Case(group, "cashews decorated hit", cashews_cached, counted=False),
        Case(group, "aiocache get hit", aiocache_get, counted=False),
        Case(hot, "raw GET+decode x64 (redis-py)", raw_get, baseline=True, concurrency=64),
        Case(hot, "redkit get_or_set x64", redkit_get_or_set, concurrency=64),
        Case(hot, "redkit local-tier x64", redkit_local, concurrency=64),
        Case(hot, "cashews get x64", cashews_get, concurrency=64, counted=False),
        Case(hot, "aiocache get x64", aiocache_get, concurrency=64, counted=False),
    ]
