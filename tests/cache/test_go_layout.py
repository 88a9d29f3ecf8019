"""Cache(layout="go"): the Go service's plain JSON entries, read and
written on a standalone server and on a cluster. The "Go side" writes with
the commands go-redis sends for its cache's Set."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster

import redkit
from redkit import ConfigError
from redkit.cache import MISSING, Cache, LocalCache
from redkit.testing import settings_for

from ._helpers import Loader, until

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "go"
GO_USER = (FIXTURES / "cache_user.json").read_bytes().strip()
GO_USERS = (FIXTURES / "cache_user_list.json").read_bytes().strip()
GO_BARE_INVALIDATE = (FIXTURES / "event_utc_nopayload.json").read_bytes().strip()
# Go's time.Time JSON: RFC 3339, up to 9 fraction digits, Z or an offset.
GO_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


@dataclasses.dataclass
class GoUser:
    """The Go service's User struct, fields in its declaration order."""

    id: str
    email: str
    name: str
    team: str
    roles: list[str] | None  # a nil slice is JSON null
    created_at: dt.datetime


async def go_set(client: Any, key: str, value: bytes, ttl_ms: int) -> None:
    """go-redis's Set(ctx, key, value, ttl): EX for whole seconds, else PX,
    no expiry at all for a zero ttl."""
    if ttl_ms == 0:
        await client.execute_command("SET", key, value)
    elif ttl_ms >= 1000 and ttl_ms % 1000 == 0:
        await client.execute_command("SET", key, value, "ex", ttl_ms // 1000)
    else:
        await client.execute_command("SET", key, value, "px", ttl_ms)


async def all_keys(client: Any) -> set[str]:
    if isinstance(client, RedisCluster):
        keys = await client.keys("*", target_nodes=RedisCluster.PRIMARIES)
    else:
        keys = await client.keys("*")
    return {k.decode() for k in keys}


@pytest.fixture
async def cache(client: Any) -> Any:
    made = Cache(client, prefix="app", layout="go")
    yield made
    await made.aclose()


# -- reading what the Go service wrote --------------------------------------


async def test_a_go_entry_is_a_hit(client: Any, cache: Cache) -> None:
    await go_set(client, "app:user:123", GO_USER, 300_000)
    assert await cache.get("user:123") == json.loads(GO_USER)
    user = await cache.get("user:123", type=GoUser)
    assert user is not None
    assert user.team == "R&D"  # Go wrote "R\u0026D"
    assert user.roles == ["admin", "ops"]
    assert user.created_at.utcoffset() == dt.timedelta(hours=7)
    moment = dt.datetime(2026, 11, 26, 4, 4, 5, 123456, tzinfo=dt.timezone.utc)
    assert abs(user.created_at - moment) <= dt.timedelta(microseconds=1)
    assert await cache.exists("user:123")
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.decode_errors) == (2, 0, 0)
    # The redkit layout reads the same entry as a miss (it has no header).
    other = Cache(client, prefix="app")
    assert await other.get("user:123", default=MISSING) is MISSING
    assert other.stats().decode_errors == 1
    await other.aclose()


async def test_a_go_list_with_a_nil_slice(client: Any, cache: Cache) -> None:
    await go_set(client, "app:user:list:all", GO_USERS, 60_000)
    users = await cache.get("user:list:all", type=list[GoUser])
    assert [u.id for u in users] == ["123", "124"]
    assert users[1].roles is None

    @dataclasses.dataclass
    class Strict:
        id: str
        roles: list[str]

    # A field that cannot hold Go's null reads as a (counted) miss.
    assert await cache.get("user:list:all", type=list[Strict], default=MISSING) is MISSING
    assert cache.stats().decode_errors == 1


async def test_a_go_null_is_a_cached_none(client: Any, cache: Cache) -> None:
    await go_set(client, "app:user:404", b"null", 60_000)
    assert await cache.get("user:404", type=GoUser, default=MISSING) is None

    def never() -> GoUser:
        raise AssertionError("a cached None is a hit")

    assert await cache.get_or_set("user:404", never, ttl=60, type=GoUser) is None


async def test_a_redkit_layout_value_is_a_miss_here(client: Any, cache: Cache) -> None:
    other = Cache(client, prefix="app")
    await other.set("user:7", {"id": "7"}, ttl=60)
    assert await cache.get("user:7", default=MISSING) is MISSING
    assert cache.stats().decode_errors == 1
    await other.aclose()


# -- what redkit writes -----------------------------------------------------


async def test_what_redkit_writes_is_plain_json_a_go_reader_decodes(
    client: Any, cache: Cache
) -> None:
    golden = json.loads(GO_USER)
    user = GoUser(
        **{**golden, "created_at": dt.datetime.fromisoformat("2026-11-26T11:04:05+07:00")}
    )
    assert await cache.set("user:123", user, ttl=300)
    raw = await client.get("app:user:123")
    assert raw is not None and raw.startswith(b"{")
    written = json.loads(raw)  # nothing before or after the JSON
    # The Go struct's fields, in its order, with its JSON types.
    assert list(written) == list(golden)
    assert {k: v for k, v in written.items() if k != "created_at"} == {
        k: v for k, v in golden.items() if k != "created_at"
    }
    assert GO_RFC3339.fullmatch(written["created_at"])
    assert 0 < await client.pttl("app:user:123") <= 300_000
    # No bookkeeping of redkit's beside the value: no generation key.
    assert await all_keys(client) == {"app:user:123"}


async def test_where_go_escapes_nothing_the_bytes_are_gos(client: Any, cache: Cache) -> None:
    second = json.loads(GO_USERS)[1]  # ASCII, nothing encoding/json escapes
    go_bytes = json.dumps(second, separators=(",", ":")).encode()
    assert go_bytes in GO_USERS
    await cache.set("user:124", second, ttl=60)
    assert await client.get("app:user:124") == go_bytes


async def test_json_go_would_write_differently_decodes_the_same(client: Any, cache: Cache) -> None:
    value = {"team": "R&D <ops>", "city": "São Paulo", "n": [1, 2.5, None], "ok": True}
    await cache.set("misc", value, ttl=60)
    raw = await client.get("app:misc")
    assert json.loads(raw) == value
    # Go's own bytes for it (\u0026, \u003c, \u003e escapes) read back equal.
    go_bytes = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    go_bytes = go_bytes.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    await go_set(client, "app:misc", go_bytes.encode(), 60_000)
    assert await cache.get("misc") == value


async def test_large_values_are_never_compressed(client: Any) -> None:
    cache = Cache(client, layout="go", compress_above=64)
    value = {"blob": "x" * 10_000}
    await cache.set("big", value, ttl=60)
    assert json.loads(await client.get("app:big")) == value
    await cache.aclose()


# -- get_or_set: single flight, lease, early refresh -------------------------


async def test_get_or_set_hits_go_entries_and_fills_misses_with_plain_json(
    client: Any, cache: Cache
) -> None:
    await go_set(client, "app:user:123", GO_USER, 300_000)
    load = Loader({"id": "125"})

    assert await cache.get_or_set("user:123", load, ttl=60) == json.loads(GO_USER)
    assert await cache.get_or_set("user:125", load, ttl=60) == {"id": "125"}
    assert load.calls == 1
    assert await client.get("app:user:125") == b'{"id":"125"}'


async def test_concurrent_misses_load_once_across_caches(client: Any) -> None:
    first = Cache(client, layout="go")
    second = Cache(client, layout="go")
    slow = Loader({"n": 1}, delay=0.2)

    results = await asyncio.gather(
        *(c.get_or_set("hot", slow, ttl=60) for c in (first, second) for _ in range(20))
    )
    assert results == [{"n": 1}] * 40
    # Single flight in each cache, the lease between them.
    assert slow.calls == 1
    assert first.stats().loads + second.stats().loads == 1
    assert await client.get("app:hot") == b'{"n":1}'
    await first.aclose()
    await second.aclose()


async def test_early_refresh_reads_the_expiry_from_redis(client: Any) -> None:
    cache = Cache(client, layout="go", early_refresh=1000)
    await go_set(client, "app:report", b'{"v":1}', 5000)

    async def fresh() -> dict[str, int]:
        return {"v": 2}

    # The caller gets the current value at once; the reload runs behind it.
    assert await cache.get_or_set("report", fresh, ttl=60) == {"v": 1}

    async def reloaded() -> bool:
        return bool(await client.get("app:report") == b'{"v":2}')

    await until(reloaded)
    assert cache.stats().early_refreshes == 1
    assert await client.pttl("app:report") > 5000
    await cache.aclose()


async def test_no_early_refresh_without_expiry_or_when_off(client: Any) -> None:
    eager = Cache(client, layout="go", early_refresh=1000)
    off = Cache(client, layout="go", early_refresh=0)
    await go_set(client, "app:forever", b'{"v":1}', 0)  # Go's Set with ttl 0
    await go_set(client, "app:soon", b'{"v":1}', 5000)

    async def fresh() -> dict[str, int]:
        return {"v": 2}

    assert await eager.get_or_set("forever", fresh, ttl=60) == {"v": 1}
    assert await off.get_or_set("soon", fresh, ttl=60) == {"v": 1}
    # A refresh would have been started by the call itself.
    assert not len(eager._refreshes) and not len(off._refreshes)
    assert eager.stats().early_refreshes == off.stats().early_refreshes == 0
    await eager.aclose()
    await off.aclose()


async def test_the_cached_decorator_reads_go_entries(client: Any, cache: Cache) -> None:
    await go_set(client, "app:user:123", GO_USER, 300_000)

    @cache.cached(ttl=60, key="user:{user_id}")
    async def find(user_id: str) -> GoUser:
        raise AssertionError("a hit")

    user = await find("123")
    assert isinstance(user, GoUser) and user.email == "ana@example.com"


# -- tags, deletes, clear ---------------------------------------------------


async def test_tags_cover_what_redkit_tagged_even_after_a_go_rewrite(
    client: Any, cache: Cache
) -> None:
    await cache.set("user:1", {"id": "1"}, ttl=60, tags=["users"])
    await go_set(client, "app:user:1", b'{"id":"1","by":"go"}', 300_000)
    await go_set(client, "app:user:2", b'{"id":"2"}', 300_000)  # never tagged
    assert await cache.invalidate_tags("users") == 1
    assert await client.exists("app:user:1") == 0
    assert await cache.get("user:2") == {"id": "2"}


async def test_exists_delete_and_delete_pattern_on_go_entries(client: Any, cache: Cache) -> None:
    await go_set(client, "app:user:list:page:1", b"[1]", 60_000)
    await go_set(client, "app:user:list:page:2", b"[2]", 60_000)
    await go_set(client, "app:user:9", b'{"id":"9"}', 60_000)
    await go_set(client, "app:session:abc", b"{}", 60_000)
    assert await cache.exists("user:9") and not await cache.exists("user:10")
    assert await cache.delete_pattern("user:list:*") == 2
    assert await cache.delete("user:9") == 1
    assert await all_keys(client) == {"app:session:abc"}


async def test_clear_is_refused_and_changes_nothing(client: Any, cache: Cache) -> None:
    await go_set(client, "app:user:123", GO_USER, 300_000)
    with pytest.raises(ConfigError, match=r"clear\(\) is not available with layout='go'"):
        await cache.clear()
    assert await all_keys(client) == {"app:user:123"}
    assert await cache.get("user:123") == json.loads(GO_USER)


# -- the local tier ---------------------------------------------------------


async def test_local_entries_end_with_the_redis_ttl(client: Any) -> None:
    cache = Cache(client, layout="go", local=LocalCache(ttl=30))
    assert await cache.start()
    await go_set(client, "app:flags", b'{"beta":true}', 1500)
    assert await cache.get("flags") == {"beta": True}
    assert await cache.get("flags") == {"beta": True}
    assert cache.stats().local_hits == 1

    async def expired() -> bool:
        return bool(await client.exists("app:flags") == 0)

    await until(expired)
    # The local copy ended with the key, long before its own 30 s.
    assert await cache.get("flags", default=MISSING) is MISSING
    assert cache.stats().local_hits == 1
    await cache.aclose()


async def test_local_tiers_follow_redkit_writes_and_go_invalidate_events(client: Any) -> None:
    writer = Cache(client, layout="go", local=LocalCache(ttl=30))
    reader = Cache(client, layout="go", local=LocalCache(ttl=30))
    assert await writer.start() and await reader.start()
    await go_set(client, "app:flags", b'{"v":1}', 60_000)
    assert await reader.get("flags") == {"v": 1}
    assert await reader.get("flags") == {"v": 1}
    assert reader.stats().local_hits == 1

    # A redkit write publishes an invalidation: the reader drops its copy.
    await writer.set("flags", {"v": 2}, ttl=60)

    async def reader_sees(expected: Any) -> bool:
        return bool(await reader.get("flags") == expected)

    await until(lambda: reader_sees({"v": 2}))

    # A Go write publishes nothing: the local copy stays until the Go
    # service announces a change (its cache.invalidate, payload null).
    await go_set(client, "app:flags", b'{"v":3}', 60_000)
    local_hits = reader.stats().local_hits
    assert await reader.get("flags") == {"v": 2}
    assert reader.stats().local_hits == local_hits + 1
    await client.publish(reader.channel, GO_BARE_INVALIDATE)
    await until(lambda: reader_sees({"v": 3}))
    await writer.aclose()
    await reader.aclose()


# -- options and failures ---------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layout": "Go"}, r"layout must be 'redkit' or 'go', got 'Go'"),
        ({"layout": None}, r"layout must be 'redkit' or 'go', got None"),
        ({"layout": "go", "codec": "msgpack"}, r"codec must be 'json', got 'msgpack'"),
    ],
)
def test_bad_options_are_refused(redis_client: Redis, options: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Cache(redis_client, **options)


def test_the_layout_is_visible(redis_client: Redis) -> None:
    plain = Cache(redis_client, layout="go", local=LocalCache())
    assert plain.layout == "go" and isinstance(plain, Cache)
    assert repr(plain) == "<Cache prefix='app' layout='go', local>"
    assert Cache(redis_client).layout == "redkit"
    # help() and IDEs see the constructor's real parameters.
    parameters = inspect.signature(Cache).parameters
    assert list(parameters)[:4] == ["client", "prefix", "default_ttl", "local"]
    assert parameters["layout"].default == "redkit"

    class Mine(Cache):
        pass

    with pytest.raises(ConfigError, match="not available to Mine"):
        Mine(redis_client, layout="go")


async def test_a_stopped_server_fails_open(fresh_server: Any) -> None:
    client = await redkit.connect(
        settings_for(fresh_server, read_timeout=0.5, write_timeout=0.5, connect_timeout=0.5)
    )
    cache = Cache(client, layout="go")
    try:
        await cache.set("k", {"v": 1}, ttl=60)
        fresh_server.stop()

        async def load() -> dict[str, str]:
            return {"from": "loader"}

        assert await cache.get("k", default=MISSING) is MISSING
        assert await cache.exists("k") is False
        assert await cache.set("k", 2, ttl=60) is False
        assert await cache.get_or_set("k", load, ttl=60) == {"from": "loader"}
        assert await cache.delete("k") == 0
        assert cache.stats().errors >= 5
    finally:
        await cache.aclose()
        await client.aclose()
