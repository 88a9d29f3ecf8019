"""Cache: cache-aside over Redis with single-flight loads, tag invalidation,
an O(1) clear and an optional coherent in-process tier."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import inspect
import logging
import math
import os
import random
import re
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, ParamSpec, TypeVar, overload

from redis.exceptions import RedisClusterException, RedisError, ResponseError

from .. import _validate
from .._failures import describe_error, is_cluster
from .._telemetry import operation
from ..codec import Codec, get_codec
from ..errors import ConfigError, SerializationError
from ..keys import KeySpace, validate_key_part
from ..scripts import Script
from . import _envelope, _messages
from ._listener import Listener
from .local import LocalCache

if TYPE_CHECKING:
    from .decorator import CachedFunction

__all__ = ["MISSING", "Cache", "CacheStats"]

log = logging.getLogger("redkit.cache")

T = TypeVar("T")
D = TypeVar("D")
P = ParamSpec("P")

_FAILURES = (RedisError, RedisClusterException, OSError)
_RESERVED = "_cache:"
_HEADER_UNPACK = _envelope.HEADER.unpack_from
_HEADER_SIZE = _envelope.HEADER_SIZE
_GEN_BYTES = struct.Struct("<I")
_MAGIC = _envelope.MAGIC
_KEY_MEMO_LIMIT = 4096
_MIN_REFRESH_WINDOW_MS = 100
_NO_TAGS: list[str] = []  # shared, never mutated
_POLL_FIRST = 0.005
_POLL_MAX = 0.1
_MAX_TTL = _validate.MAX_SECONDS
# Past this early_refresh every hit close to expiry refreshes anyway.
_MAX_BETA = 1e6
_MAX_BATCH = 100_000
# How often a refused command or a malformed invalidation message is logged
# at WARNING (the rest go to DEBUG): a server out of memory refuses every
# write, and anyone may publish on the channel, as often as they like.
_WARN_EVERY = 60.0
# An integer as Redis INCR keeps it: at most 19 digits, a sign, nothing else.
_INTEGER = re.compile(rb"-?[0-9]{1,19}")

_SET = Script.from_package("redkit.cache", "lua/set.lua")
_TAG_ADD = Script.from_package("redkit.cache", "lua/tag_add.lua")
_LEASE = Script.from_package("redkit.cache", "lua/lease.lua")
_RELEASE = Script.from_package("redkit.cache", "lua/release.lua")
_SYNC = Script.from_package("redkit.cache", "lua/sync.lua")
_LAYOUTS = ("redkit", "go")


class _Missing:
    """The type of :data:`MISSING`."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""Pass as ``default=`` to :meth:`Cache.get` to tell a miss (``MISSING``
comes back) from a cached ``None`` (``None`` comes back)."""

# A private marker for "no usable value" inside this module.
_NOTHING: Any = object()


@dataclasses.dataclass(frozen=True)
class CacheStats:
    """Counters of one :class:`Cache` since it was made.

    ``hits``/``misses`` count Redis-tier reads (a read served by the local
    tier counts in ``local_hits`` only); ``errors`` counts Redis failures
    the cache absorbed (fail open); ``decode_errors`` stored bytes that did
    not decode (read as misses); ``loads`` loader calls made to fill the
    cache; ``stampede_waits`` callers that waited for another caller's load
    (in this process or another) instead of loading; ``wait_timeouts``
    waiters that gave up and loaded themselves; ``early_refreshes``
    background reloads of values close to expiry; ``local_flushes`` times
    the local tier was emptied because its invalidation channel dropped or
    ``clear()`` ran; ``malformed_messages`` messages on the invalidation
    channel that were not invalidations redkit can read (skipped).
    """

    hits: int = 0
    misses: int = 0
    local_hits: int = 0
    sets: int = 0
    deletes: int = 0
    loads: int = 0
    errors: int = 0
    decode_errors: int = 0
    stampede_waits: int = 0
    wait_timeouts: int = 0
    early_refreshes: int = 0
    invalidations: int = 0
    local_flushes: int = 0
    channel_reconnects: int = 0
    malformed_messages: int = 0


_COUNTERS = tuple(f.name for f in dataclasses.fields(CacheStats))


def _seconds(value: object, what: str) -> float:
    return float(_validate.seconds(value, what))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sync_reply(reply: Any) -> tuple[int, float]:
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


class _Flight:
    """One in-process load of one key, shared by every caller that asks for
    the key meanwhile."""

    __slots__ = ("payload", "task", "value")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.value: Any = _NOTHING
        self.payload: bytes | None = None


class Cache:
    """Cache-aside over Redis.

    ``client`` is what :func:`redkit.connect` returns (standalone, Sentinel
    or Cluster); the cache never closes it. Keys are relative to ``prefix``:
    ``cache.get("user:42")`` reads ``app:user:42``. ``default_ttl``
    (seconds or ``timedelta``) applies when a call gives no ``ttl``; with
    neither, the call raises :class:`~redkit.ConfigError`, as does every bad
    argument of every method, before any I/O.

    Options:

    ``layout``
        ``"redkit"`` (default): values carry a small header (generation,
        expiry, load time) for the O(1) :meth:`clear` and early refresh;
        ``"go"``: values are plain JSON, exactly what the Go service's cache
        reads and writes, with :meth:`clear` refused (see ``docs/cache.md``,
        "Sharing Redis with the Go service").
    ``local``
        a :class:`LocalCache` in front of Redis, kept coherent through the
        invalidation channel (see ``docs/cache.md``).
    ``codec``
        ``"json"`` (default), ``"msgpack"`` or a :class:`redkit.Codec`.
    ``jitter``
        stored TTLs are shortened by a random fraction up to this (0.1:
        up to 10 %), so keys written together do not expire together.
    ``compress_above``
        payloads larger than this many bytes are zlib-compressed (0: never).
    ``cache_none``
        whether a loader's ``None`` is cached (negative caching) by default.
    ``lease_ttl`` / ``wait_timeout``
        the cross-process load lease lives ``lease_ttl`` seconds; callers
        that find a load in progress wait at most ``wait_timeout`` seconds
        for it, then call their loader themselves.
    ``early_refresh``
        the beta of probabilistic early expiration (XFetch): hot keys are
        reloaded in the background shortly before they expire; 0 disables.
    ``publish``
        publish an invalidation message on every set/delete so other
        instances' local tiers evict the key. Turn off only when no instance
        uses a local tier.
    ``channel`` / ``source``
        the pub/sub channel (default ``"{prefix}:cache:invalidate"``) and the
        ``source`` field of the events this cache publishes.
    ``sync_interval``
        how often (seconds) the namespace generation that :meth:`clear`
        bumps is re-read when no invalidation channel delivers it.
    ``heartbeat``
        seconds between liveness PINGs on the invalidation channel; an
        unanswered PING (2 heartbeats) counts as a dropped channel.
    """

    layout: Literal["redkit", "go"] = "redkit"
    """``"redkit"`` (values with redkit's header) or ``"go"`` (plain JSON)."""
    # The script that re-reads a value or takes its load lease.
    _lease_script = _LEASE

    def __new__(cls, *args: Any, layout: str = "redkit", **kwargs: Any) -> Cache:
        # The Go layout is a subclass, so that no method of this layout pays
        # for a check of which layout it is on.
        if layout == "go" and cls is Cache:
            from ._golayout import GoLayoutCache

            cls = GoLayoutCache
        return super().__new__(cls)

    def __init__(
        self,
        client: Any,
        prefix: str = "app",
        default_ttl: float | dt.timedelta | None = 600,
        local: LocalCache | None = None,
        *,
        codec: str | Codec = "json",
        jitter: float = 0.1,
        compress_above: int = 16 * 1024,
        cache_none: bool = True,
        lease_ttl: float = 5.0,
        wait_timeout: float = 5.0,
        early_refresh: float = 1.0,
        publish: bool = True,
        channel: str | None = None,
        source: str = "redkit",
        sync_interval: float = 1.0,
        heartbeat: float = 1.0,
        layout: Literal["redkit", "go"] = "redkit",
    ) -> None:
        if layout not in _LAYOUTS:
            raise ConfigError(f"layout must be 'redkit' or 'go', got {layout!r:.40}")
        if layout != self.layout:
            raise ConfigError(
                f"layout={layout!r} is not available to {type(self).__name__}, a subclass "
                f"of Cache; use Cache(..., layout={layout!r})"
            )
        encoder = getattr(client, "get_encoder", None)
        if encoder is None:
            raise ConfigError(f"Cache needs a redis-py asyncio client, got {client!r:.80}")
        if encoder().decode_responses:
            raise ConfigError(
                "Cache stores bytes: give it a client made with decode_responses=False "
                "(what redkit.connect() returns)"
            )
        self._client = client
        self._cluster = is_cluster(client)
        self._keyspace = KeySpace(prefix)
        self.prefix = self._keyspace.prefix
        self._head = self.prefix + ":"
        self.default_ttl = None if default_ttl is None else _seconds(default_ttl, "default_ttl")
        if local is not None and not isinstance(local, LocalCache):
            raise ConfigError(f"local must be a LocalCache or None, got {local!r:.80}")
        self._local = local
        self._codec = get_codec(codec)
        if not all(callable(getattr(self._codec, name, None)) for name in ("encode", "decode")):
            raise ConfigError(f"codec must be 'json', 'msgpack' or a Codec, got {codec!r:.80}")
        if layout == "go" and self._codec.name != "json":
            raise ConfigError(
                f"layout='go' stores the JSON the Go service reads: codec must be 'json', "
                f"got {codec!r:.80}"
            )
        self._null = self._codec.encode(None)
        if not _is_number(jitter) or not 0 <= jitter <= 0.5:
            raise ConfigError(f"jitter must be a fraction between 0 and 0.5, got {jitter!r:.40}")
        self.jitter = float(jitter)
        if isinstance(compress_above, bool) or not isinstance(compress_above, int):
            raise ConfigError(f"compress_above must be an int >= 0, got {compress_above!r:.40}")
        if compress_above < 0:
            raise ConfigError(f"compress_above must be an int >= 0, got {compress_above!r:.40}")
        self.compress_above = compress_above
        self.cache_none = bool(cache_none)
        self.lease_ttl = _seconds(lease_ttl, "lease_ttl")
        self._lease_ms = _validate.ttl_ms(lease_ttl, "lease_ttl")
        self.wait_timeout = _seconds(wait_timeout, "wait_timeout")
        if not _is_number(early_refresh) or not 0 <= early_refresh <= _MAX_BETA:
            raise ConfigError(
                f"early_refresh must be a number from 0 to {_MAX_BETA:g}, got {early_refresh!r:.40}"
            )
        self.early_refresh = float(early_refresh)
        self.publish = bool(publish)
        self.channel = channel if channel is not None else f"{self.prefix}:cache:invalidate"
        validate_key_part(self.channel, "channel")
        self.source = validate_key_part(source, "source")
        self.sync_interval = _seconds(sync_interval, "sync_interval")
        self.heartbeat = _seconds(heartbeat, "heartbeat")

        self._gen_key = f"{self._head}{_RESERVED}gen"
        self._origin = os.urandom(8).hex()
        self._keys: dict[str, str] = {}
        self._tags_memo: dict[str, str] = {}
        self._warned_keys: set[str] = set()
        # Namespace generation and the Redis clock, learnt by _sync(). The
        # next sync falls due at _sync_due, which only moves into the future
        # once a generation is known: every call before that asks _sync(),
        # which holds off Redis until _retry_at after a failed first read.
        self._gen: int | None = None
        self._gen_changes = 0
        self._offset_ms = 0.0
        self._sync_due = 0.0
        self._retry_at = 0.0
        self._first_sync: asyncio.Future[bool] | None = None
        self._malformed_warned_at = -math.inf
        self._refused_warned_at = -math.inf
        self._local_live = False
        self._listener: Listener | None = None
        self._handlers: list[Callable[[_messages.Envelope], None]] = []
        self._flights: dict[str, _Flight] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._healthy = True
        self._closed = False
        for name in _COUNTERS:
            setattr(self, "_n_" + name, 0)

    # counters are plain int attributes; declared for the type checker
    _n_hits: int
    _n_misses: int
    _n_local_hits: int
    _n_sets: int
    _n_deletes: int
    _n_loads: int
    _n_errors: int
    _n_decode_errors: int
    _n_stampede_waits: int
    _n_wait_timeouts: int
    _n_early_refreshes: int
    _n_invalidations: int
    _n_local_flushes: int
    _n_malformed_messages: int

    def __repr__(self) -> str:
        tier = ", local" if self._local is not None else ""
        layout = f" layout={self.layout!r}" if self.layout != "redkit" else ""
        return f"<Cache prefix={self.prefix!r}{layout}{tier}>"

    @property
    def client(self) -> Any:
        """The Redis client the cache was given."""
        return self._client

    @property
    def local(self) -> LocalCache | None:
        return self._local

    @property
    def coherent(self) -> bool:
        """True while the invalidation channel is subscribed, i.e. while the
        local tier may serve reads."""
        return self._local_live

    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        values = {name: getattr(self, "_n_" + name) for name in _COUNTERS}
        values["channel_reconnects"] = self._listener.reconnects if self._listener else 0
        return CacheStats(**values)

    # ------------------------------------------------------------------ life

    async def start(self, timeout: float = 5.0) -> bool:
        """Subscribe to the invalidation channel now (a cache with a local
        tier otherwise does so on first use) and wait up to ``timeout``
        seconds for it. Returns whether the local tier is live."""
        timeout = _seconds(timeout, "timeout")
        # A cache closed by an app's lifespan and started by the next one
        # (a test client per test, say) gets its refreshes back.
        self._closed = False
        listener = self._ensure_listener()
        return await listener.wait_live(timeout)

    async def aclose(self) -> None:
        """Stop the invalidation subscription and background refreshes. The
        client stays open."""
        self._closed = True
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()

    async def __aenter__(self) -> Cache:
        if self._local is not None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ keys

    def _full_key(self, key: str) -> str:
        try:
            full = self._keys.get(key)
        except TypeError:  # unhashable: not a str, which the check below says
            full = None
        if full is not None:
            return full
        validate_key_part(key, "cache key", allow_braces="tag")
        if key.startswith(_RESERVED):
            raise ConfigError(
                f"cache key {key!r} is reserved: keys may not start with {_RESERVED!r}"
            )
        # The prefix has no braces, so the key's tag is the full key's.
        full = self._head + key
        if len(self._keys) >= _KEY_MEMO_LIMIT:
            self._keys.clear()
        self._keys[key] = full
        return full

    def key(self, key: str) -> str:
        """The Redis key that ``key`` is stored under (``app:user:42``)."""
        return self._full_key(key)

    def _tag_key(self, tag: str) -> str:
        validate_key_part(tag, "tag", allow_braces="tag")
        return f"{self._head}{_RESERVED}tag:{tag}"

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
                    tag_key = self._tag_key(tag)
                    if len(memo) >= _KEY_MEMO_LIMIT:
                        memo.clear()
                    memo[tag] = tag_key
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
        lease = f"{self._head}{_RESERVED}lease:"
        if _hash_tag(full) is not None:
            return lease + full
        return lease + "{" + full + "}"

    def _ttl_ms(self, ttl: float | dt.timedelta | None) -> int:
        if ttl is None:
            if self.default_ttl is None:
                raise ConfigError("no ttl given and the cache has no default_ttl")
            seconds = self.default_ttl
        else:
            seconds = _seconds(ttl, "ttl")
        if self.jitter:
            seconds *= 1.0 - random.random() * self.jitter
        return max(1, int(seconds * 1000))

    # ----------------------------------------------------- generation & time

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
            gen, server_ms = _sync_reply(
                await _SYNC(self._client, [self._gen_key], [random.randrange(1, 1 << 31)])
            )
        except (*_FAILURES, SerializationError) as exc:
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

    # --------------------------------------------------------------- failure

    def _failed(self, what: str, key: str, exc: BaseException) -> None:
        self._n_errors += 1
        if isinstance(exc, ResponseError):
            # Redis answered and refused this command (out of memory, a
            # replica, a key of another type): it is not down, and reads
            # that go on working must not make every refusal a new warning.
            now = time.monotonic()
            level = logging.DEBUG
            if now - self._refused_warned_at >= _WARN_EVERY:
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
        self._n_decode_errors += 1
        # One warning per key (a foreign key read on every request would
        # flood the log); repeats go to debug.
        warned = self._warned_keys
        if key in warned:
            log.debug("cache key %s still holds a value redkit cannot read (%s)", key, why)
            return
        if len(warned) >= _KEY_MEMO_LIMIT:
            warned.clear()
        warned.add(key)
        log.warning(
            "cache key %s holds a value redkit cannot read (%s); treated as a miss", key, why
        )

    # ----------------------------------------------------------------- reads

    def _parse(self, raw: bytes, full: str, type: Any) -> Any:
        """The value in stored bytes; _NOTHING when they are foreign,
        undecodable or from before the last clear(). The hit path's decoder
        of what Redis holds, so it raises nothing for any bytes (except for
        a ``type`` that has no decoding at all: the caller's bug)."""
        try:
            magic, flags, gen, _expiry, _delta = _HEADER_UNPACK(raw)
        except struct.error:
            self._undecodable(full, "too short for a redkit value")
            return _NOTHING
        if magic != _MAGIC:
            self._undecodable(full, "not written by redkit's cache")
            return _NOTHING
        if gen != self._gen:
            return _NOTHING
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
            return _NOTHING

    def _from_local(self, full: str, type: Any) -> Any:
        local = self._local
        assert local is not None
        payload = local.lookup(full)
        if payload is None:
            return _NOTHING
        try:
            value = self._codec.decode(payload, type)
        except SerializationError as exc:
            if payload == self._null:
                self._n_local_hits += 1
                return None
            if isinstance(exc.__cause__, NotImplementedError):
                raise
            # Stored by a call that decoded it as another type; Redis decides.
            return _NOTHING
        self._n_local_hits += 1
        return value

    def _keep_local(self, full: str, raw: bytes, token: int) -> None:
        # raw was parsed just before, so it unpacks
        local = self._local
        assert local is not None
        _magic, flags, _gen, expiry, _delta = _HEADER_UNPACK(raw)
        payload = _envelope.unpack_payload(flags, raw) if flags else raw[_HEADER_SIZE:]
        local.store(full, payload, (expiry - self._server_ms()) / 1000.0, token)

    @overload
    async def get(self, key: str) -> Any: ...
    @overload
    async def get(self, key: str, type: type[T]) -> T | None: ...
    @overload
    async def get(self, key: str, type: type[T], default: D) -> T | D: ...
    @overload
    async def get(self, key: str, *, default: D) -> Any | D: ...
    @operation("cache.get")
    async def get(self, key: str, type: Any = None, default: Any = None) -> Any:
        """The value cached under ``key``, decoded as ``type`` when given.

        A miss returns ``default`` (``None``); pass ``default=MISSING`` to
        tell a miss from a cached ``None``. Never raises for Redis trouble
        or for stored bytes it cannot decode: both read as a miss and are
        counted. One round trip on a Redis hit; none on a local hit.
        """
        full = self._full_key(key)
        token = 0
        local = self._local
        if local is not None:
            if self._local_live:
                value = self._from_local(full, type)
                if value is not _NOTHING:
                    return value
            elif not self._closed:
                self._ensure_listener()
            token = local.fill_token(full)
        if self._sync_due <= time.monotonic() and not await self._synced():
            return default
        try:
            raw = await self._client.get(full)
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
        if self._local_live:
            self._keep_local(full, raw, token)
        return value

    async def exists(self, key: str) -> bool:
        """Whether ``key`` holds a current value (one round trip, reading
        only the value's header). False when Redis cannot be reached."""
        full = self._full_key(key)
        if self._sync_due <= time.monotonic() and not await self._synced():
            return False
        try:
            head = await self._client.getrange(full, 0, _HEADER_SIZE - 1)
        except _FAILURES as exc:
            self._failed("check", full, exc)
            return False
        if len(head) < _HEADER_SIZE:
            return False
        magic, _flags, gen, _expiry, _delta = _HEADER_UNPACK(head)
        return bool(magic == _MAGIC and gen == self._gen)

    # ---------------------------------------------------------------- writes

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

    def _message(self, **fields: Any) -> bytes:
        if not self.publish:
            return b""
        return _messages.encode(_messages.Invalidation(origin=self._origin, **fields), self.source)

    @operation("cache.set")
    async def set(
        self,
        key: str,
        value: Any,
        ttl: float | dt.timedelta | None = None,
        tags: Sequence[str] | str | None = None,
    ) -> bool:
        """Store ``value`` under ``key`` for ``ttl`` seconds (less jitter),
        recording it under each of ``tags``.

        Raises :class:`redkit.SerializationError` when the value cannot be
        encoded (an unsupported type, NaN or an infinity in JSON, nesting
        too deep; nothing is written) and :class:`redkit.ConfigError` for a
        bad key, tag or TTL. A Redis failure is logged and counted and
        returns False; True means the value was written.
        """
        full = self._full_key(key)
        tag_keys = self._tag_keys(tags)
        ttl_ms = self._ttl_ms(ttl)
        payload = self._codec.encode(value)
        return await self._write(full, key, payload, ttl_ms, tag_keys)

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
        except _FAILURES as exc:
            self._failed("write", full, exc)
            if lease_token and isinstance(exc, ResponseError):
                # Redis answered, refusing the write (out of memory, a
                # replica, a tag set it would not touch): free the lease so
                # other processes load now rather than wait it out.
                await self._release(lease_key, lease_token)
            return False
        self._n_sets += 1
        if local is not None and self._local_live:
            local.store(full, payload, ttl_ms / 1000.0, token)
        return True

    def _pack(self, payload: bytes, ttl_ms: int, delta_ms: int) -> bytes:
        """The bytes stored for ``payload``: header and payload."""
        assert self._gen is not None
        return _envelope.pack(
            payload, self._gen, int(self._server_ms()) + ttl_ms, delta_ms, self.compress_above
        )

    @operation("cache.delete")
    async def delete(self, *keys: str) -> int:
        """Delete ``keys``; returns how many existed. A Redis failure is
        logged and counted and returns 0."""
        if not keys:
            return 0
        fulls = [self._full_key(k) for k in keys]
        if self._local is not None:
            self._local.evict(fulls)
        try:
            removed = int(await self._client.delete(*fulls))
        except _FAILURES as exc:
            self._failed("delete", fulls[0], exc)
            return 0
        self._n_deletes += removed
        await self._announce(keys=list(keys), prefix=self.prefix)
        return removed

    async def _announce(self, **fields: Any) -> None:
        message = self._message(**fields)
        if not message:
            return
        try:
            await self._client.publish(self.channel, message)
        except _FAILURES as exc:
            self._failed("publish an invalidation", self.channel, exc)

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
                    batch = await self._client.zpopmin(tag_key, 500)
                except _FAILURES as exc:
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
                except _FAILURES as exc:
                    self._failed("delete tagged keys", tag_key, exc)
                    try:
                        await self._client.zadd(tag_key, dict(batch))
                    except _FAILURES:
                        log.error("cache lost tag members of %s that were not deleted", tag_key)
                    return total
                await self._announce(
                    keys=[m[len(self._head) :] for m in members], prefix=self.prefix
                )
        self._n_invalidations += 1
        return total

    def _own_keys(self, names: Iterable[bytes | str]) -> list[str]:
        """The names that are cache keys under this prefix (UTF-8, not
        redkit's own bookkeeping)."""
        head, reserved = self._head, self._head + _RESERVED
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
        reserved = (self._head + _RESERVED).encode()
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
        except _FAILURES as exc:
            self._failed("delete by pattern", match, exc)
        return total

    async def _delete_found(self, names: list[bytes]) -> int:
        # A matching name that is not UTF-8 is deleted too, but it cannot be
        # a key of any cache, so no local tier holds it and nobody is told.
        keys = self._own_keys(names)
        if self._local is not None:
            self._local.evict(keys)
        removed = int(await self._client.delete(*names))
        self._n_deletes += removed
        if keys:
            await self._announce(keys=[k[len(self._head) :] for k in keys], prefix=self.prefix)
        return removed

    async def clear(self) -> bool:
        """Invalidate every value under the prefix in O(1): the namespace
        generation moves on and values written under an older one read as
        misses (and expire on their own TTLs). Other instances learn the new
        generation through the invalidation channel at once, or within
        ``sync_interval`` seconds without it. Returns False (logged,
        counted) when Redis cannot be reached."""
        try:
            gen = int(await self._client.incr(self._gen_key))
        except _FAILURES as exc:
            self._failed("clear", self._gen_key, exc)
            return False
        self._gen_changes += 1
        self._set_generation(gen)
        self._flush_local()
        self._n_invalidations += 1
        await self._announce(generation=gen, prefix=self.prefix)
        return True

    # ----------------------------------------------------------- get_or_set

    @overload
    async def get_or_set(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        ttl: float | dt.timedelta | None = None,
        tags: Sequence[str] | str | None = None,
        type: Any = None,
        *,
        cache_none: bool | None = None,
    ) -> T: ...
    @overload
    async def get_or_set(
        self,
        key: str,
        loader: Callable[[], T],
        ttl: float | dt.timedelta | None = None,
        tags: Sequence[str] | str | None = None,
        type: Any = None,
        *,
        cache_none: bool | None = None,
    ) -> T: ...
    @operation("cache.get_or_set")
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
        """The cached value of ``key``, or the loader's value, cached.

        Concurrent callers of one cold key share one load: in this process
        through a single flight, across processes through a short lease in
        Redis; waiters give up after ``wait_timeout`` and load themselves.
        A hit close to expiry may start a background reload (early refresh).
        A loader's exception propagates unchanged and nothing is cached; so
        does the :class:`redkit.SerializationError` for a loaded value the
        codec cannot encode. When Redis fails the loader's value is returned
        all the same.
        """
        full = self._full_key(key)
        if ttl is None:
            if self.default_ttl is None:
                raise ConfigError("no ttl given and the cache has no default_ttl")
        elif isinstance(ttl, bool) or not (isinstance(ttl, (int, float)) and 0 < ttl <= _MAX_TTL):
            _seconds(ttl, "ttl")  # raises for a bad ttl, on hits too
        tag_keys = self._tag_keys(tags) if tags else _NO_TAGS
        token = 0
        local = self._local
        if local is not None:
            if self._local_live:
                value = self._from_local(full, type)
                if value is not _NOTHING:
                    return value
            elif not self._closed:
                self._ensure_listener()
            token = local.fill_token(full)
        if cache_none is None:
            cache_none = self.cache_none
        redis_up = True
        if self._sync_due <= time.monotonic() and not await self._synced():
            redis_up = False
        else:
            try:
                raw = await self._client.get(full)
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
                        if self._local_live:
                            self._keep_local(full, raw, token)
                        beta = self.early_refresh
                        if beta:
                            # cheap pre-check; the draw is made close to expiry only
                            _m, _f, _g, expiry, delta = _HEADER_UNPACK(raw)
                            window = max(delta, _MIN_REFRESH_WINDOW_MS) * beta
                            if expiry - self._server_ms() <= window * 20:
                                self._maybe_refresh(
                                    full, key, expiry, window, loader, ttl, tag_keys, cache_none
                                )
                        return value
                self._n_misses += 1
        return await self._fill(
            full, key, loader, self._ttl_ms(ttl), tag_keys, type, cache_none, redis_up
        )

    async def _fill(
        self,
        full: str,
        key: str,
        loader: Callable[[], Any],
        ttl_ms: int,
        tag_keys: list[str],
        type: Any,
        cache_none: bool,
        redis_up: bool,
    ) -> Any:
        flight = self._flights.get(full)
        if flight is None or flight.task is None or flight.task.done():
            flight = _Flight()
            task = asyncio.get_running_loop().create_task(
                self._load(flight, full, key, loader, ttl_ms, tag_keys, type, cache_none, redis_up)
            )
            flight.task = task
            self._flights[full] = flight
            task.add_done_callback(functools.partial(self._landed, full, flight))
            await asyncio.shield(task)
            if flight.value is not _NOTHING:
                return flight.value
            return await self._decode_loaded(flight, full, loader, type)
        # Another caller in this process is loading this key: share it.
        self._n_stampede_waits += 1
        task = flight.task
        try:
            await asyncio.wait_for(asyncio.shield(task), self.wait_timeout)
        except asyncio.TimeoutError:
            self._n_wait_timeouts += 1
            self._n_loads += 1
            return await _call(loader)
        return await self._decode_loaded(flight, full, loader, type)

    def _landed(self, full: str, flight: _Flight, task: asyncio.Task[None]) -> None:
        if self._flights.get(full) is flight:
            del self._flights[full]
        if not task.cancelled():
            task.exception()  # retrieved: the callers re-raise it

    async def _decode_loaded(
        self, flight: _Flight, full: str, loader: Callable[[], Any], type: Any
    ) -> Any:
        """The shared load's value as ``type``. Its payload may be what
        another process stored, read as another caller's type: if it does
        not decode as this one's, this caller loads for itself."""
        payload = flight.payload
        if payload is None or payload == self._null:
            return None
        try:
            return self._codec.decode(payload, type)
        except Exception as exc:
            if isinstance(exc.__cause__, NotImplementedError):
                raise
            self._undecodable(full, str(exc) or exc.__class__.__name__)
        self._n_loads += 1
        return await _call(loader)

    async def _load(
        self,
        flight: _Flight,
        full: str,
        key: str,
        loader: Callable[[], Any],
        ttl_ms: int,
        tag_keys: list[str],
        type: Any,
        cache_none: bool,
        redis_up: bool,
    ) -> None:
        """Fill ``flight`` from Redis (another process loaded meanwhile) or
        from the loader, under the cross-process lease when Redis answers."""
        lease_token = ""
        lease_key = self._lease_key(full)
        gen = self._gen
        # A call goes to Redis only once a generation is known (see _sync);
        # checked again here so that no later change can make a load depend
        # on one it does not have.
        if redis_up and gen is not None:
            try:
                found = await self._await_lease(full, lease_key, gen, type)
            except _FAILURES as exc:
                self._failed("take the load lease for", full, exc)
                found = None
                redis_up = False
            if isinstance(found, bytes):
                flight.payload = found
                return
            if isinstance(found, str):
                lease_token = found
        else:
            redis_up = False
        try:
            self._n_loads += 1
            started = time.perf_counter()
            value = await _call(loader)
            delta_ms = int((time.perf_counter() - started) * 1000)
            flight.value = value
            if value is None and not cache_none:
                flight.payload = None
                if lease_token:
                    await self._release(lease_key, lease_token)
                return
            flight.payload = self._codec.encode(value)
        except BaseException:
            if lease_token:
                await self._release(lease_key, lease_token)
            raise
        if redis_up:
            await self._write(
                full,
                key,
                flight.payload,
                ttl_ms,
                tag_keys,
                delta_ms=delta_ms,
                lease_token=lease_token,
            )

    async def _await_lease(
        self, full: str, lease_key: str, gen: int, type: Any
    ) -> bytes | str | None:
        """The payload someone else stored meanwhile, our lease token, or
        None when the wait timed out (the caller loads without a lease).

        The script re-reads the key and takes the lease atomically, and only
        a value of the current generation counts as stored: a caller whose
        miss was answered late, or who saw a stale value, finds the value a
        concurrent load wrote instead of loading again."""
        token = os.urandom(12).hex()
        lease_ms = self._lease_ms
        generation = _GEN_BYTES.pack(gen)
        deadline = time.monotonic() + self.wait_timeout
        delay = _POLL_FIRST
        waited = False
        while True:
            reply = await self._lease_script(
                self._client, (full, lease_key), (token, lease_ms, generation)
            )
            state = int(reply[0])
            if state == 2:
                return token
            if state == 1:
                raw = reply[1]
                if self._parse(raw, full, type) is _NOTHING:
                    return None  # our generation but unreadable: load, no lease
                return self._payload_of(raw)
            if not waited:
                waited = True
                self._n_stampede_waits += 1
            if time.monotonic() >= deadline:
                self._n_wait_timeouts += 1
                return None
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, _POLL_MAX)

    def _payload_of(self, raw: bytes) -> bytes:
        """The codec payload of stored bytes that parsed."""
        _magic, flags, _gen, _expiry, _delta = _HEADER_UNPACK(raw)
        return _envelope.unpack_payload(flags, raw) if flags else raw[_HEADER_SIZE:]

    async def _release(self, lease_key: str, token: str) -> None:
        try:
            await _RELEASE(self._client, (lease_key,), (token,))
        except _FAILURES as exc:
            self._failed("release the load lease", lease_key, exc)

    # -------------------------------------------------------- early refresh

    def _maybe_refresh(
        self,
        full: str,
        key: str,
        expiry: int,
        window: float,
        loader: Callable[[], Any],
        ttl: float | dt.timedelta | None,
        tag_keys: list[str],
        cache_none: bool,
    ) -> None:
        # XFetch: reload when now - delta * beta * ln(U) passes the expiry,
        # delta being how long the last load took (at least 100 ms); the
        # caller skipped the draw when the expiry is over 20 windows away
        # (P(refresh) < e^-20).
        remaining = expiry - self._server_ms()
        if window * -math.log(1.0 - random.random()) < remaining:
            return
        if full in self._refreshing or full in self._flights or self._closed:
            return
        self._refreshing.add(full)
        task = asyncio.get_running_loop().create_task(
            self._refresh(full, key, loader, ttl, tag_keys, cache_none)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(
        self,
        full: str,
        key: str,
        loader: Callable[[], Any],
        ttl: float | dt.timedelta | None,
        tag_keys: list[str],
        cache_none: bool,
    ) -> None:
        lease_key = self._lease_key(full)
        token = os.urandom(12).hex()
        try:
            try:
                taken = await self._client.set(lease_key, token, nx=True, px=self._lease_ms)
            except _FAILURES as exc:
                self._failed("take the refresh lease for", full, exc)
                return
            if not taken:
                return  # another process is reloading it
            self._n_early_refreshes += 1
            self._n_loads += 1
            try:
                started = time.perf_counter()
                value = await _call(loader)
                delta_ms = int((time.perf_counter() - started) * 1000)
                if value is None and not cache_none:
                    await self._release(lease_key, token)
                    return
                payload = self._codec.encode(value)
            except Exception:
                log.warning("early refresh of cache key %s failed", full, exc_info=True)
                await self._release(lease_key, token)
                return
            await self._write(
                full,
                key,
                payload,
                self._ttl_ms(ttl),
                tag_keys,
                delta_ms=delta_ms,
                lease_token=token,
            )
        finally:
            self._refreshing.discard(full)

    # ------------------------------------------------------------ decorator

    def cached(
        self,
        ttl: float | dt.timedelta | None = None,
        *,
        key: str | None = None,
        tags: Sequence[str] = (),
        type: Any = None,
        cache_none: bool | None = None,
    ) -> Callable[[Callable[P, Awaitable[T]]], CachedFunction[P, T]]:
        """Decorate an ``async def`` so its result is cached.

        ``key`` is a ``str.format`` template over the function's parameters
        (``"user:{user_id}"``) and yields the same key :meth:`get` takes;
        ``tags`` may be templates too. The hit is decoded into the function's
        return annotation unless ``type`` is given. The decorated function
        gains ``invalidate(...)`` and ``key(...)`` taking the same arguments.
        """
        from .decorator import CachedFunction

        if ttl is not None:
            _seconds(ttl, "ttl")
        elif self.default_ttl is None:
            raise ConfigError("no ttl given and the cache has no default_ttl")

        def wrap(func: Callable[P, Awaitable[T]]) -> CachedFunction[P, T]:
            return CachedFunction(
                self, func, ttl=ttl, key=key, tags=tags, type=type, cache_none=cache_none
            )

        return wrap

    # -------------------------------------------------------- invalidation

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

    def _subscribe(self, handler: Callable[[_messages.Envelope], None]) -> Listener:
        """Also pass every decoded event on the channel to ``handler``."""
        self._handlers.append(handler)
        return self._ensure_listener()

    def _unsubscribe(self, handler: Callable[[_messages.Envelope], None]) -> None:
        if handler in self._handlers:
            self._handlers.remove(handler)

    def _flush_local(self) -> None:
        if self._local is not None:
            self._local.flush()
            self._n_local_flushes += 1

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
        elif inv.origin != self._origin and inv.prefix in (None, self.prefix):
            if inv.generation is not None and inv.prefix == self.prefix:
                self._gen_changes += 1
                if self._set_generation(inv.generation):
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
                handler(event)
            except Exception:
                log.exception("cache event handler failed")

    def _malformed(self, data: bytes, why: str) -> None:
        self._n_malformed_messages += 1
        now = time.monotonic()
        if now - self._malformed_warned_at >= _WARN_EVERY:
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
            self._n_malformed_messages,
        )


def _init_signature() -> inspect.Signature:
    init = inspect.signature(Cache.__init__)
    return init.replace(parameters=list(init.parameters.values())[1:])


# inspect (and so help()) would show __new__'s (*args, **kwargs) as the
# constructor's signature; __init__'s is the real one.
setattr(Cache, "__signature__", _init_signature())  # noqa: B010


def _hash_tag(key: str) -> str | None:
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


async def _call(loader: Callable[[], Any]) -> Any:
    result = loader()
    if inspect.isawaitable(result):
        result = await result
    return result
