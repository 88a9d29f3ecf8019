"""Every command the components use returns through the auto-pipelining
client exactly what it returns through redis-py's plain client: same
server, same data, RESP2 and RESP3, bytes and decoded strings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError

from redkit._autopipeline import PipelinedRedis
from redkit._cluster_pipelining import PipelinedRedisCluster
from redkit.connection import Client
from redkit.server import EmbeddedCluster, EmbeddedRedis
from redkit.testing import connected, flush

from ._helpers import delta, stats

# Replies of every RESP type a script can give: bulk, integer, status, nil
# (which ends a Lua table), nested array.
TYPED = "return {KEYS[1], ARGV[1], 7, redis.status_reply('FINE'), {1, 'two'}}"
FAILING = "return redis.error_reply('BAD things happened')"
SUM = "return tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1])"

Pair = tuple[Client, Client]

VARIANTS = [
    "standalone",
    "standalone-decoded",
    "standalone-resp3",
    "standalone-resp3-decoded",
    "cluster",
    "cluster-resp3-decoded",
]


@pytest_asyncio.fixture(params=VARIANTS)
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    """(auto-pipelining client, plain redis-py client) of one server."""
    variant: str = request.param
    decoded = variant.endswith("-decoded")
    protocol = 3 if "resp3" in variant else 2
    if variant.startswith("cluster"):
        cluster: EmbeddedCluster = request.getfixturevalue("redis_cluster")
        if variant == "cluster":
            # What connect() builds, with and without autopipeline.
            async with (
                connected(cluster, flushed=True) as fast,
                connected(cluster, autopipeline=False) as plain,
            ):
                yield fast, plain
            return
        kwargs: dict[str, Any] = {
            "host": cluster.host,
            "port": cluster.port,
            "protocol": protocol,
            "decode_responses": decoded,
        }
        clients: list[Any] = [PipelinedRedisCluster(**kwargs), RedisCluster(**kwargs)]
        for each in clients:
            await each.initialize()
    else:
        server: EmbeddedRedis = request.getfixturevalue("redis_server")
        if variant == "standalone":
            async with (
                connected(server, flushed=True) as fast,
                connected(server, autopipeline=False) as plain,
            ):
                yield fast, plain
            return
        kwargs = {
            "host": server.host,
            "port": server.port,
            "protocol": protocol,
            "decode_responses": decoded,
        }
        clients = [PipelinedRedis(**kwargs), Redis(**kwargs)]
    try:
        await flush(clients[1])
        yield clients[0], clients[1]
    finally:
        for each in clients:
            await each.aclose()


async def _scenario(c: Client, p: str) -> list[tuple[str, Any]]:
    """The same commands on keys under ``p``; what each returned (an error
    reply as its class and message). Values that depend on the clock are
    reduced to their type and whether they are in range."""
    out: list[tuple[str, Any]] = []

    async def record(label: str, awaitable: Any) -> Any:
        try:
            value = await awaitable
        except ResponseError as exc:
            value = ("error", type(exc).__name__, str(exc))
        out.append((label, value))
        return value

    def k(name: str) -> str:
        return f"{p}:{name}"

    await record("set", c.set(k("s"), "text"))
    await record("set nx, exists", c.set(k("s"), "other", nx=True))
    await record("set get", c.set(k("s"), "text2", get=True))
    await record("get", c.get(k("s")))
    await record("get missing", c.get(k("missing")))
    await record("incr", c.incr(k("n")))
    await record("incrby", c.incrby(k("n"), 5))
    await record("incrbyfloat", c.incrbyfloat(k("f"), 1.5))
    await record("incr of text", c.incr(k("s")))
    await record("lpush on a string", c.lpush(k("s"), "x"))
    await record("expire", c.expire(k("s"), 1000))
    await record("expire missing", c.expire(k("missing"), 10))
    await record("pexpire", c.pexpire(k("n"), 1_000_000))
    await record("ttl no expiry", c.ttl(k("f")))
    await record("ttl missing", c.ttl(k("missing")))
    await record("pttl no expiry", c.pttl(k("f")))
    await record("pttl missing", c.pttl(k("missing")))
    ttl = await c.ttl(k("s"))
    out.append(("ttl", (type(ttl), 990 <= ttl <= 1000)))
    pttl = await c.pttl(k("n"))
    out.append(("pttl", (type(pttl), 990_000 <= pttl <= 1_000_000)))
    await record("hset", c.hset(k("h"), mapping={"a": "1", "b": "2"}))
    await record("hset again", c.hset(k("h"), "a", "3"))
    await record("hget", c.hget(k("h"), "a"))
    await record("hget missing", c.hget(k("h"), "zz"))
    await record("hmget", c.hmget(k("h"), ["a", "zz", "b"]))
    await record("hgetall", c.hgetall(k("h")))
    await record("hgetall missing", c.hgetall(k("missing")))
    await record("hincrby", c.hincrby(k("h"), "b", 4))
    await record("exists", c.exists(k("s"), k("h"), k("missing")))
    await record("mget", c.mget([k("s"), k("missing"), k("n")]))
    await record("zadd", c.zadd(k("z"), {"one": 1, "two": 2.5, "three": 3}))
    await record("zrange", c.zrange(k("z"), 0, -1))
    await record("zrange withscores", c.zrange(k("z"), 0, -1, withscores=True))
    await record("zrangebyscore", c.zrangebyscore(k("z"), 2, "+inf"))
    await record("zrangebyscore withscores", c.zrangebyscore(k("z"), 0, 2.5, withscores=True))
    await record("zscore", c.zscore(k("z"), "two"))
    await record("zscore missing", c.zscore(k("z"), "nine"))
    await record("sadd", c.sadd(k("set"), "x", "y", "z"))
    await record("smembers", c.smembers(k("set")))
    await record("sismember", c.sismember(k("set"), "y"))
    await record("lpush", c.lpush(k("l"), "a", "b"))
    await record("lrange", c.lrange(k("l"), 0, -1))
    for number in (1, 2, 3):
        await record("xadd", c.xadd(k("x"), {"n": str(number), "f": "v"}, id=f"{number}-1"))
    await record("xrange", c.xrange(k("x")))
    await record("xrange count", c.xrange(k("x"), min="2-0", count=1))
    await record("xlen", c.xlen(k("x")))
    await record("xgroup create", c.xgroup_create(k("x"), "g", id="0"))
    await record("xgroup create again", c.xgroup_create(k("x"), "g", id="0"))
    await record("xreadgroup", c.xreadgroup("g", "c1", {k("x"): ">"}, count=2))
    await record("xreadgroup nothing new", c.xreadgroup("g", "c1", {k("x"): "0"}, count=5))
    await record("xpending", c.xpending(k("x"), "g"))
    await record("xack", c.xack(k("x"), "g", "1-1"))
    await record("xinfo stream", c.xinfo_stream(k("x")))
    await record("xinfo groups", c.xinfo_groups(k("x")))
    sha = await record("script load", c.script_load(SUM))
    await record("evalsha", c.evalsha(sha, 1, k("n"), 10))
    await record("script exists", c.script_exists(sha, "0" * 40))
    await record("evalsha unknown", c.evalsha("0" * 40, 0))
    await record("eval typed", c.eval(TYPED, 1, k("s"), "arg"))
    await record("eval error reply", c.eval(FAILING, 0))
    await record("publish", c.publish(f"{p}:channel", "message"))
    await record("ping", c.ping())
    if not isinstance(c, RedisCluster):  # no key: a cluster cannot route it
        await record("echo", c.echo("hello"))
    await record("type", c.type(k("z")))
    await record("getdel", c.getdel(k("f")))
    await record("delete", c.delete(k("s"), k("missing"), k("l")))
    await record("exists after delete", c.exists(k("s")))
    return out


def _swap(value: Any, old: str, new: str) -> Any:
    """``value`` with the key prefix ``old`` replaced by ``new``."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, bytes):
        return value.replace(old.encode(), new.encode())
    if isinstance(value, list):
        return [_swap(v, old, new) for v in value]
    if isinstance(value, tuple):
        return tuple(_swap(v, old, new) for v in value)
    if isinstance(value, dict):
        return {_swap(a, old, new): _swap(b, old, new) for a, b in value.items()}
    if isinstance(value, (set, frozenset)):
        return {_swap(v, old, new) for v in value}
    return value


def _typed(value: Any) -> Any:
    """``value`` with the type of every part kept, so that b"1" == "1" or
    1 == 1.0 == True cannot hide a different reply type."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_typed(v) for v in value])
    if isinstance(value, dict):
        return ("dict", sorted((repr(_typed(a)), _typed(b)) for a, b in value.items()))
    if isinstance(value, (set, frozenset)):
        return ("set", sorted(repr(_typed(v)) for v in value))
    return (type(value).__name__, value)


async def test_replies_equal_those_of_the_plain_client(pair: Pair) -> None:
    fast, plain = pair
    assert isinstance(fast, (PipelinedRedis, PipelinedRedisCluster))
    assert not isinstance(plain, (PipelinedRedis, PipelinedRedisCluster))
    before = stats(fast)
    got = _swap(await _scenario(fast, "{ap}"), "{ap}", "{pl}")
    grown = delta(before, stats(fast))
    assert grown["dedicated"] == 0  # every command above went on the shared path
    assert grown["commands"] >= len(got)
    expected = await _scenario(plain, "{pl}")
    assert [label for label, _ in got] == [label for label, _ in expected]
    for (label, value), (_, want) in zip(got, expected, strict=True):
        assert _typed(value) == _typed(want), label

    # Read-only commands on the same data, from both clients in turn.
    probes: list[tuple[str, Callable[[Client], Any]]] = [
        ("get", lambda c: c.get("{pl}:n")),
        ("hgetall", lambda c: c.hgetall("{pl}:h")),
        ("xinfo stream", lambda c: c.xinfo_stream("{pl}:x")),
        ("xpending", lambda c: c.xpending("{pl}:x", "g")),
        ("smembers", lambda c: c.smembers("{pl}:set")),
    ]
    if not isinstance(plain, RedisCluster):
        probes.append(("scan", lambda c: c.scan(0, match="{pl}:*", count=1000)))
        probes.append(("dbsize", lambda c: c.dbsize()))
    for label, probe in probes:
        assert _typed(await probe(fast)) == _typed(await probe(plain)), label


async def test_clock_and_server_replies_have_the_plain_clients_shape(pair: Pair) -> None:
    fast, plain = pair
    now, then = await fast.time(), await plain.time()
    assert [type(now), *map(type, now)] == [type(then), *map(type, then)]
    assert len(now) == len(then) == 2
    info, want = await fast.info("server"), await plain.info("server")
    assert type(info) is type(want)
    assert set(info) == set(want)
    assert info["redis_version"] == want["redis_version"]
    assert type(info["process_id"]) is type(want["process_id"])
