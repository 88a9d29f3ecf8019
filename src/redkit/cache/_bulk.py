"""Deleting many keys: by tag (O(keys with the tag)) and by pattern (a
keyspace scan), each deletion announced for the local tiers."""

from __future__ import annotations

from collections.abc import Iterable

from .._failures import ANY
from ..errors import ConfigError
from ._base import RESERVED, log
from ._coherence import LocalCoherence

__all__ = ["BulkInvalidation"]

_MAX_BATCH = 100_000
_TAG_BATCH = 500


class BulkInvalidation(LocalCoherence):
    """``invalidate_tags`` and ``delete_pattern``."""

    async def invalidate_tags(self, *tags: str) -> int:
        """Delete every key set with any of ``tags``; returns how many keys
        were deleted. Costs O(keys with the tag): the tag's member set is
        popped in batches and its keys deleted slot by slot on a cluster.
        A Redis failure is logged and counted; members not yet deleted stay
        in the tag set for the next call."""
        total = 0
        for tag_key in self._tag_keys(tags):
            while True:
                try:
                    batch = await self._client.zpopmin(tag_key, _TAG_BATCH)
                except ANY as exc:
                    self._failed("read tag", tag_key, exc)
                    return total
                if not batch:
                    break
                # Members come from Redis: only keys this cache could have
                # written are deleted, whatever else was put in the set.
                members = self._own_keys(m for m, _ in batch)
                if not members:
                    continue
                if self._local is not None:
                    self._local.evict(members)
                try:
                    total += int(await self._client.delete(*members))
                except ANY as exc:
                    self._failed("delete tagged keys", tag_key, exc)
                    try:
                        await self._client.zadd(tag_key, dict(batch))
                    except ANY:
                        log.error("cache lost tag members of %s that were not deleted", tag_key)
                    return total
                await self._announce_deleted(members)
        self._counts["invalidations"] += 1
        return total

    def _own_keys(self, names: Iterable[bytes | str]) -> list[str]:
        """The names that are cache keys under this prefix (UTF-8, not
        redkit's own bookkeeping)."""
        head, reserved = self._head, self._head + RESERVED
        keys = []
        for name in names:
            if isinstance(name, bytes):
                try:
                    name = name.decode()
                except UnicodeDecodeError:
                    continue
            if name.startswith(head) and not name.startswith(reserved):
                keys.append(name)
        return keys

    async def _announce_deleted(self, fulls: list[str]) -> None:
        await self._announce(keys=[k[len(self._head) :] for k in fulls], prefix=self.prefix)

    async def delete_pattern(self, pattern: str, *, batch: int = 500) -> int:
        """Delete every key under the prefix matching the glob ``pattern``
        (``"user:list:*"``); returns how many were deleted.

        This walks the keyspace with SCAN (every primary of a cluster): its
        cost grows with the whole database, not with the matches. Prefer
        tags for anything on a request path. redkit's own bookkeeping keys
        are never matched.
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or not 0 < batch <= _MAX_BATCH:
            raise ConfigError(f"batch must be an int from 1 to {_MAX_BATCH}, got {batch!r:.40}")
        match = self._keyspace.pattern(pattern)
        reserved = (self._head + RESERVED).encode()
        total = 0
        pending: list[bytes] = []
        try:
            async for found in self._client.scan_iter(match=match, count=batch):
                name = found if isinstance(found, bytes) else str(found).encode()
                if name.startswith(reserved):
                    continue
                pending.append(name)
                if len(pending) >= batch:
                    total += await self._delete_found(pending)
                    pending = []
            if pending:
                total += await self._delete_found(pending)
        except ANY as exc:
            self._failed("delete by pattern", match, exc)
        return total

    async def _delete_found(self, names: list[bytes]) -> int:
        # A matching name that is not UTF-8 is deleted too, but it cannot be
        # a key of any cache, so no local tier holds it and nobody is told.
        keys = self._own_keys(names)
        if self._local is not None:
            self._local.evict(keys)
        removed = int(await self._client.delete(*names))
        self._counts["deletes"] += removed
        if keys:
            await self._announce_deleted(keys)
        return removed
