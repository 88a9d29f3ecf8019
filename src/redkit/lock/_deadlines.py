"""Deadlines of the leases of one lock service, on one event-loop timer.

Every lease has a deadline (its next renewal, or the end of its validity)
and most leases are released long before it. An event-loop timer per lease
costs a ``TimerHandle`` and, while it sits cancelled in the loop's heap,
Python-level comparisons on every timer the loop (and redis-py) schedules.
Here a deadline is a small list in a heap ordered by C comparisons of
``(when, sequence)``, and one loop timer stands for the earliest of them.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable
from typing import Any

from ._common import log

# A cancelled deadline stays in the heap until it comes first or the heap is
# rebuilt; it is rebuilt once more than half of at least this many are dead.
_REBUILD_AFTER = 64

Entry = list[Any]
"""``[when, sequence, callback or None once cancelled or called]``."""


class Deadlines:
    """Callbacks due at ``time.monotonic()`` instants."""

    __slots__ = ("_armed_at", "_dead", "_handle", "_heap", "_loop", "_sequence")

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._sequence = itertools.count()
        self._dead = 0
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        """Deadlines pending (not yet due, not cancelled)."""
        return len(self._heap) - self._dead

    def add(self, when: float, callback: Callable[[], object]) -> Entry:
        """Call ``callback`` at ``when`` (monotonic seconds); the returned
        entry is what :meth:`cancel` takes."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A service used from a new loop: what the old loop had pending
            # belongs to leases of a loop that no longer runs them.
            self._reset(loop)
        entry = [when, next(self._sequence), callback]
        heapq.heappush(self._heap, entry)
        if when < self._armed_at:
            self._arm(loop, when)
        return entry

    def cancel(self, entry: Entry) -> None:
        """Forget ``entry`` (no-op when it was called or cancelled already)."""
        if entry[2] is None:
            return
        entry[2] = None
        self._dead += 1
        if self._dead > _REBUILD_AFTER and self._dead * 2 > len(self._heap):
            self._heap = [e for e in self._heap if e[2] is not None]
            heapq.heapify(self._heap)
            self._dead = 0

    # -- internals ---------------------------------------------------------

    def _reset(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._heap = []
        self._dead = 0
        self._handle = None
        self._armed_at = math.inf
        self._loop = loop

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        # The loop's clock is time.monotonic() on every stock loop;
        # converting keeps this right for a loop with another clock.
        self._handle = loop.call_at(loop.time() + (when - time.monotonic()), self._fire)
        self._armed_at = when

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        now = time.monotonic()
        # self._heap is looked up each time: a callback may cancel other
        # deadlines, which can rebuild the heap.
        while self._heap and (self._heap[0][2] is None or self._heap[0][0] <= now):
            entry = heapq.heappop(self._heap)
            callback = entry[2]
            if callback is None:
                self._dead -= 1
                continue
            entry[2] = None
            try:
                callback()
            except Exception:
                log.exception("a lease deadline callback failed")
        if self._heap and self._loop is not None:
            # A loop may run a timer a hair early; the entry then stays and
            # the timer is simply set again.
            self._arm(self._loop, self._heap[0][0])
