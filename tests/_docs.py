"""How the tests run the code in the documentation: one convention for
README.md and every docs/*.md.

- Every ```python block runs, except one whose first line is
  ``# not run: <reason>`` (a fragment that needs an app around it). Those
  are compiled all the same (tests/test_docs.py), so they stay Python.
- A block that calls ``asyncio.run(`` is a program: it runs as a reader
  would run it, ``python -c`` in a process of its own (tracing, timing and
  the event loop are process-wide).
- Every other block is a step: the steps of a document run in order in
  one namespace, with top-level ``await`` as in ``python -m asyncio``,
  after PRELUDE, the names a fragment may assume (``asyncio``, ``redkit``
  and ``client = await redkit.connect()``).
- Both run against the test's server: ``REDIS_URL`` names it (every
  ``redkit.connect()`` reads it); no other ``REDIS_*`` or ``OTEL_*``
  variable reaches the example. The database is emptied first.
- Both run twice, the second time on what the first left behind: an
  example a reader runs again must not fail on its own leftovers.
- A test that does more with a block (sends requests to the app it
  builds) takes it with ``Doc.take(text)``; the block is then run by that
  test only.

Line numbers in a failing example's traceback are the document's own.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster

import redkit
from redkit.server import EmbeddedRedis
from redkit.testing import flush

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
NOT_RUN = "# not run"
PRELUDE = "import asyncio\nimport redkit\n\nclient = await redkit.connect()\n"
RUNS = ("first run", "second run")


def documents() -> list[str]:
    """README.md and docs/*.md, as paths from the checkout's root."""
    docs = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
    return ["README.md", *docs]


@dataclass(frozen=True)
class Block:
    doc: str
    number: int  # among the document's python blocks, from 1
    line: int  # the first line of code, in the document
    source: str

    @property
    def name(self) -> str:
        return f"{self.doc}#block{self.number}"

    @property
    def runs(self) -> bool:
        return not self.source.startswith(NOT_RUN)

    @property
    def is_program(self) -> bool:
        return "asyncio.run(" in self.source

    @property
    def padded(self) -> str:
        """The source on its document lines, for tracebacks."""
        return "\n" * (self.line - 1) + self.source

    def compile(self) -> types.CodeType:
        return compile(
            self.padded, str(ROOT / self.doc), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )


def blocks_of(doc: str) -> list[Block]:
    text = (ROOT / doc).read_text(encoding="utf-8")
    found = []
    for number, match in enumerate(FENCE.finditer(text), 1):
        block = Block(doc, number, text.count("\n", 0, match.start()) + 2, match.group(1))
        first = block.source.partition("\n")[0]
        if not block.runs and not re.fullmatch(r"# not run: \S.*", first):
            raise ValueError(f"{block.name}: write the reason, '# not run: <reason>'")
        found.append(block)
    return found


def _environment(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "OTEL_"))}
    # this checkout's sources, whichever copy of redkit is installed
    paths = (str(ROOT / "src"), os.environ.get("PYTHONPATH"))
    env.update(REDIS_URL=url, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    return env


async def _empty(url: str) -> None:
    client = await redkit.connect(url=url, min_idle_conns=0)
    try:
        await flush(client)
    finally:
        await client.aclose()


async def run_program(block: Block, url: str) -> list[str]:
    """Run a program twice; the lines it printed the second time."""
    await _empty(url)
    for run in RUNS:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", block.padded],
            env=_environment(url),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{block.name} ({run}):\n{done.stderr[-4000:]}"
    return done.stdout.splitlines()


async def _exec(code: types.CodeType, namespace: dict[str, Any]) -> None:
    result = eval(code, namespace)
    if isinstance(result, types.CoroutineType):
        await result


async def run_steps(
    steps: Sequence[Block], url: str, monkeypatch: pytest.MonkeyPatch, runs: int = len(RUNS)
) -> None:
    """Run the steps in order in one namespace after PRELUDE, ``runs`` times."""
    for var in list(os.environ):
        if var.startswith(("REDIS_", "OTEL_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("REDIS_URL", url)
    await _empty(url)
    prelude = compile(PRELUDE, "PRELUDE", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    for _ in range(runs):
        # A module of its own, so that the dataclasses and pydantic models
        # a step defines can find it.
        module = types.ModuleType("redkit_doc_" + re.sub(r"\W", "_", steps[0].name))
        monkeypatch.setitem(sys.modules, module.__name__, module)
        namespace = module.__dict__
        # Every client a step made, even if a later one took its name.
        clients: dict[int, Redis | RedisCluster] = {}
        try:
            for code in (prelude, *(step.compile() for step in steps)):
                await _exec(code, namespace)
                for value in namespace.values():
                    if isinstance(value, (Redis, RedisCluster)):
                        clients[id(value)] = value
        finally:
            for client in clients.values():
                await client.aclose()


def _in_order(expected: Sequence[str], lines: Sequence[str]) -> bool:
    rest = iter(lines)
    return all(any(text in line for line in rest) for text in expected)


@dataclass(frozen=True)
class _Unit:
    """What one test case runs: a program, or all the steps of a document."""

    name: str
    blocks: tuple[Block, ...]
    expect: Sequence[str] = ()

    async def run(self, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        if self.blocks[0].is_program:
            lines = await run_program(self.blocks[0], url)
            assert _in_order(self.expect, lines), (self.expect, lines)
        else:
            await run_steps(self.blocks, url, monkeypatch)


class Doc:
    """The examples of one document.

    ``expect`` maps a text of one program to what it must print: each
    string within a line of its output, in this order.
    """

    def __init__(
        self,
        doc: str,
        expect: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.doc = doc
        self.blocks = blocks_of(doc)
        self.expect = {self.find(text).number: lines for text, lines in (expect or {}).items()}
        self._left = {b.number for b in self.blocks if b.runs}

    def find(self, text: str) -> Block:
        """The one block that contains ``text``."""
        found = [b for b in self.blocks if text in b.source]
        assert len(found) == 1, f"{len(found)} blocks of {self.doc} contain {text!r}"
        return found[0]

    def take(self, text: str) -> Block:
        """The block with ``text``, which the calling test runs itself."""
        block = self.find(text)
        self._left.remove(block.number)
        return block

    @property
    def steps(self) -> list[Block]:
        return [b for b in self.blocks if b.number in self._left and not b.is_program]

    @property
    def programs(self) -> list[Block]:
        return [b for b in self.blocks if b.number in self._left and b.is_program]

    def test(self) -> Callable[..., Any]:
        """The test case of every block left to run: one per program, one
        for all the steps."""
        units = [
            _Unit(f"block{b.number}", (b,), self.expect.get(b.number, ())) for b in self.programs
        ]
        if self.steps:
            numbers = ",".join(str(b.number) for b in self.steps)
            units.append(_Unit(f"steps{numbers}", tuple(self.steps)))
        assert units, f"{self.doc} has no example left to run"

        @pytest.mark.parametrize("unit", units, ids=[u.name for u in units])
        async def test_examples_run_twice(
            unit: _Unit, redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
        ) -> None:
            await unit.run(redis_server.url, monkeypatch)

        return test_examples_run_twice
