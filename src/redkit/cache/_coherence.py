"""Local-tier coherence: the in-process tier serves reads only while the
invalidation channel is subscribed, every write and delete is announced on
that channel, and what other instances announce evicts, flushes or moves
the generation on here.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._failures import ANY
from ..errors import SerializationError
from . import _messages
from ._base import NOTHING, WARN_EVERY, log
from ._generation import GenerationSync
from ._listener import Listener

if TYPE_CHECKING:
    from .local import LocalCache

__all__ = ["LocalCoherence"]


class LocalCoherence(GenerationSync):
    """The local tier's side of a cache, and its invalidation channel."""

    publish: bool
    source: str
    heartbeat: float

    def _init_coherence(self) -> None:
        self._origin = os.urandom(8).hex()
        self._local_live = False
        self._listener: Listener | None = None
        self._handlers: list[Callable[[_messages.Invalidation], None]] = []
        self._malformed_warned_at = -math.inf

    # --------------------------------------------------------- local tier

    def _local_first(self, local: LocalCache, full: str, type: Any) -> tuple[Any, int]:
        """The value the local tier (``local``, the cache's) holds for
        ``full`` while the tier may serve reads (else NOTHING, and the
        channel is started if it should be), and the fill token for what
        Redis will answer on a miss: that may go to the tier only if nothing
        invalidated the key meanwhile."""
        if not self._local_live:
            if not self._closed:
                self._ensure_listener()
            return NOTHING, local.fill_token(full)
        payload = local.lookup(full)
        if payload is not None:
            try:
                value = self._codec.decode(payload, type)
            except SerializationError as exc:
                if payload != self._null:
                    if isinstance(exc.__cause__, NotImplementedError):
                        raise
                    # Stored by a call that decoded it as another type; Redis decides.
                    return NOTHING, local.fill_token(full)
                value = None
            self._counts["local_hits"] += 1
            return value, 0
        return NOTHING, local.fill_token(full)

    def _flush_local(self) -> None:
        if self._local is not None:
            self._local.flush()
            self._counts["local_flushes"] += 1

    # ------------------------------------------------------------ channel

    def _ensure_listener(self) -> Listener:
        listener = self._listener
        if listener is None:
            listener = self._listener = Listener(
                self._client,
                self.channel,
                self._on_message,
                self._on_channel_state,
                heartbeat=self.heartbeat,
            )
        if not listener.running:
            listener.start()
        return listener

    async def _stop_listener(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None

    def on_invalidation(
        self, handler: Callable[[_messages.Invalidation], None]
    ) -> Callable[[], None]:
        """Also hand ``handler`` every invalidation other instances publish
        on the channel (what an ``ON_EVENT`` :class:`Invalidator` applies),
        subscribing now if the cache is not yet; returns the function that
        stops it."""
        self._handlers.append(handler)
        self._ensure_listener()

        def remove() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)

        return remove

    async def publish_invalidation(
        self, *, keys: list[str], entity: str, id: str | None, action: str
    ) -> bool:
        """Publish an :class:`Invalidator` event for this cache's channel,
        whatever ``publish`` says; False (logged, counted) when Redis fails."""
        message = _messages.encode(
            _messages.Invalidation(
                keys=keys, entity=entity, id=id, action=action, origin=self._origin
            ),
            self.source,
        )
        try:
            await self._client.publish(self.channel, message)
        except ANY as exc:
            self._failed("publish an invalidation event", self.channel, exc)
            return False
        return True

    def _message(self, **fields: Any) -> bytes:
        if not self.publish:
            return b""
        return _messages.encode(_messages.Invalidation(origin=self._origin, **fields), self.source)

    async def _announce(self, **fields: Any) -> None:
        message = self._message(**fields)
        if not message:
            return
        try:
            await self._client.publish(self.channel, message)
        except ANY as exc:
            self._failed("publish an invalidation", self.channel, exc)

    def _on_channel_state(self, live: bool) -> None:
        if self._local is not None:
            self._flush_local()
        self._local_live = live and self._local is not None

    def _on_message(self, data: bytes) -> None:
        """Apply one message of the invalidation channel. Anyone may publish
        there: a message that is not an invalidation redkit can read is
        counted and skipped, and no content can make this raise."""
        try:
            event = _messages.decode(data)
        except SerializationError as exc:
            self._malformed(data, str(exc))
            return
        if event.type != _messages.EVENT_TYPE:
            return
        payload = event.payload
        inv = _messages.as_invalidation(payload)
        if inv is None:
            # A bare cache.invalidate (the Go service sends payload null), or
            # one whose payload makes no sense: nothing says what changed,
            # so nothing local is trusted.
            if payload is not None:
                self._malformed(data, "its payload is not an invalidation")
            self._flush_local()
            return
        if inv.origin == self._origin:
            return
        if inv.prefix in (None, self.prefix):
            gen = inv.generation if inv.prefix == self.prefix else None
            if gen is not None and self._generation_moved(gen):
                self._flush_local()
            if inv.keys and self._local is not None:
                fulls = []
                for rel in inv.keys:
                    try:
                        fulls.append(self._full_key(rel))
                    except ValueError:
                        continue
                self._local.evict(fulls)
        for handler in list(self._handlers):
            try:
                handler(inv)
            except Exception:
                log.exception("cache event handler failed")

    def _malformed(self, data: bytes, why: str) -> None:
        self._counts["malformed_messages"] += 1
        now = time.monotonic()
        if now - self._malformed_warned_at >= WARN_EVERY:
            self._malformed_warned_at = now
            level = logging.WARNING
        else:
            level = logging.DEBUG
        log.log(
            level,
            "ignoring a malformed message on %s (%s): %r; %d so far, one warning a minute",
            self.channel,
            why,
            data[:120],
            self._counts["malformed_messages"],
        )
