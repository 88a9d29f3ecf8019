"""Which commands share a connection and which keep their own: blocking
commands, transactions and pub/sub still work beside the shared traffic;
the opt-out gives redis-py's plain clients."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.client import NEVER_DECODE
from redis.exceptions import WatchError

from redkit import ConfigError, RedisSettings, connect
from redkit._autopipeline import PipelinedRedis, shares
from redkit._cluster_pipelining import PipelinedRedisCluster
from redkit._pool import WaitingRedisCluster
from redkit.connection import Client
from redkit.scripts import Script
from redkit.server import EmbeddedCluster, EmbeddedRedis
from redkit.testing import settings_for

from ._helpers import address_of, blocked_clients, delta, eventually, stats


@pytest.mark.parametrize(
    "args",
    [
        ("BLPOP", "list", 0),
        ("BRPOP", "list", 1),
        ("BZPOPMIN", "zset", 1),
        (b"XREAD", b"BLOCK", 100, b"STREAMS", b"s", b"$"),
        ("xreadgroup", "GROUP", "g", "c", "block", 100, "STREAMS", "s", ">"),
        ("XREAD", "COUNT", 1, "Block", 0, "STREAMS", "s", "0"),
        ("MULTI",),
        ("EXEC",),
        ("WATCH", "k"),
        ("SELECT", 1),
        ("CLIENT SETNAME", "x"),
        ("CLIENT", "ID"),
        ("client id",),
        (b"AUTH", b"pw"),
        ("HELLO", 3),
        ("SUBSCRIBE", "ch"),
        ("WAIT", 0, 0),
        ("READONLY",),
    ],
    ids=repr,
)
def test_commands_that_hold_or_change_their_connection_do_not_share(args: tuple) -> None:
    assert shares(args, {}) is False


@pytest.mark.parametrize(
    "args",
    [
        ("GET", "k"),
        (b"GET", b"k"),
        ("get", "k"),
        ("XREAD", "COUNT", 1, "STREAMS", "s", "0"),
        ("XREADGROUP", "GROUP", "g", "c", "COUNT", 1, "STREAMS", "s", ">"),
        ("EVALSHA", "0" * 40, 0),
        ("EVAL", "return 1", 0),
        ("PUBLISH", "ch", "m"),
        ("SCRIPT LOAD", "return 1"),
        ("INFO",),
    ],
    ids=repr,
)
def test_ordinary_commands_share(args: tuple) -> None:
    assert shares(args, {}) is True


def test_a_reply_read_undecoded_does_not_share() -> None:
    assert shares(("GET", "k"), {NEVER_DECODE: True}) is False


async def test_blocking_and_state_commands_count_as_dedicated(client: Client) -> None:
    await client.rpush("{route}:list", "a")
    await client.xadd("{route}:stream", {"f": "v"}, id="1-1")
    before = stats(client)
    assert await client.blpop(["{route}:list"], timeout=1) == (b"{route}:list", b"a")
    grown = delta(before, stats(client))
    assert (grown["dedicated"], grown["commands"]) == (1, 0)

    blocking = stats(client)
    entries = await client.xread({"{route}:stream": "0"}, block=100)
    assert delta(blocking, stats(client))["dedicated"] == 1
    unblocked = stats(client)
    assert await client.xread({"{route}:stream": "0"}) == entries
    grown = delta(unblocked, stats(client))
    assert grown["dedicated"] == 0
    if isinstance(client, RedisCluster):
        # redis-py's cluster client first asks the node for XREAD's keys
        # (COMMAND GETKEYS, its slot lookup), on the shared connection too.
        assert grown["commands"] >= 1
    else:
        assert grown["commands"] == 1

    if not isinstance(client, RedisCluster):
        ids = stats(client)
        assert isinstance(await client.client_id(), int)
        assert delta(ids, stats(client))["dedicated"] == 1


async def test_fast_commands_finish_while_blpop_blocks(client: Client) -> None:
    key = "{block}:list"
    values = {f"{{block}}:k{i}": f"v{i}".encode() for i in range(200)}
    await asyncio.gather(*(client.set(k, v) for k, v in values.items()))
    before = stats(client)
    popping = asyncio.create_task(client.blpop([key], timeout=2))
    host, port = address_of(client, key)

    async def blocked() -> bool:
        return await blocked_clients(host, port) == 1

    await eventually(blocked, "BLPOP blocked on the server")
    # The reads on the same server do not wait behind the blocked command.
    assert await asyncio.gather(*(client.get(k) for k in values)) == list(values.values())
    assert not popping.done()
    assert await client.rpush(key, "wake") == 1
    assert await popping == (key.encode(), b"wake")
    grown = delta(before, stats(client))
    assert grown["dedicated"] == 1
    assert grown["commands"] == len(values) + 1  # the GETs and the RPUSH


async def test_transactions_run_on_a_connection_of_their_own(client: Client) -> None:
    key = "{tx}:n"
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(key, 10)
        pipe.incr(key)
        pipe.get(key)
        assert await pipe.execute() == [True, 11, b"11"]

    # WATCH, then another task's write through the shared connection: the
    # transaction does not run.
    async with client.pipeline(transaction=True) as pipe:
        await pipe.watch(key)
        assert await pipe.get(key) == b"11"
        assert await client.set(key, "changed") is True
        pipe.multi()
        pipe.set(key, "mine")
        with pytest.raises(WatchError):
            await pipe.execute()
    assert await client.get(key) == b"changed"

    # Nothing in between: it runs.
    async with client.pipeline(transaction=True) as pipe:
        await pipe.watch(key)
        current = await pipe.get(key)
        pipe.multi()
        pipe.set(key, current + b"+mine")
        assert await pipe.execute() == [True]
    assert await client.get(key) == b"changed+mine"


async def test_pubsub_beside_shared_commands(client: Client) -> None:
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe("ap-channel")
        message = await pubsub.get_message(timeout=2)
        assert message is not None and message["type"] == "subscribe"
        assert await client.set("{ps}:k", "v") is True
        assert await client.publish("ap-channel", "hello") == 1
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None
        assert (message["channel"], message["data"]) == (b"ap-channel", b"hello")
        assert await client.get("{ps}:k") == b"v"
    finally:
        await pubsub.aclose()


INCR_BY = Script("ap:incr_by", "return redis.call('INCRBY', KEYS[1], ARGV[1])")


async def _flush_scripts(client: Client) -> None:
    if isinstance(client, RedisCluster):
        await client.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.script_flush()


async def test_scripts_fall_back_to_eval_after_script_flush(client: Client) -> None:
    key = "{script}:n"
    await _flush_scripts(client)
    before = stats(client)
    assert await INCR_BY(client, [key], [2]) == 2  # NOSCRIPT, then EVAL
    assert await INCR_BY(client, [key], [3]) == 5  # EVALSHA
    grown = delta(before, stats(client))
    assert (grown["commands"], grown["dedicated"]) == (3, 0)  # all on the shared path

    registered = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1]) * 10")
    assert await registered(keys=[key], args=[1]) == 60
    await _flush_scripts(client)
    assert await INCR_BY(client, [key], [1]) == 7
    assert await registered(keys=[key], args=[1]) == 80  # NOSCRIPT, SCRIPT LOAD, EVALSHA
    assert await client.get(key) == b"8"


async def test_autopipeline_false_gives_plain_redis_py_clients(
    redis_server: EmbeddedRedis, redis_cluster: EmbeddedCluster
) -> None:
    default = await connect(settings_for(redis_server))
    plain = await connect(settings_for(redis_server), autopipeline=False)
    cluster = await connect(settings_for(redis_cluster), autopipeline=False)
    try:
        assert isinstance(default, PipelinedRedis)
        assert type(plain) is Redis
        assert not isinstance(plain, PipelinedRedis)
        assert not hasattr(plain, "stats")
        assert await plain.set("{opt}:k", "v") is True
        assert await default.get("{opt}:k") == b"v"
        assert type(cluster) is WaitingRedisCluster
        assert not isinstance(cluster, PipelinedRedisCluster)
        assert await cluster.get("{opt}:none") is None
    finally:
        for each in (default, plain, cluster):
            await each.aclose()


def test_the_autopipeline_setting_and_its_variable() -> None:
    assert RedisSettings().autopipeline is True
    assert RedisSettings.from_env({}).autopipeline is True
    for text in ("false", "0", "no", "off", "FALSE"):
        assert RedisSettings.from_env({"REDIS_AUTOPIPELINE": text}).autopipeline is False
    for text in ("true", "1", "yes", "on"):
        assert RedisSettings.from_env({"REDIS_AUTOPIPELINE": text}).autopipeline is True
    with pytest.raises(ConfigError, match="REDIS_AUTOPIPELINE"):
        RedisSettings.from_env({"REDIS_AUTOPIPELINE": "maybe"})
    with pytest.raises(ConfigError, match="autopipeline"):
        RedisSettings(autopipeline="false")  # type: ignore[arg-type]
