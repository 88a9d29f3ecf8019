"""SessionMiddleware on real Starlette and FastAPI apps, over httpx's
ASGITransport and over HTTP against uvicorn on a loopback port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from redkit import ConfigError, connect
from redkit.connection import Client
from redkit.server import EmbeddedRedis
from redkit.session import SessionDataTooLarge, SessionMiddleware, SessionStore
from redkit.testing import connected, settings_for

from ._apps import (
    KEY,
    asgi_client,
    attributes,
    cookie_value,
    fastapi_app,
    served,
    set_cookies,
    sign,
    starlette_app,
)
from ._helpers import SECRET, command_calls, wait_for


def with_cookie(value: str, name: str = "session") -> dict[str, str]:
    return {"cookie": f"{name}={value}"}


def unsigned(cookie: str) -> str:
    return cookie.rsplit(".", 1)[0]


async def test_a_request_without_a_cookie_costs_no_redis_call(redis_client: Redis) -> None:
    store = SessionStore(redis_client, secret=SECRET)
    async with asgi_client(starlette_app(store)) as http:
        before = await command_calls(redis_client)
        for path in ("/show", "/nothing", "/whoami", "/pop?x"):
            response = await http.get(path)
            assert response.status_code == 200
            assert set_cookies(response) == []
        assert (await http.get("/show")).json() == {}
        assert await command_calls(redis_client) == before


async def test_writing_creates_a_session_with_a_signed_id_cookie(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    async with asgi_client(starlette_app(store)) as http:
        response = await http.get("/put?a=1&b=two")
        assert response.json() == {"a": "1", "b": "two"}
        (header,) = set_cookies(response)
        value = cookie_value(response)
        session_id = unsigned(value)
        # The cookie carries the signed id and nothing else.
        assert value == sign(session_id)
        assert "two" not in header
        attrs = attributes(header)
        assert attrs["path"] == "/"
        assert attrs["max-age"] == str(7 * 24 * 3600)
        assert attrs["samesite"] == "Lax"
        assert "httponly" in attrs
        assert "secure" not in attrs
        stored = await store.get(session_id)
        assert stored is not None
        assert stored.data == {"a": "1", "b": "two"}
        assert stored.user_id == ""

        again = await http.get("/show", headers=with_cookie(value))
        assert again.json() == {"a": "1", "b": "two"}
        assert set_cookies(again) == []


async def test_writes_only_when_the_session_changed(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    async with asgi_client(starlette_app(store)) as http:
        value = cookie_value(await http.get("/put?a=1"))
        stats = store.stats()
        for path in ("/show", "/put?a=1", "/nothing", "/pop?missing"):
            response = await http.get(path, headers=with_cookie(value))
            assert response.status_code == 200
            assert set_cookies(response) == []
        assert store.stats().updated == stats.updated
        assert store.stats().created == stats.created

        response = await http.get("/put?b=2", headers=with_cookie(value))
        assert set_cookies(response) == []
        assert store.stats().updated == stats.updated + 1
        await http.get("/pop?a", headers=with_cookie(value))
        stored = await store.get(unsigned(value))
        assert stored is not None
        assert stored.data == {"b": "2"}


async def test_concurrent_requests_on_one_session_all_keep_their_writes(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    async with asgi_client(starlette_app(store)) as http:
        value = cookie_value(await http.get("/put?start=1"))
        gate = asyncio.Semaphore(8)

        async def put(i: int) -> None:
            async with gate:
                response = await http.get(f"/put?k{i}={i}", headers=with_cookie(value))
                assert response.status_code == 200

        await asyncio.gather(*(put(i) for i in range(30)))
        final = (await http.get("/show", headers=with_cookie(value))).json()
        assert final == {"start": "1", **{f"k{i}": str(i) for i in range(30)}}


@pytest.mark.parametrize(
    ("scheme", "secure", "expected"),
    [
        ("https", None, True),
        ("http", None, False),
        ("https", False, False),
        ("http", True, True),
    ],
)
async def test_secure_flag(
    redis_client: Redis, scheme: str, secure: bool | None, expected: bool
) -> None:
    store = SessionStore(redis_client, secret=SECRET)
    async with asgi_client(starlette_app(store, secure=secure), scheme) as http:
        (header,) = set_cookies(await http.get("/put?a=1"))
        assert ("secure" in attributes(header)) is expected


async def test_cookie_options(redis_client: Redis) -> None:
    store = SessionStore(redis_client, secret=SECRET)
    app = starlette_app(
        store,
        cookie_name="sid",
        path="/",
        domain="example.test",
        max_age=timedelta(hours=1),
        same_site="strict",
    )
    async with asgi_client(app) as http:
        response = await http.get("/put?a=1")
        (header,) = set_cookies(response)
        assert header.startswith("sid=")
        attrs = attributes(header)
        assert attrs["domain"] == "example.test"
        assert attrs["max-age"] == "3600"
        assert attrs["samesite"] == "Strict"
        value = cookie_value(response, "sid")
        shown = await http.get("/show", headers=with_cookie(value, "sid"))
        assert shown.json() == {"a": "1"}
        # The default name is not read when another is configured.
        assert (await http.get("/show", headers=with_cookie(value))).json() == {}

    async with asgi_client(starlette_app(store, max_age=None, path="/app")) as http:
        (header,) = set_cookies(await http.get("/put?a=1"))
        attrs = attributes(header)
        assert "max-age" not in attrs
        assert attrs["path"] == "/app"


async def test_tampered_cookies_start_a_fresh_session_without_redis(redis_client: Redis) -> None:
    store = SessionStore(redis_client, secret=SECRET)
    async with asgi_client(starlette_app(store)) as http:
        value = cookie_value(await http.get("/put?secret=1"))
        session_id, sig = value.rsplit(".", 1)
        flipped_sig = session_id + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
        flipped_id = ("A" if value[0] != "A" else "B") + value[1:]
        other_key = sign(session_id, "another-secret-key-0123456789ab")
        tampered = [
            flipped_sig,
            flipped_id,
            other_key,
            session_id,
            session_id + ".",
            "garbage",
            "x" * 5000,
            value + "x",
        ]
        before = await command_calls(redis_client)
        for bad in tampered:
            response = await http.get("/show", headers=with_cookie(bad))
            assert response.status_code == 200
            assert response.json() == {}
            (header,) = set_cookies(response)
            assert attributes(header)["max-age"] == "0"
        assert await command_calls(redis_client) == before
        # The real cookie still works.
        assert (await http.get("/show", headers=with_cookie(value))).json() == {"secret": "1"}


async def test_unknown_or_expired_session_starts_fresh(client: Client) -> None:
    store = SessionStore(
        client, secret=SECRET, ttl=timedelta(seconds=1), absolute_ttl=timedelta(seconds=30)
    )
    async with asgi_client(starlette_app(store, refresh_every=0.5)) as http:
        unknown = sign("A" * 22 + "." + "B" * 43)
        response = await http.get("/show", headers=with_cookie(unknown))
        assert response.json() == {}
        assert attributes(set_cookies(response)[0])["max-age"] == "0"

        value = cookie_value(await http.get("/put?a=1"))

        async def expired() -> bool:
            return await store.get(unsigned(value)) is None

        await wait_for(expired, timeout=10)
        response = await http.get("/put?b=2", headers=with_cookie(value))
        assert response.json() == {"b": "2"}
        new_value = cookie_value(response)
        assert new_value != value
        fresh = await store.get(unsigned(new_value))
        assert fresh is not None
        assert fresh.data == {"b": "2"}


async def test_fallback_secret_keys_verify_old_cookies(redis_client: Redis) -> None:
    store = SessionStore(redis_client, secret=SECRET)
    old_key = "old-secret-key-0123456789abcdef"
    session = await store.create("", {"a": 1})
    app = starlette_app(store, fallback_secret_keys=[old_key])
    async with asgi_client(app) as http:
        response = await http.get("/show", headers=with_cookie(sign(session.id, old_key)))
        assert response.json() == {"a": 1}


async def test_lazy_loading_touches_redis_only_on_load_session(redis_client: Redis) -> None:
    store = SessionStore(redis_client, secret=SECRET)
    async with asgi_client(starlette_app(store, eager=False)) as http:
        value = cookie_value(await http.get("/lazy?a=1"))
        before = await command_calls(redis_client)
        response = await http.get("/nothing", headers=with_cookie(value))
        assert response.status_code == 200
        assert set_cookies(response) == []
        assert await command_calls(redis_client) == before
        assert (await http.get("/lazy", headers=with_cookie(value))).json() == {"a": "1"}
        assert await command_calls(redis_client) > before
        with pytest.raises(RuntimeError, match="load_session"):
            await http.get("/show", headers=with_cookie(value))


async def test_refresh_at_most_every_n_seconds(redis_client: Redis) -> None:
    store = SessionStore(redis_client, secret=SECRET)

    async def expires_at(value: str) -> str:
        tag, secret = unsigned(value).split(".")
        raw = await redis_client.get(f"app:session:{{{tag}}}:{secret}")
        assert raw is not None
        return str(json.loads(raw)["expires_at"])

    async with asgi_client(starlette_app(store, refresh_every=3600)) as http:
        value = cookie_value(await http.get("/put?a=1"))
        first = await expires_at(value)
        for _ in range(3):
            await asyncio.sleep(0.02)
            await http.get("/show", headers=with_cookie(value))
        assert await expires_at(value) == first

    async with asgi_client(starlette_app(store, refresh_every=0.001)) as http:
        seen = {await expires_at(value)}
        for _ in range(3):
            await asyncio.sleep(0.02)
            await http.get("/show", headers=with_cookie(value))
            seen.add(await expires_at(value))
        assert len(seen) == 4
        assert max(seen) > first


async def test_login_rotates_the_id_and_kills_the_old_one(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    async with asgi_client(starlette_app(store)) as http:
        before = cookie_value(await http.get("/put?cart=3"))
        response = await http.get("/login/42", headers=with_cookie(before))
        after = cookie_value(response)
        assert unsigned(after) == response.json()["id"]
        assert unsigned(after) != unsigned(before)
        assert response.json()["user"] == "42"
        # Fixation: the id the client had before login is dead.
        assert await store.get(unsigned(before)) is None
        stale = await http.get("/show", headers=with_cookie(before))
        assert stale.json() == {}
        shown = await http.get("/show", headers=with_cookie(after))
        assert shown.json() == {"cart": "3", "logged_in": True}
        who = await http.get("/whoami", headers=with_cookie(after))
        assert who.json() == {"user": "42"}
        assert [s.id for s in await store.list_for_user("42")] == [unsigned(after)]


async def test_login_without_a_session(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    async with asgi_client(starlette_app(store)) as http:
        response = await http.get("/login/7")
        value = cookie_value(response)
        assert (await http.get("/whoami", headers=with_cookie(value))).json() == {"user": "7"}
        assert (await http.get("/show", headers=with_cookie(value))).json() == {"logged_in": True}


async def test_logout_destroys_the_session_server_side(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    async with asgi_client(starlette_app(store)) as http:
        value = cookie_value(await http.get("/login/42"))
        response = await http.get("/logout", headers=with_cookie(value))
        assert response.json() == {"existed": True}
        assert attributes(set_cookies(response)[0])["max-age"] == "0"
        assert await store.get(unsigned(value)) is None
        assert (await http.get("/whoami", headers=with_cookie(value))).json() == {"user": None}
        again = await http.get("/logout", headers=with_cookie(value))
        assert again.json() == {"existed": False}


async def test_logout_everywhere(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    async with asgi_client(starlette_app(store, eager=False)) as http:
        laptop = cookie_value(await http.get("/login/42"))
        phone = cookie_value(await http.get("/login/42"))
        other = cookie_value(await http.get("/login/43"))
        response = await http.get("/logout?everywhere=1", headers=with_cookie(laptop))
        assert response.json() == {"existed": True}
        assert await store.get(unsigned(phone)) is None
        assert await store.get(unsigned(other)) is not None


async def test_logout_without_loading_under_lazy_mode(redis_client: Redis) -> None:
    store = SessionStore(redis_client, secret=SECRET)
    async with asgi_client(starlette_app(store, eager=False)) as http:
        value = cookie_value(await http.get("/login/42"))
        response = await http.get("/logout", headers=with_cookie(value))
        assert response.json() == {"existed": True}
        assert await store.get(unsigned(value)) is None


async def test_session_data_too_large_is_an_app_error(redis_client: Redis) -> None:
    store = SessionStore(redis_client, secret=SECRET, max_data_bytes=64)
    async with asgi_client(starlette_app(store)) as http:
        with pytest.raises(SessionDataTooLarge):
            await http.get("/put?a=" + "x" * 100)
    assert await redis_client.dbsize() == 0


def ws_scope(cookie: str) -> dict[str, Any]:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"cookie", f"session={cookie}".encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "subprotocols": [],
    }


async def run_ws(app: Any, cookie: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        if inbox:
            return inbox.pop()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(ws_scope(cookie), receive, send), 10)
    return sent


async def test_websocket_sees_the_session(redis_client: Redis) -> None:
    store = SessionStore(redis_client, secret=SECRET)
    session = await store.create("", {"a": 1})
    sent = await run_ws(starlette_app(store), sign(session.id))
    texts = [m.get("text") for m in sent if m["type"] == "websocket.send"]
    assert texts == [json.dumps({"a": 1}, separators=(",", ":"))]


async def test_websocket_closes_with_1011_when_redis_is_down(fresh_server: EmbeddedRedis) -> None:
    async with connected(fresh_server, max_retries=0) as client:
        store = SessionStore(client, secret=SECRET)
        session = await store.create("", {"a": 1})
        fresh_server.stop()
        sent = await run_ws(starlette_app(store), sign(session.id))
        assert sent == [{"type": "websocket.close", "code": 1011}]


# -- Redis unreachable -------------------------------------------------------


async def _unavailable_checks(http: httpx.AsyncClient, value: str) -> None:
    response = await http.get("/show", headers=with_cookie(value))
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "SESSION_STORE_UNAVAILABLE"


async def test_redis_down_gives_503_json(fresh_server: EmbeddedRedis) -> None:
    async with connected(fresh_server, max_retries=0) as client:
        store = SessionStore(client, secret=SECRET)
        async with asgi_client(starlette_app(store)) as http:
            value = cookie_value(await http.get("/put?a=1"))
            lazy_value = value
            fresh_server.stop()
            await _unavailable_checks(http, value)
            # Creating a session on the way out fails closed too.
            response = await http.get("/put?a=1")
            assert response.status_code == 503
            # A request that needs no session is served.
            assert (await http.get("/nothing")).status_code == 200
        async with asgi_client(starlette_app(store, eager=False)) as http:
            response = await http.get("/lazy", headers=with_cookie(lazy_value))
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "SESSION_STORE_UNAVAILABLE"


async def _short_timeouts(server: EmbeddedRedis) -> Client:
    return await connect(settings_for(server, read_timeout=0.5, write_timeout=0.5))


async def _long_timeouts(server: EmbeddedRedis) -> Client:
    return await connect(settings_for(server, read_timeout=30, write_timeout=30))


async def _plain_client(server: EmbeddedRedis) -> Client:
    return Redis(host=server.host, port=server.port, socket_timeout=0.5)


@pytest.mark.parametrize(
    ("make_client", "options", "bound"),
    [
        (_short_timeouts, {}, 10),
        (_long_timeouts, {"timeout": 0.5}, 5),
        (_plain_client, {"timeout": 0.5}, 5),
    ],
    ids=["short-socket-timeouts", "long-socket-timeouts", "plain-redis-py"],
)
async def test_paused_redis_gives_503_in_time_then_recovers(
    fresh_server: EmbeddedRedis,
    make_client: Callable[[EmbeddedRedis], Any],
    options: dict[str, Any],
    bound: float,
) -> None:
    """A paused server answers 503 in time: through the client's socket
    timeout (the middleware's own is longer), through the middleware's own
    when the client's are long, and when they are equal and the client
    sends a timed-out command again (redis-py's default client), both
    timers firing together. Served again once the server answers."""
    client = await make_client(fresh_server)
    try:
        store = SessionStore(client, secret=SECRET)
        async with asgi_client(starlette_app(store, **options)) as http:
            value = cookie_value(await http.get("/put?a=1"))
            with fresh_server.paused():
                loop = asyncio.get_running_loop()
                started = loop.time()
                await _unavailable_checks(http, value)
                assert loop.time() - started < bound
            assert (await http.get("/show", headers=with_cookie(value))).json() == {"a": "1"}
    finally:
        await client.aclose()


# -- FastAPI -----------------------------------------------------------------


async def test_fastapi_app(client: Client) -> None:
    store = SessionStore(client, secret=SECRET)
    async with asgi_client(fastapi_app(store), "https") as http:
        response = await http.get("/put?theme=dark")
        (header,) = set_cookies(response)
        attrs = attributes(header)
        assert {"httponly", "secure"} <= set(attrs)
        assert attrs["samesite"] == "Lax"
        value = cookie_value(response)
        assert (await http.get("/show", headers=with_cookie(value))).json() == {"theme": "dark"}
        logged = await http.post("/login/42", headers=with_cookie(value))
        new_value = cookie_value(logged)
        assert await store.get(unsigned(value)) is None
        who = await http.get("/whoami", headers=with_cookie(new_value))
        assert who.json() == {"user": "42"}
        out = await http.post("/logout", headers=with_cookie(new_value))
        assert out.json() == {"existed": True}
        assert attributes(set_cookies(out)[0])["max-age"] == "0"


# -- over HTTP, uvicorn on a loopback port -----------------------------------


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app], ids=["starlette", "fastapi"])
async def test_cookie_flags_over_http_with_uvicorn(
    redis_client: Redis, make_app: Callable[..., Any]
) -> None:
    store = SessionStore(redis_client, secret=SECRET)
    async with served(make_app(store)) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/put?a=1")
        assert response.status_code == 200
        (header,) = set_cookies(response)
        value = cookie_value(response)
        assert header == (f"session={value}; Path=/; Max-Age=604800; SameSite=Lax; HttpOnly")
        # A real cookie jar sends it back.
        shown = await http.get("/show")
        assert shown.json() == {"a": "1"}
        assert set_cookies(shown) == []
        assert (await http.get("/nothing")).text.strip('"') == "ok"


async def test_uvicorn_503_when_redis_is_down(fresh_server: EmbeddedRedis) -> None:
    async with connected(fresh_server, max_retries=0) as client:
        store = SessionStore(client, secret=SECRET)
        async with served(starlette_app(store)) as url, httpx.AsyncClient(base_url=url) as http:
            value = cookie_value(await http.get("/put?a=1"))
            fresh_server.stop()
            await _unavailable_checks(http, value)


# -- configuration -----------------------------------------------------------


async def test_middleware_configuration_errors(redis_client: Redis) -> None:
    store = SessionStore(redis_client, secret=SECRET)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    with pytest.raises(ConfigError, match="16"):
        SessionMiddleware(app, store=store, secret_key="short")
    with pytest.raises(ConfigError, match="store"):
        SessionMiddleware(app, store=object(), secret_key=KEY)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="same_site"):
        SessionMiddleware(app, store=store, secret_key=KEY, same_site="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="secure"):
        SessionMiddleware(app, store=store, secret_key=KEY, same_site="none", secure=False)
    with pytest.raises(ConfigError, match="cookie_name"):
        SessionMiddleware(app, store=store, secret_key=KEY, cookie_name="a b")
    with pytest.raises(ConfigError, match="domain"):
        SessionMiddleware(app, store=store, secret_key=KEY, domain="a;b")
    with pytest.raises(ConfigError, match="refresh_every"):
        SessionMiddleware(app, store=store, secret_key=KEY, refresh_every=0)
    short = SessionStore(redis_client, secret=SECRET, ttl=30)
    with pytest.raises(ConfigError, match=r"refresh_every \(60s\) must be shorter"):
        SessionMiddleware(app, store=short, secret_key=KEY, refresh_every=60)
    with pytest.raises(ConfigError, match="timeout"):
        SessionMiddleware(app, store=store, secret_key=KEY, timeout=-1)
    bad: list[tuple[str, dict[str, Any]]] = [
        ("refresh_every", {"refresh_every": float("inf")}),
        ("refresh_every", {"refresh_every": float("nan")}),
        ("refresh_every", {"refresh_every": "60"}),
        ("timeout", {"timeout": float("inf")}),
        ("timeout", {"timeout": True}),
        ("max_age", {"max_age": -1}),
        ("max_age", {"max_age": float("inf")}),
        ("max_age", {"max_age": 10**400}),
        ("cookie_name", {"cookie_name": 123}),
        ("cookie_name", {"cookie_name": "séance"}),
        ("path", {"path": None}),
        ("domain", {"domain": 5}),
        ("eager", {"eager": "yes"}),
        ("http_only", {"http_only": 1}),
        ("secure", {"secure": "auto"}),
        ("fallback_secret_keys", {"fallback_secret_keys": "an-old-key-0123456789abcdef"}),
        (r"fallback_secret_keys\[1\]", {"fallback_secret_keys": [KEY, "short"]}),
    ]
    for what, options in bad:
        with pytest.raises(ConfigError, match=what):
            SessionMiddleware(app, store=store, secret_key=KEY, **options)
    with pytest.raises(ConfigError, match="surrogate"):
        SessionMiddleware(app, store=store, secret_key="\ud800" * 20)
    with pytest.raises(ConfigError, match="secret_key must be str or bytes"):
        SessionMiddleware(app, store=store, secret_key=None)  # type: ignore[arg-type]


async def test_refresh_every_default_follows_a_short_idle_ttl(redis_client: Redis) -> None:
    """Item 11: the default is min(60 s, ttl / 2); a store whose idle ttl is
    30 s works with the default and refreshes a session used after 15 s."""
    store = SessionStore(redis_client, secret=SECRET, ttl=30)
    middleware = SessionMiddleware(starlette_app(store), store=store, secret_key=KEY)
    assert middleware.refresh_every == 15.0
    long_ttl = SessionStore(redis_client, secret=SECRET)
    assert (
        SessionMiddleware(starlette_app(store), store=long_ttl, secret_key=KEY).refresh_every == 60
    )

    session = await store.create("", {"a": 1})
    tag, secret = session.id.split(".")
    key = f"app:session:{{{tag}}}:{secret}"
    async with asgi_client(starlette_app(store)) as http:
        await redis_client.pexpire(key, 20_000)  # last used 10 s ago: not due
        assert (await http.get("/show", headers=with_cookie(sign(session.id)))).json() == {"a": 1}
        assert await redis_client.pttl(key) <= 20_000
        await redis_client.pexpire(key, 14_000)  # 16 s ago: due
        assert (await http.get("/show", headers=with_cookie(sign(session.id)))).json() == {"a": 1}
        assert await redis_client.pttl(key) > 25_000


async def test_helpers_need_the_middleware() -> None:
    from redkit.session import load_session

    with pytest.raises(RuntimeError, match="SessionMiddleware is not installed"):
        await load_session({"type": "http"})
