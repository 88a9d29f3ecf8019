"""Early wake-up of waiting tasks when a holder releases.

The release scripts PUBLISH on the lock's channel. A :class:`Waker` keeps one
pub/sub link (:mod:`redkit._link`) for every task of the process that waits
through the same :class:`~redkit.lock.DistributedLock`, subscribed to a
channel exactly while some local task waits on it, and closed after
``idle_close`` seconds without any. Nothing is written to Redis for a
waiter, so a cancelled waiter leaves nothing behind; a missed or late
message only costs the waiter its next backoff delay, because waiting never
depends on the message alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from .._failures import TIMED_OUT
from .._link import Link, Outage, Timing, client_connect_timeout, endpoint
from .._timing import TaskSet, bounded, cancel_and_wait
from ..connection import Client
from ._common import log

# After pub/sub fails, waiters use backoff alone while the link tries again
# within this many seconds (full jitter).
FAILURE_PAUSE = 1.0


class Waker:
    """Shared pub/sub subscriptions of the waiting tasks of one lock service."""

    def __init__(self, client: Client, *, idle_close: float = 5.0) -> None:
        self._client = client
        self._idle_close = idle_close
        self._link: Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = TaskSet()
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closed = False

    @contextlib.asynccontextmanager
    async def watch(self, channel: str) -> AsyncIterator[Watch]:
        """Register a waiting task for ``channel``; the :class:`Watch`'s
        event is set whenever the channel receives a release."""
        watch = Watch(self, channel)
        watchers = self._watchers.setdefault(channel, set())
        watchers.add(watch.event)
        self._cancel_idle_timer()
        try:
            yield watch
        finally:
            watchers.discard(watch.event)
            if not watchers and self._watchers.get(channel) is watchers:
                del self._watchers[channel]
                self._confirmed.pop(channel, None)
                link = self._link
                if link is not None:
                    link.remove(channel)
                    if not link.channels and not self._closed:
                        self._arm_idle_timer()

    async def aclose(self) -> None:
        """Drop the pub/sub connection."""
        self._closed = True
        self._cancel_idle_timer()
        await self._stop()
        await self._closing.wait(5.0)

    # -- internals ---------------------------------------------------------

    async def _subscribe(self, channel: str, limit: float) -> bool:
        if self._closed or limit <= 0:
            return False
        link = self._running_link()
        confirmed = self._confirmed.get(channel)
        if confirmed is None:
            confirmed = self._confirmed[channel] = asyncio.Event()
            link.add(channel)
        elif confirmed.is_set():
            return False
        if link.failing:
            return False  # backoff alone until the link is back
        try:
            await bounded(confirmed.wait(), limit)
        except TIMED_OUT:
            return False
        return True

    def _running_link(self) -> Link:
        link = self._link
        if link is None or self._task is None or self._task.done():
            # A new link each time: one that was closed may still be ending.
            link = self._link = Link(
                endpoint(self._client),
                self._deliver,
                channels=self._confirmed,
                timing=Timing(
                    5.0, 3.0, client_connect_timeout(self._client), FAILURE_PAUSE, FAILURE_PAUSE
                ),
                log=log,
                label="lock release notifications (waiters poll with backoff only meanwhile)",
                on_up=self._up,
                on_down=self._down,
                on_confirm=self._confirm,
            )
            self._confirmed.clear()
            self._task = asyncio.get_running_loop().create_task(
                link.run(), name="redkit.lock waker"
            )
        return link

    def _deliver(self, channel: bytes, data: bytes) -> None:
        for event in self._watchers.get(channel.decode("utf-8", "replace"), ()):
            event.set()

    def _confirm(self, channel: str) -> None:
        if channel in self._watchers:
            self._confirmed.setdefault(channel, asyncio.Event()).set()

    def _up(self, outage: Outage | None) -> None:
        if outage is not None:
            # A release may have gone unnoticed: let every waiter look now.
            self._wake_all()

    def _down(self, reason: str) -> None:
        confirmed, self._confirmed = self._confirmed, {}
        for event in confirmed.values():
            event.set()
        self._wake_all()

    def _wake_all(self) -> None:
        for watchers in self._watchers.values():
            for event in watchers:
                event.set()

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task, 5.0)

    def _arm_idle_timer(self) -> None:
        self._cancel_idle_timer()
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(self._idle_close, self._close_if_idle)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _close_if_idle(self) -> None:
        self._idle_timer = None
        if self._watchers or self._task is None or (self._link and self._link.channels):
            return
        task, self._task = self._task, None
        self._closing.spawn(cancel_and_wait(task, 5.0))


class Watch:
    """One waiting task's view of a channel."""

    __slots__ = ("channel", "event", "waker")

    def __init__(self, waker: Waker | None, channel: str) -> None:
        self.waker = waker
        self.channel = channel
        self.event = asyncio.Event()

    async def subscribe(self, limit: float) -> bool:
        """Make sure the channel is subscribed (again, after a failure);
        waits at most ``limit`` seconds. True when a subscription was just
        made, so a release may have been missed: look again now."""
        if self.waker is None:
            return False
        return await self.waker._subscribe(self.channel, limit)
