"""Starlette and FastAPI apps with SessionMiddleware for the middleware tests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import socket
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import Depends, FastAPI, Request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from redkit.session import (
    SessionMiddleware,
    SessionStore,
    load_session,
    login,
    logout,
    session_user_id,
)

KEY = "test-secret-key-0123456789abcdef"


def sign(session_id: str, key: str = KEY) -> str:
    """A cookie value as the middleware signs it, computed here."""
    digest = hmac.new(
        key.encode(), b"redkit.session.cookie\x00" + session_id.encode(), hashlib.sha256
    ).digest()
    return session_id + "." + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def nested_lists(depth: int) -> list[Any]:
    """``[[[...]]]`` ``depth`` deep, built without recursion."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


# Values with no faithful JSON form, by name, for the /poison route.
POISON: dict[str, Any] = {
    "nan": float("nan"),
    "inf": float("inf"),
    "-inf": [1, {"y": float("-inf")}],
    "deep": nested_lists(100_000),
}


def starlette_app(store: SessionStore, **options: Any) -> Starlette:
    async def show(request: StarletteRequest) -> Response:
        return JSONResponse(dict(request.session))

    async def put(request: StarletteRequest) -> Response:
        request.session.update(request.query_params)
        return JSONResponse(dict(request.session))

    async def pop(request: StarletteRequest) -> Response:
        for key in request.query_params:
            request.session.pop(key, None)
        return JSONResponse(dict(request.session))

    async def nothing(request: StarletteRequest) -> Response:
        return PlainTextResponse("ok")

    async def lazy(request: StarletteRequest) -> Response:
        session = await load_session(request)
        session.update(request.query_params)
        return JSONResponse(dict(session))

    async def do_login(request: StarletteRequest) -> Response:
        session = await login(request, request.path_params["uid"])
        request.session["logged_in"] = True
        return JSONResponse({"id": session.id, "user": session.user_id})

    async def do_logout(request: StarletteRequest) -> Response:
        everywhere = request.query_params.get("everywhere") == "1"
        return JSONResponse({"existed": await logout(request, everywhere=everywhere)})

    async def whoami(request: StarletteRequest) -> Response:
        await load_session(request)
        return JSONResponse({"user": session_user_id(request)})

    async def poison(request: StarletteRequest) -> Response:
        request.session[request.query_params.get("key", "x")] = POISON[request.query_params["kind"]]
        return PlainTextResponse("ok")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(dict(websocket.session))
        await websocket.close()

    return Starlette(
        routes=[
            Route("/show", show),
            Route("/put", put),
            Route("/pop", pop),
            Route("/nothing", nothing),
            Route("/lazy", lazy),
            Route("/login/{uid}", do_login),
            Route("/logout", do_logout),
            Route("/whoami", whoami),
            Route("/poison", poison),
            WebSocketRoute("/ws", ws),
        ],
        middleware=[Middleware(SessionMiddleware, store=store, secret_key=KEY, **options)],
    )


async def session_of(request: Request) -> Any:
    """A FastAPI dependency: the loaded session."""
    return await load_session(request)


def fastapi_app(store: SessionStore, **options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store, secret_key=KEY, **options)

    @app.get("/show")
    async def show(session: Annotated[Any, Depends(session_of)]) -> dict[str, Any]:
        return dict(session)

    @app.get("/put")
    async def put(request: Request) -> dict[str, Any]:
        request.session.update(request.query_params)
        return dict(request.session)

    @app.get("/nothing")
    async def nothing() -> str:
        return "ok"

    @app.post("/login/{uid}")
    async def do_login(uid: str, request: Request) -> dict[str, str]:
        session = await login(request, uid)
        return {"id": session.id, "user": session.user_id}

    @app.post("/logout")
    async def do_logout(request: Request) -> dict[str, bool]:
        return {"existed": await logout(request)}

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, str | None]:
        await load_session(request)
        return {"user": session_user_id(request)}

    return app


def asgi_client(app: Any, scheme: str = "http") -> httpx.AsyncClient:
    """An httpx client calling ``app`` in-process. It keeps no cookies: each
    test sends the cookie it means explicitly."""
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=f"{scheme}://testserver"
    )

    async def forget_cookies(response: httpx.Response) -> None:
        client.cookies.clear()

    client.event_hooks["response"] = [forget_cookies]
    return client


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a loopback port; yields its base URL.
    The socket is bound here to a port the kernel picks, so no other process
    can take it between choosing and binding."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not server.started:
            if task.done():
                task.result()
                raise AssertionError("uvicorn stopped before it started")
            if loop.time() > deadline:
                raise AssertionError("uvicorn did not start within 15s")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


def cookie_value(response: httpx.Response, name: str = "session") -> str:
    (header,) = set_cookies(response)
    first = header.split(";", 1)[0]
    key, _, value = first.partition("=")
    assert key == name
    return value


def attributes(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        out[key.lower()] = value
    return out
