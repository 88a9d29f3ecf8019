"""The complete examples in docs/ratelimit.md run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ratelimit.md"


def run_example(heading: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split(heading, 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    # this checkout's sources, whichever copy of redkit is installed
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-c", code.group(1)],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().splitlines()


def test_quick_start_example_runs():
    out = run_example("## Quick start")
    assert out[0].startswith("True 100 99 ")
    assert out[1].startswith("cost 6 exceeds the limit of rate 5/minute")
    assert out[2].startswith("RateLimitStats(hits=3, allowed=2, rejected=1, peeks=1")


def test_proxy_header_example_runs():
    out = run_example("### Client IP and proxies")
    assert out == ["[200, 200, 200, 200, 200, 429, 429]"]
