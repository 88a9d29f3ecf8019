"""The namespace generation and the Redis clock.

``clear()`` moves the prefix's generation on (one ``INCR``); values written
under an older one read as misses. Every instance learns the generation,
and the offset of its clock from Redis's, from ``sync.lua``: at first use,
every ``sync_interval`` seconds after, and at once from the invalidation
channel when another instance clears.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import TYPE_CHECKING, Any

from .._failures import ANY
from ..errors import SerializationError
from ..scripts import Script
from ._base import RESERVED, CacheBase

__all__ = ["GenerationSync", "sync_reply"]

_SYNC = Script.from_package("redkit.cache", "lua/sync.lua")
# An integer as Redis INCR keeps it: at most 19 digits, a sign, nothing else.
_INTEGER = re.compile(rb"-?[0-9]{1,19}")
# A generation key holding someone else's value fails the read as Redis
# failing does: the cache carries on without Redis until it reads one.
_SYNC_FAILURES: tuple[type[BaseException], ...] = (*ANY, SerializationError)


def sync_reply(reply: Any) -> tuple[int, float]:
    """The generation (as the 32 bits a value header keeps) and the Redis
    clock (ms) in the reply of sync.lua; :class:`SerializationError` when
    the reply is anything else (someone else's value under the key)."""
    try:
        gen, (sec, usec) = reply
        gen_text = gen if isinstance(gen, bytes) else str(gen).encode()
        if not _INTEGER.fullmatch(gen_text):
            raise ValueError(f"{gen!r:.40} is not an integer")
        number = int(gen_text)
        if not -(2**63) <= number < 2**63:
            raise ValueError(f"{gen!r:.40} is out of range")
        seconds, micros = int(sec), int(usec)
        if seconds < 0 or not 0 <= micros < 1_000_000:
            raise ValueError(f"{reply!r:.60} is not a server time")
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(f"the cache generation read returned {exc}") from None
    return number & 0xFFFFFFFF, seconds * 1000.0 + micros / 1000.0


class GenerationSync(CacheBase):
    """Knows the generation values are written under and compared with,
    and Redis's clock (``_server_ms``), which stored expiries are in."""

    sync_interval: float

    if TYPE_CHECKING:

        def _flush_local(self) -> None: ...

    def _init_generation(self) -> None:
        self._gen_key = f"{self._head}{RESERVED}gen"
        # The next sync falls due at _sync_due, which only moves into the
        # future once a generation is known: every call before that asks
        # _sync(), which holds off Redis until _retry_at after a failed
        # first read.
        self._gen: int | None = None
        self._gen_changes = 0
        self._offset_ms = 0.0
        self._sync_due = 0.0
        self._retry_at = 0.0
        self._first_sync: asyncio.Future[bool] | None = None

    def _server_ms(self) -> float:
        return time.time() * 1000.0 + self._offset_ms

    async def _sync(self) -> bool:
        """Re-read the namespace generation and the Redis clock. The first
        sync is shared by every caller; later ones run in whichever caller
        finds them due while the others carry on with the known generation.

        Until a first read succeeds the cache has no generation to compare
        values with or to write them under, so nothing may go to Redis: the
        sync stays due, and a failed read is retried only after a short
        delay, calls meanwhile answering False at once (fail open)."""
        if self._gen is not None:
            self._sync_due = time.monotonic() + self.sync_interval
            return await self._read_generation()
        if time.monotonic() < self._retry_at:
            return False
        first = self._first_sync
        if first is None or first.done():
            first = asyncio.ensure_future(self._read_generation())
            self._first_sync = first
        return await asyncio.shield(first)

    async def _read_generation(self) -> bool:
        seq = self._gen_changes
        started = time.time()
        try:
            gen, server_ms = sync_reply(
                await _SYNC(self._client, [self._gen_key], [random.randrange(1, 1 << 31)])
            )
        except _SYNC_FAILURES as exc:
            self._failed("read the cache generation", self._gen_key, exc)
            retry_at = time.monotonic() + min(self.sync_interval, 0.5)
            if self._gen is None:
                self._retry_at = retry_at
            else:
                self._sync_due = retry_at
            return False
        finished = time.time()
        self._offset_ms = server_ms - (started + finished) * 500.0
        # A clear() announced while this read was in flight is newer than
        # what the read saw: keep it.
        if seq == self._gen_changes and self._set_generation(gen):
            self._flush_local()
        self._sync_due = time.monotonic() + self.sync_interval
        self._recovered()
        return True

    def _set_generation(self, gen: int) -> bool:
        """Adopt ``gen``; True when it replaced a different known generation."""
        gen &= 0xFFFFFFFF
        moved = self._gen is not None and gen != self._gen
        self._gen = gen
        return moved

    def _generation_moved(self, gen: int) -> bool:
        """Adopt ``gen``, which a clear() just made (here or announced by
        another instance): newer than what any read in flight will see.
        True when it replaced a different known generation."""
        self._gen_changes += 1
        return self._set_generation(gen)

    async def _ready(self) -> bool:
        if self._gen is None or self._sync_due <= time.monotonic():
            return await self._synced()
        return True

    async def _synced(self) -> bool:
        """Sync the generation; False when the call should skip Redis: the
        generation is unknown, or the read failed on a single server (the
        next command would only wait for a second timeout). On a cluster the
        generation key's node may be the only one down, so a known
        generation is used as it is."""
        if await self._sync():
            return True
        return self._gen is not None and self._cluster
