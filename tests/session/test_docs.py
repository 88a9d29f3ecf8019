"""The examples of docs/session.md, run by the convention of tests/_docs.py;
the store example and the middleware app are taken for closer checks."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx

from _docs import Doc, run_program
from redkit import connect
from redkit.server import EmbeddedRedis
from redkit.session import SessionStore
from redkit.testing import settings_for

from ._helpers import SECRET

DOC = Doc("docs/session.md")
STORE = DOC.take("async def main() -> None:\n    client = await redkit.connect(url=")
APP = DOC.take("def build_app")

test_examples_run_twice = DOC.test()


async def test_store_example_runs(redis_server: EmbeddedRedis) -> None:
    # It names its server, as a reader's program would: this one is the test's.
    source = STORE.source.replace("redis://127.0.0.1:6379/0", redis_server.url)
    out = await run_program(dataclasses.replace(STORE, source=source), redis_server.url)
    assert out[1] == "True"  # destroy found the rotated session
    assert out[2] == "0"  # nothing left for destroy_all_for_user
    assert out[3].startswith("SessionStats(created=1")


async def test_middleware_example_app(redis_server: EmbeddedRedis) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(APP.compile(), namespace)
    client = await connect(settings_for(redis_server))
    try:
        app = namespace["build_app"](SessionStore(client, secret=SECRET, prefix="docs"))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            assert (await http.get("/cart")).json() == {"cart": [], "user": None}
            assert (await http.post("/login")).json() == {"user": "42"}
            assert (await http.get("/cart")).json() == {"cart": [], "user": "42"}
            assert (await http.post("/logout")).json() == {"ended": True}
    finally:
        await client.aclose()
