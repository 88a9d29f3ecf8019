"""The examples in docs/lock.md run as written against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from redkit.server import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "lock.md"
BLOCKS = [
    block
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    if "asyncio.run(main())" in block
]


def test_the_doc_has_runnable_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_doc_example_runs(number: int, redis_server: EmbeddedRedis) -> None:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT / "src"),
        REDIS_HOST=redis_server.host,
        REDIS_PORT=str(redis_server.port),
    )
    done = subprocess.run(
        [sys.executable, "-c", BLOCKS[number]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
