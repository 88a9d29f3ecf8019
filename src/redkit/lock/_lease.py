"""Leases: a held lock or semaphore permit, how it is renewed, lost and
released."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal

from .._failures import ANY, UNAVAILABLE, describe_error, failure
from .._telemetry import operation
from .._timing import backoff_delay, cancel_count, check_cancelled
from ..errors import LockLost, NotReplicated
from ._common import CLOCK_DRIFT, CLOCK_MARGIN, Seconds, log, to_ttl_ms
from ._deadlines import Entry
from ._host import REQUEST_FLOOR, Resource

OnLost = Literal["signal", "cancel"] | Callable[["Lease"], object]
"""What happens when a lease is lost, besides setting ``lease.lost`` and
logging a warning: ``"signal"`` nothing more, ``"cancel"`` cancel the task
that entered ``async with``, or a callable called with the lease."""

# A renewal is bounded by the lease's remaining validity, but never less.
RENEW_FLOOR = 0.1


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
        while the lease may still be valid; with ``replicas``,
        :class:`~redkit.NotReplicated` when the replicas did not acknowledge
        the extension (the lease keeps its earlier validity).
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
        except NotReplicated:  # before ANY, which holds it
            resource.counts["errors"] += 1
            raise
        except ANY as exc:
            resource.counts["errors"] += 1
            if isinstance(exc, UNAVAILABLE) and time.monotonic() >= self._valid_until:
                reason = "Redis could not be reached before the lease ran out"
                self._mark_lost(reason)
                raise LockLost(f"{resource.describe()} was lost: {reason}") from exc
            raise failure(f"cannot extend {resource.describe()}", exc) from exc
        if held:
            resource.counts["extended"] += 1
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
        except ANY as exc:
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

    async def end_block(self, exc: BaseException | None) -> None:
        """Leave the ``async with acquire()`` block that held this lease and
        ended with ``exc`` (None when it did not raise): what
        :class:`~redkit.lock.Acquisition` does on exit.

        A held lease is released; a failed release is logged and the
        block's own outcome stands (the lease ends with its ttl). A lost
        lease is not waited on: a background release still clears it if
        Redis kept it through an outage, and when ``on_lost="cancel"``
        cancelled the block, that cancellation is taken back and the block
        raises :class:`~redkit.LockLost` instead.
        """
        self._exiting = True
        if self.lost.is_set():
            self._release_soon()
            if self._cancel_sent:
                # If something in the block swallowed our cancellation, the
                # block still ends with LockLost.
                # Looked up rather than version-checked: a task class that
                # counts cancellations on Python 3.10 gets ours back too.
                uncancel = getattr(asyncio.current_task(), "uncancel", None)
                others = uncancel() if uncancel is not None else 0
                if isinstance(exc, asyncio.CancelledError) and others > 0:
                    return  # cancelled from elsewhere too: let that propagate
                if exc is None or isinstance(exc, asyncio.CancelledError):
                    raise LockLost(
                        f"{self._resource.describe()} was lost and its block was cancelled: "
                        f"{self._lost_reason}"
                    ) from exc
            return
        # try/except rather than contextlib.suppress: no object built on the
        # hot path.
        try:  # noqa: SIM105
            await self.release()
        except Exception:
            pass

    # -- internals ---------------------------------------------------------

    async def _send_release(self, *, quiet: bool) -> bool:
        host = self._resource.host
        try:
            reply = await host.request(self._resource.release(self.token), host.request_timeout)
        except ANY as exc:
            raise self._release_failed(exc) from exc
        return self._released(bool(reply), quiet=quiet)

    def _release_failed(self, exc: BaseException) -> Exception:
        """What a release request that failed with ``exc`` (one of
        :data:`~redkit._failures.ANY`) raises; logged here."""
        resource = self._resource
        resource.counts["errors"] += 1
        what = f"cannot release {resource.describe()}"
        if isinstance(exc, UNAVAILABLE):
            log.warning("%s (its ttl ends it on its own): %s", what, describe_error(exc))
        else:
            log.warning("%s: %s", what, exc)
        return failure(what, exc)

    def _released(self, released: bool, *, quiet: bool) -> bool:
        """Count and log the outcome of a release request."""
        resource = self._resource
        if released:
            resource.counts["released"] += 1
            log.debug("released %s (fencing token %d)", resource, self.fencing_token)
        elif quiet:
            log.debug("%s was already released or had expired", resource)
        else:
            resource.counts["release_not_held"] += 1
            if not self.lost.is_set():
                self._lost_reason = "it had expired or another holder took it before release"
                self.lost.set()
                resource.counts["lost"] += 1
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
        unconfirmed = False
        while True:
            sent_at = time.monotonic()
            budget = max(self._valid_until - sent_at, RENEW_FLOOR)
            try:
                held = await resource.host.request(
                    resource.extend(self.token, self._ttl_ms), budget
                )
            except asyncio.CancelledError:
                raise
            except ANY as exc:
                # NotReplicated (a ConnectionUnavailable, so among ANY)
                # counts as not renewed: the lease is trusted only as long
                # as a failover would keep it.
                resource.counts["errors"] += 1
                unconfirmed = unconfirmed or isinstance(exc, NotReplicated)
                left = self._valid_until - time.monotonic()
                if left <= 0:
                    what = (
                        "the replicas did not acknowledge a renewal"
                        if unconfirmed
                        else "Redis could not be reached"
                    )
                    reason = describe_error(exc)
                    self._mark_lost(f"{what} before the lease ran out ({reason})")
                    return
                failures += 1
                log.info(
                    "renewing %s failed, retrying for another %.2fs: %s",
                    resource.describe(),
                    left,
                    describe_error(exc),
                )
                pause = backoff_delay(failures, 0.02, max(0.02, self._ttl_ms / 6000))
                await asyncio.sleep(min(pause, left))
                continue
            if held:
                resource.counts["extended"] += 1
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
        resource.counts["lost"] += 1
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
