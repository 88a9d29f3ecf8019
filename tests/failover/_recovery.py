"""Timing and polling shared by the failover tests: a workload that runs one
call over and over and remembers every outcome, a bounded wait on a
condition, and the one line each test prints with its recovery time."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redkit._timing import cancel_and_wait

# The aim: every component serves correctly within 1 s of the promotion.
BOUND = 1.0
# How long a test keeps waiting past a bound, so that a cell that misses it
# still prints how long recovery really took.
PATIENCE = 20.0


@dataclasses.dataclass(frozen=True)
class Promotion:
    """One trigger: when it started (the outage began) and when the new
    primary was confirmed serving (every sentinel names it, or every node
    routes the slot to it), both on the monotonic clock."""

    kind: str
    topology: str
    started: float
    promoted: float

    @property
    def cell(self) -> str:
        return f"{self.topology}/{self.kind}"


@dataclasses.dataclass(frozen=True)
class Call:
    started: float
    ended: float
    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class Workload:
    """Calls ``step(n)`` (n = 0, 1, ...) until stopped, ``pause`` seconds
    apart, keeping every :class:`Call`. Used as ``async with``."""

    def __init__(self, step: Callable[[int], Awaitable[Any]], pause: float = 0.01) -> None:
        self._step = step
        self._pause = pause
        self.calls: list[Call] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        n = 0
        while True:
            started = time.monotonic()
            try:
                value = await self._step(n)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.calls.append(Call(started, time.monotonic(), error=exc))
            else:
                self.calls.append(Call(started, time.monotonic(), value))
            n += 1
            await asyncio.sleep(self._pause)

    async def __aenter__(self) -> Workload:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._task is not None:
            # Cancelled until it ends: on Python 3.11 redis-py's wait_for
            # can drop a cancellation that lands as a reply arrives.
            await cancel_and_wait(self._task, 10.0)
            assert self._task.done(), "the workload did not stop"
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def after(self, moment: float) -> list[Call]:
        """Calls sent at or after ``moment``."""
        return [c for c in self.calls if c.started >= moment]

    def first(self, moment: float, good: Callable[[Call], bool] = lambda c: c.ok) -> Call | None:
        return next((c for c in self.after(moment) if good(c)), None)

    def errors(self) -> list[BaseException]:
        return [c.error for c in self.calls if c.error is not None]

    async def served(
        self, promotion: Promotion, good: Callable[[Call], bool] = lambda c: c.ok
    ) -> Call:
        """Wait (at most PATIENCE s) for the first good call sent after the
        promotion and return it."""
        await until(lambda: self.first(promotion.promoted, good) is not None, "a good call")
        found = self.first(promotion.promoted, good)
        assert found is not None
        return found


async def until(
    done: Callable[[], Any], what: str, timeout: float = PATIENCE, interval: float = 0.005
) -> Any:
    """Poll ``done`` until it returns something truthy and return that; an
    AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = done()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s")
        await asyncio.sleep(interval)


async def until_async(
    check: Callable[[], Awaitable[Any]], what: str, timeout: float = PATIENCE
) -> Any:
    """:func:`until` for an awaitable check; exceptions count as not yet."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() <= deadline:
        try:
            value = await check()
        except Exception as exc:
            last = exc
        else:
            if value:
                return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {what} within {timeout:g} s (last error: {last!r})")


def report(component: str, promotion: Promotion, served_at: float, **extra: Any) -> float:
    """Print the recovery time (promotion to first correct service; negative
    when the component served before the fixture confirmed the promotion)
    and the outage (trigger to first correct service); return the first."""
    recovery = served_at - promotion.promoted
    details = "".join(f" {name}={value}" for name, value in extra.items())
    print(
        f"\nFAILOVER {component:<10} {promotion.cell:<17} recovery={recovery:6.3f}s "
        f"outage={served_at - promotion.started:6.3f}s{details}"
    )
    return recovery


async def close_all(*things: Any, timeout: float = 10.0) -> None:
    """``aclose()`` each of ``things`` in order, each bounded: a component
    that cannot shut down after a failover is a failure, not a hung suite."""
    stuck = []
    for thing in things:
        # Not wait_for: it would wait for a close that swallows its
        # cancellation, which is the hang this is meant to report.
        closing = asyncio.ensure_future(thing.aclose())
        done, _ = await asyncio.wait({closing}, timeout=timeout)
        if not done:
            stuck.append(repr(thing))
        else:
            closing.result()
    assert not stuck, f"aclose() did not return within {timeout:g} s: {stuck}"


async def within(check: Callable[[], Any], timeout: float) -> float | None:
    """Seconds until ``check()`` was true, or None if not within ``timeout``."""
    started = time.monotonic()
    try:
        await until(check, "condition", timeout)
    except AssertionError:
        return None
    return time.monotonic() - started
