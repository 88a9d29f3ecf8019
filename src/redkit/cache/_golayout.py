"""``Cache(layout="go")``: the Go service's cache entries, plain JSON under
``{prefix}:{key}`` with a TTL and nothing else.

Without redkit's header there is no namespace generation (so no O(1)
``clear()``), no stored expiry and no stored load time: the expiry comes
from ``PTTL`` in the same script as the read, when early refresh or the
local tier needs it, and early refresh assumes the shortest load time.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConfigError
from ..scripts import Script
from .core import _FAILURES, _MAX_TTL, _MIN_REFRESH_WINDOW_MS, _NO_TAGS, _NOTHING, Cache, _seconds

__all__ = ["GoLayoutCache"]

_READ = Script.from_package("redkit.cache", "lua/read_plain.lua")
_LEASE_PLAIN = Script.from_package("redkit.cache", "lua/lease_plain.lua")


class GoLayoutCache(Cache):
    """What ``Cache(..., layout="go")`` builds; see :class:`Cache`."""

    layout = "go"
    _lease_script = _LEASE_PLAIN

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
            return _NOTHING

    def _pack(self, payload: bytes, ttl_ms: int, delta_ms: int) -> bytes:
        # Never compressed: the Go service reads the JSON as it is.
        return payload

    def _payload_of(self, raw: bytes) -> bytes:
        return raw

    def _keep_plain(self, full: str, raw: bytes, left_ms: int, token: int) -> None:
        local = self._local
        assert local is not None
        # -1: the Go service wrote it without a TTL; the local tier's own
        # ttl still bounds the entry.
        local.store(full, raw, left_ms / 1000.0 if left_ms >= 0 else math.inf, token)

    # ----------------------------------------------------------------- reads

    async def _read(self, full: str, with_ttl: bool) -> tuple[bytes | None, int]:
        """The stored bytes, and with ``with_ttl`` the key's PTTL in the same
        round trip (one script; -1 otherwise, and for a key without one)."""
        if not with_ttl:
            return await self._client.get(full), -1
        reply = await _READ(self._client, (full,))
        if reply is None or reply[0] is None:
            return None, -1
        return reply[0], int(reply[1])

    def _local_first(self, full: str, type: Any) -> tuple[Any, int, bool]:
        """A live local tier's value (else ``_NOTHING``), the fill token for
        what Redis answers, and whether the tier will keep that answer (then
        the read asks for the key's PTTL too)."""
        local = self._local
        if local is None:
            return _NOTHING, 0, False
        keep = False
        if self._local_live:
            value = self._from_local(full, type)
            if value is not _NOTHING:
                return value, 0, False
            keep = True
        elif not self._closed:
            self._ensure_listener()
        return _NOTHING, local.fill_token(full), keep

    async def get(self, key: str, type: Any = None, default: Any = None) -> Any:
        """As :meth:`Cache.get`; one ``GET``, or one script (``GET`` and
        ``PTTL``) when the local tier will keep what it reads."""
        full = self._full_key(key)
        value, token, keep = self._local_first(full, type)
        if value is not _NOTHING:
            return value
        try:
            raw, left_ms = await self._read(full, keep)
        except _FAILURES as exc:
            self._failed("read", full, exc)
            return default
        if not self._healthy:
            self._recovered()
        if raw is None:
            self._n_misses += 1
            return default
        value = self._parse(raw, full, type)
        if value is _NOTHING:
            self._n_misses += 1
            return default
        self._n_hits += 1
        if keep and self._local_live:
            self._keep_plain(full, raw, left_ms, token)
        return value

    async def exists(self, key: str) -> bool:
        """Whether ``key`` holds a value (one ``EXISTS``, as the Go service
        asks). False when Redis cannot be reached."""
        full = self._full_key(key)
        try:
            return bool(await self._client.exists(full))
        except _FAILURES as exc:
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

    async def get_or_set(
        self,
        key: str,
        loader: Callable[[], Any],
        ttl: float | dt.timedelta | None = None,
        tags: Sequence[str] | str | None = None,
        type: Any = None,
        *,
        cache_none: bool | None = None,
    ) -> Any:
        """As :meth:`Cache.get_or_set`; a hit is one script (``GET`` and
        ``PTTL``), or one ``GET`` with ``early_refresh=0`` and no local
        tier. Early refresh counts the load as taking 100 ms (the stored
        value says nothing about it)."""
        full = self._full_key(key)
        if ttl is None:
            if self.default_ttl is None:
                raise ConfigError("no ttl given and the cache has no default_ttl")
        elif isinstance(ttl, bool) or not (isinstance(ttl, (int, float)) and 0 < ttl <= _MAX_TTL):
            _seconds(ttl, "ttl")  # raises for a bad ttl, on hits too
        tag_keys = self._tag_keys(tags) if tags else _NO_TAGS
        value, token, keep = self._local_first(full, type)
        if value is not _NOTHING:
            return value
        if cache_none is None:
            cache_none = self.cache_none
        beta = self.early_refresh
        left_ms = -1
        redis_up = True
        try:
            raw, left_ms = await self._read(full, bool(beta or keep))
        except _FAILURES as exc:
            self._failed("read", full, exc)
            redis_up = False
        else:
            if not self._healthy:
                self._recovered()
            if raw is not None:
                value = self._parse(raw, full, type)
                if value is not _NOTHING:
                    self._n_hits += 1
                    if keep and self._local_live:
                        self._keep_plain(full, raw, left_ms, token)
                    if beta and left_ms > 0:
                        window = _MIN_REFRESH_WINDOW_MS * beta
                        if left_ms <= window * 20:
                            expiry = int(self._server_ms()) + left_ms
                            self._maybe_refresh(
                                full, key, expiry, window, loader, ttl, tag_keys, cache_none
                            )
                    return value
            self._n_misses += 1
        return await self._fill(
            full, key, loader, self._ttl_ms(ttl), tag_keys, type, cache_none, redis_up
        )
