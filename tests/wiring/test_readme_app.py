"""The README's complete ``main.py``, exactly as printed, under uvicorn
against a real Redis: every route over HTTP, then a stop by signal that
leaves nothing behind in stderr."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import redkit
from _docs import Doc
from redkit.server import EmbeddedCluster, EmbeddedRedis
from redkit.testing import flush

from ._uvicorn import WARNINGS, env_for, serve

pytestmark = pytest.mark.timeout(120)


def readme_main() -> str:
    return Doc("README.md").find("# main.py\n").source


def poll(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(0.05)


def exercise(url: str) -> None:
    with httpx.Client(base_url=url, timeout=10) as web:
        health = web.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "healthy"

        assert web.get("/users/1").json() == {"id": 1, "name": "Ada"}
        assert web.get("/users/1").json() == {"id": 1, "name": "Ada"}  # cached
        assert web.get("/users/9").status_code == 404
        assert web.put("/users/1", json={"name": "Ada L."}).status_code == 200
        # Without the delete on write the cached "Ada" would still be served.
        assert web.get("/users/1").json() == {"id": 1, "name": "Ada L."}
        heard = poll(lambda: web.get("/renames").json(), "the rename event heard")
        assert heard[0]["id"] == 1 and heard[0]["name"] == "Ada L."

        assert web.get("/me").json() == {"user": None, "theme": None}
        assert web.post("/auth/login", json={"user": "42"}).json() == {"user": "42"}
        assert web.get("/me").json() == {"user": "42", "theme": None}
        assert web.put("/me/theme/dark").json() == {"theme": "dark"}
        assert web.get("/me").json() == {"user": "42", "theme": "dark"}
        assert web.post("/auth/logout").json() == {"ended": True}
        assert web.get("/me").json() == {"user": None, "theme": None}

        placed = web.post("/orders", json={"item": "book"})
        assert placed.status_code == 202
        order = placed.json()["id"]
        poll(lambda: web.get(f"/orders/{order}").json()["done"], "the order fulfilled")

    async def two_rebuilds() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=10) as web:
            return list(
                await asyncio.gather(
                    web.post("/reports/rebuild", params={"seconds": 0.5}),
                    web.post("/reports/rebuild", params={"seconds": 0.5}),
                )
            )

    statuses = sorted(r.status_code for r in asyncio.run(two_rebuilds()))
    assert statuses == [200, 409]  # the lock: one rebuild at a time
    with httpx.Client(base_url=url, timeout=10) as web:
        refused = web.post("/reports/rebuild", params={"seconds": 0})
        assert refused.status_code == 429  # limiter.depends("2/minute") on this route
        assert refused.json()["error"]["code"] == "RATE_LIMITED"
        assert int(refused.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("topology", "stop"),
    [("standalone", signal.SIGINT), ("standalone", signal.SIGTERM), ("cluster", signal.SIGTERM)],
    ids=["standalone-ctrl-c", "standalone-sigterm", "cluster-sigterm"],
)
async def test_readme_main_py_under_uvicorn(
    topology: str, stop: signal.Signals, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server: EmbeddedRedis | EmbeddedCluster = request.getfixturevalue(
        "redis_server" if topology == "standalone" else "redis_cluster"
    )
    client = await redkit.connect(url=server.url, cluster=topology == "cluster", min_idle_conns=0)
    await flush(client)  # rate limits and streams of an earlier run
    await client.aclose()
    env = env_for(REDIS_URL=server.url)
    if topology == "cluster":
        env["REDIS_CLUSTER"] = "true"

    with serve(tmp_path, readme_main(), env, module="main") as app:
        await asyncio.to_thread(exercise, app.url)
        code = await asyncio.to_thread(app.stop, stop)

    # After its graceful shutdown uvicorn raises the signal it caught again
    # (uvicorn.Server.capture_signals): Ctrl-C then ends in exit code 0,
    # SIGTERM in its default action, the status process managers expect.
    assert code == (0 if stop == signal.SIGINT else -signal.SIGTERM), app.stderr
    assert "Application shutdown complete" in app.stderr, app.stderr
    assert "Finished server process" in app.stderr, app.stderr
    found = [w for w in WARNINGS if w in app.stderr]
    assert not found, f"{found} in stderr:\n{app.stderr}"
    # The consumer was stopped, not dropped: every order it took is acknowledged.
    client = await redkit.connect(url=server.url, cluster=topology == "cluster", min_idle_conns=0)
    try:
        pending = await client.xpending("orders", "fulfilment")
        assert pending["pending"] == 0, pending
        assert await client.xlen("orders") == 1
    finally:
        await client.aclose()
