"""Time limits for many short calls without a timer per call.

``asyncio.timeout`` schedules and cancels a timer handle for every call,
which costs about as much as the rest of a rate-limit decision's Python
work. Here each call only records its deadline; one watchdog task per
:class:`Deadlines` wakes every quarter timeout while calls are in flight and
cancels those past their deadline, so a call is cut off between 1x and
1.25x the timeout. The watchdog ends as soon as nothing is in flight.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

__all__ = ["Deadlines"]


class Deadlines:
    """Bounds awaited calls to ``seconds`` (see the module docstring)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._tick = max(0.001, seconds / 4)
        self._inflight: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._watch_loop: asyncio.AbstractEventLoop | None = None

    def enter(self) -> asyncio.Task[Any] | None:
        """Start the clock for the current task; pair with :meth:`leave` in
        a ``finally``. Returns ``None`` where no deadline can be kept (no
        current task, Python < 3.11): the caller then relies on the client's
        socket timeout."""
        task = asyncio.current_task()
        if task is None or sys.version_info < (3, 11):  # pragma: no cover
            return None
        loop = task.get_loop()
        self._inflight[task] = loop.time() + self.seconds
        if self._watchdog is None or self._watch_loop is not loop:
            self._watch_loop = loop
            self._watchdog = loop.create_task(self._watch(loop))
        return task

    def timed_out(self, task: asyncio.Task[Any]) -> bool:
        """Call on ``CancelledError``: true when the cancellation was this
        deadline's (and it is then withdrawn), false when it came from
        outside and must propagate."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        if sys.version_info >= (3, 11):
            return task.uncancel() == 0
        return True  # pragma: no cover

    def leave(self, task: asyncio.Task[Any]) -> None:
        del self._inflight[task]
        self._expired.discard(task)

    async def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while self._inflight:
                await asyncio.sleep(self._tick)
                now = loop.time()
                for task, deadline in list(self._inflight.items()):
                    if deadline <= now and task not in self._expired:
                        self._expired.add(task)
                        task.cancel()
        finally:
            if self._watchdog is asyncio.current_task():
                self._watchdog = None
                self._watch_loop = None
