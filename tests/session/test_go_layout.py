"""layout="go": sharing Redis with the Go service (its keys, ids and records)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from redis.asyncio import Redis

from redkit import SerializationError
from redkit.session import SessionStore
from redkit.session._ids import parse_time

from ._helpers import FIXTURE, SECRET, go_record

GO_ID = "3b0f4f0e-8a51-4a53-9d39-6a9f5c1e2d77"
# Go's time.Time JSON (RFC 3339, up to 9 fraction digits, Z or an offset).
GO_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


async def test_the_golden_record_loads_with_go_keys(redis_client: Redis) -> None:
    store = SessionStore(redis_client, layout="go")
    golden = json.loads(FIXTURE.read_text())
    # Its dates are examples: shift them to now, keep everything else.
    now = datetime.now(timezone.utc).replace(microsecond=500000)
    shifted = dict(golden)
    shifted["created_at"] = now.strftime("%Y-%m-%dT%H:%M:%S.5Z")
    shifted["expires_at"] = (now + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%S.5Z")
    await redis_client.set(f"session:{GO_ID}", json.dumps(shifted), ex=3600)
    session = await store.get(GO_ID)
    assert session is not None
    assert session.id == GO_ID
    assert session.user_id == "42"
    assert session.data == {"role": "admin", "cart": [1, 2, 3], "theme": "dark"}
    assert session.created_at == now
    assert session.expires_at == now + timedelta(hours=24)
    # Uppercase hex is a valid UUID spelling; the Go service writes lowercase.
    assert await store.get(GO_ID.upper()) is None


async def test_go_timestamps_truncate_nanoseconds_and_keep_offsets(redis_client: Redis) -> None:
    store = SessionStore(redis_client, layout="go")
    record = json.loads(FIXTURE.read_text())
    record["created_at"] = "2025-11-26T11:04:05.999999999+07:00"
    record["expires_at"] = "2099-11-27T11:04:05.123456789Z"
    store_long = SessionStore(
        redis_client, layout="go", ttl=timedelta(days=1), absolute_ttl=timedelta(days=36500)
    )
    await redis_client.set(f"session:{GO_ID}", json.dumps(record), ex=3600)
    session = await store_long.get(GO_ID)
    assert session is not None
    assert session.created_at.microsecond == 999999
    assert session.created_at.second == 5
    assert session.created_at.utcoffset() == timedelta(hours=7)
    assert session.expires_at.microsecond == 123456
    # Past the 7-day default absolute timeout, for the default store it is
    # over, though the key still has an hour to live: judged on Redis's clock.
    await redis_client.sadd("session:user:42", GO_ID)
    assert await store.get(GO_ID) is None
    assert await redis_client.exists(f"session:{GO_ID}") == 0
    assert await redis_client.exists("session:user:42") == 0


def test_parse_time_rules() -> None:
    assert parse_time("2026-11-26T11:04:05Z") == datetime(
        2026, 11, 26, 11, 4, 5, tzinfo=timezone.utc
    )
    assert parse_time("2026-11-26T11:04:05.5Z").microsecond == 500000
    assert parse_time("2026-11-26T11:04:05.123456789Z").microsecond == 123456
    assert parse_time("2026-11-26T11:04:05-02:30").utcoffset() == timedelta(hours=-2, minutes=-30)
    for bad in ("2026-11-26", "2026-11-26T11:04:05", "2026-13-01T00:00:00Z", "x", ""):
        with pytest.raises(SerializationError, match="timestamp"):
            parse_time(bad)


async def test_records_redkit_writes_follow_go_rules(redis_client: Redis) -> None:
    store = SessionStore(redis_client, layout="go")
    session = await store.create("42", {"role": "admin"})
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", session.id)
    raw = await redis_client.get(f"session:{session.id}")
    record = json.loads(raw)
    assert set(record) == {"id", "user_id", "data", "created_at", "expires_at"}
    assert GO_RFC3339.fullmatch(record["created_at"])
    assert GO_RFC3339.fullmatch(record["expires_at"])
    # The Go service's index: a set at session:user:<user_id>.
    assert await redis_client.type("session:user:42") == b"set"
    assert await redis_client.smembers("session:user:42") == {session.id.encode()}


async def test_prefix_in_go_layout(redis_client: Redis) -> None:
    store = SessionStore(redis_client, layout="go", prefix="app")
    session = await store.create("42")
    assert await redis_client.exists(f"app:session:{session.id}") == 1
    assert await redis_client.smembers("app:session:user:42") == {session.id.encode()}


async def test_go_written_sessions_are_listed_updated_and_destroyed(redis_client: Redis) -> None:
    store = SessionStore(redis_client, layout="go")
    now = datetime.now(timezone.utc)
    go_ids = [GO_ID, "11111111-2222-4333-8444-555555555555"]
    for i, go_id in enumerate(go_ids):
        created = now - timedelta(minutes=10 - i)
        await redis_client.set(f"session:{go_id}", go_record(go_id, "42", created), ex=3600)
        await redis_client.sadd("session:user:42", go_id)
    ours = await store.create("42", {"from": "python"})
    # A member whose record is gone (the Go service never prunes).
    await redis_client.sadd("session:user:42", "99999999-2222-4333-8444-555555555555")

    listed = await store.list_for_user("42")
    assert [s.id for s in listed] == [ours.id, go_ids[1], go_ids[0]]
    assert await redis_client.scard("session:user:42") == 3

    updated = await store.update(GO_ID, {"theme": None, "lang": "id"})
    assert updated is not None
    assert updated.data == {"role": "admin", "cart": [1, 2, 3], "lang": "id"}
    raw = json.loads(await redis_client.get(f"session:{GO_ID}"))
    assert raw["id"] == GO_ID
    assert GO_RFC3339.fullmatch(raw["expires_at"])

    assert await store.destroy_all_for_user("42") == 3
    assert await redis_client.exists(f"session:{GO_ID}", f"session:{ours.id}") == 0


async def test_go_record_with_null_data(redis_client: Redis) -> None:
    store = SessionStore(redis_client, layout="go")
    now = datetime.now(timezone.utc)
    record = json.loads(go_record(GO_ID, "42", now))
    record["data"] = None
    await redis_client.set(f"session:{GO_ID}", json.dumps(record), ex=3600)
    session = await store.get(GO_ID)
    assert session is not None
    assert session.data == {}
    updated = await store.update(GO_ID, {"a": 1})
    assert updated is not None
    assert updated.data == {"a": 1}


async def test_refresh_puts_a_session_back_into_a_lost_index(redis_client: Redis) -> None:
    """The Go service resets the index TTL to its own ttl on each Create;
    when that index expires while a session lives, the next refresh or
    update of that session puts it back."""
    store = SessionStore(redis_client, layout="go")
    now = datetime.now(timezone.utc)
    await redis_client.set(f"session:{GO_ID}", go_record(GO_ID, "42", now), ex=3600)
    assert await redis_client.exists("session:user:42") == 0
    assert await store.refresh(GO_ID) is not None
    assert await redis_client.smembers("session:user:42") == {GO_ID.encode()}
    record_ttl = await redis_client.pttl(f"session:{GO_ID}")
    assert await redis_client.pttl("session:user:42") >= record_ttl - 100
    assert [s.id for s in await store.list_for_user("42")] == [GO_ID]


async def test_rotate_in_go_layout(redis_client: Redis) -> None:
    store = SessionStore(redis_client, layout="go")
    now = datetime.now(timezone.utc)
    await redis_client.set(f"session:{GO_ID}", go_record(GO_ID, "42", now), ex=3600)
    await redis_client.sadd("session:user:42", GO_ID)
    rotated = await store.rotate(GO_ID)
    assert rotated is not None
    assert rotated.user_id == "42"
    assert await store.get(GO_ID) is None
    assert await redis_client.smembers("session:user:42") == {rotated.id.encode()}
    moved = await store.rotate(rotated.id, user_id="43")
    assert moved is not None
    assert await redis_client.exists("session:user:42") == 0
    assert await redis_client.smembers("session:user:43") == {moved.id.encode()}


async def test_go_layout_ids(redis_client: Redis) -> None:
    store = SessionStore(redis_client, layout="go")
    tagged = await SessionStore(redis_client, secret=SECRET).create("42")
    for bad in (tagged.id, GO_ID + "\n", GO_ID.replace("-", ""), "session:*", "x" * 43 + "?"):
        assert await store.get(bad) is None
    assert store.stats().malformed_ids == 5
