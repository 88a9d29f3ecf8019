"""limiter.depends() answers exactly as RateLimitMiddleware does: status,
JSON body and headers, side by side on a real uvicorn server; and an app's
own handlers do not change that unless they are for the status itself."""

# No "from __future__ import annotations": FastAPI reads the routes' annotations.

import asyncio
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import redkit
from redkit.ratelimit import Decision, RateLimiter
from redkit.server import EmbeddedRedis
from redkit.testing import settings_for

from ._uvicorn import WARNINGS, env_for, serve

pytestmark = pytest.mark.timeout(60)

# Two limiters with the same rate and rule name under different prefixes:
# the same answers, separate counters.
SIDE_BY_SIDE = """\
import os
from typing import Annotated

import redkit
from fastapi import Depends, FastAPI
from redkit import Decision, RateLimiter, RateLimitMiddleware, RateLimitRule

client = redkit.build_client(read_timeout=0.5, connect_timeout=0.5, max_retries=0)
fail_open = os.environ["FAIL_OPEN"] == "1"
by_middleware = RateLimiter(client, prefix="mw", algorithm="fixed_window", fail_open=fail_open)
by_dependency = RateLimiter(client, prefix="dep", algorithm="fixed_window", fail_open=fail_open)
limit = by_dependency.depends("2/minute", name="api")

app = FastAPI(lifespan=redkit.Lifespan(client))
app.add_middleware(
    RateLimitMiddleware, limiter=by_middleware, rules=[RateLimitRule("/mw", "2/minute", name="api")]
)


@app.get("/mw")
async def under_middleware() -> dict[str, bool]:
    return {"ok": True}


@app.get("/dep")
async def under_dependency(decision: Annotated[Decision, Depends(limit)]) -> dict[str, bool]:
    return {"ok": True}
"""


async def early_in_a_second(client: redkit.Client) -> None:
    """Wait (at most 5 s) until Redis time is in the first half of a second."""
    deadline = time.monotonic() + 5
    while True:
        _, micros = await client.time()
        if micros < 500_000:
            return
        assert time.monotonic() < deadline, "Redis time never reached the first half of a second"
        await asyncio.sleep(0.01)


def answer(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "server")}
    return response.status_code, response.content, headers


async def test_admitted_and_refused_answers_are_the_middlewares(
    tmp_path: Path, fresh_server: EmbeddedRedis
) -> None:
    check = await redkit.connect(settings_for(fresh_server))
    env = env_for(REDIS_URL=fresh_server.url, FAIL_OPEN="1")
    with serve(tmp_path, SIDE_BY_SIDE, env) as app:
        async with httpx.AsyncClient(base_url=app.url) as web:
            pairs = []
            for _ in range(4):
                # Both requests of a pair in one second of Redis time: the
                # reset and retry times they carry are whole seconds.
                await early_in_a_second(check)
                pairs.append((answer(await web.get("/mw")), answer(await web.get("/dep"))))
        assert await asyncio.to_thread(app.stop, signal.SIGINT) == 0
    await check.aclose()

    for middleware, dependency in pairs:
        assert dependency == middleware
    statuses = [middleware[0] for middleware, _ in pairs]
    assert statuses == [200, 200, 429, 429]
    _, body, headers = pairs[2][0]
    assert headers["content-type"] == "application/json"
    assert headers["x-ratelimit-remaining"] == "0"
    assert int(headers["retry-after"]) >= 1
    assert body.startswith(
        b'{"error": {"code": "RATE_LIMITED", "message": "Too many requests; retry'
    )
    assert not [w for w in WARNINGS if w in app.stderr], app.stderr


async def test_fail_closed_answers_are_the_middlewares(
    tmp_path: Path, fresh_server: EmbeddedRedis
) -> None:
    env = env_for(REDIS_URL=fresh_server.url, FAIL_OPEN="0")
    with serve(tmp_path, SIDE_BY_SIDE, env) as app:
        fresh_server.stop()
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as web:
            middleware = answer(await web.get("/mw"))
            dependency = answer(await web.get("/dep"))
        await asyncio.to_thread(app.stop, signal.SIGINT)
    assert dependency == middleware
    status, body, headers = middleware
    assert status == 503 and headers["retry-after"] == "1"
    assert b'"RATE_LIMIT_UNAVAILABLE"' in body


def own_handlers_app(limiter: RateLimiter, status_handler: bool) -> FastAPI:
    app = FastAPI()

    @app.exception_handler(StarletteHTTPException)
    async def every_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"mine": exc.detail}, status_code=exc.status_code)

    if status_handler:

        @app.exception_handler(429)
        async def too_many(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"slow": "down"}, status_code=429)

    limit = limiter.depends("1/minute", name="own")

    @app.get("/dep")
    async def dep(decision: Annotated[Decision, Depends(limit)]) -> dict[str, Any]:
        return {"ok": True}

    return app


@pytest.mark.parametrize("status_handler", [False, True], ids=["http-handler", "429-handler"])
async def test_an_apps_own_handlers(client: redkit.Client, status_handler: bool) -> None:
    app = own_handlers_app(RateLimiter(client, prefix="own"), status_handler)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as web:
        assert (await web.get("/dep")).status_code == 200
        refused = await web.get("/dep")
    assert refused.status_code == 429
    if status_handler:  # a handler for the status itself comes first, as in Starlette
        assert refused.json() == {"slow": "down"}
    else:  # one for every HTTPException does not change the middleware's answer
        assert refused.json()["error"]["code"] == "RATE_LIMITED"
        assert "retry-after" in refused.headers
