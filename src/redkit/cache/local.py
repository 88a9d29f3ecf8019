"""The in-process tier: recently read values kept as their payload bytes,
bounded by entry count and total size, evicted by least-recent use and TTL."""

from __future__ import annotations

import time
from collections import OrderedDict

from .._validate import seconds
from ..errors import ConfigError

__all__ = ["LocalCache"]

_BUCKETS = 256


class LocalCache:
    """Hot values in process memory, in front of Redis.

    ``max_entries`` and ``max_bytes`` bound memory (least recently used
    entries go first); ``ttl`` (seconds) bounds how long an entry is served
    without asking Redis again, and never exceeds the value's own Redis TTL.
    Values larger than ``max_value_bytes`` are not kept locally.

    A ``LocalCache`` belongs to one :class:`~redkit.cache.Cache`; the cache
    keeps it coherent with the other instances through its invalidation
    channel and stops serving from it whenever that channel is down.
    Entries hold the encoded payload, so every hit decodes a fresh object:
    callers can mutate what they get without corrupting the cache.
    """

    __slots__ = (
        "_bytes",
        "_entries",
        "_epochs",
        "_flushes",
        "max_bytes",
        "max_entries",
        "max_value_bytes",
        "ttl",
    )

    def __init__(
        self,
        max_entries: int = 10_000,
        ttl: float = 60.0,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        max_value_bytes: int = 256 * 1024,
    ) -> None:
        for name, value in (
            ("max_entries", max_entries),
            ("max_bytes", max_bytes),
            ("max_value_bytes", max_value_bytes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r:.40}")
        self.ttl = float(seconds(ttl, "local ttl"))
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_value_bytes = max_value_bytes
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        # Fill tokens: a read notes the token before asking Redis and may
        # store its result only if no invalidation touched the key since.
        self._epochs = [0] * _BUCKETS
        self._flushes = 0

    def __repr__(self) -> str:
        return (
            f"LocalCache(max_entries={self.max_entries}, ttl={self.ttl:g}, "
            f"entries={len(self._entries)})"
        )

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Total payload bytes held."""
        return self._bytes

    def lookup(self, key: str) -> bytes | None:
        """The payload stored for ``key`` if it is still fresh."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def fill_token(self, key: str) -> int:
        """Take before reading ``key`` from Redis; pass to :meth:`store`."""
        return self._flushes + self._epochs[hash(key) % _BUCKETS]

    def store(self, key: str, payload: bytes, lifetime: float, token: int) -> bool:
        """Keep ``payload`` for at most ``lifetime`` seconds (capped by
        ``ttl``), unless ``key`` was invalidated since ``token`` was taken."""
        if token != self._flushes + self._epochs[hash(key) % _BUCKETS]:
            return False
        size = len(payload)
        if size > self.max_value_bytes or lifetime <= 0:
            return False
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (payload, time.monotonic() + min(lifetime, self.ttl))
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, (old, _) = self._entries.popitem(last=False)
            self._bytes -= len(old)
        return True

    def evict(self, keys: list[str] | tuple[str, ...]) -> None:
        """Forget ``keys`` and void fill tokens taken for them."""
        epochs = self._epochs
        for key in keys:
            epochs[hash(key) % _BUCKETS] += 1
            if key in self._entries:
                self._drop(key)

    def flush(self) -> None:
        """Forget everything and void every outstanding fill token."""
        self._flushes += 1
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: str) -> None:
        payload, _ = self._entries.pop(key)
        self._bytes -= len(payload)
