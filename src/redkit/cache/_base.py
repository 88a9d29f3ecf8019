"""What every part of a :class:`~redkit.cache.Cache` stands on: the state
the parts share, key naming, and how the cache fails open (a Redis failure
is counted, logged and carried on without).

``Cache`` is this base and one class per concern (generation, stored
values, local-tier coherence, loading, bulk invalidation), each in its own
module; the attributes below are set by ``Cache.__init__`` and read by all
of them, on ``self``, so that no hot path pays for an extra hop.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Any

from .. import _validate
from .._failures import ANY, NETWORK, describe_error
from ..errors import ConfigError
from ..keys import validate_key_part

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterable

    from ..codec import Codec
    from ..keys import KeySpace
    from .local import LocalCache

__all__ = [
    "MEMO_LIMIT",
    "NOTHING",
    "RESERVED",
    "WARN_EVERY",
    "CacheBase",
    "log",
    "memo_put",
    "redis_answered",
]

log = logging.getLogger("redkit.cache")

NOTHING: Any = object()
"""The cache's private marker for "no usable value"."""
RESERVED = "_cache:"
"""Keys under ``{prefix}:_cache:`` are redkit's bookkeeping, never cache keys."""
# How often a refused command or a malformed invalidation message is logged
# at WARNING (the rest go to DEBUG): a server out of memory refuses every
# write, and anyone may publish on the channel, as often as they like.
WARN_EVERY = 60.0
MEMO_LIMIT = 4096


def memo_put(memo: dict[str, str], key: str, value: str) -> None:
    """``memo[key] = value`` in a memo bounded by emptying it when full:
    names come from callers and from Redis, so no memo may grow without end."""
    if len(memo) >= MEMO_LIMIT:
        memo.clear()
    memo[key] = value


def redis_answered(exc: BaseException) -> bool:
    """Whether a failure is Redis's answer (it refused the command, or
    replied with an error) rather than no answer at all."""
    return isinstance(exc, ANY) and not isinstance(exc, NETWORK)


def _hash_tag(key: str) -> str | None:
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


class CacheBase:
    """The state and helpers every part of a cache uses."""

    prefix: str
    default_ttl: float | None
    jitter: float
    channel: str
    _client: Any
    _cluster: bool
    _keyspace: KeySpace
    _head: str
    _codec: Codec
    _null: bytes
    _local: LocalCache | None
    _local_live: bool
    _counts: dict[str, int]
    _closed: bool
    _healthy: bool
    _keys: dict[str, str]
    _tags_memo: dict[str, str]
    _warned_keys: set[str]
    _refused_warned_at: float

    # ------------------------------------------------------------------ keys

    def _full_key(self, key: str) -> str:
        try:
            full = self._keys.get(key)
        except TypeError:  # unhashable: not a str, which the check below says
            full = None
        if full is not None:
            return full
        validate_key_part(key, "cache key", allow_braces="tag")
        if key.startswith(RESERVED):
            raise ConfigError(
                f"cache key {key!r} is reserved: keys may not start with {RESERVED!r}"
            )
        # The prefix has no braces, so the key's tag is the full key's.
        full = self._head + key
        memo_put(self._keys, key, full)
        return full

    def _tag_keys(self, tags: Iterable[str] | str | None) -> list[str]:
        if not tags:
            return []
        if isinstance(tags, str):
            tags = [tags]
        memo = self._tags_memo
        keys = []
        try:
            for tag in tags:
                tag_key = memo.get(tag) if isinstance(tag, str) else None
                if tag_key is None:
                    validate_key_part(tag, "tag", allow_braces="tag")
                    tag_key = f"{self._head}{RESERVED}tag:{tag}"
                    memo_put(memo, tag, tag_key)
                if tag_key not in keys:
                    keys.append(tag_key)
        except TypeError:
            raise ConfigError(
                f"tags must be a string or an iterable of strings, got {tags!r:.80}"
            ) from None
        return keys

    def _lease_key(self, full: str) -> str:
        # Same hash slot as the value key, so lease.lua and set.lua may
        # touch both on a cluster.
        lease = f"{self._head}{RESERVED}lease:"
        if _hash_tag(full) is not None:
            return lease + full
        return lease + "{" + full + "}"

    def _ttl_ms(self, ttl: float | dt.timedelta | None) -> int:
        if ttl is None:
            if self.default_ttl is None:
                raise ConfigError("no ttl given and the cache has no default_ttl")
            value = self.default_ttl
        else:
            value = _validate.seconds(ttl, "ttl")
        if self.jitter:
            value *= 1.0 - random.random() * self.jitter
        return max(1, int(value * 1000))

    # --------------------------------------------------------------- failure

    def _failed(self, what: str, key: str, exc: BaseException) -> None:
        self._counts["errors"] += 1
        if redis_answered(exc):
            # Redis answered and refused this command (out of memory, a
            # replica, a key of another type): it is not down, and reads
            # that go on working must not make every refusal a new warning.
            now = time.monotonic()
            level = logging.DEBUG
            if now - self._refused_warned_at >= WARN_EVERY:
                self._refused_warned_at = now
                level = logging.WARNING
            log.log(
                level,
                "Redis refused the cache's attempt to %s (%s): %s; carrying on without it "
                "(warned once a minute)",
                what,
                key,
                describe_error(exc),
            )
            return
        if self._healthy:
            self._healthy = False
            log.warning(
                "cache could not %s (%s): %s; serving without Redis until it answers",
                what,
                key,
                describe_error(exc),
            )
        else:
            log.debug("cache could not %s (%s): %s", what, key, describe_error(exc))

    def _recovered(self) -> None:
        if not self._healthy:
            self._healthy = True
            log.info("cache reaches Redis again")

    def _undecodable(self, key: str, why: str) -> None:
        self._counts["decode_errors"] += 1
        # One warning per key (a foreign key read on every request would
        # flood the log); repeats go to debug.
        warned = self._warned_keys
        if key in warned:
            log.debug("cache key %s still holds a value redkit cannot read (%s)", key, why)
            return
        if len(warned) >= MEMO_LIMIT:
            warned.clear()
        warned.add(key)
        log.warning(
            "cache key %s holds a value redkit cannot read (%s); treated as a miss", key, why
        )
