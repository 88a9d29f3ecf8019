"""The examples in docs/session.md run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from redkit.server import EmbeddedRedis

from ._helpers import SECRET

DOC = Path(__file__).resolve().parents[2] / "docs" / "session.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_store_example_runs(redis_server: EmbeddedRedis, redis_client: Redis, capsys: Any) -> None:
    # redis_client: the server is flushed first.
    store_example = next(b for b in blocks() if "async def main" in b and "SessionStore(" in b)
    code = store_example.replace("redis://127.0.0.1:6379/0", redis_server.url)
    exec(compile(code, str(DOC), "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "True"  # destroy found the rotated session
    assert out[2] == "0"  # nothing left for destroy_all_for_user
    assert out[3].startswith("SessionStats(created=1")


async def test_middleware_example_app(redis_server: EmbeddedRedis) -> None:
    from redkit import connect
    from redkit.session import SessionStore
    from redkit.testing import settings_for

    example = next(b for b in blocks() if "def build_app" in b)
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(example, str(DOC), "exec"), namespace)
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
