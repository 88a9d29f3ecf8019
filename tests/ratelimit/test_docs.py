"""The quick-start example in docs/ratelimit.md runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "ratelimit.md"


def test_quick_start_example_runs():
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    done = subprocess.run(
        [sys.executable, "-c", code.group(1)], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode().splitlines()
    assert out[0].startswith("True 100 99 ")
    assert out[1].startswith("cost 6 exceeds the limit of rate 5/minute")
    assert out[2].startswith("RateLimitStats(hits=3, allowed=2, rejected=1, peeks=1")
