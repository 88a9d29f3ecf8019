"""The store fails closed: a stopped or paused server raises
ConnectionUnavailable within the client's timeout, and nothing half-done
is left behind."""

from __future__ import annotations

import asyncio

import pytest

from redkit import ConnectionUnavailable
from redkit.server import EmbeddedRedis
from redkit.session import SessionStore
from redkit.testing import connected

from ._helpers import SECRET


async def test_stopped_server_raises_connection_unavailable(fresh_server: EmbeddedRedis) -> None:
    async with connected(fresh_server, max_retries=0) as client:
        store = SessionStore(client, secret=SECRET)
        session = await store.create("42", {"a": 1})
        fresh_server.stop()
        calls = [
            store.create("42"),
            store.get(session.id),
            store.update(session.id, {"b": 2}),
            store.refresh(session.id),
            store.rotate(session.id, user_id="43"),
            store.destroy(session.id),
            store.destroy_all_for_user("42"),
            store.list_for_user("42"),
        ]
        for call in calls:
            with pytest.raises(
                ConnectionUnavailable, match=r"session store could not .*127\.0\.0\.1"
            ):
                await asyncio.wait_for(call, 10)
        assert store.stats().errors == len(calls)


async def test_paused_server_times_out_then_recovers(fresh_server: EmbeddedRedis) -> None:
    async with connected(fresh_server, read_timeout=0.5, write_timeout=0.5) as client:
        store = SessionStore(client, secret=SECRET)
        session = await store.create("42", {"a": 1})
        loop = asyncio.get_running_loop()
        with fresh_server.paused():
            started = loop.time()
            with pytest.raises(ConnectionUnavailable):
                await asyncio.wait_for(store.get(session.id), 10)
            assert loop.time() - started < 8
        # Back to normal after the pause, the session intact.
        found = await store.get(session.id)
        assert found is not None
        assert found.data == {"a": 1}


async def test_server_restart_reloads_scripts(fresh_server: EmbeddedRedis) -> None:
    """After a restart the script cache is empty (NOSCRIPT): the store sends
    the script again and carries on."""
    async with connected(fresh_server) as client:
        store = SessionStore(client, secret=SECRET)
        await store.create("42")
        await client.script_flush()
        session = await store.create("42", {"b": 1})
        assert (await store.get(session.id)) == session
