"""Early wake-up of waiting tasks when a holder releases.

The release scripts PUBLISH on the lock's channel. A :class:`Waker` keeps one
pub/sub connection for every task of the process that waits through the same
:class:`~redkit.lock.DistributedLock`, subscribed to a channel exactly while
some local task waits on it. Nothing is written to Redis for a waiter, so a
cancelled waiter leaves nothing behind; a missed or late message only costs
the waiter its next backoff delay, because waiting never depends on the
message alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from .._failures import describe_error
from .._timing import bounded
from ..connection import Client
from ._common import log

# After pub/sub fails, waiters use backoff alone for this long before the
# connection is tried again.
FAILURE_PAUSE = 1.0


class Waker:
    """Shared pub/sub subscriptions of the waiting tasks of one lock service."""

    def __init__(self, client: Client, *, idle_close: float = 5.0) -> None:
        self._client = client
        self._idle_close = idle_close
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._io: asyncio.Lock | None = None
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._subscribed: set[str] = set()
        self._confirmed: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._paused_until = 0.0
        self._healthy = True
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
                self._spawn(self._unsubscribe(channel))

    async def aclose(self) -> None:
        """Drop the pub/sub connection and wait for pending unsubscribes."""
        self._closed = True
        self._cancel_idle_timer()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        await self._close_pubsub(self._pubsub, self._reader)
        self._pubsub = None
        self._reader = None
        self._subscribed.clear()

    # -- internals ---------------------------------------------------------

    def _lock(self) -> asyncio.Lock:
        if self._io is None:
            self._io = asyncio.Lock()
        return self._io

    async def _subscribe(self, channel: str, limit: float) -> bool:
        if channel in self._subscribed:
            return False
        if self._closed or time.monotonic() < self._paused_until or limit <= 0:
            return False
        try:
            await bounded(self._send_subscribe(channel), limit)
            confirmed = self._confirmed.get(channel)
            if confirmed is not None:
                await bounded(confirmed.wait(), limit)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)
            return False
        return True

    async def _send_subscribe(self, channel: str) -> None:
        async with self._lock():
            if channel in self._subscribed:
                return
            if self._pubsub is None:
                self._pubsub = self._client.pubsub()
            pubsub = self._pubsub
            self._confirmed[channel] = asyncio.Event()
            self._subscribed.add(channel)
            try:
                await pubsub.subscribe(channel)
            finally:
                # Even if this waiter was cancelled mid-way, whatever reached
                # the server gets read (confirmations, messages).
                if self._reader is None and pubsub is self._pubsub and pubsub.connection:
                    self._reader = asyncio.create_task(self._read(pubsub))

    async def _unsubscribe(self, channel: str) -> None:
        try:
            async with self._lock():
                if channel in self._watchers or channel not in self._subscribed:
                    return
                self._subscribed.discard(channel)
                self._confirmed.pop(channel, None)
                if self._pubsub is not None:
                    await bounded(self._pubsub.unsubscribe(channel), 2.0)
                if not self._subscribed and not self._closed:
                    self._arm_idle_timer()
        except Exception as exc:
            self._fail(exc)

    async def _read(self, pubsub: Any) -> None:
        while True:
            try:
                message = await pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if pubsub is self._pubsub:
                    self._fail(exc)
                return
            if not message:
                continue
            channel = message.get("channel")
            if isinstance(channel, bytes):
                channel = channel.decode()
            kind = message.get("type")
            if kind == "message":
                for event in self._watchers.get(channel, ()):
                    event.set()
            elif kind == "subscribe":
                if not self._healthy:
                    self._healthy = True
                    log.info("release notifications for lock waiters work again")
                confirmed = self._confirmed.get(channel)
                if confirmed is not None:
                    confirmed.set()

    def _fail(self, exc: BaseException) -> None:
        """Pub/sub broke: waiters fall back to backoff, the connection is
        dropped and tried again after a pause."""
        if self._healthy:
            log.warning(
                "lock waiters will poll with backoff only for now: "
                "the release notification subscription failed: %s",
                describe_error(exc),
            )
        else:
            log.debug("release notification subscription failed again: %s", describe_error(exc))
        self._healthy = False
        self._paused_until = time.monotonic() + FAILURE_PAUSE
        pubsub, reader = self._pubsub, self._reader
        self._pubsub = None
        self._reader = None
        self._subscribed.clear()
        for confirmed in self._confirmed.values():
            confirmed.set()
        self._confirmed.clear()
        # A release may have gone unnoticed: let every waiter look now.
        for watchers in self._watchers.values():
            for event in watchers:
                event.set()
        self._spawn(self._close_pubsub(pubsub, reader))

    async def _close_pubsub(self, pubsub: Any, reader: asyncio.Task[None] | None) -> None:
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if pubsub is not None:
            try:
                await bounded(pubsub.aclose(), 2.0)
            except Exception as exc:
                log.debug("closing the release subscription failed: %s", describe_error(exc))

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
        if self._subscribed or self._watchers or self._pubsub is None:
            return
        pubsub, reader = self._pubsub, self._reader
        self._pubsub = None
        self._reader = None
        self._spawn(self._close_pubsub(pubsub, reader))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


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
