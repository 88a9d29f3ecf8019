"""The examples in README.md and docs/cache.md are run with ``REDIS_URL``
pointing at the test server (the other components' docs/*.md have their own
tests beside the component's).

README.md: each block on its own, twice on the same database, each run in a
fresh namespace holding only what the README says a block may assume:
``import asyncio``, ``import redkit`` and ``client = await redkit.connect()``.
The database is emptied before a block's first run and not before its
second, so a block neither relies on another's leftovers nor fails on its
own. Then every block runs once more, in order, on what all the others left.

docs/cache.md: in order, in one namespace, as a reader goes through it;
twice, the second time on what the first left.

Skipped: a block whose first line is ``# not run: <reason>`` (shown to
readers only: an app fragment that needs a framework around it), and the
README's complete app, the block starting with ``# main.py``
(tests/wiring/test_readme_app.py runs it under uvicorn).
"""

from __future__ import annotations

import ast
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster

import redkit
from redkit.server import EmbeddedRedis
from redkit.testing import flush

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CACHE_DOC = ROOT / "docs" / "cache.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PRELUDE = "import asyncio\nimport redkit\n\nclient = await redkit.connect()\n"
SKIPPED = ("# not run", "# main.py\n")


def _blocks(path: Path) -> list[str]:
    return [b for b in BLOCK.findall(path.read_text()) if not b.startswith(SKIPPED)]


async def _run(source: str, name: str, namespace: dict[str, Any]) -> None:
    code = compile(source, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if isinstance(result, types.CoroutineType):
        await result


async def _close_clients(namespace: dict[str, Any]) -> None:
    for value in list(namespace.values()):
        if isinstance(value, (Redis, RedisCluster)):
            await value.aclose()


async def _in_fresh_namespace(
    source: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    # A module of its own, so that dataclasses and pydantic models defined
    # in the block can find it.
    module = types.ModuleType("redkit_doc_" + re.sub(r"\W", "_", name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    try:
        await _run(PRELUDE, f"{name} (prelude)", namespace)
        await _run(source, name, namespace)
    finally:
        await _close_clients(namespace)
    return namespace


async def _empty(url: str) -> None:
    client = await redkit.connect(url=url, min_idle_conns=0)
    try:
        await flush(client)
    finally:
        await client.aclose()


README_BLOCKS = _blocks(README)


@pytest.mark.parametrize(
    "number",
    range(1, len(README_BLOCKS) + 1),
    ids=[f"block{n}" for n in range(1, len(README_BLOCKS) + 1)],
)
async def test_readme_block_runs_twice_on_its_own(
    number: int, redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    await _empty(redis_server.url)
    source = README_BLOCKS[number - 1]
    for run in ("first", "second"):
        await _in_fresh_namespace(source, f"README.md#block{number} ({run} run)", monkeypatch)


async def test_readme_blocks_run_in_order_on_each_others_leftovers(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    await _empty(redis_server.url)
    for number, source in enumerate(README_BLOCKS, 1):
        await _in_fresh_namespace(source, f"README.md#block{number}", monkeypatch)


async def test_cache_doc_runs_in_order_twice(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    await _empty(redis_server.url)
    for run in ("first", "second"):
        module = types.ModuleType("redkit_doc_cache")
        monkeypatch.setitem(sys.modules, module.__name__, module)
        namespace = module.__dict__
        try:
            for number, source in enumerate(_blocks(CACHE_DOC), 1):
                await _run(source, f"cache.md#block{number} ({run} run)", namespace)
        finally:
            await _close_clients(namespace)
