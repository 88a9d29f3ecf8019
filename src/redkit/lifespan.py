"""Lifespan: what an app opens when it starts and closes when it stops.

An ASGI app builds its client and components at import time, before any
event loop runs (the middleware needs them then), so nothing there may do
I/O. ``Lifespan`` holds them and does the I/O on the app's own loop::

    client = redkit.build_client()        # no I/O
    redis = redkit.Lifespan(client)
    cache = redis.add(Cache(client, local=LocalCache(max_entries=1000)))
    consumer = redis.add(StreamConsumer(client, "orders", group="g", consumer="c"))
    app = FastAPI(lifespan=redis)         # or lifespan=redis.around(own_lifespan)

Starting checks the connection, then opens each component in the order it
was added; stopping closes them in the reverse order, each within
``close_timeout``, and the client last. See the README, "Using redkit in
your app".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, TypeVar

from redis.asyncio import Redis, RedisCluster

from . import _failures
from ._failures import describe_error
from ._timing import backoff_delay, bounded
from ._validate import seconds
from .cache import Cache, Invalidator
from .connection import Client, _verify
from .errors import ConfigError, ConnectionUnavailable
from .events import Publisher, StreamConsumer, StreamPublisher, Subscriber
from .lock import DistributedLock
from .ratelimit import RateLimiter
from .session import SessionStore

__all__ = ["Lifespan"]

log = logging.getLogger("redkit.lifespan")

T = TypeVar("T")
A = TypeVar("A")
S = TypeVar("S")

# Components that hold no connection or task of their own: accepted by add()
# so that every component can go through it, with nothing to open or close.
_PASSIVE = (Publisher, StreamPublisher, SessionStore, RateLimiter)


class _Part:
    """One registered thing: how to open it (an async context manager made
    afresh for each start, so a Lifespan can start again after it stopped)."""

    __slots__ = ("name", "open", "target")

    def __init__(
        self, target: object, name: str, open: Callable[[], AbstractAsyncContextManager[Any]]
    ) -> None:
        self.target = target
        self.name = name
        self.open = open


class Lifespan:
    """Opens a client and the components added to it when the app starts,
    and closes them, in reverse order, when it stops.

    ``FastAPI(lifespan=redis)`` or ``Starlette(lifespan=redis)`` runs it with
    the app; ``lifespan=redis.around(own)`` runs the app's own lifespan
    inside it (redkit is open while ``own`` starts and until it has
    stopped); ``async with redis:`` runs it anywhere else (a worker, a
    script, a test).

    Starting PINGs the client, retrying for up to ``connect_timeout``
    seconds while Redis cannot be reached (a server that is starting), and
    loads a cluster client's slot map; then each added component is opened
    in the order of :meth:`add`: a cache with a local tier subscribes to its
    invalidation channel, an invalidator starts applying events, a
    subscriber and a stream consumer start running. If any of it fails,
    what was opened is closed again and the error is raised: the app does
    not start. A Redis that cannot be reached raises
    :class:`~redkit.ConnectionUnavailable` naming the address.

    Stopping closes the components in the reverse order (consumers drain
    their handlers, locks wait for background releases) and then the client
    (unless ``close_client=False``). Each step gets at most
    ``close_timeout`` seconds; a step that fails or overruns is logged on
    ``redkit.lifespan`` and the next one still runs, so one stuck component
    never keeps the others open.
    """

    def __init__(
        self,
        client: Client,
        *,
        connect_timeout: float = 10.0,
        close_timeout: float = 10.0,
        close_client: bool = True,
    ) -> None:
        if not isinstance(client, (Redis, RedisCluster)):
            raise ConfigError(
                "client must be a redis.asyncio Redis or RedisCluster (redkit.build_client()), "
                f"got {type(client).__name__}"
            )
        self.client = client
        self.connect_timeout = seconds(connect_timeout, "connect_timeout")
        self.close_timeout = seconds(close_timeout, "close_timeout")
        self.close_client = bool(close_client)
        self._parts: list[_Part] = []
        self._stack: list[tuple[str, AbstractAsyncContextManager[Any]]] = []
        self._state = "closed"  # closed, opening, open, closing

    def __repr__(self) -> str:
        names = ", ".join(p.name for p in self._parts)
        return f"<Lifespan {self._state} [{names}]>"

    @property
    def is_open(self) -> bool:
        """True from the end of a successful start until stopping begins."""
        return self._state == "open"

    # -- registration -------------------------------------------------------

    def add(self, component: T, *channels: str, patterns: Iterable[str] = ()) -> T:
        """Open ``component`` when the app starts and close it when it stops;
        returns it, so that ``cache = redis.add(Cache(client))`` reads as
        one line.

        What "open" means depends on what it is:

        - :class:`~redkit.Cache`: ``start()`` when it has a local tier (the
          invalidation subscription that keeps it coherent); ``aclose()``.
        - :class:`~redkit.Invalidator`: ``start()``; ``aclose()``.
        - :class:`~redkit.Subscriber`: ``running(*channels, patterns=...)``;
          give the channels (or ``patterns``) here.
        - :class:`~redkit.StreamConsumer`: ``running()``.
        - :class:`~redkit.DistributedLock` (and its semaphores):
          ``aclose()``.
        - :class:`~redkit.SessionStore`, :class:`~redkit.RateLimiter`,
          :class:`~redkit.Publisher`, :class:`~redkit.StreamPublisher`:
          nothing to open or close; accepted.
        - anything else that is an async context manager (entered at every
          start, so it must allow that), or a function of no arguments
          returning one (called at every start: an
          ``@asynccontextmanager`` function of your own).

        Raises :class:`~redkit.ConfigError` for anything else, a component
        added twice, channels for something that is not a subscriber, or a
        subscriber without them, and once the lifespan has started.
        """
        if self._state != "closed":
            raise ConfigError(
                f"add() {_name(component)} before the lifespan starts (it is {self._state})"
            )
        if any(p.target is component for p in self._parts):
            raise ConfigError(f"{_name(component)} was already added")
        pats = _strings(patterns, "patterns")
        chans = _strings(channels, "channels")
        if isinstance(component, Subscriber):
            if not chans and not pats:
                raise ConfigError(
                    "a Subscriber needs the channels (or patterns) to subscribe to: "
                    "add(subscriber, 'channel', ...)"
                )
            subscriber = component
            part = _Part(
                subscriber,
                f"subscriber on {', '.join(chans + pats)}",
                lambda: subscriber.running(*chans, patterns=pats),
            )
        elif chans or pats:
            raise ConfigError(f"channels and patterns are for a Subscriber, not {_name(component)}")
        else:
            part = _part_for(component)
        self._parts.append(part)
        return component

    def depends(self, component: T) -> Callable[[], T]:
        """A FastAPI dependency (``Depends(redis.depends(cache))``) that
        hands ``component`` to a handler once the lifespan has started, and
        raises :class:`~redkit.ConfigError` saying how to wire it otherwise
        (an app built without ``lifespan=``, a test client used without
        ``with``). ``app.dependency_overrides`` can replace it in tests."""

        def provide() -> T:
            if self._state != "open":
                raise ConfigError(
                    f"{_name(component)} is used before redkit's Lifespan started "
                    f"(it is {self._state}): pass lifespan=... to FastAPI()/Starlette(), "
                    "and in tests enter the app (with TestClient(app): ...)"
                )
            return component

        provide.__name__ = f"provide_{type(component).__name__.lower()}"
        return provide

    # -- running ------------------------------------------------------------

    def __call__(self, app: object) -> AbstractAsyncContextManager[None]:
        """The lifespan of ``app``: ``FastAPI(lifespan=redis)``."""
        return self._running()

    def around(
        self, inner: Callable[[A], AbstractAsyncContextManager[S]]
    ) -> Callable[[A], AbstractAsyncContextManager[S]]:
        """A lifespan that opens redkit, then runs ``inner`` (the app's own
        lifespan: warm a cache, start a job) inside it, and closes redkit
        after ``inner`` has finished. What ``inner`` yields (a lifespan
        state mapping) is passed on to the server."""
        if not callable(inner):
            raise ConfigError(f"around() needs the app's lifespan function, got {inner!r:.80}")

        @contextlib.asynccontextmanager
        async def lifespan(app: A) -> AsyncIterator[S]:
            async with self, inner(app) as state:
                yield state

        return lifespan

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        async with self:
            yield

    async def __aenter__(self) -> Lifespan:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Check the connection and open every added component (see the
        class). Raises what failed, after closing what was opened."""
        if self._state != "closed":
            raise ConfigError(f"this Lifespan is already {self._state}")
        self._state = "opening"
        try:
            await self._check_connection()
            for part in self._parts:
                manager = part.open()
                await manager.__aenter__()
                self._stack.append((part.name, manager))
                log.debug("opened %s", part.name)
        except BaseException:
            await self._close_all()
            raise
        self._state = "open"

    async def stop(self) -> None:
        """Close what :meth:`start` opened, in reverse order, then the client.
        Never raises for a component that fails to close: it is logged."""
        if self._state in ("closed", "closing"):
            return
        await self._close_all()

    async def _close_all(self) -> None:
        self._state = "closing"
        try:
            while self._stack:
                name, manager = self._stack.pop()
                await self._close_step(name, manager.__aexit__(None, None, None))
            if self.close_client:
                await self._close_step("the Redis client", self.client.aclose())
        finally:
            self._state = "closed"

    async def _close_step(self, name: str, closing: Any) -> None:
        try:
            await bounded(closing, self.close_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            log.warning(
                "closing %s took longer than %gs; left it and went on", name, self.close_timeout
            )
        except Exception:
            log.error("closing %s failed; went on with the rest", name, exc_info=True)
        else:
            log.debug("closed %s", name)

    async def _check_connection(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        attempt = 0
        while True:
            left = deadline - loop.time()
            try:
                await bounded(_verify(self.client), max(left, 0.001))
                return
            except (asyncio.TimeoutError, TimeoutError):
                cause = f"no answer within {self.connect_timeout:g}s"
                failure: Exception | None = None
            except _failures.AUTH_REFUSED as exc:
                raise self._unreachable(describe_error(exc)) from exc
            except _failures.NETWORK as exc:
                cause = describe_error(exc)
                failure = exc
            except _failures.ANY as exc:  # NOAUTH and other refusals: final
                raise self._unreachable(describe_error(exc)) from exc
            left = deadline - loop.time()
            if left <= 0:
                raise self._unreachable(cause) from failure
            delay = min(left, backoff_delay(attempt, 0.05, 1.0))
            attempt += 1
            log.info(
                "Redis at %s not reachable (%s), retrying in %.0f ms",
                _address(self.client),
                cause,
                delay * 1000,
            )
            await asyncio.sleep(delay)

    def _unreachable(self, cause: str) -> ConnectionUnavailable:
        return ConnectionUnavailable(f"cannot connect to Redis at {_address(self.client)}: {cause}")


def _part_for(component: object) -> _Part:
    name = _name(component)
    if isinstance(component, Cache):
        cache = component
        return _Part(cache, name, lambda: _cache_open(cache))
    if isinstance(component, (Invalidator, DistributedLock)):
        # Both start in __aenter__ (an invalidator subscribes; a lock
        # service has nothing to start) and close in __aexit__.
        return _Part(component, name, lambda: component)
    if isinstance(component, StreamConsumer):
        consumer = component
        return _Part(consumer, f"stream consumer of {consumer.stream!r}", consumer.running)
    if isinstance(component, _PASSIVE):
        return _Part(component, name, _nothing)
    if isinstance(component, (Redis, RedisCluster)):
        raise ConfigError(
            "the client is the Lifespan's own (Lifespan(client)); add() is for components"
        )
    if hasattr(component, "__aenter__") and hasattr(component, "__aexit__"):
        manager: Any = component
        return _Part(component, name, lambda: manager)
    if callable(component):
        factory: Any = component
        return _Part(component, name, lambda: _checked(factory(), name))
    raise ConfigError(
        f"add() takes a redkit component, an async context manager or a function "
        f"returning one; got {component!r:.80}"
    )


@contextlib.asynccontextmanager
async def _cache_open(cache: Cache) -> AsyncIterator[None]:
    if cache.local is not None and not await cache.start():
        # The cache serves from Redis meanwhile and turns its local tier on
        # once the subscription is up: a warning, not a failed start.
        log.warning("the cache's invalidation channel is not subscribed yet; local tier off")
    try:
        yield
    finally:
        await cache.aclose()


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


def _checked(manager: object, name: str) -> AbstractAsyncContextManager[Any]:
    if not (hasattr(manager, "__aenter__") and hasattr(manager, "__aexit__")):
        raise ConfigError(f"{name} returned {manager!r:.80}, not an async context manager")
    return manager


def _name(component: object) -> str:
    name = getattr(component, "__qualname__", None) or type(component).__name__
    return str(name)


def _strings(values: Iterable[str], what: str) -> list[str]:
    if isinstance(values, str):
        values = [values]
    out = list(values)
    for value in out:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{what} must be non-empty strings, got {value!r}")
    return out


def _address(client: Client) -> str:
    """Where ``client`` connects, for messages (never credentials)."""
    if isinstance(client, RedisCluster):
        nodes = getattr(client.nodes_manager, "startup_nodes", {}) or {}
        return "cluster " + ",".join(nodes) if nodes else "a cluster"
    pool = client.connection_pool
    service = getattr(pool, "service_name", None)
    if service:
        return f"sentinel master {service}"
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
