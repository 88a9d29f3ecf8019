"""Hostile values on a real server (standalone and cluster): data JSON
cannot carry is refused before anything is written, records nobody could
have written through a store read as SerializationError (the middleware
starts a fresh session instead of answering 500), and every bad argument
is a ConfigError."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from redis.asyncio import Redis

from redkit import ConfigError, SerializationError
from redkit.connection import Client
from redkit.session import SessionStore

from ._apps import POISON, asgi_client, attributes, nested_lists, set_cookies, sign, starlette_app
from ._helpers import SECRET, all_keys, go_record

DEEP = 100_000


def record_key(session_id: str, prefix: str = "app") -> str:
    tag, secret = session_id.split(".")
    return f"{prefix}:session:{{{tag}}}:{secret}"


def signed(session_id: str) -> dict[str, str]:
    return {"cookie": f"session={sign(session_id)}"}


def hostile_record(session_id: str, data: bytes, *, created: str | None = None) -> bytes:
    """A record with the right id whose data (and, if given, created_at) is
    what an attacker with write access to Redis chose."""
    created = created or "2026-11-26T11:04:05.000000Z"
    return (
        b'{"id":"'
        + session_id.encode()
        + b'","user_id":"","data":'
        + data
        + b',"created_at":"'
        + created.encode()
        + b'","expires_at":"2026-11-27T11:04:05.000000Z"}'
    )


def deep_data(depth: int = DEEP) -> bytes:
    return b'{"x":' + b"[" * depth + b"]" * depth + b"}"


# -- item 6: NaN and infinities ------------------------------------------------


@pytest.mark.parametrize("kind", ["nan", "inf", "-inf"])
async def test_non_finite_numbers_are_refused_and_nothing_is_written(
    client: Client, kind: str
) -> None:
    store = SessionStore(client, secret=SECRET)
    with pytest.raises(SerializationError, match="NaN or an infinite float"):
        await store.create("42", {"x": POISON[kind]})
    with pytest.raises(SerializationError, match="NaN or an infinite float"):
        await store.create("", {"nested": {"x": POISON[kind]}})
    assert await all_keys(client) == set()
    session = await store.create("42", {"a": 1})
    with pytest.raises(SerializationError, match="NaN or an infinite float"):
        await store.update(session.id, {"x": POISON[kind]})
    assert await store.get(session.id) == session


@pytest.mark.parametrize("kind", ["nan", "inf", "-inf"])
async def test_middleware_refuses_non_finite_numbers_a_handler_stores(
    client: Client, kind: str
) -> None:
    """The stored value is null; the handler replaces it with NaN, which the
    old encoder also wrote as null, so the change was silently dropped."""
    store = SessionStore(client, secret=SECRET)
    session = await store.create("", {"x": None, "keep": 1})
    async with asgi_client(starlette_app(store)) as http:
        with pytest.raises(SerializationError, match="NaN or an infinite float"):
            await http.get(f"/poison?kind={kind}", headers=signed(session.id))
        with pytest.raises(SerializationError, match="NaN or an infinite float"):
            await http.get(f"/poison?kind={kind}&key=new")
    assert await store.get(session.id) == session
    assert await all_keys(client) == {record_key(session.id)}


# -- item 7: deep nesting ------------------------------------------------------


async def test_writing_deeply_nested_data_raises_serialization_error(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    deep = nested_lists(DEEP)
    with pytest.raises(SerializationError, match="nested too deeply"):
        await store.create("42", {"x": deep})
    assert await all_keys(client) == set()
    session = await store.create("42", {"a": 1})
    with pytest.raises(SerializationError, match="nested too deeply"):
        await store.update(session.id, {"x": deep})
    assert await store.get(session.id) == session


async def test_middleware_refuses_deeply_nested_data(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("", {"a": 1})
    async with asgi_client(starlette_app(store)) as http:
        with pytest.raises(SerializationError, match="nested too deeply"):
            await http.get("/poison?kind=deep", headers=signed(session.id))
        with pytest.raises(SerializationError, match="nested too deeply"):
            await http.get("/poison?kind=deep")
    assert await store.get(session.id) == session
    assert await all_keys(client) == {record_key(session.id)}


async def test_stored_deeply_nested_record_raises_serialization_error(client: Client) -> None:
    store = SessionStore(client, secret=SECRET, max_data_bytes=1 << 20)
    session = await store.create("42", {"a": 1})
    key = record_key(session.id)
    raw = hostile_record(session.id, deep_data())
    await client.set(key, raw, px=60_000)
    for read in (
        store.get(session.id),
        store.refresh(session.id),
        store.touch(session.id, 1.0),
        store.update(session.id, {"b": 2}),
    ):
        with pytest.raises(SerializationError, match="nested too deeply"):
            await read
    # Listed records that do not decode are skipped, not raised.
    assert await store.list_for_user("42") == []
    assert store.stats().errors >= 4


async def test_stored_deeply_nested_go_record_raises_serialization_error(
    redis_client: Redis,
) -> None:
    store = SessionStore(redis_client, layout="go")
    session_id = "3b0f4f0e-8a51-4a53-9d39-6a9f5c1e2d77"
    record = json.loads(go_record(session_id, "42", datetime.now(timezone.utc)))
    record["data"] = "DATA"
    raw = json.dumps(record, separators=(",", ":")).encode().replace(b'"DATA"', deep_data())
    await redis_client.set(f"session:{session_id}", raw, ex=3600)
    with pytest.raises(SerializationError, match="nested too deeply"):
        await store.get(session_id)


@pytest.mark.parametrize("eager", [True, False])
async def test_middleware_starts_fresh_over_a_deeply_nested_record(
    client: Client, eager: bool, caplog: pytest.LogCaptureFixture
) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("", {"a": 1})
    raw = hostile_record(session.id, deep_data())
    await client.set(record_key(session.id), raw, px=60_000)
    errors = store.stats().errors
    path = "/show" if eager else "/lazy"
    async with asgi_client(starlette_app(store, eager=eager)) as http:
        with caplog.at_level(logging.WARNING, logger="redkit.session"):
            response = await http.get(path, headers=signed(session.id))
        assert response.status_code == 200
        assert response.json() == {}
        (cookie,) = set_cookies(response)
        assert attributes(cookie)["max-age"] == "0"
        assert "starting a fresh session" in caplog.text
        assert store.stats().errors == errors + 1
        # A fresh session is created when the handler writes; the hostile
        # record is not touched by it.
        response = await http.get(
            "/lazy?b=2" if not eager else "/put?b=2", headers=signed(session.id)
        )
        assert response.status_code == 200
        assert response.json() == {"b": "2"}
        (cookie,) = set_cookies(response)
        assert sign(session.id) not in cookie
    assert deep_data() in await client.get(record_key(session.id))


# -- other records nobody writes through a store -------------------------------


async def test_offsets_out_of_range_read_as_serialization_error(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("", {"a": 1})
    for created in ("2026-11-26T11:04:05+99:00", "2026-11-26T11:04:05.1234567-24:00"):
        raw = hostile_record(session.id, b"null", created=created)
        await client.set(record_key(session.id), raw, px=60_000)
        with pytest.raises(SerializationError, match="offset"):
            await store.get(session.id)
        async with asgi_client(starlette_app(store)) as http:
            response = await http.get("/show", headers=signed(session.id))
            assert response.status_code == 200
            assert response.json() == {}


async def test_a_key_of_another_type_reads_as_serialization_error(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("", {"a": 1})
    key = record_key(session.id)
    await client.delete(key)
    await client.rpush(key, "not", "a", "record")
    with pytest.raises(SerializationError, match="another kind of Redis value"):
        await store.get(session.id)
    with pytest.raises(SerializationError, match="another kind of Redis value"):
        await store.touch(session.id, 1.0)
    for eager in (True, False):
        async with asgi_client(starlette_app(store, eager=eager)) as http:
            for path in ("/lazy", "/whoami", "/logout", "/lazy?b=2"):
                response = await http.get(path, headers=signed(session.id))
                assert response.status_code == 200
            if eager:
                assert (await http.get("/show", headers=signed(session.id))).json() == {}
    assert await client.lrange(key, 0, -1) == [b"not", b"a", b"record"]


async def test_an_index_key_of_another_type_stops_nothing_but_new_sessions(
    client: Client,
) -> None:
    """A user's index replaced by a list: a new session for that user raises
    SerializationError and writes nothing (it could not be indexed); the
    user's live sessions still refresh, update and end."""
    store = SessionStore(client, secret=SECRET)
    session = await store.create("42", {"a": 1})
    index = f"app:session:{{{session.id.split('.')[0]}}}:user"
    await client.delete(index)
    await client.rpush(index, "x")
    anonymous = await store.create("")
    before = await all_keys(client)
    with pytest.raises(SerializationError, match="another kind of Redis value"):
        await store.create("42")
    with pytest.raises(SerializationError, match="another kind of Redis value"):
        await store.rotate(anonymous.id, user_id="42")
    # Nothing new; on a cluster the login's first step (read and delete the
    # anonymous session, another slot) has run, as a crash there would.
    assert await all_keys(client) - before == set()
    assert before - await all_keys(client) <= {record_key(anonymous.id)}
    assert await store.refresh(session.id) is not None
    updated = await store.update(session.id, {"b": 2})
    assert updated is not None
    assert updated.data == {"a": 1, "b": 2}
    assert await store.destroy(session.id) is True
    assert await store.get(session.id) is None
    assert await client.lrange(index, 0, -1) == [b"x"]


async def test_go_layout_index_of_another_type(redis_client: Redis) -> None:
    store = SessionStore(redis_client, layout="go")
    await redis_client.set("session:user:42", "not a set")
    with pytest.raises(SerializationError, match="another kind of Redis value"):
        await store.create("42")
    assert await all_keys(redis_client) == {"session:user:42"}


async def test_logout_everywhere_over_a_record_with_an_unusable_user_id(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    session = await store.create("42", {"a": 1})
    for user_id in ("a\nb", "x" * 600):
        raw = (await client.get(record_key(session.id))).replace(
            b'"user_id":"42"', b'"user_id":' + json.dumps(user_id).encode()
        )
        await client.set(record_key(session.id), raw, px=60_000)
        async with asgi_client(starlette_app(store)) as http:
            response = await http.get("/logout?everywhere=1", headers=signed(session.id))
            assert response.status_code == 200
            assert response.json() == {"existed": True}
        assert await client.exists(record_key(session.id)) == 0
        session = await store.create("42", {"a": 1})


# -- item 8: every bad argument is a ConfigError ---------------------------------


async def test_bad_durations_are_config_errors(client: Client) -> None:
    century = timedelta(days=36525)
    bad: list[tuple[str, dict[str, Any]]] = [
        ("ttl", {"ttl": float("inf")}),
        ("ttl", {"ttl": float("nan")}),
        ("ttl", {"ttl": 10**400}),
        ("ttl", {"ttl": "3600"}),
        ("ttl", {"ttl": True}),
        ("ttl", {"ttl": century + timedelta(days=1)}),
        ("absolute_ttl", {"absolute_ttl": 1e300}),
        ("absolute_ttl", {"absolute_ttl": -1.0}),
        ("absolute_ttl", {"absolute_ttl": timedelta.max}),
        ("max_data_bytes", {"max_data_bytes": 2.5}),
        ("prefix", {"prefix": 5}),
        ("prefix", {"prefix": "\udc80"}),
    ]
    for what, options in bad:
        with pytest.raises(ConfigError, match=what):
            SessionStore(client, secret=SECRET, **options)
    # The longest allowed lifetime works end to end: its expiry is a
    # timestamp both Python and Go read.
    store = SessionStore(client, secret=SECRET, ttl=century, absolute_ttl=century)
    session = await store.create("42", {"a": 1})
    assert await store.get(session.id) == session
    assert await store.refresh(session.id) is not None
    for interval in (float("inf"), 0, -1, "1", 1e300):
        with pytest.raises(ConfigError, match="min_interval"):
            await store.touch(session.id, interval)  # type: ignore[arg-type]


async def test_bad_user_ids_are_config_errors_and_write_nothing(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    for user_id in ("\ud800", "a\x00b", 42, None, b"42"):
        with pytest.raises(ConfigError, match="user_id"):
            await store.create(user_id)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="user_id"):
            await store.list_for_user(user_id)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="user_id"):
            await store.destroy_all_for_user(user_id)  # type: ignore[arg-type]
    assert await all_keys(client) == set()
