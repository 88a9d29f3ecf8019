"""Small helpers for the events tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(check: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``check`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout:g}s: {what or check}")
        await asyncio.sleep(0.02)
