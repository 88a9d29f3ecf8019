"""Hostile values, keys, ttls and bytes: a caller's bad value or argument
raises its documented error before anything is written; bytes from Redis or
the invalidation channel that do not decode are counted and skipped."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
import zlib
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from redkit import ConfigError, SerializationError
from redkit._validate import MAX_SECONDS
from redkit.cache import MISSING, Cache, Invalidator, LocalCache, _envelope

NON_FINITE = [
    math.nan,
    math.inf,
    -math.inf,
    {"price": math.nan},
    [1.0, {"deep": [math.inf]}],
    {"ok": 1, "ratio": -math.inf},
]


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@dataclasses.dataclass
class Reading:
    sensor: str
    value: float


async def _nothing_written(client: Any, *keys: str) -> None:
    for key in keys:
        assert await client.exists(key) == 0, key


async def test_non_finite_floats_raise_and_write_nothing(client: Any) -> None:
    cache = Cache(client)
    loads = 0

    @cache.cached(ttl=60, key="deco")
    async def decorated() -> Any:
        return {"x": math.nan}

    for bad in [*NON_FINITE, Reading("s1", math.nan)]:

        async def load(bad: Any = bad) -> Any:
            nonlocal loads
            loads += 1
            return bad

        with pytest.raises(SerializationError, match="NaN or an infinite float"):
            await cache.set("k", bad, ttl=60)
        with pytest.raises(SerializationError, match="NaN or an infinite float"):
            await cache.set("k", bad, ttl=60, tags=["t"])
        # a loader's unencodable value is the caller's bug: it is raised, not cached
        with pytest.raises(SerializationError, match="NaN or an infinite float"):
            await cache.get_or_set("k", load, ttl=60, tags=["t"])
    with pytest.raises(SerializationError, match="NaN or an infinite float"):
        await decorated()
    with pytest.raises(SerializationError, match="NaN or an infinite float"):
        await Invalidator(cache).warm_up("k", ttl=60, loader=decorated.__wrapped__)
    assert loads == len(NON_FINITE) + 1
    assert cache.stats().sets == 0
    await _nothing_written(
        client, "app:k", "app:deco", "app:_cache:tag:t", "app:_cache:lease:{app:k}"
    )
    # the key can still be used: a finite value is stored as given
    assert await cache.set("k", {"price": 1.5}, ttl=60)
    assert await cache.get("k") == {"price": 1.5}


async def test_msgpack_keeps_non_finite_floats(client: Any) -> None:
    # msgpack has NaN and infinities, so nothing is lost and nothing refused
    cache = Cache(client, codec="msgpack")
    assert await cache.set("k", [math.inf, -math.inf, math.nan], ttl=60)
    stored = await cache.get("k")
    assert stored[:2] == [math.inf, -math.inf] and math.isnan(stored[2])


async def test_deeply_nested_value_raises_serialization_error(client: Any) -> None:
    cache = Cache(client)
    deep = _nested(100_000)

    async def load() -> Any:
        return deep

    with pytest.raises(SerializationError, match="nested too deeply"):
        await cache.set("k", deep, ttl=60, tags=["t"])
    with pytest.raises(SerializationError, match="nested too deeply"):
        await cache.get_or_set("k", load, ttl=60)
    msgpack = Cache(client, codec="msgpack")
    with pytest.raises(SerializationError, match="nested too deeply"):
        await msgpack.set("k", deep, ttl=60)
    await _nothing_written(client, "app:k", "app:_cache:tag:t", "app:_cache:lease:{app:k}")


async def _generation(cache: Cache, client: Any) -> int:
    assert await cache.get("sync") is None  # reads (and creates) the generation
    raw = await client.get("app:_cache:gen")
    return int(raw)


async def test_undecodable_stored_values_are_counted_misses(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(client)
    gen = await _generation(cache, client)
    later = int(time.time() * 1000) + 60_000
    nested = b"[" * 100_000 + b"]" * 100_000
    stored = {
        "nested": _envelope.pack(nested, gen, later, 0, 0),
        "nested-zlib": _envelope.pack(nested, gen, later, 0, 1),
        "zlib-garbage": _envelope.HEADER.pack(0xC7, 1, gen, later, 0) + b"not zlib at all",
        "zlib-truncated": _envelope.HEADER.pack(0xC7, 1, gen, later, 0)
        + zlib.compress(b'{"a": 1}')[:-3],
        "zlib-trailing": _envelope.HEADER.pack(0xC7, 1, gen, later, 0)
        + zlib.compress(b'{"a": 1}')
        + b"junk",
        "unknown-flags": _envelope.HEADER.pack(0xC7, 0x80, gen, later, 0) + b"1",
        "bad-utf8": _envelope.pack(b'"\xff\xfe"', gen, later, 0, 0),
        "huge-number": _envelope.pack(b"1" * 5000, gen, later, 0, 0),
    }
    assert stored["nested-zlib"][1] & _envelope.COMPRESSED
    for key, raw in stored.items():
        await client.set(f"app:{key}", raw)
    caplog.set_level(logging.WARNING, logger="redkit.cache")
    for key in stored:
        assert await cache.get(key, default=MISSING) is MISSING, key
        assert await cache.get(key, type=list[int], default=MISSING) is MISSING, key
    assert cache.stats().decode_errors == 2 * len(stored)
    assert cache.stats().errors == 0
    for key in stored:
        assert f"app:{key}" in caplog.text

    # get_or_set loads over them, and the local tier's read path holds too
    local = Cache(client, local=LocalCache())
    try:
        assert await local.start()
        for key in stored:
            assert await local.get(key, default=MISSING) is MISSING, key
            assert await cache.get_or_set(key, lambda: {"fresh": 1}, ttl=60) == {"fresh": 1}
            assert await local.get(key) == {"fresh": 1}
    finally:
        await local.aclose()


async def test_stored_value_of_another_type_loads_for_the_waiter(client: Any) -> None:
    """A value another process stored while this one waited on the lease,
    which does not decode as the type this caller wants, is loaded again
    instead of raising."""
    cache = Cache(client)
    other = Cache(client)
    assert await cache.set("warm", 1, ttl=60)  # both know the generation
    assert await other.get("warm") == 1
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> dict[str, str]:
        started.set()
        await release.wait()
        return {"name": "not a list of ints"}

    first = asyncio.ensure_future(other.get_or_set("k", slow, ttl=60))
    await started.wait()
    second = asyncio.ensure_future(cache.get_or_set("k", lambda: [1, 2], ttl=60, type=list[int]))
    release.set()
    assert await first == {"name": "not a list of ints"}
    assert await second == [1, 2]
    assert cache.stats().decode_errors >= 1


BAD_KEYS = ["a{b", "a{b}c}", "a}b", "{}x", "{a}{b}", "a{b{c}", "}{", "x{}"]


async def test_braces_only_as_one_tag_pair(client: Any) -> None:
    cache = Cache(client)
    for bad in BAD_KEYS:
        calls = [
            lambda bad=bad: cache.get(bad),
            lambda bad=bad: cache.set(bad, 1, ttl=60),
            lambda bad=bad: cache.get_or_set(bad, lambda: 1, ttl=60),
            lambda bad=bad: cache.exists(bad),
            lambda bad=bad: cache.delete("ok", bad),
            lambda bad=bad: cache.set("ok", 1, ttl=60, tags=[bad]),
            lambda bad=bad: cache.invalidate_tags(bad),
        ]
        for call in calls:
            with pytest.raises(ConfigError, match="braces"):
                await call()
        with pytest.raises(ConfigError, match="braces"):
            cache.key(bad)
    await _nothing_written(client, "app:ok")
    # one non-empty pair is a hash tag, and works on a cluster too
    for good in ("{user:1}:profile", "x{t}y", "{t}"):
        assert await cache.set(good, good, ttl=60, tags=["{t}"])
        assert await cache.get_or_set(good, lambda: "loaded", ttl=60) == good
    assert await cache.invalidate_tags("{t}") == 3


async def test_every_bad_argument_is_a_config_error(client: Any) -> None:
    cache = Cache(client)
    bad_calls: list[Any] = [
        lambda: cache.get(42),  # type: ignore[arg-type]
        lambda: cache.get(["a"]),  # type: ignore[arg-type]
        lambda: cache.get("\ud800"),
        lambda: cache.get("_cache:gen"),
        lambda: cache.set("k", 1, ttl=60, tags=5),  # type: ignore[arg-type]
        lambda: cache.set("k", 1, ttl=60, tags=[b"t"]),  # type: ignore[list-item]
        lambda: cache.delete_pattern("k*", batch=0),
        lambda: cache.delete_pattern("k*", batch=True),  # type: ignore[arg-type]
        lambda: cache.start(timeout=-1),
    ]
    for call in bad_calls:
        with pytest.raises(ConfigError):
            await call()
    options: list[dict[str, Any]] = [
        {"default_ttl": 1e14},
        {"default_ttl": "60"},
        {"lease_ttl": 1e14},
        {"lease_ttl": 0},
        {"wait_timeout": math.inf},
        {"sync_interval": -1},
        {"heartbeat": 1e300},
        {"jitter": 0.9},
        {"jitter": "0.1"},
        {"compress_above": -1},
        {"early_refresh": math.nan},
        {"local": {}},
        {"codec": "pickle"},
        {"codec": 5},
        {"prefix": "a{b}"},
        {"channel": "bad\nchannel"},
    ]
    for option in options:
        with pytest.raises(ConfigError):
            Cache(client, **option)
    with pytest.raises(ConfigError, match="redis-py"):
        Cache(object())
    for local_option in ({"ttl": 1e14}, {"ttl": 0}, {"max_entries": 0}, {"max_bytes": -1}):
        with pytest.raises(ConfigError):
            LocalCache(**local_option)
    with pytest.raises(ConfigError, match="strategy"):
        Invalidator(cache, "sometimes")
    with pytest.raises(ConfigError, match="Cache"):
        Invalidator(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="braces"):
        await Invalidator(cache).after_update("user{", "1")
    with pytest.raises(ConfigError, match="async def"):
        cache.cached(ttl=60)(lambda: 1)  # type: ignore[arg-type, return-value]
    with pytest.raises(ConfigError, match="no ttl"):
        Cache(client, default_ttl=None).cached()
    if isinstance(client, Redis):
        assert await client.dbsize() == 0


HUGE_TTLS = [1e14, MAX_SECONDS * 1.01, 2**63, 10**400, math.inf]


async def test_ttls_are_bounded_before_any_io(client: Any) -> None:
    cache = Cache(client)
    for bad in HUGE_TTLS:
        with pytest.raises(ConfigError, match="ttl"):
            await cache.set("k", 1, ttl=bad, tags=["t"])
        with pytest.raises(ConfigError, match="ttl"):
            await cache.set("k", 1, ttl=bad)
        with pytest.raises(ConfigError, match="ttl"):
            await cache.get_or_set("k", lambda: 1, ttl=bad, tags=["t"])
        with pytest.raises(ConfigError, match="ttl"):
            cache.cached(ttl=bad)
    await _nothing_written(client, "app:k", "app:_cache:tag:t", "app:_cache:gen")
    # the bound itself is a valid ttl, tags and all, and every key expires
    assert await cache.set("k", 1, ttl=MAX_SECONDS, tags=["t"])
    assert await cache.get_or_set("k", lambda: 2, ttl=MAX_SECONDS, tags=["t"]) == 1
    for key in ("app:k", "app:_cache:tag:t"):
        assert await client.pttl(key) > 0, key


async def test_tagged_set_leaves_nothing_when_a_tag_is_unusable(client: Any) -> None:
    """A tag set whose longest-lived member lies past any ttl redkit writes
    (only someone else can have put it there): the write is refused before
    anything is changed, and reported as a failed write."""
    cache = Cache(client)
    poisoned = "app:_cache:tag:t"
    await client.zadd(poisoned, {"app:other": math.inf})
    assert await cache.set("k", 1, ttl=60, tags=["t"]) is False
    assert await client.zrange(poisoned, 0, -1) == [b"app:other"]
    assert await client.pttl(poisoned) == -1
    assert await cache.get_or_set("k", lambda: 2, ttl=60, tags=["t"]) == 2
    assert await client.zrange(poisoned, 0, -1) == [b"app:other"]
    await _nothing_written(client, "app:k", "app:_cache:lease:{app:k}")
    assert cache.stats().errors == 2
    # other tags still work
    assert await cache.set("k", 3, ttl=60, tags=["fine"])
    assert await cache.get("k") == 3


async def test_tagged_set_checks_every_tag_before_writing(redis_client: Redis) -> None:
    # standalone: value and tags are one script, so one unusable tag
    # (another type under its key) leaves the others untouched too
    cache = Cache(redis_client)
    await redis_client.set("app:_cache:tag:b", "a string")
    assert await cache.set("k", 1, ttl=60, tags=["a", "b", "c"]) is False
    await _nothing_written(redis_client, "app:k", "app:_cache:tag:a", "app:_cache:tag:c")
    assert await redis_client.get("app:_cache:tag:b") == b"a string"


async def test_hostile_tag_members_and_keys(client: Any) -> None:
    """Members redkit did not write in a tag set (not UTF-8, outside the
    prefix, redkit's own keys) are never deleted and never stop the
    invalidation of the real members."""
    cache = Cache(client)
    assert await cache.set("user:1", 1, ttl=60, tags=["users"])
    far = time.time() * 1000 + 60_000
    await client.zadd(
        "app:_cache:tag:users",
        {b"app:\xff\xfe": far, "elsewhere:key": far, "app:_cache:gen": far},
    )
    for outside in ("elsewhere:key", "app:\xff\xfe".encode("latin-1")):
        await client.set(outside, "keep")
    assert await cache.invalidate_tags("users") == 1
    assert await cache.get("user:1", default=MISSING) is MISSING
    assert await client.get("elsewhere:key") == b"keep"
    assert await client.exists("app:_cache:gen") == 1
    # a key under the prefix that is not UTF-8 is deleted by a pattern like any other
    assert await cache.delete_pattern("*") == 1


async def _published(cache: Cache, client: Any, messages: list[bytes]) -> None:
    for message in messages:
        await client.publish(cache.channel, message)


def _hostile_messages() -> list[bytes]:
    deep = b"[" * 100_000 + b"]" * 100_000
    envelope = b'{"type":"cache.invalidate","payload":%s,"timestamp":"","source":"x"}'
    return [
        b"",
        b"\xff\xfe\xfd",
        b"not json",
        b"null",
        b"[]",
        b'{"payload": {}}',
        b'{"type": 5}',
        deep,
        b'{"type":"cache.invalidate","payload":' + deep + b"}",
        envelope % b'{"keys":"not a list"}',
        envelope % b'{"keys":[["nested"]]}',
        envelope % b'{"generation":1e400}',
        envelope % b'{"generation":123456789012345678901234567890}',
        envelope % b'{"keys":["\xff\xfe"]}',
        envelope % b'{"generation":"7"}',
        envelope % b'{"prefix":{"a":1}}',
    ]


async def test_hostile_messages_never_stop_the_listener(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(client, local=LocalCache())
    writer = Cache(client)
    caplog.set_level(logging.DEBUG, logger="redkit.cache")
    try:
        assert await cache.start()
        messages = _hostile_messages()
        await _published(cache, client, messages)
        deadline = time.monotonic() + 10
        while cache.stats().malformed_messages < len(messages):
            assert time.monotonic() < deadline, cache.stats()
            await asyncio.sleep(0.01)
        assert cache.stats().malformed_messages == len(messages)
        assert cache.coherent
        warnings = [
            r for r in caplog.records if r.levelno >= logging.WARNING and "malformed" in r.message
        ]
        assert len(warnings) == 1  # one warning, the rest at debug level

        before = cache.stats()
        # stored without a message, so no invalidation races the reads below
        assert await Cache(client, publish=False).set("k", "old", ttl=60)
        assert await cache.get("k") == "old"
        assert await cache.get("k") == "old"
        assert cache.stats().local_hits == before.local_hits + 1
        assert await writer.set("k", "new", ttl=60)
        full = cache.key("k")
        deadline = time.monotonic() + 10
        while cache.local is not None and cache.local.lookup(full) is not None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        after = cache.stats()
        assert after.local_flushes == before.local_flushes
        assert after.channel_reconnects == before.channel_reconnects == 0
        assert cache.coherent
        assert await cache.get("k") == "new"
    finally:
        await cache.aclose()
        await writer.aclose()


async def test_generation_key_that_is_not_a_number(client: Any) -> None:
    """Someone else's value under the generation key: the cache cannot
    know the generation, so it serves without Redis (counted, logged)."""
    await client.set("app:_cache:gen", "not a number")
    cache = Cache(client)
    assert await cache.get("k", default=MISSING) is MISSING
    assert await cache.get_or_set("k", lambda: "loaded", ttl=60) == "loaded"
    assert await cache.get_or_set("k", lambda: "again", ttl=60) == "again"
    assert await cache.set("k", 1, ttl=60) is False
    assert cache.stats().errors >= 1
    await _nothing_written(client, "app:k")
    await client.delete("app:_cache:gen")
    deadline = time.monotonic() + 10
    while not await cache.set("k", 1, ttl=60):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert await cache.get("k") == 1


def test_envelope_pack_round_trip() -> None:
    payload = msgspec.json.encode({"a": [1, 2, 3]} | {"pad": "x" * 100})
    for compress_above in (0, 10):
        raw = _envelope.pack(payload, 7, 1234, 56, compress_above)
        flags = _envelope.COMPRESSED if compress_above else 0
        assert _envelope.unpack(raw) == (flags, 7, 1234, 56, payload)
