"""Follow a Sentinel master as soon as the sentinels announce it moved.

redis-py's Sentinel pool asks where the master is only when it opens a
connection (or a command meets a ``READONLY`` reply), so after a graceful
``SENTINEL FAILOVER`` its pooled connections keep writing to the deposed
primary, which still accepts writes until the sentinels reconfigure it
(about ten seconds): a lock, a session or a counter written there is lost.
The sentinels announce the promotion on their ``+switch-master`` channel;
listening there lets the pool drop every connection to the old address the
moment one of them says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ._timing import backoff_delay

log = logging.getLogger("redkit.connection")

_RETRY_FIRST = 0.1
_RETRY_MAX = 2.0


class MasterWatch:
    """One task per sentinel, subscribed to ``+switch-master``, calling
    ``moved((host, port))`` when ``service`` moves. Started on first use
    from a running loop; :meth:`stop` ends it."""

    def __init__(
        self,
        sentinels: list[Any],
        service: str,
        moved: Callable[[tuple[str, int]], Awaitable[None]],
    ) -> None:
        self._sentinels = sentinels
        self._service = service
        self._moved = moved
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        if self._tasks and not all(task.done() for task in self._tasks):
            return
        self._tasks = [
            asyncio.get_running_loop().create_task(
                self._follow(sentinel), name="redkit-sentinel-watch"
            )
            for sentinel in self._sentinels
        ]

    async def stop(self) -> None:
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        # redis-py reads a subscription under a timeout, and on Python 3.11
        # a cancellation that lands as that timeout fires comes out as a
        # TimeoutError: cancel again until each task has really ended.
        for task in tasks:
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.5)
        self._stopping = False

    async def _follow(self, sentinel: Any) -> None:
        failures = 0
        while not self._stopping:
            pubsub = sentinel.pubsub()
            try:
                await pubsub.subscribe("+switch-master")
                failures = 0
                while not self._stopping:
                    # A bounded wait: the sentinel connection's socket timeout
                    # would otherwise end an idle subscription now and then.
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    address = None if message is None else self._announced(message.get("data"))
                    if address is not None:
                        await self._moved(address)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A sentinel that is down or restarting: the others still
                # speak, and this one is asked again after a short backoff.
                log.debug("sentinel watch on %s lost its subscription: %s", sentinel, exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff_delay(failures, _RETRY_FIRST, _RETRY_MAX))
            failures += 1

    def _announced(self, data: object) -> tuple[str, int] | None:
        # "<name> <old-ip> <old-port> <new-ip> <new-port>"
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        parts = text.split()
        if len(parts) != 5 or parts[0] != self._service or not parts[4].isascii():
            return None
        if not parts[4].isdigit():
            return None
        return parts[3], int(parts[4])
