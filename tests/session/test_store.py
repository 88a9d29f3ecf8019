"""SessionStore on a standalone server and on a 3-master cluster."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Coroutine
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from redkit import ConfigError, SerializationError
from redkit.connection import Client
from redkit.session import Session, SessionDataTooLarge, SessionStats, SessionStore

from ._helpers import SECRET, all_keys, command_calls, command_names, go_record, wait_for

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


async def gather_bounded(coros: list[Coroutine[Any, Any, Any]], limit: int = 8) -> list[Any]:
    """Run every coroutine as its own task, at most ``limit`` in flight (the
    cluster client's pool has 10 connections per node and refuses more)."""
    gate = asyncio.Semaphore(limit)

    async def run(coro: Coroutine[Any, Any, Any]) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))


def record_key(store: SessionStore, session_id: str) -> str:
    tag, secret = session_id.split(".")
    return f"{store.prefix}:session:{{{tag}}}:{secret}"


def index_key(session_id: str, prefix: str = "app") -> str:
    return f"{prefix}:session:{{{session_id.split('.')[0]}}}:user"


async def test_create_writes_the_go_record_and_indexes_it(client: Client) -> None:
    store = SessionStore(client, secret=SECRET, prefix="app")
    session = await store.create("42", {"role": "admin", "cart": [1, 2, 3]})
    assert isinstance(session, Session)
    assert session.user_id == "42"
    assert session.data == {"role": "admin", "cart": [1, 2, 3]}
    assert session.created_at.tzinfo is not None
    assert session.expires_at - session.created_at == timedelta(hours=24)

    raw = await client.get(record_key(store, session.id))
    record = json.loads(raw)
    assert list(record) == ["id", "user_id", "data", "created_at", "expires_at"]
    assert record["id"] == session.id
    assert record["user_id"] == "42"
    assert record["data"] == {"role": "admin", "cart": [1, 2, 3]}
    assert RFC3339.fullmatch(record["created_at"])
    assert RFC3339.fullmatch(record["expires_at"])
    # The server's clock decided the times.
    now = datetime.now(timezone.utc)
    assert abs((session.created_at - now).total_seconds()) < 60

    ttl = await client.pttl(record_key(store, session.id))
    assert 23.9 * 3600 * 1000 < ttl <= 24 * 3600 * 1000
    members = await client.smembers(index_key(session.id))
    assert members == {session.id.encode()}
    # Set together; read a moment apart.
    assert await client.pttl(index_key(session.id)) >= ttl - 100


async def test_record_and_index_share_a_cluster_slot(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("user-7")
    assert key_slot(record_key(store, session.id).encode()) == key_slot(
        index_key(session.id).encode()
    )
    other = await store.create("user-7")
    assert other.id.split(".")[0] == session.id.split(".")[0]


async def test_ids_are_256_random_bits_and_url_safe(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    ids = {(await store.create("1")).id for _ in range(20)}
    ids |= {(await store.create("")).id for _ in range(20)}
    assert len(ids) == 40
    for session_id in ids:
        tag, secret = session_id.split(".")
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", tag)
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)
        assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    secrets_ = [i.split(".")[1] for i in ids]
    assert len(set(secrets_)) == 40
    # Anonymous sessions get random tags (spread over the cluster).
    anon_tags = {i.split(".")[0] for i in ids} - {next(iter(ids)).split(".")[0]}
    assert len(anon_tags) >= 20


async def test_get_returns_the_session_and_none_when_missing(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("42", {"a": 1})
    assert await store.get(session.id) == session
    await client.delete(record_key(store, session.id))
    assert await store.get(session.id) is None
    fake = session.id[:-1] + ("A" if session.id[-1] != "A" else "B")
    assert await store.get(fake) is None


MALFORMED = [
    "",
    "x",
    "*",
    "app:session:*",
    "a" * 10_000,
    "A" * 22 + "." + "B" * 42,
    "A" * 22 + "." + "B" * 43 + "\n",
    "A" * 22 + "\n" + "B" * 43,
    "A" * 22 + "." + "B" * 42 + "*",
    "A" * 22 + "." + "B" * 42 + "?",
    "{" + "A" * 21 + "." + "B" * 43,
    "A" * 22 + "." + "B" * 42 + "é",
    "3b0f4f0e-8a51-4a53-9d39-6a9f5c1e2d77",  # Go ids belong to layout="go"
]


async def test_malformed_ids_return_none_without_a_redis_call(redis_client: Redis) -> None:
    store = SessionStore(redis_client, secret=SECRET)
    before = await command_calls(redis_client)
    for bad in [*MALFORMED, None, 42, b"A" * 66]:
        assert await store.get(bad) is None  # type: ignore[arg-type]
        assert await store.refresh(bad) is None  # type: ignore[arg-type]
        assert await store.update(bad, {"a": 1}) is None  # type: ignore[arg-type]
        assert await store.rotate(bad) is None  # type: ignore[arg-type]
        assert await store.destroy(bad) is False  # type: ignore[arg-type]
    assert await command_calls(redis_client) == before
    assert store.stats().malformed_ids == 5 * (len(MALFORMED) + 3)


async def test_update_merges_keys_and_none_removes(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("42", {"keep": 1, "drop": 2, "change": 3})
    updated = await store.update(session.id, {"change": "x", "drop": None, "new": [1]})
    assert updated is not None
    assert updated.data == {"keep": 1, "change": "x", "new": [1]}
    assert await store.get(session.id) == updated
    # Removing a key that is not there is a no-op, not an error.
    again = await store.update(session.id, {"absent": None})
    assert again is not None
    assert again.data == updated.data


async def test_update_keeps_untouched_values_byte_for_byte(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    data = {"big": 2**70, "float": 0.1, "empty_list": [], "empty_obj": {}, "nested": {"a": [{}]}}
    session = await store.create("42", data)
    before = json.loads(await client.get(record_key(store, session.id)))
    await store.update(session.id, {"other": True})
    raw = (await client.get(record_key(store, session.id))).decode()
    assert '"big":1180591620717411303424' in raw
    assert '"empty_list":[]' in raw
    assert '"empty_obj":{}' in raw
    after = json.loads(raw)
    assert after["data"] == {**before["data"], "other": True}
    assert after["created_at"] == before["created_at"]


async def test_update_of_a_missing_session_creates_nothing(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("42")
    await store.destroy(session.id)
    assert await store.update(session.id, {"a": 1}) is None
    assert await client.exists(record_key(store, session.id)) == 0


async def test_update_keys_with_quotes_and_escapes(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("42", {'q"uote': 1, "back\\slash": 2, "ünï": 3, "<&>": 4})
    updated = await store.update(session.id, {'q"uote': 10, "back\\slash": None, "<&>": 40})
    assert updated is not None
    assert updated.data == {'q"uote': 10, "ünï": 3, "<&>": 40}


async def test_concurrent_updates_of_different_keys_all_survive(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("42", {})
    await gather_bounded([store.update(session.id, {f"k{i}": i}) for i in range(60)])
    final = await store.get(session.id)
    assert final is not None
    assert final.data == {f"k{i}": i for i in range(60)}


async def test_refresh_never_overwrites_a_concurrent_update(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("42", {})
    ops: list[Coroutine[Any, Any, Any]] = []
    for i in range(40):
        ops.append(store.update(session.id, {f"k{i}": i}))
        ops.append(store.refresh(session.id))
        ops.append(store.refresh(session.id))
    await gather_bounded(ops)
    final = await store.get(session.id)
    assert final is not None
    assert final.data == {f"k{i}": i for i in range(40)}


async def test_refresh_slides_expiry_and_returns_none_when_gone(client: Client) -> None:
    store = SessionStore(
        client, secret=SECRET, ttl=timedelta(seconds=30), absolute_ttl=timedelta(hours=1)
    )
    session = await store.create("42", {"a": 1})
    key = record_key(store, session.id)
    await client.pexpire(key, 5000)
    refreshed = await store.refresh(session.id)
    assert refreshed is not None
    assert refreshed.data == {"a": 1}
    assert refreshed.expires_at > session.expires_at
    assert 25_000 < await client.pttl(key) <= 30_000
    await store.destroy(session.id)
    assert await store.refresh(session.id) is None


async def test_idle_timeout_ends_an_unused_session(client: Client) -> None:
    store = SessionStore(
        client, secret=SECRET, ttl=timedelta(seconds=1), absolute_ttl=timedelta(seconds=60)
    )
    session = await store.create("42")
    assert await store.get(session.id) is not None

    async def gone() -> bool:
        return await store.get(session.id) is None

    took = await wait_for(gone, timeout=10)
    assert took > 0.5


async def test_refresh_keeps_a_used_session_alive_past_its_idle_timeout(client: Client) -> None:
    store = SessionStore(
        client, secret=SECRET, ttl=timedelta(seconds=3), absolute_ttl=timedelta(seconds=60)
    )
    session = await store.create("42")
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < 4.5:
        assert await store.refresh(session.id) is not None
        await asyncio.sleep(0.2)
    assert await store.get(session.id) is not None


async def test_absolute_timeout_wins_over_refreshes(client: Client) -> None:
    store = SessionStore(
        client, secret=SECRET, ttl=timedelta(seconds=2), absolute_ttl=timedelta(seconds=3)
    )
    session = await store.create("42")
    key = record_key(store, session.id)
    deadline = session.created_at + timedelta(seconds=3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    ended = None
    while loop.time() - started < 12:
        refreshed = await store.refresh(session.id)
        if refreshed is None:
            ended = loop.time() - started
            break
        # Never promised past the absolute deadline, in the record or the TTL.
        assert refreshed.expires_at <= deadline
        assert await client.pttl(key) <= 3000
        await asyncio.sleep(0.15)
    assert ended is not None, "refresh kept the session past its absolute timeout"
    assert ended > 1.5


async def test_absolute_timeout_enforced_for_records_without_expiry(client: Client) -> None:
    """A record stored without an expiry (or extended past the absolute
    timeout by hand) is judged by created_at on Redis's clock when it is
    refreshed or updated. (``get`` in this layout trusts the TTL, which
    every redkit write caps; the Go layout's ``get`` checks created_at.)"""
    store = SessionStore(
        client, secret=SECRET, ttl=timedelta(hours=24), absolute_ttl=timedelta(days=7)
    )
    session = await store.create("42", {"a": 1})
    key = record_key(store, session.id)
    old = datetime.now(timezone.utc) - timedelta(days=8)
    await client.set(key, go_record(session.id, "42", old))
    assert await store.update(session.id, {"b": 1}) is None
    assert await client.exists(key) == 0
    await client.set(key, go_record(session.id, "42", old))
    await client.sadd(index_key(session.id), session.id)
    assert await store.refresh(session.id) is None
    assert await client.exists(key) == 0
    assert await client.sismember(index_key(session.id), session.id) == 0

    fresh = await store.create("42", {"a": 1})
    key = record_key(store, fresh.id)
    recent = datetime.now(timezone.utc) - timedelta(days=6)
    await client.set(key, go_record(fresh.id, "42", recent))
    assert await client.pttl(key) == -1
    touched = await store.refresh(fresh.id)
    assert touched is not None
    left = await client.pttl(key)
    assert 0 < left <= 24 * 3600 * 1000  # an expiry was put on it, capped
    assert touched.expires_at <= touched.created_at + timedelta(days=7)


async def test_rotate_gives_a_new_id_and_kills_the_old_one(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("42", {"a": 1})
    rotated = await store.rotate(session.id)
    assert rotated is not None
    assert rotated.id != session.id
    assert rotated.data == {"a": 1}
    assert rotated.user_id == "42"
    assert rotated.created_at == session.created_at
    assert await store.get(session.id) is None
    assert await store.get(rotated.id) == rotated
    members = await client.smembers(index_key(rotated.id))
    assert members == {rotated.id.encode()}
    assert await store.rotate(session.id) is None


async def test_rotate_to_another_user_moves_the_index_entry(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    anon = await store.create("", {"cart": [1]})
    logged_in = await store.rotate(anon.id, user_id="42")
    assert logged_in is not None
    assert logged_in.user_id == "42"
    assert logged_in.data == {"cart": [1]}
    assert logged_in.created_at >= anon.created_at
    assert await store.get(anon.id) is None
    assert [s.id for s in await store.list_for_user("42")] == [logged_in.id]

    switched = await store.rotate(logged_in.id, user_id="43")
    assert switched is not None
    assert switched.user_id == "43"
    assert await store.list_for_user("42") == []
    assert [s.id for s in await store.list_for_user("43")] == [switched.id]
    assert await client.exists(index_key(logged_in.id)) == 0


async def test_destroy_reports_whether_it_existed(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("42")
    keep = await store.create("42")
    assert await store.destroy(session.id) is True
    assert await store.destroy(session.id) is False
    assert await store.get(session.id) is None
    assert await client.smembers(index_key(session.id)) == {keep.id.encode()}


async def test_destroy_all_for_user(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    mine = [await store.create("42", {"n": i}) for i in range(5)]
    other = await store.create("43")
    anon = await store.create("")
    assert await store.destroy_all_for_user("42") == 5
    for session in mine:
        assert await store.get(session.id) is None
    assert await store.get(other.id) is not None
    assert await store.get(anon.id) is not None
    assert await client.exists(index_key(mine[0].id)) == 0
    assert await store.destroy_all_for_user("42") == 0
    assert await store.list_for_user("42") == []


async def test_destroy_all_and_list_never_scan(redis_client: Redis) -> None:
    store = SessionStore(redis_client, secret=SECRET)
    for _ in range(3):
        await store.create("42")
    for i in range(50):
        await store.create(f"other-{i}")
    before = await command_names(redis_client)
    assert len(await store.list_for_user("42")) == 3
    assert await store.destroy_all_for_user("42") == 3
    after = await command_names(redis_client)
    for command in ("scan", "keys"):
        assert after.get(command, 0) == before.get(command, 0)
    # Work is O(that user's sessions): 3 records, not 53.
    gets = after.get("get", 0) - before.get("get", 0)
    assert gets <= 6


async def test_list_for_user_newest_first_and_only_live(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    created = []
    for i in range(4):
        created.append(await store.create("42", {"n": i}))
        await asyncio.sleep(0.01)
    await store.destroy(created[1].id)
    listed = await store.list_for_user("42")
    assert [s.id for s in listed] == [created[3].id, created[2].id, created[0].id]
    assert all(isinstance(s, Session) for s in listed)


async def test_index_does_not_grow_as_sessions_expire(client: Client) -> None:
    store = SessionStore(
        client, secret=SECRET, ttl=timedelta(seconds=1.5), absolute_ttl=timedelta(seconds=5)
    )
    first = await store.create("42")
    for _ in range(20):
        await store.create("42")
    idx = index_key(first.id)
    assert await client.scard(idx) == 21  # 21 creates take far less than 1.5 s

    async def all_expired() -> bool:
        return await client.exists(record_key(store, first.id)) == 0

    await wait_for(all_expired, timeout=10)
    await wait_for(lambda: _none_left(client, store, idx), timeout=10)
    # A create prunes every ended entry before it adds its own.
    survivor = await store.create("42")
    assert await client.smembers(idx) == {survivor.id.encode()}


async def _none_left(client: Client, store: SessionStore, idx: str) -> bool:
    for member in await client.smembers(idx):
        if await client.exists(record_key(store, member.decode())):
            return False
    return True


async def test_index_key_expires_with_its_last_session(client: Client) -> None:
    store = SessionStore(
        client, secret=SECRET, ttl=timedelta(milliseconds=400), absolute_ttl=timedelta(seconds=5)
    )
    session = await store.create("42")
    idx = index_key(session.id)
    assert await client.pttl(idx) > 0

    async def index_gone() -> bool:
        return await client.exists(idx) == 0

    await wait_for(index_gone, timeout=10)


async def test_index_outlives_every_session_it_lists(client: Client) -> None:
    store = SessionStore(
        client, secret=SECRET, ttl=timedelta(seconds=2), absolute_ttl=timedelta(seconds=60)
    )
    first = await store.create("42")
    await asyncio.sleep(0.3)
    second = await store.create("42")
    await store.refresh(first.id)
    await store.update(second.id, {"x": 1})
    idx_ttl = await client.pttl(index_key(first.id))
    for session in (first, second):
        assert await client.pttl(record_key(store, session.id)) <= idx_ttl


async def test_unserializable_data_is_rejected_and_nothing_stored(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    with pytest.raises(SerializationError, match="object"):
        await store.create("42", {"bad": object()})
    with pytest.raises(SerializationError, match="keys must be strings"):
        await store.create("42", {1: "x"})  # type: ignore[dict-item]
    with pytest.raises(SerializationError, match="mapping"):
        await store.create("42", ["not", "a", "mapping"])  # type: ignore[arg-type]
    assert await all_keys(client) == set()

    session = await store.create("42", {"a": 1})
    with pytest.raises(SerializationError):
        await store.update(session.id, {"b": {1, 2, 3j}})
    assert (await store.get(session.id)) == session


async def test_data_size_limit(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    with pytest.raises(SessionDataTooLarge, match="65536"):
        await store.create("42", {"blob": "x" * 70_000})
    assert await all_keys(client) == set()

    small = SessionStore(client, secret=SECRET, max_data_bytes=100)
    session = await small.create("42", {"a": "x" * 40})
    with pytest.raises(SessionDataTooLarge, match="100"):
        await small.update(session.id, {"b": "y" * 60})
    assert (await small.get(session.id)) == session
    fits = await small.update(session.id, {"a": None, "b": "y" * 80})
    assert fits is not None
    assert fits.data == {"b": "y" * 80}
    with pytest.raises(SessionDataTooLarge):
        await small.update(session.id, {"c": "z" * 200})


async def test_malformed_stored_record_raises_and_is_left_alone(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("42", {"a": 1})
    key = record_key(store, session.id)
    for garbage in (b"not json", b'{"id": 1}', b"[1,2]", b'{"id":"x","user_id":"42"'):
        await client.set(key, garbage)
        with pytest.raises(SerializationError, match=re.escape(key)):
            await store.get(session.id)
        with pytest.raises(SerializationError):
            await store.update(session.id, {"b": 2})
        assert await client.get(key) == garbage


async def test_record_with_another_id_is_rejected(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("42")
    other = await store.create("42")
    await client.set(record_key(store, session.id), await client.get(record_key(store, other.id)))
    with pytest.raises(SerializationError, match="another id"):
        await store.get(session.id)


async def test_user_id_validation(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    with pytest.raises(ConfigError, match="control character"):
        await store.create("4\n2")
    with pytest.raises(ConfigError, match="512"):
        await store.create("x" * 600)
    with pytest.raises(ConfigError, match="int"):
        await store.create(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="surrogate"):
        await store.create("\ud800")
    with pytest.raises(ConfigError, match="empty"):
        await store.list_for_user("")
    with pytest.raises(ConfigError, match="empty"):
        await store.destroy_all_for_user("")
    with pytest.raises(ConfigError, match="surrogate"):
        await store.rotate((await store.create("")).id, user_id="\udc00")
    # Any other text is a fine user id, braces and colons included.
    session = await store.create("{odd}:user*?")
    assert [s.id for s in await store.list_for_user("{odd}:user*?")] == [session.id]


async def test_bad_configuration(client: Client) -> None:
    with pytest.raises(ConfigError, match="absolute_ttl"):
        SessionStore(client, secret=SECRET, ttl=timedelta(hours=2), absolute_ttl=timedelta(hours=1))
    with pytest.raises(ConfigError, match="ttl"):
        SessionStore(client, secret=SECRET, ttl=timedelta(0))
    with pytest.raises(ConfigError, match="ttl"):
        SessionStore(client, secret=SECRET, ttl=-5)
    with pytest.raises(ConfigError, match="layout"):
        SessionStore(client, secret=SECRET, layout="redis")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="prefix"):
        SessionStore(client, secret=SECRET, prefix="a{b}")
    with pytest.raises(ConfigError, match="max_data_bytes"):
        SessionStore(client, secret=SECRET, max_data_bytes=0)


async def test_go_layout_refuses_a_cluster(cluster_client: Client) -> None:
    with pytest.raises(ConfigError, match="cluster"):
        SessionStore(cluster_client, layout="go")


async def test_stats_count_operations(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("42")
    await store.get(session.id)
    await store.get("nope")
    await store.update(session.id, {"a": 1})
    await store.refresh(session.id)
    rotated = await store.rotate(session.id)
    assert rotated is not None
    await store.get(session.id)
    await store.destroy(rotated.id)
    assert store.stats() == SessionStats(
        created=1,
        hits=2,
        misses=1,
        malformed_ids=1,
        updated=1,
        refreshed=1,
        rotated=1,
        destroyed=1,
        errors=0,
    )


async def test_prefix_separates_stores(client: Client) -> None:
    a = SessionStore(client, secret=SECRET, prefix="a")
    b = SessionStore(client, secret=SECRET, prefix="b")
    session = await a.create("42", {"x": 1})
    assert await b.get(session.id) is None
    assert await b.list_for_user("42") == []
    assert await all_keys(client, "a:*")
    assert not await all_keys(client, "b:*")


async def test_touch_refreshes_only_when_due(client: Client) -> None:
    store = SessionStore(
        client, secret=SECRET, ttl=timedelta(seconds=30), absolute_ttl=timedelta(hours=1)
    )
    session = await store.create("42", {"a": 1})
    key = record_key(store, session.id)
    await client.pexpire(key, 20_000)  # as if last used 10 s ago
    touched = await store.touch(session.id, timedelta(seconds=15))
    assert touched == session  # not due: nothing rewritten
    assert await client.pttl(key) <= 20_000
    touched = await store.touch(session.id, timedelta(seconds=5))
    assert touched is not None
    assert touched.data == {"a": 1}
    assert touched.expires_at > session.expires_at
    assert await client.pttl(key) > 25_000
    await store.destroy(session.id)
    assert await store.touch(session.id, 1.0) is None
    with pytest.raises(ConfigError, match="min_interval"):
        await store.touch(session.id, 0)
