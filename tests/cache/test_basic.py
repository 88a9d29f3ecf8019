"""Cache reads and writes: typed values, misses, negative caching, TTLs,
key validation, bad input, foreign bytes, compression."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import typing
from pathlib import Path
from typing import Any

import msgspec
import pydantic
import pytest
from redis.asyncio import Redis

import redkit.cache
from redkit import ConfigError, SerializationError
from redkit.cache import MISSING, Cache, CacheStats, LocalCache, _envelope, _messages
from redkit.events import parse_timestamp

# The Go service's golden event and session records (a copy of the shared
# seed fixtures); its cache entries are read in test_go_layout.py.
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "go"
GOLDEN = {
    path.stem: path.read_bytes().strip()
    for path in sorted([*FIXTURES.glob("event_*.json"), FIXTURES / "session_record.json"])
}


@dataclasses.dataclass
class User:
    id: str
    name: str
    roles: list[str] = dataclasses.field(default_factory=list)


class Point(msgspec.Struct):
    x: int
    y: int


class Account(pydantic.BaseModel):
    id: int
    email: str
    created: dt.datetime


def test_public_surface() -> None:
    # tests/test_public_api.py pins redkit's names: the cache package
    # exports exactly those of them that the cache defines, the same objects.
    def home(obj: Any) -> str:
        return str((obj if isinstance(obj, type) else type(obj)).__module__)

    ours = {n for n in redkit.__all__ if home(getattr(redkit, n)).startswith("redkit.cache.")}
    assert set(redkit.cache.__all__) == ours
    for name in redkit.cache.__all__:
        assert getattr(redkit.cache, name) is getattr(redkit, name)
    assert repr(MISSING) == "MISSING"
    assert not MISSING


async def test_typed_round_trips(client: Any) -> None:
    cache = Cache(client, prefix="app")
    account = Account(id=1, email="a@example.com", created=dt.datetime(2026, 1, 2, 3, 4, 5))
    values: list[tuple[str, Any, Any]] = [
        ("user:42", User("42", "Ada", ["admin"]), User),
        ("point:1", Point(1, 2), Point),
        ("account:1", account, Account),
        ("users:list", [User("1", "A"), User("2", "B")], list[User]),
        ("plain", {"a": [1, 2.5, "x", None]}, None),
    ]
    for key, value, _ in values:
        assert await cache.set(key, value, ttl=60) is True
    for key, value, tp in values:
        got = await cache.get(key, type=tp)
        assert got == value
        if isinstance(tp, type) and not typing.get_args(tp):  # list[T] is a type on 3.10
            assert type(got) is tp
    assert all(type(u) is User for u in await cache.get("users:list", type=list[User]))
    stats = cache.stats()
    assert isinstance(stats, CacheStats)
    assert stats.hits == len(values) + 1
    assert stats.sets == len(values)


async def test_keys_live_under_the_prefix(client: Any) -> None:
    cache = Cache(client, prefix="app")
    await cache.set("user:42", {"id": "42"}, ttl=60)
    assert await client.exists("app:user:42") == 1
    assert cache.key("user:42") == "app:user:42"
    ttl_ms = await client.pttl("app:user:42")
    assert 0 < ttl_ms <= 60_000


async def test_miss_default_and_missing(client: Any) -> None:
    cache = Cache(client)
    assert await cache.get("nothing") is None
    assert await cache.get("nothing", default=MISSING) is MISSING
    assert await cache.get("nothing", type=User, default="fallback") == "fallback"
    await cache.set("none", None, ttl=60)
    assert await cache.get("none", default=MISSING) is None
    assert await cache.exists("none") is True
    assert await cache.exists("nothing") is False
    assert cache.stats().misses == 3


async def test_negative_caching_of_loader_none(client: Any) -> None:
    cache = Cache(client)
    calls = 0

    async def load() -> None:
        nonlocal calls
        calls += 1
        return None

    assert await cache.get_or_set("absent", load, ttl=60) is None
    assert await cache.get_or_set("absent", load, ttl=60) is None
    assert calls == 1
    assert await cache.get("absent", default=MISSING) is None

    assert await cache.get_or_set("opt-out", load, ttl=60, cache_none=False) is None
    assert await cache.get_or_set("opt-out", load, ttl=60, cache_none=False) is None
    assert calls == 3
    assert await cache.get("opt-out", default=MISSING) is MISSING

    # a cached None comes back as None whatever type the caller asks for
    async def no_user() -> User | None:
        nonlocal calls
        calls += 1
        return None

    before = calls
    for _ in range(3):
        assert await cache.get_or_set("user:none", no_user, ttl=60, type=User) is None
    assert calls == before + 1
    assert await cache.get("user:none", type=User, default=MISSING) is None
    assert cache.stats().decode_errors == 0
    local = Cache(client, local=LocalCache())
    async with local:
        for _ in range(3):
            assert await local.get("user:none", type=User, default=MISSING) is None
        assert local.stats().local_hits == 2
    msgpack_cache = Cache(client, prefix="mp", codec="msgpack")
    assert await msgpack_cache.get_or_set("x", no_user, ttl=60, type=User) is None
    assert await msgpack_cache.get("x", type=User, default=MISSING) is None

    strict = Cache(client, prefix="strict", cache_none=False)
    assert await strict.get_or_set("k", load, ttl=60) is None
    assert await strict.get("k", default=MISSING) is MISSING


async def test_delete_and_exists(client: Any) -> None:
    cache = Cache(client)
    await cache.set("user:42", 1, ttl=60)
    await cache.set("users:list", [1], ttl=60)
    await cache.set("user:43", 2, ttl=60)
    assert await cache.exists("user:42")
    assert await cache.delete("user:42", "users:list", "user:nope") == 2
    assert not await cache.exists("user:42")
    assert await cache.get("users:list") is None
    assert await cache.get("user:43") == 2
    assert await cache.delete() == 0


async def test_ttl_rules(client: Any) -> None:
    cache = Cache(client, default_ttl=None)
    with pytest.raises(ConfigError, match="no ttl"):
        await cache.set("k", 1)
    with pytest.raises(ConfigError, match="no ttl"):
        await cache.get_or_set("k", lambda: 1)
    for bad in (0, -1, float("nan"), float("inf"), "10", True, dt.timedelta(0)):
        with pytest.raises(ConfigError, match="ttl"):
            await cache.set("k", 1, ttl=bad)  # type: ignore[arg-type]
    assert await client.exists("app:k") == 0
    assert await cache.set("k", 1, ttl=dt.timedelta(seconds=30))
    assert 0 < await client.pttl("app:k") <= 30_000
    # checked on a hit too, not only when the loader runs
    for bad in (0, -5, True, "1"):
        with pytest.raises(ConfigError, match="ttl"):
            await cache.get_or_set("k", lambda: 2, ttl=bad)  # type: ignore[arg-type]
    assert await cache.get_or_set("k", lambda: 2, ttl=dt.timedelta(minutes=1)) == 1
    with pytest.raises(ConfigError, match="default_ttl"):
        Cache(client, default_ttl=0)


async def test_ttl_jitter_spreads_expiry(client: Any) -> None:
    cache = Cache(client, jitter=0.2)
    for i in range(40):
        await cache.set(f"j:{i}", i, ttl=100)
    ttls = [await client.pttl(f"app:j:{i}") for i in range(40)]
    assert all(79_000 <= t <= 100_000 for t in ttls), ttls
    assert max(ttls) - min(ttls) > 2_000  # 40 draws over a 20 s spread
    flat = Cache(client, prefix="flat", jitter=0)
    await flat.set("k", 1, ttl=100)
    assert await client.pttl("flat:k") > 99_000
    with pytest.raises(ConfigError, match="jitter"):
        Cache(client, jitter=0.9)


async def test_invalid_keys_raise_config_error(client: Any) -> None:
    cache = Cache(client)
    bad_keys = {
        "": "empty",
        "a\nb": "control character",
        "a\x00b": "control character",
        "x" * 600: "at most 512",
        "_cache:gen": "reserved",
        "a}b": "braces",
        "a{b": "braces",
        42: "must be a string",
    }
    for bad, why in bad_keys.items():
        with pytest.raises(ConfigError, match=why):
            await cache.get(bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=why):
            await cache.set(bad, 1, ttl=10)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tag"):
        await cache.set("k", 1, ttl=10, tags=["bad\ttag"])
    with pytest.raises(ConfigError, match="prefix"):
        Cache(client, prefix="a{b}")
    if isinstance(client, Redis):
        assert await client.dbsize() == 0


async def test_unserializable_value_writes_nothing(client: Any) -> None:
    cache = Cache(client)

    class Opaque:
        pass

    with pytest.raises(SerializationError, match="Opaque"):
        await cache.set("k", Opaque(), ttl=10)
    with pytest.raises(SerializationError, match="Opaque"):
        await cache.set("k", {"a": Opaque()}, ttl=10)
    assert await client.exists("app:k") == 0
    assert cache.stats().sets == 0

    async def load() -> object:
        return Opaque()

    with pytest.raises(SerializationError, match="Opaque"):
        await cache.get_or_set("k", load, ttl=10)
    assert await client.exists("app:k") == 0


async def test_foreign_bytes_are_a_logged_counted_miss(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(client)
    await client.set("app:foreign", b'{"written": "by someone else"}')
    await client.set("app:short", b"\xc7\x00")
    # redkit's header (current generation), then bytes that are not JSON
    assert await cache.get("sync") is None
    good_header = _envelope.pack(b"", cache._gen or 0, 0, 0, 0)
    await client.set("app:garbled", good_header + b"\xff\xfe not json")
    caplog.set_level(logging.WARNING, logger="redkit.cache")
    for key in ("foreign", "short", "garbled"):
        assert await cache.get(key, default=MISSING) is MISSING
    assert await cache.get("garbled", type=User, default=MISSING) is MISSING
    assert cache.stats().decode_errors == 4
    assert cache.stats().misses == 5
    assert "app:foreign" in caplog.text
    # read again and again: counted every time, warned once per key
    for _ in range(5):
        assert await cache.get("foreign", default=MISSING) is MISSING
    assert cache.stats().decode_errors == 9
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("app:foreign" in r.getMessage() for r in warnings) == 1
    # the key is left alone for the next set
    assert await client.get("app:foreign") == b'{"written": "by someone else"}'
    # a wrong-type decode is a miss too, and get_or_set replaces the value
    await cache.set("user:1", {"id": 1}, ttl=60)
    assert await cache.get("user:1", type=User, default=MISSING) is MISSING
    loaded = await cache.get_or_set("foreign", lambda: {"fresh": True}, ttl=60)
    assert loaded == {"fresh": True}
    assert await cache.get("foreign") == {"fresh": True}


async def test_large_values_are_compressed(client: Any) -> None:
    cache = Cache(client, compress_above=1024)
    big = {"rows": ["the same line of text"] * 2000}
    await cache.set("big", big, ttl=60)
    stored = await client.get("app:big")
    assert stored is not None
    assert stored[1] & _envelope.COMPRESSED
    assert len(stored) < len(msgspec.json.encode(big)) // 5
    assert await cache.get("big") == big
    small = {"a": 1}
    await cache.set("small", small, ttl=60)
    stored = await client.get("app:small")
    assert stored is not None
    assert not stored[1] & _envelope.COMPRESSED
    # the local tier holds the decompressed payload
    local_cache = Cache(client, compress_above=1024, local=LocalCache())
    assert await local_cache.start()
    assert await local_cache.get("big") == big
    assert await local_cache.get("big") == big
    assert local_cache.stats().local_hits == 1
    await local_cache.aclose()


async def test_msgpack_codec(client: Any) -> None:
    cache = Cache(client, codec="msgpack")
    await cache.set("user:1", User("1", "Ada"), ttl=60)
    assert await cache.get("user:1", type=User) == User("1", "Ada")


async def test_constructor_validation(client: Any) -> None:
    with pytest.raises(ConfigError, match="local"):
        Cache(client, local={})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lease_ttl"):
        Cache(client, lease_ttl=0)
    with pytest.raises(ConfigError, match="early_refresh"):
        Cache(client, early_refresh=-1)
    with pytest.raises(ConfigError, match="compress_above"):
        Cache(client, compress_above=-5)
    with pytest.raises(ConfigError, match="redis-py"):
        Cache(object())
    with pytest.raises(ConfigError, match="max_entries"):
        LocalCache(max_entries=0)
    with pytest.raises(ConfigError, match="ttl"):
        LocalCache(ttl=-1)


async def test_decode_responses_client_is_refused(redis_server: Any) -> None:
    client = Redis(host=redis_server.host, port=redis_server.port, decode_responses=True)
    try:
        with pytest.raises(redkit.ConfigError, match="decode_responses"):
            Cache(client)
    finally:
        await client.aclose()


class SessionRecord(msgspec.Struct):
    id: str
    user_id: str
    data: dict[str, Any]
    created_at: dt.datetime
    expires_at: dt.datetime


async def test_golden_json_round_trips(client: Any) -> None:
    """The Go service's records go through the cache byte for byte: the
    payload after redkit's header is the golden JSON itself."""
    cache = Cache(client)
    assert len(GOLDEN) == 3
    for name, golden in GOLDEN.items():
        value = msgspec.json.decode(golden)
        await cache.set(f"golden:{name}", value, ttl=60)
        stored = await client.get(f"app:golden:{name}")
        assert stored is not None
        assert stored[_envelope.HEADER_SIZE :] == golden
        assert await cache.get(f"golden:{name}") == value
    record = msgspec.json.decode(GOLDEN["session_record"], type=SessionRecord)
    await cache.set("session", record, ttl=60)
    back = await cache.get("session", type=SessionRecord)
    assert back == record
    assert back is not None
    assert back.created_at == dt.datetime(2026, 11, 26, 11, 4, 5, 500000, tzinfo=dt.timezone.utc)


def test_golden_invalidate_event_decodes() -> None:
    raw = GOLDEN["event_utc_nopayload"]
    event = _messages.decode(raw)
    assert event.type == "cache.invalidate"
    assert event.payload is None
    assert event.source == "worker"
    assert event.timestamp == "2026-11-26T11:04:05Z"
    other = _messages.decode(GOLDEN["event_user_created"])
    assert other.type == "user.created"
    assert other.payload["roles"] == ["admin", "ops"]


def test_outgoing_event_matches_go_envelope() -> None:
    data = _messages.encode(_messages.Invalidation(keys=["user:42"], origin="abc"), "api")
    decoded = msgspec.json.decode(data)
    assert list(decoded) == ["type", "payload", "timestamp", "source"]
    assert decoded["type"] == "cache.invalidate"
    assert decoded["source"] == "api"
    assert decoded["payload"] == {"keys": ["user:42"], "origin": "abc"}
    stamp = decoded["timestamp"]
    assert stamp.endswith("Z")
    parsed = parse_timestamp(stamp)  # Go's trimmed fractions; 3.10's fromisoformat refuses them
    assert abs((dt.datetime.now(dt.timezone.utc) - parsed).total_seconds()) < 60
    # Go's formatting: fraction without trailing zeros, numeric offsets kept
    moment = dt.datetime(2026, 11, 26, 11, 4, 5, 500000, tzinfo=dt.timezone.utc)
    assert _messages.rfc3339(moment) == "2026-11-26T11:04:05.5Z"
    plus7 = dt.timezone(dt.timedelta(hours=7))
    assert (
        _messages.rfc3339(dt.datetime(2026, 11, 26, 18, 4, 5, 123456, tzinfo=plus7))
        == "2026-11-26T18:04:05.123456+07:00"
    )
    assert _messages.rfc3339(dt.datetime(2026, 11, 26, 11, 4, 5)) == "2026-11-26T11:04:05Z"
