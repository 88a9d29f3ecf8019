"""The report job: one rebuild at a time across every instance, under a
distributed lock whose lease is shorter than the job and renewed in the
background, so a crashed instance frees it quickly while a long job keeps it.

While it runs, ``app:report:holder`` says which instance holds the lock and
how often the lease was renewed; it expires with the lease, so a crashed
holder does not linger there either. The finished job's record is kept in
``app:report:last``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from ..errors import LockNotAcquired
from ..events import Publisher
from ..lock import DistributedLock, Lease
from .orders import ACTIVITY_CHANNEL

__all__ = ["ReportBusy", "Reports"]

log = logging.getLogger("redkit.demo")

REPORT_HOLDER = "app:report:holder"
REPORT_LAST = "app:report:last"
REPORT_LOCK = "report:rebuild"
# How often the job looks at its lease; a renewal (every ttl / 3) shows as
# the remaining validity going up between two looks.
_LOOK_EVERY = 0.1


class ReportBusy(Exception):
    """Another rebuild holds the lock; ``holder`` is its status (or None if
    it ended a moment ago)."""

    def __init__(self, holder: dict[str, Any] | None) -> None:
        super().__init__("a report rebuild is already running")
        self.holder = holder


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclasses.dataclass(eq=False)
class Reports:
    client: Any
    locks: DistributedLock
    activity: Publisher
    instance: str
    lease_ttl: float
    spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]

    async def start(self, seconds: float) -> dict[str, Any]:
        """Start a rebuild of ``seconds`` in the background once the lock is
        held; its status. Raises :class:`ReportBusy`."""
        acquired: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.spawn(self._job(seconds, acquired))
        try:
            return await acquired
        except LockNotAcquired:
            raise ReportBusy(await self._holder()) from None

    async def status(self) -> dict[str, Any]:
        running, last = await asyncio.gather(self._holder(), self.client.get(REPORT_LAST))
        return {"running": running, "last": msgspec.json.decode(last) if last else None}

    async def _holder(self) -> dict[str, Any] | None:
        raw = await self.client.get(REPORT_HOLDER)
        return msgspec.json.decode(raw) if raw else None

    async def _job(self, seconds: float, acquired: asyncio.Future[dict[str, Any]]) -> None:
        try:
            async with self.locks.acquire(REPORT_LOCK, ttl=self.lease_ttl, timeout=0) as lease:
                state = {
                    "fencing_token": lease.fencing_token,
                    "instance": self.instance,
                    "seconds": seconds,
                    "lease_ttl": self.lease_ttl,
                    "started_at": _now(),
                    "renewals": 0,
                }
                await self._hold(state)
                acquired.set_result(dict(state))
                await self.activity.publish(ACTIVITY_CHANNEL, "report.started", state)
                await self._work(seconds, lease, state)
                report = {
                    **state,
                    "finished_at": _now(),
                    # Still held after a job longer than the lease: renewal worked.
                    "held_throughout": not lease.lost.is_set(),
                }
                await self.client.set(REPORT_LAST, msgspec.json.encode(report))
                await self.client.delete(REPORT_HOLDER)
                await self.activity.publish(ACTIVITY_CHANNEL, "report.finished", report)
        except Exception as exc:
            if not acquired.done():
                acquired.set_exception(exc)
            else:
                log.warning("report job failed: %s", exc)

    async def _work(self, seconds: float, lease: Lease, state: dict[str, Any]) -> None:
        """The report's work (here: waiting ``seconds``), counting the lease's
        renewals as it goes."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + seconds
        last = lease.remaining
        while (left := ends - loop.time()) > 0 and not lease.lost.is_set():
            await asyncio.sleep(min(_LOOK_EVERY, left))
            remaining = lease.remaining
            if remaining > last:
                state["renewals"] += 1
                await self._hold(state)
            last = remaining

    async def _hold(self, state: dict[str, Any]) -> None:
        ttl_ms = max(1, int(self.lease_ttl * 1000))
        await self.client.set(REPORT_HOLDER, msgspec.json.encode(state), px=ttl_ms)
