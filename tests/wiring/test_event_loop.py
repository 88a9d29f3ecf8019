"""A client whose connections belong to another event loop fails with
redkit.WrongEventLoop before anything is sent, on every topology; a client
closed on its loop is free to be used on the next one."""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path

import httpx
import pytest

import redkit
from redkit.server import EmbeddedCluster, EmbeddedRedis
from redkit.testing import connected, settings_for

from ._uvicorn import env_for, serve

pytestmark = pytest.mark.timeout(60)


def _server(request: pytest.FixtureRequest, topology: str) -> EmbeddedRedis | EmbeddedCluster:
    return request.getfixturevalue("redis_server" if topology == "standalone" else "redis_cluster")


def _connected_elsewhere(server: EmbeddedRedis | EmbeddedCluster) -> redkit.Client:
    """``asyncio.run(redkit.connect())``: the client comes back with its
    connections open on a loop that has already closed."""

    async def opened() -> redkit.Client:
        client = await redkit.connect(settings_for(server, min_idle_conns=2))
        await client.set("loop:probe", "from the first loop")
        return client

    result: list[redkit.Client] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(opened())))
    thread.start()
    thread.join()
    return result[0]


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
async def test_a_client_from_a_closed_loop_raises_wrong_event_loop_and_sends_nothing(
    topology: str, request: pytest.FixtureRequest
) -> None:
    server = _server(request, topology)
    stale = _connected_elsewhere(server)
    async with connected(server) as fresh:
        await fresh.delete("loop:counter")
        with pytest.raises(redkit.WrongEventLoop) as caught:
            await stale.incr("loop:counter")
        message = str(caught.value)
        assert "another event loop" in message and "that loop has closed" in message
        assert "redkit.build_client()" in message and "redkit.Lifespan" in message
        assert isinstance(caught.value, redkit.RedkitError)
        assert await fresh.get("loop:counter") is None  # the INCR never reached Redis
        with pytest.raises(redkit.WrongEventLoop):
            await stale.get("loop:probe")  # every time, not only the first
        await stale.aclose()  # closing the stale client does not raise either


async def test_a_loop_still_running_elsewhere_is_named(redis_server: EmbeddedRedis) -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        opened = asyncio.run_coroutine_threadsafe(redkit.connect(settings_for(redis_server)), loop)
        client = opened.result(10)
        with pytest.raises(redkit.WrongEventLoop, match="that loop still runs"):
            await client.ping()
        asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
async def test_a_client_closed_on_its_loop_works_on_the_next(
    topology: str, request: pytest.FixtureRequest
) -> None:
    server = _server(request, topology)

    async def use_and_close(client: redkit.Client) -> None:
        await client.set("loop:reused", "yes")
        await client.aclose()

    client = redkit.build_client(settings_for(server))
    thread = threading.Thread(target=lambda: asyncio.run(use_and_close(client)))
    thread.start()
    thread.join()
    try:
        assert await client.get("loop:reused") == b"yes"
    finally:
        await client.aclose()


STALE_APP = """\
import asyncio

import redkit
from fastapi import FastAPI

client = asyncio.run(redkit.connect())  # the mistake
app = FastAPI()


@app.get("/count")
async def count() -> dict[str, int]:
    return {"count": await client.incr("loop:app-counter")}
"""


async def test_the_mistake_under_uvicorn_logs_what_to_do(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    check = await redkit.connect(settings_for(redis_server))
    await check.delete("loop:app-counter")
    with serve(tmp_path, STALE_APP, env_for(REDIS_URL=redis_server.url)) as app:
        answers = [
            (await asyncio.to_thread(httpx.get, app.url + "/count")).status_code for _ in range(3)
        ]
        await asyncio.to_thread(app.stop, signal.SIGINT)
    try:
        assert answers == [500, 500, 500]
        assert "redkit.errors.WrongEventLoop: this Redis client's connections" in app.stderr
        assert "Event loop is closed" not in app.stderr
        assert await check.get("loop:app-counter") is None
    finally:
        await check.aclose()
