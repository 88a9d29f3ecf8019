"""The examples in docs/operations.md run as written against a real server,
each in its own process (tracing and timing are process-wide). A block
whose first line is ``# not run`` is a fragment for reading."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from redkit.server import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "operations.md"
BLOCKS = [
    block
    for block in re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.S | re.M)
    if not block.startswith("# not run")
]


def test_the_doc_has_runnable_examples() -> None:
    assert len(BLOCKS) == 3


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_doc_example_runs_twice(number: int, redis_server: EmbeddedRedis) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "OTEL_"))}
    env.update(PYTHONPATH=str(ROOT / "src"), REDIS_URL=redis_server.url)
    for _ in range(2):  # leftovers of the first run must not matter
        done = subprocess.run(
            [sys.executable, "-c", BLOCKS[number]],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    if "handler trace" in BLOCKS[number]:
        assert "'events.handle'" in done.stdout
