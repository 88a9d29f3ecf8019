"""Session reads beside raw redis-py and starsessions, and a request through
SessionMiddleware beside the same app without it.

Group ``session``: ``store.get`` of a Go-format record against raw GET +
JSON decode (baseline) and starsessions' ``RedisStore.read`` (with and
without its JSON deserialisation). In the redkit layout ``get`` is a plain
GET (every write caps the key's TTL at the absolute deadline); in the Go
layout it is one EVALSHA that also checks ``created_at``, because the Go
service refreshes without a cap.

Group ``session-asgi``: one request, the ASGI app called directly (no HTTP
client in the measurement), with a session cookie: a Starlette app without
session middleware (baseline), with redkit's SessionMiddleware (eager
load, handler reads the session), and with starsessions' middleware
(autoload) for comparison. The per-request overhead is
``1/ops(middleware) - 1/ops(baseline)``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starsessions import JsonSerializer, SessionAutoloadMiddleware
from starsessions import SessionMiddleware as StarSessionMiddleware
from starsessions.stores.redis import RedisStore
from tests._asgi import http_scope, no_body

from bench.harness import Case, Env
from redkit.session import SessionMiddleware, SessionStore
from redkit.session.asgi import _Signer

DATA = {"role": "admin", "cart": [1, 2, 3], "theme": "dark", "csrf": "x" * 32}
KEY = "bench-secret-key-0123456789abcdef"


def _scope(cookie: str | None) -> dict[str, Any]:
    headers = [(b"host", b"bench")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    return http_scope("/", headers=headers)


def _request_op(app: Any, cookie: str | None) -> Any:
    template = _scope(cookie)

    async def op() -> int:
        status = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(dict(template), no_body, send)
        if status != 200:
            raise RuntimeError(f"benchmark request answered {status}")
        return status

    return op


async def cases(env: Env) -> list[Case]:
    raw = env.raw_client()
    # A counted plain redis-py client, so the table shows round trips.
    store = SessionStore(env.raw_client(), secret="bench-store-secret-0123456789", prefix="bench")
    session = await store.create("42", DATA)
    tag, secret = session.id.split(".")
    key = f"bench:session:{{{tag}}}:{secret}"
    decode = msgspec.json.decode

    async def raw_get() -> object:
        return decode(await raw.get(key))

    async def redkit_get() -> object:
        return await store.get(session.id)

    go_store = SessionStore(env.raw_client(), layout="go", prefix="bench-go")
    go_session = await go_store.create("42", DATA)

    async def redkit_go_get() -> object:
        return await go_store.get(go_session.id)

    star_store = RedisStore(connection=env.raw_client(), prefix="bench:star:")
    serializer = JsonSerializer()
    star_id = "star-session"
    await star_store.write(star_id, serializer.serialize(DATA), lifetime=3600, ttl=3600)

    async def star_read() -> object:
        return await star_store.read(star_id, lifetime=3600)

    async def star_read_decode() -> object:
        return serializer.deserialize(await star_store.read(star_id, lifetime=3600))

    # -- one request through the ASGI stack ---------------------------------

    async def handler(request: Request) -> Response:
        return PlainTextResponse(
            str(request.session.get("role") if "session" in request.scope else "-")
        )

    bare = Starlette(routes=[Route("/", handler)])
    with_redkit = Starlette(
        routes=[Route("/", handler)],
        middleware=[
            Middleware(SessionMiddleware, store=store, secret_key=KEY, refresh_every=3600.0)
        ],
    )
    cookie = f"session={_Signer([KEY.encode()]).sign(session.id)}"
    star_app = Starlette(
        routes=[Route("/", handler)],
        middleware=[
            Middleware(
                StarSessionMiddleware,
                store=RedisStore(connection=env.raw_client(), prefix="bench:star:"),
                lifetime=3600,
                cookie_https_only=False,
            ),
            Middleware(SessionAutoloadMiddleware),
        ],
    )
    star_cookie = f"session={star_id}"

    return [
        Case("session", "raw GET+decode (redis-py)", raw_get, baseline=True),
        Case("session", "redkit SessionStore.get", redkit_get, note="GET; TTL is capped"),
        Case(
            "session",
            "redkit SessionStore.get, layout=go",
            redkit_go_get,
            note="EVALSHA: GET + created_at check",
        ),
        Case("session", "starsessions RedisStore.read", star_read, note="bytes, no decode"),
        Case("session", "starsessions read+deserialize", star_read_decode),
        Case(
            "session-asgi", "app without session middleware", _request_op(bare, None), baseline=True
        ),
        Case("session-asgi", "redkit middleware, no cookie", _request_op(with_redkit, None)),
        Case("session-asgi", "redkit middleware, cookie", _request_op(with_redkit, cookie)),
        Case("session-asgi", "starsessions middleware, cookie", _request_op(star_app, star_cookie)),
    ]
