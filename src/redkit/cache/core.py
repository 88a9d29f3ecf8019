"""Cache: cache-aside over Redis with single-flight loads, tag invalidation,
an O(1) clear and an optional coherent in-process tier.

The class is the public face; each concern behind it is a base class in a
module of its own: ``_generation`` (namespace generation, Redis clock),
``_values`` (stored format, the write script), ``_coherence`` (local tier
and invalidation channel), ``_loading`` (single flight, lease, early
refresh), ``_bulk`` (tags, patterns) and ``_golayout`` (the Go layout).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Final, Literal, ParamSpec, TypeVar, overload

from .. import _validate
from .._counters import counts_for, snapshot
from .._failures import ANY, is_cluster
from .._telemetry import operation
from ..codec import Codec, get_codec
from ..errors import ConfigError
from ..keys import KeySpace, validate_key_part
from . import _envelope
from ._base import NOTHING
from ._bulk import BulkInvalidation
from ._loading import MIN_REFRESH_WINDOW_MS, SingleFlight
from .decorator import CachedFunction
from .local import LocalCache

__all__ = ["MISSING", "Cache", "CacheStats"]

T = TypeVar("T")
D = TypeVar("D")
P = ParamSpec("P")

_MAX_TTL = _validate.MAX_SECONDS
# Past this early_refresh every hit close to expiry refreshes anyway.
_MAX_BETA = 1e6
_NO_TAGS: list[str] = []  # shared, never mutated
_HEADER_END = _envelope.HEADER_SIZE - 1


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


class Cache(SingleFlight, BulkInvalidation):
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
    # The classes Cache(layout=...) builds, filled in by each layout's
    # module as it is imported (the package imports them all).
    _layouts: ClassVar[dict[str, type[Cache]]] = {}

    def __new__(cls, *args: Any, layout: str = "redkit", **kwargs: Any) -> Cache:
        # The Go layout is a subclass with its own stored-value format
        # (see _values); the calls themselves are the same for both.
        if cls is Cache and isinstance(layout, str):
            cls = Cache._layouts.get(layout, Cache)
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
        if layout not in ("redkit", "go"):
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
        self.default_ttl = (
            None if default_ttl is None else _validate.seconds(default_ttl, "default_ttl")
        )
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
        self.lease_ttl = _validate.seconds(lease_ttl, "lease_ttl")
        self._lease_ms = _validate.ttl_ms(lease_ttl, "lease_ttl")
        self.wait_timeout = _validate.seconds(wait_timeout, "wait_timeout")
        if not _is_number(early_refresh) or not 0 <= early_refresh <= _MAX_BETA:
            raise ConfigError(
                f"early_refresh must be a number from 0 to {_MAX_BETA:g}, got {early_refresh!r:.40}"
            )
        self.early_refresh = float(early_refresh)
        self.publish = bool(publish)
        self.channel = channel if channel is not None else f"{self.prefix}:cache:invalidate"
        validate_key_part(self.channel, "channel")
        self.source = validate_key_part(source, "source")
        self.sync_interval = _validate.seconds(sync_interval, "sync_interval")
        self.heartbeat = _validate.seconds(heartbeat, "heartbeat")

        self._keys: dict[str, str] = {}
        self._tags_memo: dict[str, str] = {}
        self._warned_keys: set[str] = set()
        self._refused_warned_at = -math.inf
        self._healthy = True
        self._closed = False
        self._counts = counts_for(CacheStats)
        self._init_generation()
        self._init_coherence()
        self._init_loading()

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
        reconnects = self._listener.reconnects if self._listener else 0
        return snapshot(CacheStats, {**self._counts, "channel_reconnects": reconnects})

    # ------------------------------------------------------------------ life

    async def start(self, timeout: float = 5.0) -> bool:
        """Subscribe to the invalidation channel now (a cache with a local
        tier otherwise does so on first use) and wait up to ``timeout``
        seconds for it. Returns whether the local tier is live."""
        timeout = _validate.seconds(timeout, "timeout")
        # A cache closed by an app's lifespan and started by the next one
        # (a test client per test, say) gets its refreshes back.
        self._closed = False
        listener = self._ensure_listener()
        return await listener.wait_live(timeout)

    async def aclose(self) -> None:
        """Stop the invalidation subscription and background refreshes. The
        client stays open."""
        self._closed = True
        await self._stop_listener()
        await self._stop_refreshes()

    async def __aenter__(self) -> Cache:
        if self._local is not None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- calls

    def key(self, key: str) -> str:
        """The Redis key that ``key`` is stored under (``app:user:42``)."""
        return self._full_key(key)

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
        if (local := self._local) is not None:
            value, token = self._local_first(local, full, type)
            if value is not NOTHING:
                return value
        if self._sync_due <= time.monotonic() and not await self._synced():
            return default
        left_ms = None
        try:
            if self._local_live and self._plain:
                raw, left_ms = await self._read_with_ttl(full)
            else:
                raw = await self._client.get(full)
        except ANY as exc:
            self._failed("read", full, exc)
            return default
        value = self._found(raw, full, type)
        if value is NOTHING:
            return default
        if self._local_live:
            self._keep_local(full, raw, token, left_ms)
        return value

    async def exists(self, key: str) -> bool:
        """Whether ``key`` holds a current value (one round trip, reading
        only the value's header). False when Redis cannot be reached."""
        full = self._full_key(key)
        if self._sync_due <= time.monotonic() and not await self._synced():
            return False
        try:
            return self._is_current(await self._client.getrange(full, 0, _HEADER_END))
        except ANY as exc:
            self._failed("check", full, exc)
            return False

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
        except ANY as exc:
            self._failed("delete", fulls[0], exc)
            return 0
        self._counts["deletes"] += removed
        await self._announce(keys=list(keys), prefix=self.prefix)
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
        except ANY as exc:
            self._failed("clear", self._gen_key, exc)
            return False
        self._generation_moved(gen)
        self._flush_local()
        self._counts["invalidations"] += 1
        await self._announce(generation=gen, prefix=self.prefix)
        return True

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
            _validate.seconds(ttl, "ttl")  # raises for a bad ttl, on hits too
        tag_keys = self._tag_keys(tags) if tags else _NO_TAGS
        token = 0
        if (local := self._local) is not None:
            value, token = self._local_first(local, full, type)
            if value is not NOTHING:
                return value
        if cache_none is None:
            cache_none = self.cache_none
        beta = self.early_refresh
        redis_up = False
        if self._sync_due > time.monotonic() or await self._synced():
            left_ms = None
            try:
                if self._plain and (beta or self._local_live):
                    raw, left_ms = await self._read_with_ttl(full)
                else:
                    raw = await self._client.get(full)
            except ANY as exc:
                self._failed("read", full, exc)
            else:
                redis_up = True
                value = self._found(raw, full, type)
                if value is not NOTHING:
                    if self._local_live:
                        self._keep_local(full, raw, token, left_ms)
                    if beta:
                        # cheap pre-check; the draw is made close to expiry only
                        remaining, delta = self._time_left(raw, left_ms)
                        window = max(delta, MIN_REFRESH_WINDOW_MS) * beta
                        if remaining <= window * 20:
                            self._maybe_refresh(
                                full, key, remaining, window, loader, ttl, tag_keys, cache_none
                            )
                    return value
        return await self._fill(
            full, key, loader, self._ttl_ms(ttl), tag_keys, type, cache_none, redis_up
        )

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
        if ttl is not None:
            _validate.seconds(ttl, "ttl")
        elif self.default_ttl is None:
            raise ConfigError("no ttl given and the cache has no default_ttl")

        def wrap(func: Callable[P, Awaitable[T]]) -> CachedFunction[P, T]:
            return CachedFunction(
                self, func, ttl=ttl, key=key, tags=tags, type=type, cache_none=cache_none
            )

        return wrap


def _init_signature() -> inspect.Signature:
    init = inspect.signature(Cache.__init__)
    return init.replace(parameters=list(init.parameters.values())[1:])


# inspect (and so help()) would show __new__'s (*args, **kwargs) as the
# constructor's signature; __init__'s is the real one.
setattr(Cache, "__signature__", _init_signature())  # noqa: B010
