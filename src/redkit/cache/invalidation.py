"""Invalidation strategies after writes to the system of record: delete on
write, rely on TTLs only, or also tell other instances through an event."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from .._counters import counts_for, snapshot
from ..errors import ConfigError
from ..keys import validate_key_part
from . import _messages
from .core import Cache

__all__ = ["InvalidationStrategy", "Invalidator", "InvalidatorStats"]

log = logging.getLogger("redkit.cache")

T = TypeVar("T")

# Events with a bad entity or id are logged at WARNING at most this often:
# anyone may publish them, as often as they like.
_WARN_EVERY = 60.0


class InvalidationStrategy(str, enum.Enum):
    """What an :class:`Invalidator` does after a create, update or delete."""

    ON_WRITE = "on_write"
    """Delete the entity's key and its list keys."""
    TTL_ONLY = "ttl_only"
    """Do nothing: cached values live out their TTL."""
    ON_EVENT = "on_event"
    """As ON_WRITE, and publish a ``cache.invalidate`` event that other
    instances' Invalidators (ON_EVENT, inside ``async with``) apply to their
    own caches."""


@dataclasses.dataclass(frozen=True)
class InvalidatorStats:
    """``invalidations``: after_* calls that deleted something or would
    have; ``events_published`` / ``events_applied``: ON_EVENT traffic;
    ``errors``: events that could not be applied."""

    invalidations: int = 0
    events_published: int = 0
    events_applied: int = 0
    errors: int = 0


class Invalidator:
    """Keeps a :class:`Cache` in step with writes, the Go service's way.

    Keys follow ``{entity}:{id}`` for one entity and ``{entity}:list:...``
    for lists of them. List keys are found through the tag
    ``"{entity}:list"`` (set them with ``tags=["user:list"]``: O(list
    keys)); with ``scan_lists=True`` (default, the Go service's behaviour)
    keys matching ``{entity}:list:*`` are also deleted by a SCAN of the
    keyspace, which costs O(all keys): turn it off once list keys are
    tagged.

    With ``ON_EVENT`` use ``async with inv:`` so events from other
    instances are applied (their entity key deleted and their list tag
    invalidated, never a SCAN) while the block runs.
    """

    def __init__(
        self,
        cache: Cache,
        strategy: InvalidationStrategy | str = InvalidationStrategy.ON_WRITE,
        *,
        scan_lists: bool = True,
    ) -> None:
        if not isinstance(cache, Cache):
            raise ConfigError(f"Invalidator needs a redkit Cache, got {cache!r:.80}")
        try:
            self.strategy = InvalidationStrategy(strategy)
        except ValueError:
            choices = ", ".join(s.value for s in InvalidationStrategy)
            raise ConfigError(
                f"unknown invalidation strategy {strategy!r}; use one of {choices}"
            ) from None
        self.cache = cache
        self.scan_lists = bool(scan_lists)
        self._stop_listening: Callable[[], None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._counts = counts_for(InvalidatorStats)
        self._warned_at = -math.inf

    def __repr__(self) -> str:
        return f"<Invalidator {self.strategy.value} {self.cache!r}>"

    def stats(self) -> InvalidatorStats:
        return snapshot(InvalidatorStats, self._counts)

    # --------------------------------------------------------------- life

    async def start(self, timeout: float = 5.0) -> bool:
        """For ON_EVENT: subscribe and wait up to ``timeout`` seconds for the
        subscription; returns whether it is live. Other strategies: no-op."""
        if self.strategy is not InvalidationStrategy.ON_EVENT:
            return True
        if self._stop_listening is None:
            self._stop_listening = self.cache.on_invalidation(self._on_event)
        return await self.cache.start(timeout)

    async def aclose(self) -> None:
        """Stop applying other instances' events; waits for those in flight."""
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def __aenter__(self) -> Invalidator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -------------------------------------------------------------- hooks

    async def after_create(self, entity: str) -> None:
        """A new ``entity`` exists: its list keys are stale."""
        await self._after("create", entity, None)

    async def after_update(self, entity: str, id: str | int) -> None:
        """``entity`` ``id`` changed: its key and its list keys are stale."""
        await self._after("update", entity, id)

    async def after_delete(self, entity: str, id: str | int) -> None:
        """``entity`` ``id`` is gone: its key and its list keys are stale."""
        await self._after("delete", entity, id)

    async def warm_up(
        self,
        key: str,
        ttl: float | dt.timedelta | None = None,
        *,
        loader: Callable[[], Awaitable[T]],
        tags: Sequence[str] | str | None = None,
    ) -> T:
        """Load ``key`` now and cache it (whatever is cached is replaced);
        returns the loaded value. The loader's exceptions propagate."""
        value = await loader()
        await self.cache.set(key, value, ttl, tags)
        return value

    async def _after(self, action: str, entity: str, id: str | int | None) -> None:
        entity, ident = self._checked(entity, id)
        if self.strategy is InvalidationStrategy.TTL_ONLY:
            return
        await self._invalidate(entity, ident, scan=self.scan_lists)
        self._counts["invalidations"] += 1
        if self.strategy is InvalidationStrategy.ON_EVENT:
            keys = [f"{entity}:{ident}"] if ident is not None else []
            if await self.cache.publish_invalidation(
                keys=keys, entity=entity, id=ident, action=action
            ):
                self._counts["events_published"] += 1

    def _checked(self, entity: object, id: object) -> tuple[str, str | None]:
        """``entity`` and ``id`` as key parts; ConfigError unless both, and
        the keys and tag built from them, are valid cache keys."""
        entity = validate_key_part(entity, "entity")
        ident = None if id is None else validate_key_part(str(id), "id")
        cache = self.cache
        cache.key(f"{entity}:list")
        validate_key_part(f"{entity}:list", "tag", allow_braces="tag")
        if ident is not None:
            cache.key(f"{entity}:{ident}")
        return entity, ident

    async def _invalidate(self, entity: str, ident: str | None, *, scan: bool) -> None:
        cache = self.cache
        if ident is not None:
            await cache.delete(f"{entity}:{ident}")
        await cache.invalidate_tags(f"{entity}:list")
        if scan:
            await cache.delete_pattern(f"{entity}:list:*")

    # ------------------------------------------------------- other instances

    def _on_event(self, inv: _messages.Invalidation) -> None:
        if inv.entity is None:
            return
        try:
            entity, ident = self._checked(inv.entity, inv.id)
        except ValueError:
            self._counts["errors"] += 1
            now = time.monotonic()
            level = logging.DEBUG
            if now - self._warned_at >= _WARN_EVERY:
                self._warned_at = now
                level = logging.WARNING
            log.log(level, "ignoring an invalidation event with a bad entity or id: %.200r", inv)
            return
        task = asyncio.get_running_loop().create_task(self._apply(entity, ident))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _apply(self, entity: str, ident: str | None) -> None:
        try:
            await self._invalidate(entity, ident, scan=False)
            self._counts["events_applied"] += 1
        except Exception:
            self._counts["errors"] += 1
            log.exception("applying an invalidation event for %s %s failed", entity, ident)
