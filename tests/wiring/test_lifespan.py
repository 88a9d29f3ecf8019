"""redkit.Lifespan on real servers: what it opens on start, in order; what
it closes on stop, in reverse, bounded, whatever fails; how it composes with
an app's own lifespan; and the handler dependencies."""

# No "from __future__ import annotations": FastAPI reads the routes' annotations.

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, MutableMapping
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request

with warnings.catch_warnings():
    # Starlette 1.x suggests httpx2 for its test client (a UserWarning);
    # httpx is what the dev extra installs.
    warnings.filterwarnings("ignore", message=".*httpx2", category=UserWarning)
    from starlette.testclient import TestClient

import redkit
from redkit import (
    Cache,
    ConfigError,
    ConnectionUnavailable,
    DistributedLock,
    Event,
    InvalidationStrategy,
    Invalidator,
    Lifespan,
    LocalCache,
    Publisher,
    RateLimiter,
    SessionMiddleware,
    SessionStore,
    StreamConsumer,
    StreamPublisher,
    Subscriber,
    current_session,
)
from redkit.server import EmbeddedRedis, free_port
from redkit.testing import settings_for

from ._uvicorn import env_for

pytestmark = pytest.mark.timeout(60)


def recorder(log: list[str], name: str) -> Any:
    @contextlib.asynccontextmanager
    async def part() -> AsyncIterator[None]:
        log.append(f"open {name}")
        try:
            yield
        finally:
            log.append(f"close {name}")

    return part


async def _other_clients(checker: redkit.Client) -> int:
    """Connections to the server besides the checker's own."""
    return len(await checker.client_list()) - 1


async def _until(condition: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_start_opens_every_component_and_stop_closes_all_of_it(
    fresh_server: EmbeddedRedis,
) -> None:
    # One connection of its own (CLIENT LIST takes a pooled one; without
    # autopipelining its PING used that same one).
    checker = await redkit.connect(settings_for(fresh_server, autopipeline=False))
    client = redkit.build_client(settings_for(fresh_server))
    redis = Lifespan(client)
    cache = redis.add(Cache(client, prefix="t", local=LocalCache(max_entries=10)))
    invalidator = redis.add(Invalidator(cache, strategy=InvalidationStrategy.ON_EVENT))
    heard: list[str] = []
    subscriber = redis.add(Subscriber(client), "news")
    subscriber.on("said", lambda event: heard.append(event.payload))
    done: list[str] = []
    consumer = redis.add(StreamConsumer(client, "jobs", group="g", consumer="c1"))
    consumer.on("job", lambda event: done.append(event.payload))
    locks = redis.add(DistributedLock(client, prefix="t"))
    for passive in (SessionStore(client, secret="x" * 16), RateLimiter(client), Publisher(client)):
        assert redis.add(passive) is passive
    assert await _other_clients(checker) == 0  # nothing connected at import time
    try:
        async with redis:
            assert redis.is_open
            assert cache.coherent  # the local tier's channel is subscribed
            assert invalidator.stats() is not None
            assert await Publisher(client).publish("news", "said", "hello") == 1
            await StreamPublisher(client).publish("jobs", "job", "one")
            async with locks.acquire("j", ttl=5):
                pass
            await _until(lambda: _true(heard and done), "event and job handled")
            assert await _other_clients(checker) >= 3  # commands, cache channel, subscriber
        assert not redis.is_open
        assert not cache.coherent
        assert heard == ["hello"] and done == ["one"]
        # Every connection it opened is closed, the client's pool included.
        await _until(
            lambda: _equal(_other_clients(checker), 0), "every connection of the app closed"
        )
        pending = await checker.xpending("jobs", "g")
        assert pending["pending"] == 0
    finally:
        await checker.aclose()


async def _true(value: object) -> bool:
    return bool(value)


async def _equal(count: Any, expected: int) -> bool:
    return bool(await count == expected)


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
async def test_order_of_opening_and_closing(topology: str, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue(
        "redis_server" if topology == "standalone" else "redis_cluster"
    )
    log: list[str] = []
    client = redkit.build_client(settings_for(server))
    redis = Lifespan(client)
    redis.add(recorder(log, "a"))
    cache = redis.add(Cache(client, prefix="t", local=LocalCache(max_entries=10)))
    redis.add(recorder(log, "b"))
    async with redis:
        assert log == ["open a", "open b"]
        assert cache.coherent
        await client.set("lifespan:order", "1")  # a cluster client knows its slots
    assert log == ["open a", "open b", "close b", "close a"]
    assert not cache.coherent


async def test_a_failed_start_closes_what_was_opened_and_raises(
    redis_server: EmbeddedRedis,
) -> None:
    log: list[str] = []

    @contextlib.asynccontextmanager
    async def broken() -> AsyncIterator[None]:
        raise RuntimeError("the third part cannot start")
        yield

    client = redkit.build_client(settings_for(redis_server))
    redis = Lifespan(client)
    redis.add(recorder(log, "a"))
    redis.add(recorder(log, "b"))
    redis.add(broken)
    redis.add(recorder(log, "never"))
    with pytest.raises(RuntimeError, match="third part"):
        await redis.start()
    assert log == ["open a", "open b", "close b", "close a"]
    assert not redis.is_open
    # It can start again (here it fails again the same way).
    with pytest.raises(RuntimeError, match="third part"):
        await redis.start()


async def test_stop_goes_on_past_a_failing_and_a_stuck_component(
    redis_server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []

    @contextlib.asynccontextmanager
    async def failing() -> AsyncIterator[None]:
        yield
        raise RuntimeError("cannot close")

    @contextlib.asynccontextmanager
    async def stuck() -> AsyncIterator[None]:
        yield
        await asyncio.sleep(30)

    client = redkit.build_client(settings_for(redis_server))
    redis = Lifespan(client, close_timeout=0.3)
    redis.add(recorder(log, "first"))
    redis.add(failing)
    redis.add(stuck)
    redis.add(recorder(log, "last"))
    caplog.set_level(logging.WARNING, logger="redkit.lifespan")
    await redis.start()
    started = time.monotonic()
    await redis.stop()  # does not raise
    assert time.monotonic() - started < 2.0
    assert log == ["open first", "open last", "close last", "close first"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("stuck" in m and "longer than 0.3s" in m for m in messages), messages
    assert any("failing" in m and "failed" in m for m in messages), messages
    assert not redis.is_open


async def test_unreachable_redis_fails_the_start_naming_the_address() -> None:
    port = free_port()
    redis = Lifespan(redkit.build_client(host="127.0.0.1", port=port), connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ConnectionUnavailable, match=f"127.0.0.1:{port}"):
        await redis.start()
    assert 0.4 < time.monotonic() - started < 3.0
    assert not redis.is_open


async def test_start_waits_for_a_redis_that_comes_up(fresh_server: EmbeddedRedis) -> None:
    fresh_server.stop()
    redis = Lifespan(redkit.build_client(settings_for(fresh_server)), connect_timeout=15)
    starting = asyncio.ensure_future(redis.start())
    await asyncio.sleep(0.5)
    assert not starting.done()
    await asyncio.to_thread(fresh_server.start)
    await asyncio.wait_for(starting, 15)
    assert redis.is_open
    await redis.stop()


async def test_a_wrong_password_fails_at_once(server_factory: Any) -> None:
    server = server_factory(password="right-password")
    settings = settings_for(server, password="wrong-password")
    redis = Lifespan(redkit.build_client(settings), connect_timeout=10)
    started = time.monotonic()
    with pytest.raises(ConnectionUnavailable) as caught:
        await redis.start()
    assert time.monotonic() - started < 3.0  # not retried until the timeout
    assert "wrong-password" not in str(caught.value)


async def test_add_checks_what_it_is_given(redis_server: EmbeddedRedis) -> None:
    client = redkit.build_client(settings_for(redis_server))
    redis = Lifespan(client)
    cache = redis.add(Cache(client))
    with pytest.raises(ConfigError, match="already added"):
        redis.add(cache)
    with pytest.raises(ConfigError, match="channels"):
        redis.add(Subscriber(client))
    with pytest.raises(ConfigError, match="for a Subscriber"):
        redis.add(StreamConsumer(client, "s", group="g", consumer="c"), "news")
    with pytest.raises(ConfigError, match="non-empty strings"):
        redis.add(Subscriber(client), "")
    with pytest.raises(ConfigError, match="Lifespan's own"):
        redis.add(client)
    with pytest.raises(ConfigError, match="42"):
        redis.add(42)
    with pytest.raises(ConfigError, match="client must be"):
        Lifespan("redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="close_timeout"):
        Lifespan(client, close_timeout=-1)

    redis.add(lambda: 42)
    with pytest.raises(ConfigError, match="not an async context manager"):
        await redis.start()
    async with Lifespan(client, close_client=False) as running:
        with pytest.raises(ConfigError, match="before the lifespan starts"):
            running.add(recorder([], "late"))
        with pytest.raises(ConfigError, match="already open"):
            await running.start()
    await client.aclose()


def make_app(server: EmbeddedRedis, log: list[str], own: Any = None) -> tuple[FastAPI, Any]:
    # As a module would: everything built at import time, without a loop.
    client = redkit.build_client(settings_for(server))
    redis = Lifespan(client)
    cache = redis.add(Cache(client, prefix="app-test", local=LocalCache(max_entries=10)))
    subscriber = redis.add(Subscriber(client), "app-test")
    heard: list[Any] = []

    @subscriber.on("ping")
    async def on_ping(event: Event[Any]) -> None:
        heard.append(event.payload)

    app = FastAPI(lifespan=redis if own is None else redis.around(own))
    app.add_middleware(
        SessionMiddleware, store=SessionStore(client, secret="s" * 16), secret_key="k" * 16
    )
    CacheDep = Annotated[Cache, Depends(redis.depends(cache))]
    SessionDep = Annotated[MutableMapping[str, Any], Depends(current_session)]

    @app.get("/count")
    async def count(cache: CacheDep) -> dict[str, Any]:
        value = await cache.get_or_set("n", lambda: _one(log), ttl=60)
        return {"value": value, "coherent": cache.coherent}

    @app.post("/ping")
    async def ping() -> dict[str, int]:
        return {"receivers": await Publisher(client).publish("app-test", "ping", "x")}

    @app.get("/heard")
    async def heard_route() -> list[Any]:
        return heard

    @app.put("/session/{value}")
    async def put(value: str, session: SessionDep) -> dict[str, str]:
        session["value"] = value
        return {"value": value}

    @app.get("/session")
    async def get(session: SessionDep, request: Request) -> dict[str, Any]:
        return {"value": session.get("value"), "state": getattr(request.state, "x", None)}

    return app, redis


async def _one(log: list[str]) -> int:
    log.append("loaded")
    return 1


def test_a_fastapi_app_runs_it_as_its_lifespan_twice(redis_server: EmbeddedRedis) -> None:
    log: list[str] = []
    app, redis = make_app(redis_server, log)
    # TestClient runs each `with` on a new event loop: the client must be
    # opened and closed on each.
    for _ in range(2):
        with TestClient(app) as web:
            assert redis.is_open
            assert web.get("/count").json()["value"] == 1
            assert web.post("/ping").json() == {"receivers": 1}
            deadline = time.monotonic() + 5
            while not web.get("/heard").json():
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert web.put("/session/kept").json() == {"value": "kept"}
            assert web.get("/session").json()["value"] == "kept"
        assert not redis.is_open


def test_around_runs_the_apps_own_lifespan_inside(redis_server: EmbeddedRedis) -> None:
    log: list[str] = []
    holder: dict[str, Lifespan] = {}

    @contextlib.asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        log.append(f"own starts, redkit open: {holder['redis'].is_open}")
        yield {"x": "from own"}
        log.append(f"own stops, redkit open: {holder['redis'].is_open}")

    app, redis = make_app(redis_server, log, own=own)
    holder["redis"] = redis
    with TestClient(app) as web:
        assert web.get("/session").json() == {"value": None, "state": "from own"}
    assert log == ["own starts, redkit open: True", "own stops, redkit open: True"]
    assert not redis.is_open


def test_a_dependency_used_before_the_lifespan_says_how_to_wire_it(
    redis_server: EmbeddedRedis,
) -> None:
    app, _ = make_app(redis_server, [])
    web = TestClient(app)  # without `with`: the lifespan does not run
    with pytest.raises(ConfigError, match=r"before redkit's Lifespan started.*lifespan="):
        web.get("/count")


def test_importing_redkit_needs_no_starlette() -> None:
    code = (
        "import sys, inspect, redkit; redkit.current_session; redkit.Lifespan; "
        "assert 'starlette' not in sys.modules and 'fastapi' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env_for())
