"""bounded(): await something for at most so many seconds, and leave on
time even when the awaited operation is slow to give up."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["bounded"]

T = TypeVar("T")

if sys.version_info >= (3, 11):

    async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
        """Await ``awaitable`` for at most ``seconds``; ``TimeoutError`` after."""
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # pragma: no cover - Python 3.10

    async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
        """Await ``awaitable`` for at most ``seconds``; ``TimeoutError`` after.

        Not ``asyncio.wait_for``: on Python 3.10 it waits for the cancelled
        operation to finish, and redis-py's own read timeout (async_timeout)
        can turn that cancellation into a timeout it retries, when both fire
        together; the caller then waited through every retry. Here the
        caller leaves on time and the cancelled operation ends in the
        background.
        """
        task = asyncio.ensure_future(awaitable)
        try:
            done, _ = await asyncio.wait({task}, timeout=seconds)
        except asyncio.CancelledError:
            task.cancel()
            task.add_done_callback(_consume)
            raise
        if done:
            return task.result()
        task.cancel()
        task.add_done_callback(_consume)
        raise asyncio.TimeoutError()

    def _consume(task: asyncio.Future[Any]) -> None:
        # Nobody awaits an abandoned operation: take its outcome so that
        # asyncio does not report it as never retrieved.
        if not task.cancelled():
            task.exception()
