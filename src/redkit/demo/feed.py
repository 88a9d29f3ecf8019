"""In-process fan-out of live events to server-sent-event clients.

Each client gets a bounded queue; a client too slow to keep up loses its
oldest events rather than growing memory without limit.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["EventFeed"]

_CLOSED = ("", "")


class EventFeed:
    def __init__(self, per_client: int = 100) -> None:
        self.per_client = per_client
        self._queues: set[asyncio.Queue[tuple[str, str]]] = set()

    def subscribe(self) -> asyncio.Queue[tuple[str, str]]:
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(self.per_client)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[tuple[str, str]]) -> None:
        self._queues.discard(queue)

    @property
    def clients(self) -> int:
        return len(self._queues)

    def publish(self, event: str, data: str) -> None:
        for queue in self._queues:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait((event, data))

    def close(self) -> None:
        """End every client's stream (at shutdown)."""
        for queue in self._queues:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(_CLOSED)
