"""The invalidation subscription a cache keeps while it has a local tier or
an event-driven Invalidator: one pub/sub link (:mod:`redkit._link`: its
heartbeat, reconnect schedule and connection rules). Whenever the
subscription is not known to be intact, ``on_state(False)`` tells the cache
to stop trusting its local tier."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .._failures import TIMED_OUT
from .._link import Link, Outage, Timing, client_connect_timeout, endpoint
from .._timing import bounded, cancel_and_wait

__all__ = ["Listener"]

log = logging.getLogger("redkit.cache")


class Listener:
    """Subscribes to ``channel`` and hands each message's data to ``handle``.

    ``on_state(True)`` is called once the subscription is confirmed,
    ``on_state(False)`` as soon as it is lost or suspected lost: the
    connection failed, or a quiet connection left a heartbeat PING (sent
    after ``heartbeat`` seconds) unanswered for ``2 * heartbeat`` seconds.
    Reconnects back off from 50 ms to 2 s (see :mod:`redkit._link` for the
    schedule after a loss).

    On a Redis Cluster the subscription is on one primary: classic PUBLISH
    reaches the subscribers of every node.
    """

    def __init__(
        self,
        client: Any,
        channel: str,
        handle: Callable[[bytes], None],
        on_state: Callable[[bool], None],
        *,
        heartbeat: float = 1.0,
    ) -> None:
        self._channel = channel
        self._handle = handle
        self._on_state = on_state
        self._task: asyncio.Task[None] | None = None
        self._live = asyncio.Event()
        self._link = Link(
            endpoint(client),
            self._deliver,
            channels=(channel,),
            timing=Timing(
                ping_interval=heartbeat,
                ping_timeout=2 * heartbeat,
                connect_timeout=min(2 * heartbeat + 1, client_connect_timeout(client)),
                backoff_base=0.05,
                backoff_max=2.0,
            ),
            log=log,
            label=f"cache invalidation channel {channel} (local tier bypassed meanwhile)",
            on_up=self._up,
            on_down=self._down,
        )

    @property
    def reconnects(self) -> int:
        return self._link.counts["reconnects"]

    @property
    def live(self) -> bool:
        return self._live.is_set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(
                self._link.run(), name=f"redkit.cache listener {self._channel}"
            )

    async def wait_live(self, timeout: float) -> bool:
        """True once subscribed; False after ``timeout`` seconds without."""
        self.start()
        try:
            await bounded(self._live.wait(), timeout)
        except TIMED_OUT:
            return False
        return True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task, 10.0)
        self._set_live(False)

    def _set_live(self, live: bool) -> None:
        if live:
            self._live.set()
        else:
            self._live.clear()
        self._on_state(live)

    def _up(self, outage: Outage | None) -> None:
        self._set_live(True)

    def _down(self, reason: str) -> None:
        self._set_live(False)

    def _deliver(self, channel: bytes, data: bytes) -> None:
        try:
            self._handle(data)
        except Exception:
            log.exception("cache invalidation message could not be applied")
            # Whatever it meant to evict may still be there: start over.
            self._set_live(False)
            self._set_live(True)
