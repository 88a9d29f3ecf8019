"""The public surface of redkit.ratelimit."""

from __future__ import annotations

import redkit.ratelimit as ratelimit


def test_all_lists_exactly_the_public_names():
    public = {name for name in vars(ratelimit) if not name.startswith("_")}
    modules = {"asgi", "headers", "identity", "limiter", "rate"}
    assert set(ratelimit.__all__) == public - modules
    for name in ratelimit.__all__:
        assert getattr(ratelimit, name) is not None


def test_importing_does_not_need_starlette():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['starlette'] = None; sys.modules['fastapi'] = None\n"
        "import redkit.ratelimit as r\n"
        "r.RateLimitMiddleware; r.RateLimitRule('/x', '1/s')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
