"""``Cache(layout="go")``: the Go service's cache entries, plain JSON under
``{prefix}:{key}`` with a TTL and nothing else.

Without redkit's header there is no namespace generation (so no O(1)
``clear()``), no stored expiry and no stored load time: the expiry comes
from ``PTTL`` in the same script as the read, when early refresh or the
local tier needs it, and early refresh assumes the shortest load time.
"""

from __future__ import annotations

import math
from typing import Any

from .._failures import ANY
from ..errors import ConfigError
from ..scripts import Script
from ._base import NOTHING
from .core import Cache

__all__ = ["GoLayoutCache"]

_READ = Script.from_package("redkit.cache", "lua/read_plain.lua")


class GoLayoutCache(Cache):
    """What ``Cache(..., layout="go")`` builds; see :class:`Cache`."""

    layout = "go"
    _plain = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # No generation to learn, and so nothing to sync: every call goes
        # straight to Redis (the base class reads the generation first).
        self._gen = 0
        self._sync_due = math.inf

    # ----------------------------------------------------------- stored bytes

    def _parse(self, raw: bytes, full: str, type: Any) -> Any:
        try:
            return self._codec.decode(raw, type)
        except Exception as exc:
            if raw == self._null:
                return None  # a cached None (Go's nil), whatever type the caller wants
            if isinstance(exc.__cause__, NotImplementedError):
                raise  # the requested type has no decoding: the caller's bug
            self._undecodable(full, str(exc) or exc.__class__.__name__)
            return NOTHING

    def _pack(self, payload: bytes, ttl_ms: int, delta_ms: int) -> bytes:
        # Never compressed: the Go service reads the JSON as it is.
        return payload

    def _payload_of(self, raw: bytes) -> bytes:
        return raw

    def _time_left(self, raw: bytes, left_ms: int | None) -> tuple[float, int]:
        # -1: the Go service wrote it without a TTL, so it never expires.
        if left_ms is None or left_ms <= 0:
            return math.inf, 0
        return left_ms, 0

    def _keep_local(self, full: str, raw: bytes, token: int, left_ms: int | None) -> None:
        local = self._local
        assert local is not None
        if left_ms is None:
            return  # read without its PTTL: the tier went live meanwhile
        # -1: the Go service wrote it without a TTL; the local tier's own
        # ttl still bounds the entry.
        local.store(full, raw, left_ms / 1000.0 if left_ms >= 0 else math.inf, token)

    async def _read_with_ttl(self, full: str) -> tuple[Any, int]:
        """The stored bytes and the key's PTTL, in one script."""
        reply = await _READ(self._client, (full,))
        if reply is None or reply[0] is None:
            return None, -1
        return reply[0], int(reply[1])

    # ----------------------------------------------------------------- calls

    async def exists(self, key: str) -> bool:
        """Whether ``key`` holds a value (one ``EXISTS``, as the Go service
        asks). False when Redis cannot be reached."""
        full = self._full_key(key)
        try:
            return bool(await self._client.exists(full))
        except ANY as exc:
            self._failed("check", full, exc)
            return False

    async def clear(self) -> bool:
        """Refused: raises :class:`~redkit.ConfigError`. Plain values carry
        no generation, and deleting everything under the prefix would take
        the Go service's other keys there with it."""
        raise ConfigError(
            f"clear() is not available with layout='go': plain values carry no generation "
            f"to invalidate them by, and deleting every {self.prefix}:* key would delete the "
            f"Go service's other keys too. Use invalidate_tags() for what this cache tags, or "
            f"delete_pattern() for the keys you own (a keyspace scan)"
        )


Cache._layouts["go"] = GoLayoutCache
