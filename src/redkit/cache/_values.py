"""Stored values: what a cache key holds (redkit's header, then the codec's
payload; see ``_envelope``), reading it on the hit path, and writing it with
``set.lua`` (value, tag sets, lease and invalidation message in one step).

The Go layout (``_golayout``) overrides the format methods for plain JSON.
"""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING, Any

from .._failures import ANY
from ..scripts import Script
from . import _envelope
from ._base import NOTHING, redis_answered
from ._generation import GenerationSync

__all__ = ["StoredValues"]

_HEADER_UNPACK = _envelope.HEADER.unpack_from
_HEADER_SIZE = _envelope.HEADER_SIZE
_MAGIC = _envelope.MAGIC
_SET = Script.from_package("redkit.cache", "lua/set.lua")
_TAG_ADD = Script.from_package("redkit.cache", "lua/tag_add.lua")
_RELEASE = Script.from_package("redkit.cache", "lua/release.lua")


class StoredValues(GenerationSync):
    """Reads and writes values in the cache's layout."""

    compress_above: int
    # Whether the layout's values say nothing of their expiry, so that a
    # read that needs it asks for the key's PTTL (``_read_with_ttl``).
    _plain = False

    if TYPE_CHECKING:

        def _message(self, **fields: Any) -> bytes: ...

    # ------------------------------------------------------------ format

    def _parse(self, raw: bytes, full: str, type: Any) -> Any:
        """The value in stored bytes; NOTHING when they are foreign,
        undecodable or from before the last clear(). The hit path's decoder
        of what Redis holds, so it raises nothing for any bytes (except for
        a ``type`` that has no decoding at all: the caller's bug)."""
        try:
            magic, flags, gen, _expiry, _delta = _HEADER_UNPACK(raw)
        except struct.error:
            self._undecodable(full, "too short for a redkit value")
            return NOTHING
        if magic != _MAGIC:
            self._undecodable(full, "not written by redkit's cache")
            return NOTHING
        if gen != self._gen:
            return NOTHING
        payload = b""
        try:
            payload = _envelope.unpack_payload(flags, raw) if flags else raw[_HEADER_SIZE:]
            return self._codec.decode(payload, type)
        except Exception as exc:
            # SerializationError from the codecs redkit ships; anything from
            # a custom codec is bad bytes all the same
            if payload == self._null:
                return None  # a cached None, whatever type the caller wants
            if isinstance(exc.__cause__, NotImplementedError):
                raise  # the requested type has no decoding: the caller's bug, not the data's
            self._undecodable(full, str(exc) or exc.__class__.__name__)
            return NOTHING

    def _payload_of(self, raw: bytes) -> bytes:
        """The codec payload of stored bytes that parsed."""
        _magic, flags, _gen, _expiry, _delta = _HEADER_UNPACK(raw)
        return _envelope.unpack_payload(flags, raw) if flags else raw[_HEADER_SIZE:]

    def _pack(self, payload: bytes, ttl_ms: int, delta_ms: int) -> bytes:
        """The bytes stored for ``payload``: header and payload."""
        assert self._gen is not None
        return _envelope.pack(
            payload, self._gen, int(self._server_ms()) + ttl_ms, delta_ms, self.compress_above
        )

    def _time_left(self, raw: bytes, left_ms: int | None) -> tuple[float, int]:
        """How long (ms) a value that parsed has left, and how long its load
        took (ms), from its header. ``left_ms`` is the key's PTTL for a
        layout that reads it (``_plain``)."""
        _magic, _flags, _gen, expiry, delta = _HEADER_UNPACK(raw)
        return expiry - self._server_ms(), delta

    def _is_current(self, head: bytes) -> bool:
        """Whether the first ``HEADER_SIZE`` bytes of a value are a header
        of the current generation."""
        if len(head) < _HEADER_SIZE:
            return False
        magic, _flags, gen, _expiry, _delta = _HEADER_UNPACK(head)
        return bool(magic == _MAGIC and gen == self._gen)

    async def _read_with_ttl(self, full: str) -> tuple[Any, int]:
        """For a ``_plain`` layout: the stored bytes and the key's PTTL."""
        raise NotImplementedError

    # -------------------------------------------------------------- reads

    def _found(self, raw: bytes | None, full: str, type: Any) -> Any:
        """The value Redis answered (a counted hit), or NOTHING (a counted
        miss: no key, or bytes that are not a current value)."""
        if not self._healthy:
            self._recovered()
        if raw is not None:
            value = self._parse(raw, full, type)
            if value is not NOTHING:
                self._counts["hits"] += 1
                return value
        self._counts["misses"] += 1
        return NOTHING

    def _keep_local(self, full: str, raw: bytes, token: int, left_ms: int | None) -> None:
        """Keep what Redis answered in the local tier, for no longer than
        the key lives (raw parsed just before, so it unpacks)."""
        local = self._local
        assert local is not None
        _magic, flags, _gen, expiry, _delta = _HEADER_UNPACK(raw)
        payload = _envelope.unpack_payload(flags, raw) if flags else raw[_HEADER_SIZE:]
        local.store(full, payload, (expiry - self._server_ms()) / 1000.0, token)

    # ------------------------------------------------------------- writes

    async def _write(
        self,
        full: str,
        key: str,
        payload: bytes,
        ttl_ms: int,
        tag_keys: list[str],
        *,
        delta_ms: int = 0,
        lease_token: str = "",
    ) -> bool:
        local = self._local
        token = 0
        if local is not None:
            local.evict((full,))
            token = local.fill_token(full)
        if not await self._ready():
            return False
        raw = self._pack(payload, ttl_ms, delta_ms)
        message = self._message(keys=[key], prefix=self.prefix)
        lease_key = self._lease_key(full)
        args = (raw, ttl_ms, lease_token, self.channel, message)
        try:
            if not tag_keys:
                await _SET(self._client, (full, lease_key), args)
            elif self._cluster:
                # A tag set lives in its own slot: record membership first,
                # so a visible value is always reachable from its tags.
                await asyncio.gather(
                    *(_TAG_ADD(self._client, (tk,), (full, ttl_ms)) for tk in tag_keys)
                )
                await _SET(self._client, (full, lease_key), args)
            else:
                await _SET(self._client, (full, lease_key, *tag_keys), args)
        except ANY as exc:
            self._failed("write", full, exc)
            if lease_token and redis_answered(exc):
                # Redis answered, refusing the write (out of memory, a
                # replica, a tag set it would not touch): free the lease so
                # other processes load now rather than wait it out.
                await self._release(lease_key, lease_token)
            return False
        self._counts["sets"] += 1
        if local is not None and self._local_live:
            local.store(full, payload, ttl_ms / 1000.0, token)
        return True

    async def _release(self, lease_key: str, token: str) -> None:
        try:
            await _RELEASE(self._client, (lease_key,), (token,))
        except ANY as exc:
            self._failed("release the load lease", lease_key, exc)
