"""Taking a lease: attempts, waiting with backoff and early wake-up, and
:class:`Acquisition`, what ``acquire()`` returns."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, Generic, TypeVar

from .._failures import ANY, UNAVAILABLE, failure
from .._ids import uuid4_text
from .._telemetry import operation
from .._timing import backoff_delay, bounded, cancel_count
from ..errors import LockNotAcquired, NotReplicated
from ._common import Task, log
from ._host import REQUEST_FLOOR, Resource
from ._lease import Lease, OnLost
from ._waker import Watch

L = TypeVar("L", bound=Lease)


async def _attempt(
    resource: Resource,
    token: str,
    ttl_ms: int,
    deadline: float | None,
    me: Task,
    baseline: int,
) -> tuple[bool, int, float]:
    """One attempt: ``(taken, fencing token or ms the holder has left,
    when it was sent)``."""
    host = resource.host
    sent_at = time.monotonic()
    budget = host.request_timeout if deadline is None else max(deadline - sent_at, REQUEST_FLOOR)
    try:
        reply = await host.request(resource.try_acquire(token, ttl_ms), budget)
    except asyncio.CancelledError:
        host.spawn(_discard(resource, token))
        raise
    except NotReplicated:
        # Taken, but not known to survive a failover: fail closed. (Before
        # ANY, which holds it: a ConnectionUnavailable is an OSError.)
        resource.counts["errors"] += 1
        host.spawn(_discard(resource, token))
        raise
    except ANY as exc:
        raise _attempt_failed(resource, token, exc) from exc
    taken, value = _attempt_outcome(resource, token, reply, me, baseline)
    return taken, value, sent_at


def _attempt_failed(resource: Resource, token: str, exc: BaseException) -> Exception:
    """What an attempt whose request failed with ``exc`` (one of
    :data:`~redkit._failures.ANY`) raises."""
    resource.counts["errors"] += 1
    if isinstance(exc, UNAVAILABLE):
        # The request may have reached Redis: give back whatever it took.
        resource.host.spawn(_discard(resource, token))
    return failure(f"cannot acquire {resource.describe()}", exc)


def _attempt_outcome(
    resource: Resource, token: str, reply: Any, me: Task, baseline: int
) -> tuple[bool, int]:
    value = int(reply)
    taken = value > 0
    if not taken:
        value = -value
    if cancel_count(me) > baseline:
        # Cancelled, but the CancelledError was lost on the way (see
        # check_cancelled): honour it, and give back what was taken.
        if taken:
            resource.host.spawn(_discard(resource, token))
        raise asyncio.CancelledError()
    if not taken:
        resource.counts["busy"] += 1
    return taken, value


async def _discard(resource: Resource, token: str) -> None:
    try:
        host = resource.host
        if await host.request(resource.release(token), host.request_timeout):
            log.debug("gave back %s taken by an abandoned request", resource.describe())
    except Exception as exc:
        log.debug("could not check %s after an abandoned request: %r", resource.describe(), exc)


async def _sleep_or_wake(event: asyncio.Event, delay: float) -> bool:
    if event.is_set():
        return True
    if delay <= 0:
        return False
    try:
        await bounded(event.wait(), delay)
    except (asyncio.TimeoutError, TimeoutError):
        return False
    return True


Delay = Callable[[int, int], float]
"""``delay(attempt, hint_ms)``: seconds to wait before the next attempt."""


async def take(
    resource: Resource,
    lease_type: type[L],
    ttl_ms: int,
    *,
    timeout: float | None,
    max_attempts: int | None,
    delay: Delay,
    auto_renew: bool,
    on_lost: OnLost,
    task: asyncio.Task[Any] | None,
    into: Acquisition[L] | None = None,
) -> L:
    """Take a lease, waiting at most ``timeout`` seconds (None: bounded by
    ``max_attempts``) and at most ``max_attempts`` attempts (None: bounded
    by the timeout). The lease is also stored in ``into``, when given."""
    # secrets.token_hex without the extra calls
    token = uuid4_text() if resource.uuid_tokens else os.urandom(16).hex()
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    me = asyncio.current_task()
    baseline = cancel_count(me)
    taken, value, sent_at = await _attempt(resource, token, ttl_ms, deadline, me, baseline)
    if not taken:
        value, sent_at = await _wait(
            resource, token, ttl_ms, deadline, max_attempts, delay, value, me, baseline
        )
    resource.counts["acquired"] += 1
    log.debug("acquired %s (fencing token %d)", resource, value)
    lease = lease_type(
        resource,
        token,
        value,
        ttl_ms,
        sent_at,
        auto_renew=auto_renew,
        on_lost=on_lost,
        task=task,
    )
    if into is not None:
        into._lease = lease
    return lease


async def _wait(
    resource: Resource,
    token: str,
    ttl_ms: int,
    deadline: float | None,
    max_attempts: int | None,
    delay: Delay,
    hint: int,
    me: Task,
    baseline: int,
) -> tuple[int, float]:
    host = resource.host
    attempts = 1

    def give_up() -> LockNotAcquired:
        resource.counts["timeouts"] += 1
        if deadline is None:
            if attempts == 1:
                return LockNotAcquired(resource.busy())
            return LockNotAcquired(f"{resource.busy()} after {attempts} attempts")
        return LockNotAcquired(f"{resource.busy()}; gave up waiting")

    if max_attempts is not None and attempts >= max_attempts:
        raise give_up()
    if deadline is not None and time.monotonic() >= deadline:
        raise give_up()
    watching = (
        host.waker.watch(resource.channel)
        if host.waker is not None
        else contextlib.nullcontext(Watch(None, resource.channel))
    )
    async with watching as watch:
        woken = watch.event
        waits = 0
        while True:
            left = math.inf if deadline is None else deadline - time.monotonic()
            # (Re)subscribe to release notifications. A fresh subscription
            # may have missed a release: look again straight away (unless
            # attempts are counted: the caller's retry count is the promise).
            fresh = await watch.subscribe(min(1.0, left))
            if not (fresh and max_attempts is None):
                pause = delay(waits, hint)
                waits += 1
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise give_up()
                    pause = min(pause, left)
                if await _sleep_or_wake(woken, pause):
                    resource.counts["wakeups"] += 1
            woken.clear()
            taken, value, sent_at = await _attempt(resource, token, ttl_ms, deadline, me, baseline)
            attempts += 1
            if taken:
                return value, sent_at
            hint = value
            if max_attempts is not None and attempts >= max_attempts:
                raise give_up()


def backoff(base: float, cap: float) -> Delay:
    """Exponential backoff with full jitter, never past the holder's
    expiry (a holder that died does not publish its release)."""

    def delay(attempt: int, hint_ms: int) -> float:
        pause = backoff_delay(attempt, base, cap)
        if hint_ms > 0:
            pause = min(pause, hint_ms / 1000 + 0.001)
        return pause

    return delay


def jittered(mean: float) -> Delay:
    """About ``mean`` seconds (0.5x to 1.5x), so that retrying processes
    drift apart instead of retrying in step."""

    def delay(attempt: int, hint_ms: int) -> float:
        return mean * random.uniform(0.5, 1.5)

    return delay


class Acquisition(Generic[L]):
    """What ``acquire()`` returns: use it with ``async with`` (released on
    exit, also on error or cancellation) or ``await`` it for a lease you
    release yourself."""

    __slots__ = (
        "_auto_renew",
        "_delay",
        "_lease",
        "_lease_type",
        "_on_lost",
        "_resource",
        "_timeout",
        "_ttl_ms",
    )

    def __init__(
        self,
        resource: Resource,
        lease_type: type[L],
        ttl_ms: int,
        *,
        timeout: float,
        delay: Delay,
        auto_renew: bool,
        on_lost: OnLost,
    ) -> None:
        self._resource = resource
        self._lease_type = lease_type
        self._ttl_ms = ttl_ms
        self._timeout = timeout
        self._delay = delay
        self._auto_renew = auto_renew
        self._on_lost = on_lost
        self._lease: L | None = None

    @operation("lock.take")  # acquire() of locks and semaphores, awaited or entered
    def _take(self, into: Acquisition[L] | None) -> Coroutine[Any, Any, L]:
        return take(
            self._resource,
            self._lease_type,
            self._ttl_ms,
            timeout=self._timeout,
            max_attempts=None,
            delay=self._delay,
            auto_renew=self._auto_renew,
            on_lost=self._on_lost,
            task=asyncio.current_task(),
            into=into,
        )

    def __await__(self) -> Generator[Any, None, L]:
        return self._take(None).__await__()

    def __aenter__(self) -> Coroutine[Any, Any, L]:
        # A plain method handing back take()'s coroutine (which stores the
        # lease here for __aexit__): one coroutine less per acquisition.
        if self._lease is not None:
            raise RuntimeError("this acquire() was already entered; call acquire() again")
        return self._take(self)

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Coroutine[Any, Any, None]:
        # Like __aenter__: the lease's own coroutine, none of ours.
        lease = self._lease
        assert lease is not None
        return lease.end_block(exc)
