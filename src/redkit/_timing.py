"""Waiting, backing off and cancelling: the timing rules every component
shares.

- :func:`bounded` awaits something for at most so many seconds.
- :func:`backoff_delay` is the one retry schedule: exponential with full
  jitter, so that clients that failed together do not retry together;
  :func:`recovery_delay` applies it to a connection that had worked, which
  retries promptly early in the gap (a failover takes seconds, and a
  subscriber or consumer waiting out a grown backoff after the new primary
  serves would miss what it publishes).
- :class:`Sweeper` cuts off many short calls at their deadline with one
  periodic task instead of a timer per call.
- :func:`cancel_count`, :func:`check_cancelled`, :func:`raise_if_cancelled`
  and :func:`withdraw_cancellation` work around Python 3.11's
  ``asyncio.wait_for`` (which redis-py uses around every socket write)
  losing a cancellation that arrives as its operation completes, and
  Python 3.10 not counting cancellations at all. Every ``sys.version_info``
  check of the timing code is in this module.
- :class:`TaskSet` keeps background tasks alive until they end and cancels
  them together.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Awaitable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = [
    "COUNTS_CANCELLATIONS",
    "RECOVERY_CAP",
    "RECOVERY_WINDOW",
    "Sweeper",
    "TaskSet",
    "backoff_delay",
    "bounded",
    "cancel_and_wait",
    "cancel_count",
    "check_cancelled",
    "raise_if_cancelled",
    "recovery_delay",
    "withdraw_cancellation",
]

T = TypeVar("T")


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first):
    uniform in ``[0, min(cap, base * 2**attempt)]``."""
    return random.uniform(0.0, min(cap, base * (2.0 ** min(attempt, 30))))


RECOVERY_CAP = 0.5
"""Longest wait between attempts early in a gap (seconds)."""
RECOVERY_WINDOW = 30.0
"""How long into a gap the waits stay below :data:`RECOVERY_CAP`."""


def recovery_delay(attempt: int, base: float, cap: float, *, lost_for: float | None) -> float:
    """:func:`backoff_delay` for reconnecting something that worked until
    ``lost_for`` seconds ago (None: it never did, or too long ago to tell):
    for the first :data:`RECOVERY_WINDOW` seconds of a gap the waits stay
    under :data:`RECOVERY_CAP`; after that, and for what never worked,
    they grow to ``cap``."""
    if lost_for is not None and lost_for < RECOVERY_WINDOW:
        cap = min(cap, RECOVERY_CAP)
    return backoff_delay(attempt, base, cap)


COUNTS_CANCELLATIONS = sys.version_info >= (3, 11)
"""Whether a task counts its pending cancellations, so that one a lower
layer dropped (``asyncio.wait_for`` returning its result instead, as on
Python 3.10 and 3.11 when both happen at once) can still be noticed with
:func:`check_cancelled`. Where it is False, code whose callers rely on
cancellation awaits through :func:`bounded`, whose own wait delivers the
caller's cancellation whatever the awaited operation does with its own."""

if sys.version_info >= (3, 11):

    async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
        """Await ``awaitable`` for at most ``seconds``; ``TimeoutError`` after."""
        async with asyncio.timeout(seconds):
            return await awaitable

    def cancel_count(task: asyncio.Task[Any] | None) -> int:
        """How many cancellations ``task`` has pending (0 for None)."""
        return task.cancelling() if task is not None else 0

    def withdraw_cancellation(task: asyncio.Task[Any]) -> int:
        """Take back one cancellation of ``task`` that its code handled;
        returns how many others are still pending."""
        return task.uncancel()

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

    def cancel_count(task: asyncio.Task[Any] | None) -> int:
        """Always 0: Python 3.10 does not count pending cancellations."""
        return 0

    def withdraw_cancellation(task: asyncio.Task[Any]) -> int:
        """Nothing to take back on Python 3.10; no others known (0)."""
        return 0


def check_cancelled(task: asyncio.Task[Any] | None, baseline: int) -> None:
    """Raise ``CancelledError`` if ``task`` was cancelled since
    ``baseline = cancel_count(task)`` but the cancellation never arrived
    (lost by ``asyncio.wait_for`` on Python 3.11)."""
    if cancel_count(task) > baseline:
        raise asyncio.CancelledError()


def raise_if_cancelled() -> None:
    """Re-raise a cancellation of the current task that a lower layer
    dropped. Loops that must stop when cancelled call this after awaiting
    Redis."""
    if cancel_count(asyncio.current_task()) > 0:
        raise asyncio.CancelledError()


async def cancel_and_wait(task: asyncio.Future[Any], timeout: float) -> None:
    """Cancel ``task`` and wait for it to end, cancelling again every second
    in case a cancellation was dropped; give up after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            return
        await asyncio.wait({task}, timeout=min(1.0, left))


class Sweeper:
    """Cuts off calls that outlive ``seconds``.

    ``asyncio.timeout`` schedules and cancels a timer handle per call, which
    costs about as much as a rate-limit decision's or a message dispatch's
    own Python work. Here a call records its deadline in :meth:`enter`, and
    one task per sweeper wakes every ``interval`` while calls are in flight
    and cancels the tasks past their deadline: a call is cut off between
    ``seconds`` and ``seconds + interval``. The sweeping task ends when
    nothing is in flight and starts again with the next call.

    The pattern::

        task = sweeper.enter()
        try:
            await work()
        except asyncio.CancelledError:
            if not sweeper.timed_out(task):
                raise  # cancelled from outside
            ...  # the deadline passed
        finally:
            sweeper.leave(task)
    """

    __slots__ = ("_expired", "_inflight", "_loop", "_sweeping", "interval", "seconds")

    def __init__(self, seconds: float, *, interval: float | None = None) -> None:
        self.seconds = seconds
        self.interval = interval if interval is not None else max(0.001, seconds / 4)
        self._inflight: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeping: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def enter(self) -> asyncio.Task[Any] | None:
        """Start the clock for the current task; pair with :meth:`leave` in
        a ``finally``. ``None`` when there is no current task (the caller
        bounds the call some other way)."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - callers run in tasks
            return None
        loop = task.get_loop()
        self._inflight[task] = loop.time() + self.seconds
        if self._sweeping is None or self._loop is not loop:
            self._loop = loop
            self._sweeping = loop.create_task(self._sweep(loop))
        return task

    def timed_out(self, task: asyncio.Task[Any]) -> bool:
        """Call on ``CancelledError``: true when the cancellation was this
        sweeper's and no other is pending (it is then withdrawn, and the
        task carries on); false when it must propagate. (Python 3.10 does
        not count cancellations: one from outside that lands in the same
        loop step as the sweep's is taken for the timeout.)"""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return withdraw_cancellation(task) == 0

    def leave(self, task: asyncio.Task[Any]) -> None:
        """Stop the clock for ``task``."""
        self._inflight.pop(task, None)
        self._expired.discard(task)

    async def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while self._inflight:
                await asyncio.sleep(self.interval)
                now = loop.time()
                for task, deadline in list(self._inflight.items()):
                    if deadline <= now and task not in self._expired and not task.done():
                        self._expired.add(task)
                        task.cancel()
        finally:
            if self._sweeping is asyncio.current_task():
                self._sweeping = None
                self._loop = None


class TaskSet:
    """Background tasks of one component, kept referenced until they end
    (the event loop holds only weak references to tasks)."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        if name is not None:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    async def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for every task to end."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def cancel(self, timeout: float) -> None:
        """Cancel every task and wait up to ``timeout`` seconds for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
