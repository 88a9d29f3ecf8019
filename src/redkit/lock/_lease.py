"""Leases: a held lock or semaphore permit, how it is taken, renewed, lost
and released."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

from redis.exceptions import RedisError

from .._failures import request_bound
from .._telemetry import operation
from .._timing import (
    backoff_delay,
    bounded,
    cancel_count,
    check_cancelled,
    withdraw_cancellation,
)
from ..connection import Client
from ..errors import LockLost, LockNotAcquired
from ._common import (
    CLOCK_DRIFT,
    CLOCK_MARGIN,
    REQUEST_FAILED,
    UNREACHABLE,
    Counters,
    Seconds,
    Task,
    detail,
    log,
    server_refused,
    to_ttl_ms,
    unavailable,
)
from ._deadlines import Deadlines, Entry
from ._waker import Waker, Watch

OnLost = Literal["signal", "cancel"] | Callable[["Lease"], object]
"""What happens when a lease is lost, besides setting ``lease.lost`` and
logging a warning: ``"signal"`` nothing more, ``"cancel"`` cancel the task
that entered ``async with``, or a callable called with the lease."""

# A request made while waiting is bounded by the time left to wait, but
# always gets at least this long, so that a zero timeout still means "one
# real attempt".
REQUEST_FLOOR = 0.5
# A renewal is bounded by the lease's remaining validity, but never less.
RENEW_FLOOR = 0.1

L = TypeVar("L", bound="Lease")
T = TypeVar("T")


class Host:
    """What the leases of one :class:`~redkit.lock.DistributedLock` share:
    the client, the wake-up subscriptions, timing knobs and the background
    tasks (releases finishing after a cancellation, renewals)."""

    __slots__ = (
        "client",
        "client_timeout",
        "deadlines",
        "request_timeout",
        "retry_base",
        "retry_cap",
        "tasks",
        "waker",
    )

    def __init__(
        self,
        client: Client,
        *,
        early_wakeup: bool,
        request_timeout: float,
        retry_base: float,
        retry_cap: float,
    ) -> None:
        self.client = client
        self.waker = Waker(client) if early_wakeup else None
        self.request_timeout = request_timeout
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.tasks: set[asyncio.Task[Any]] = set()
        self.deadlines = Deadlines()
        self.client_timeout = request_bound(client)

    def request(self, awaitable: Awaitable[T], budget: float) -> Awaitable[T]:
        """``awaitable``, bounded to at most ``budget`` seconds. When the
        client bounds a request itself no longer than that
        (:func:`~redkit.connection.request_bound`), neither a timer nor
        another coroutine is added (the uncontended path)."""
        if self.client_timeout is not None and self.client_timeout <= budget:
            return awaitable
        return bounded(awaitable, budget)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def aclose(self) -> None:
        pending = [t for t in self.tasks if t is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending, timeout=self.request_timeout)
        if self.waker is not None:
            await self.waker.aclose()


class Resource(abc.ABC):
    """One thing leases are taken on: a lock name or a semaphore."""

    kind = "lock"
    # Whether holders are identified by UUID strings (the Go service's lock
    # values) rather than 32 hex digits, which are cheaper to make.
    uuid_tokens = False
    __slots__ = ("channel", "counters", "host", "name")

    def __init__(self, host: Host, name: str, channel: str, counters: Counters) -> None:
        self.host = host
        self.name = name
        self.channel = channel
        self.counters = counters

    def describe(self) -> str:
        return f"{self.kind} {self.name!r}"

    # Log calls pass the resource itself, so that its description is only
    # built when the record is emitted.
    __str__ = describe

    def busy(self) -> str:
        """How "not acquired" reads for this resource."""
        return f"{self.describe()} is held by another holder"

    # The requests below return the script's reply unconverted (each is
    # awaited on the hot path, where a wrapping coroutine costs time).

    @abc.abstractmethod
    def try_acquire(self, token: str, ttl_ms: int) -> Awaitable[Any]:
        """One attempt. Replies the fencing token (>= 1) when taken, else
        minus the ms until the current holder's lease ends (0 when
        unknown)."""

    @abc.abstractmethod
    def extend(self, token: str, ttl_ms: int) -> Awaitable[Any]:
        """Set the lease of ``token`` to ``ttl_ms``. Replies 1, or 0 when
        not held."""

    @abc.abstractmethod
    def release(self, token: str) -> Awaitable[Any]:
        """Give the lease of ``token`` back. Replies 1, or 0 when it was
        not held."""


def _valid_until(sent_at: float, ttl_ms: int) -> float:
    # Counted from before the request was sent: Redis started the TTL no
    # earlier than that.
    return sent_at + ttl_ms / 1000 * (1 - CLOCK_DRIFT) - CLOCK_MARGIN


class Lease:
    """A held lock.

    ``token`` identifies this holder in Redis (release and extend check it);
    ``fencing_token`` is larger than that of every earlier acquisition of the
    same name, so a resource can refuse writes from a stale holder; ``lost``
    is set when the lease is known to be gone. Calling the lease releases it
    (``await lease()`` is ``await lease.release()``), which keeps the Go
    service's "lock returns a release function" shape.
    """

    __slots__ = (
        "_auto_renew",
        "_cancel_sent",
        "_exiting",
        "_lost_reason",
        "_on_lost",
        "_release_future",
        "_renewal",
        "_resource",
        "_task",
        "_timer",
        "_ttl_ms",
        "_valid_until",
        "fencing_token",
        "lost",
        "name",
        "token",
    )

    def __init__(
        self,
        resource: Resource,
        token: str,
        fencing_token: int,
        ttl_ms: int,
        sent_at: float,
        *,
        auto_renew: bool,
        on_lost: OnLost,
        task: asyncio.Task[Any] | None,
    ) -> None:
        self.name = resource.name
        self.token = token
        self.fencing_token = fencing_token
        self.lost = asyncio.Event()
        self._resource = resource
        self._ttl_ms = ttl_ms
        self._valid_until = _valid_until(sent_at, ttl_ms)
        self._auto_renew = auto_renew
        self._on_lost = on_lost
        self._task = task
        self._timer: Entry | None = None
        self._renewal: asyncio.Task[None] | None = None
        self._release_future: asyncio.Future[bool] | None = None
        self._lost_reason: str | None = None
        self._cancel_sent = False
        self._exiting = False
        self._schedule(sent_at)

    def __repr__(self) -> str:
        state = "lost" if self.lost.is_set() else "released" if self.released else "held"
        return (
            f"<{type(self).__name__} {self._resource.describe()} {state} "
            f"fencing_token={self.fencing_token} token={self.token[:8]}...>"
        )

    @property
    def ttl(self) -> float:
        """The lease length in seconds (what each renewal sets)."""
        return self._ttl_ms / 1000

    @property
    def remaining(self) -> float:
        """Seconds the lease is known to stay valid, measured with the
        monotonic clock from before the last successful acquire or extend
        request was sent (minus a small allowance for clock drift); 0 once
        lost or released."""
        if self.lost.is_set() or self._release_future is not None:
            return 0.0
        return max(0.0, self._valid_until - time.monotonic())

    @property
    def released(self) -> bool:
        """True once :meth:`release` was called."""
        return self._release_future is not None

    @property
    def lost_reason(self) -> str | None:
        """Why the lease was lost, or None while it is not."""
        return self._lost_reason

    @operation("lock.extend")
    async def extend(self, ttl: Seconds | None = None) -> None:
        """Set the lease to ``ttl`` seconds from now (default: its current
        ttl); later automatic renewals use the new ttl.

        Raises :class:`~redkit.LockLost` when the lease is no longer held
        (expired, deleted, taken, or released) and sets ``lost``;
        :class:`~redkit.ConnectionUnavailable` when Redis cannot be reached
        while the lease may still be valid.
        """
        ttl_ms = self._ttl_ms if ttl is None else to_ttl_ms(ttl)
        resource = self._resource
        if self._release_future is not None:
            raise LockLost(f"{resource.describe()} was released")
        if self.lost.is_set():
            raise LockLost(f"{resource.describe()} was lost: {self._lost_reason}")
        sent_at = time.monotonic()
        budget = max(self._valid_until - sent_at, REQUEST_FLOOR)
        me = asyncio.current_task()
        baseline = cancel_count(me)
        try:
            held = bool(await resource.host.request(resource.extend(self.token, ttl_ms), budget))
        except UNREACHABLE as exc:
            resource.counters.errors += 1
            if time.monotonic() >= self._valid_until:
                reason = "Redis could not be reached before the lease ran out"
                self._mark_lost(reason)
                raise LockLost(f"{resource.describe()} was lost: {reason}") from exc
            raise unavailable(f"cannot extend {resource.describe()}", exc) from exc
        except RedisError as exc:
            resource.counters.errors += 1
            raise server_refused(f"cannot extend {resource.describe()}", exc) from exc
        if held:
            resource.counters.extended += 1
            self._ttl_ms = ttl_ms
            self._valid_until = _valid_until(sent_at, ttl_ms)
            if self._release_future is None and not self.lost.is_set():
                self._stop_timers()
                self._schedule(sent_at)
            check_cancelled(me, baseline)
            return
        reason = "it expired or another holder took it"
        self._mark_lost(reason)
        raise LockLost(f"{resource.describe()} was lost: {reason}")

    @operation("lock.release")
    async def release(self) -> bool:
        """Give the lease back: True when this call freed it, False when it
        had expired or been taken by another holder (nothing is deleted
        then, and a warning is logged).

        The request is bounded by the lock service's ``request_timeout``.
        If the calling task is cancelled meanwhile, the release still
        finishes in the background. Calling it again returns the first
        call's result. Raises :class:`~redkit.ConnectionUnavailable` when
        Redis cannot be reached (the lease then ends on its own when its
        ttl runs out; a later call tries again).
        """
        future = self._release_future
        if future is not None:
            return await asyncio.shield(future)
        future = self._release_future = asyncio.get_running_loop().create_future()
        self._stop_timers()
        me = asyncio.current_task()
        baseline = cancel_count(me)
        host = self._resource.host
        try:
            # Awaited here rather than through _send_release: one coroutine
            # less on the hot path.
            reply = await host.request(self._resource.release(self.token), host.request_timeout)
        except asyncio.CancelledError:
            host.spawn(self._finish_release(future))
            raise
        except REQUEST_FAILED as exc:
            self._release_future = None
            future.set_result(False)
            raise self._release_failed(exc) from exc
        except BaseException:
            self._release_future = None
            future.set_result(False)
            raise
        released = self._released(bool(reply), quiet=False)
        future.set_result(released)
        check_cancelled(me, baseline)
        return released

    # ``await lease()`` releases; an alias rather than a wrapper, so the
    # release costs no extra coroutine.
    __call__ = release

    # -- internals ---------------------------------------------------------

    async def _send_release(self, *, quiet: bool) -> bool:
        host = self._resource.host
        try:
            reply = await host.request(self._resource.release(self.token), host.request_timeout)
        except REQUEST_FAILED as exc:
            raise self._release_failed(exc) from exc
        return self._released(bool(reply), quiet=quiet)

    def _release_failed(self, exc: BaseException) -> Exception:
        """What a release request that failed with ``exc`` (one of
        REQUEST_FAILED) raises; logged here."""
        resource = self._resource
        resource.counters.errors += 1
        what = f"cannot release {resource.describe()}"
        if isinstance(exc, RedisError) and not isinstance(exc, UNREACHABLE):
            log.warning("%s: %s", what, exc)
            return server_refused(what, exc)
        log.warning("%s (its ttl ends it on its own): %s", what, detail(exc))
        return unavailable(what, exc)

    def _released(self, released: bool, *, quiet: bool) -> bool:
        """Count and log the outcome of a release request."""
        resource = self._resource
        if released:
            resource.counters.released += 1
            log.debug("released %s (fencing token %d)", resource, self.fencing_token)
        elif quiet:
            log.debug("%s was already released or had expired", resource)
        else:
            resource.counters.release_not_held += 1
            if not self.lost.is_set():
                self._lost_reason = "it had expired or another holder took it before release"
                self.lost.set()
                resource.counters.lost += 1
            log.warning(
                "%s was no longer held when released (fencing token %d): it had "
                "expired or another holder took it; nothing was deleted",
                resource.describe(),
                self.fencing_token,
            )
        return released

    async def _finish_release(self, future: asyncio.Future[bool]) -> None:
        # The first request may have reached Redis before the caller was
        # cancelled; the second one then finds nothing, which is fine.
        try:
            released = await self._send_release(quiet=True)
        except Exception:
            released = False
        if not future.done():
            future.set_result(released)

    def _release_soon(self) -> None:
        """Release in the background (for a lease whose body is gone)."""
        if self._release_future is None:
            future = self._release_future = asyncio.get_running_loop().create_future()
            self._stop_timers()
            self._resource.host.spawn(self._finish_release(future))

    def _schedule(self, sent_at: float) -> None:
        deadlines = self._resource.host.deadlines
        if self._auto_renew:
            self._timer = deadlines.add(sent_at + self._ttl_ms / 3000, self._start_renewal)
        else:
            self._timer = deadlines.add(self._valid_until, self._ran_out)

    def _stop_timers(self) -> None:
        if self._timer is not None:
            self._resource.host.deadlines.cancel(self._timer)
            self._timer = None
        renewal = self._renewal
        self._renewal = None
        if renewal is not None and renewal is not asyncio.current_task():
            renewal.cancel()

    def _ran_out(self) -> None:
        self._timer = None
        self._mark_lost("its ttl ran out without being extended")

    def _start_renewal(self) -> None:
        self._timer = None
        if self._release_future is None and not self.lost.is_set():
            self._renewal = self._resource.host.spawn(self._renew())

    async def _renew(self) -> None:
        resource = self._resource
        failures = 0
        while True:
            sent_at = time.monotonic()
            budget = max(self._valid_until - sent_at, RENEW_FLOOR)
            try:
                held = await resource.host.request(
                    resource.extend(self.token, self._ttl_ms), budget
                )
            except asyncio.CancelledError:
                raise
            except REQUEST_FAILED as exc:
                resource.counters.errors += 1
                left = self._valid_until - time.monotonic()
                if left <= 0:
                    self._mark_lost(
                        f"Redis could not be reached before the lease ran out ({detail(exc)})"
                    )
                    return
                failures += 1
                log.info(
                    "renewing %s failed, retrying for another %.2fs: %s",
                    resource.describe(),
                    left,
                    detail(exc),
                )
                pause = backoff_delay(failures, 0.02, max(0.02, self._ttl_ms / 6000))
                await asyncio.sleep(min(pause, left))
                continue
            if held:
                resource.counters.extended += 1
                self._valid_until = _valid_until(sent_at, self._ttl_ms)
                self._renewal = None
                self._schedule(sent_at)
            else:
                self._mark_lost("it expired or another holder took it")
            return

    def _mark_lost(self, reason: str) -> None:
        if self.lost.is_set():
            return
        resource = self._resource
        self._lost_reason = reason
        self.lost.set()
        resource.counters.lost += 1
        self._stop_timers()
        log.warning(
            "%s lost (fencing token %d): %s", resource.describe(), self.fencing_token, reason
        )
        if self._release_future is not None or self._exiting:
            return
        on_lost = self._on_lost
        if on_lost == "cancel":
            task = self._task
            # The task asking (extend) gets LockLost directly instead.
            if task is not None and not task.done() and task is not asyncio.current_task():
                self._cancel_sent = True
                task.cancel(f"redkit: {resource.describe()} lost: {reason}")
        elif callable(on_lost):
            try:
                on_lost(self)
            except Exception:
                log.exception("on_lost callback for %s failed", resource.describe())


class Permit(Lease):
    """A held semaphore permit: the same guarantees and methods as
    :class:`Lease` (token, fencing token, extend, lost, release)."""

    __slots__ = ()


# -- taking a lease --------------------------------------------------------


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
    except REQUEST_FAILED as exc:
        raise _attempt_failed(resource, token, exc) from exc
    taken, value = _attempt_outcome(resource, token, reply, me, baseline)
    return taken, value, sent_at


def _attempt_failed(resource: Resource, token: str, exc: BaseException) -> Exception:
    """What an attempt whose request failed with ``exc`` (one of
    REQUEST_FAILED) raises."""
    resource.counters.errors += 1
    if isinstance(exc, RedisError) and not isinstance(exc, UNREACHABLE):
        return server_refused(f"cannot acquire {resource.describe()}", exc)
    # The request may have reached Redis: give back whatever it took.
    resource.host.spawn(_discard(resource, token))
    return unavailable(f"cannot acquire {resource.describe()}", exc)


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
        resource.counters.busy += 1
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


# The UUID variant bits (10xx) over the random nibble that holds them.
_UUID_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def uuid4_text() -> str:
    """A random (version 4) UUID as text, the form the Go service's
    ``uuid.New().String()`` stores; a third of ``str(uuid.uuid4())``'s cost."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_UUID_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


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
    resource.counters.acquired += 1
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
        resource.counters.timeouts += 1
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
                    resource.counters.wakeups += 1
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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lease = self._lease
        assert lease is not None
        lease._exiting = True
        if lease.lost.is_set():
            # Nothing to wait for: the lease is gone. A background release
            # still clears it if Redis kept it through an outage.
            lease._release_soon()
            if lease._cancel_sent:
                # Take back our cancellation. If something in the block
                # swallowed it, the block still ends with LockLost.
                me = asyncio.current_task()
                others = withdraw_cancellation(me) if me is not None else 0
                if isinstance(exc, asyncio.CancelledError) and others > 0:
                    return  # cancelled from elsewhere too: let that propagate
                if exc is None or isinstance(exc, asyncio.CancelledError):
                    raise LockLost(
                        f"{lease._resource.describe()} was lost and its block was cancelled: "
                        f"{lease.lost_reason}"
                    ) from exc
            return
        # A failed release is logged; the lease ends with its ttl, and the
        # block's own outcome is what the caller should see. (try/except
        # rather than contextlib.suppress: no object built on the hot path.)
        try:  # noqa: SIM105
            await lease.release()
        except Exception:
            pass
