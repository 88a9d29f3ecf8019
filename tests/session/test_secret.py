"""Session ids say nothing about their user: the hash tag is a keyed digest
of the user id under the store's secret, which can be rotated without
losing sessions. Standalone and cluster."""

from __future__ import annotations

from typing import Any

import pytest
from redis.crc import key_slot

from redkit import ConfigError
from redkit.connection import Client
from redkit.session import SessionMiddleware, SessionStore

from ._apps import KEY, asgi_client, cookie_value, starlette_app
from ._helpers import SECRET, all_keys, keyed_tag, unkeyed_tag

OLD = "the-old-session-secret-0123456789"
NEW = "the-new-session-secret-9876543210"


def tag(session_id: str) -> str:
    return session_id.split(".")[0]


async def test_an_id_does_not_contain_the_unkeyed_hash_of_its_user(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    for user in ("42", "alice@example.com", "{odd}:user*?"):
        session = await store.create(user)
        assert unkeyed_tag(user) not in session.id
        assert tag(session.id) == keyed_tag(SECRET, user)
        # Nor does any key the store wrote for that user.
        assert not any(unkeyed_tag(user) in key for key in await all_keys(client))
        rotated = await store.rotate((await store.create("")).id, user_id=user)
        assert rotated is not None
        assert tag(rotated.id) == keyed_tag(SECRET, user)


async def test_stores_with_different_secrets_tag_a_user_differently(client: Client) -> None:
    first = await SessionStore(client, secret=OLD).create("42")
    second = await SessionStore(client, secret=NEW).create("42")
    assert tag(first.id) != tag(second.id)
    assert tag(first.id) == keyed_tag(OLD, "42")
    assert tag(second.id) == keyed_tag(NEW, "42")
    # Bytes and the same text as str are one secret.
    as_bytes = await SessionStore(client, secret=OLD.encode()).create("42")
    assert tag(as_bytes.id) == tag(first.id)


async def test_rotation_keeps_old_sessions_readable_and_destroyable(client: Client) -> None:
    old_store = SessionStore(client, secret=OLD)
    old = await old_store.create("42", {"v": "old"})
    old_anon = await old_store.create("", {"v": "anon"})

    store = SessionStore(client, secret=[NEW, OLD])
    assert await store.get(old.id) == old
    updated = await store.update(old.id, {"w": 1})
    assert updated is not None
    assert updated.data == {"v": "old", "w": 1}
    assert (await store.refresh(old.id)) is not None
    assert await store.get(old_anon.id) is not None

    new = await store.create("42", {"v": "new"})
    assert tag(new.id) == keyed_tag(NEW, "42")
    # Logging the anonymous session in moves it under the current secret.
    logged_in = await store.rotate(old_anon.id, user_id="42")
    assert logged_in is not None
    assert tag(logged_in.id) == keyed_tag(NEW, "42")
    # Rotating an old session's id keeps its tag (same slot, same index).
    same_user = await store.rotate(old.id)
    assert same_user is not None
    assert tag(same_user.id) == keyed_tag(OLD, "42")

    listed = {s.id for s in await store.list_for_user("42")}
    assert listed == {same_user.id, new.id, logged_in.id}
    assert await store.destroy_all_for_user("42") == 3
    for session_id in (same_user.id, new.id, logged_in.id):
        assert await store.get(session_id) is None
    assert await store.list_for_user("42") == []
    assert await all_keys(client) == set()


async def test_destroy_all_for_user_ends_sessions_under_every_secret(client: Client) -> None:
    await SessionStore(client, secret=OLD).create("7")
    await SessionStore(client, secret=OLD).create("7")
    await SessionStore(client, secret=NEW).create("7")
    other = await SessionStore(client, secret=OLD).create("8")
    # Only the current secret: the old sessions are out of its reach.
    assert await SessionStore(client, secret=NEW).destroy_all_for_user("7") == 1
    await SessionStore(client, secret=NEW).create("7")
    rotated = SessionStore(client, secret=[NEW, OLD])
    assert len(await rotated.list_for_user("7")) == 3
    assert await rotated.destroy_all_for_user("7") == 3
    assert await rotated.list_for_user("7") == []
    assert await rotated.get(other.id) == other


async def test_rotated_secret_through_the_middleware(client: Client) -> None:
    """A user logged in under the old secret stays logged in after the
    deployment that adds a new one, and "log out everywhere" still ends
    the old session."""
    old_app = starlette_app(SessionStore(client, secret=OLD))
    async with asgi_client(old_app) as http:
        old_cookie = cookie_value(await http.get("/login/42"))
    store = SessionStore(client, secret=[NEW, OLD])
    async with asgi_client(starlette_app(store)) as http:
        cookies = {"cookie": f"session={old_cookie}"}
        assert (await http.get("/whoami", headers=cookies)).json() == {"user": "42"}
        new_cookie = cookie_value(await http.get("/login/42"))
        assert tag(new_cookie) == keyed_tag(NEW, "42")
        response = await http.get(
            "/logout?everywhere=1", headers={"cookie": f"session={new_cookie}"}
        )
        assert response.json() == {"existed": True}
        assert (await http.get("/whoami", headers=cookies)).json() == {"user": None}
    assert await all_keys(client) == set()


async def test_tags_of_both_secrets_are_separate_slots_on_a_cluster(cluster_client: Client) -> None:
    # What makes list/destroy_all one round trip per secret on a cluster.
    slots = {key_slot(f"{{{keyed_tag(s, '42')}}}".encode()) for s in (OLD, NEW)}
    assert len(slots) == 2
    store = SessionStore(cluster_client, secret=[NEW, OLD])
    await SessionStore(cluster_client, secret=OLD).create("42")
    await store.create("42")
    assert len(await store.list_for_user("42")) == 2


async def test_a_secret_is_required_and_checked(client: Client) -> None:
    with pytest.raises(ConfigError, match="needs secret="):
        SessionStore(client)
    bad: list[tuple[str, Any]] = [
        ("16 random bytes", "short"),
        ("16 random bytes", b"x" * 15),
        (r"secret\[1\] is 3 bytes", [SECRET, "abc"]),
        ("empty list", []),
        ("str, bytes or a list", 12345),
        ("must be str or bytes", [SECRET, None]),
        ("lone surrogate", "\ud800" * 20),
    ]
    for message, secret in bad:
        with pytest.raises(ConfigError, match=message):
            SessionStore(client, secret=secret)
    store = SessionStore(client, secret=SECRET)
    assert SECRET not in repr(store)
    assert SECRET not in repr(vars(store))


async def test_go_layout_needs_no_secret(redis_client: Client) -> None:
    store = SessionStore(redis_client, layout="go")
    session = await store.create("42")
    assert len(session.id) == 43  # no tag in this layout
    assert await store.get(session.id) == session
    assert await store.destroy_all_for_user("42") == 1


async def test_the_cookie_secret_and_the_store_secret_are_domain_separated(
    client: Client,
) -> None:
    """Given the same value for both, a tag is not a cookie signature of the
    user id and a cookie signature is not a tag."""
    shared = KEY
    store = SessionStore(client, secret=shared)
    middleware = SessionMiddleware(starlette_app(store), store=store, secret_key=shared)
    session = await store.create("42")
    signed = middleware.signer.sign("42")
    assert signed.rsplit(".", 1)[1][:22] != tag(session.id)
    assert middleware.signer.unsign(f"42.{tag(session.id)}") is None
