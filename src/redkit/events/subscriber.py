"""Subscriber: typed handlers on pub/sub channels and patterns, bounded
concurrency, and a dedicated connection that heals itself.

The connection is a :class:`redkit._link.Link` (built from the client's
connection parameters, never one of its pool's): while quiet it sends a
PING every ``ping_interval`` seconds and expects some reply within
``ping_timeout``; a dropped connection, a half-open one, or a server that
has stopped answering lead to a reconnect with full-jitter backoff, after
which every channel and pattern is subscribed again and the gap is
reported. A subscription that worked and was lost is retried within
``backoff_base`` and then at most every half second for the first 30 s of
the gap, so delivery resumes promptly after a failover; only longer
outages back off to ``backoff_max``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar, overload

from redis.asyncio import Redis, RedisCluster

from .. import _counters, _telemetry
from .._failures import describe_error
from .._link import Link, LinkStats, Outage, Timing, client_connect_timeout, endpoint
from .._timing import Sweeper, cancel_and_wait
from ..connection import Client
from ..errors import ConfigError, ConnectionUnavailable, SerializationError
from ._envelope import Event, _decode_wire, _to_event, decode_plain_payload
from ._handlers import (
    HandlerRegistry,
    PayloadError,
    Registration,
    call_unbounded,
    check_count,
    check_seconds,
    event_for,
    supervised,
)
from .publisher import check_channel, sharded_unsupported

__all__ = ["Gap", "Subscriber", "SubscriberStats"]

log = logging.getLogger("redkit.events")

H = TypeVar("H", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class Gap:
    """A stretch of time during which the subscriber was not subscribed.

    Events published on its channels in that time were not received (pub/sub
    keeps nothing); the ``on_reconnect`` callback gets this to let the
    application catch up (reload state, drop a local cache ...).
    """

    started: datetime
    """Wall-clock time (UTC) the loss of the connection was noticed."""
    ended: datetime
    """Wall-clock time (UTC) every subscription was back."""
    seconds: float
    """Length of the gap, measured on the monotonic clock."""
    attempts: int
    """Connection attempts it took to come back."""
    error: str
    """Why the connection was given up."""
    channels: tuple[str, ...]
    patterns: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SubscriberStats:
    """Counters of a :class:`Subscriber` (since it was made)."""

    received: int
    """Messages read from Redis (any content)."""
    handled: int
    """Handler calls that returned normally."""
    handler_errors: int
    """Handler calls that raised."""
    handler_timeouts: int
    """Handler calls cut off after ``handler_timeout``."""
    unhandled: int
    """Well-formed events of a type with no handler."""
    malformed: int
    """Messages that are not an event envelope (or whose payload does not
    decode as the handler's ``payload_type``), skipped."""
    disconnects: int
    """Connections lost or given up as half-open."""
    reconnects: int
    """Times every subscription was restored after a loss (= gaps reported)."""
    connect_failures: int
    """Connection attempts that failed."""
    gap_ms: int
    """Total milliseconds spent in gaps."""
    in_flight: int = _counters.gauge()
    """Handler calls running now."""


class Subscriber:
    """Runs handlers for events arriving on pub/sub channels.

    Register handlers with :meth:`on`, then ``await run("users",
    patterns=["audit.*"])`` (until cancelled) or ``async with
    running("users"):``.

    ``max_concurrency`` handler calls run at once; when all are busy the
    subscriber stops reading (Redis buffers on its side, up to its
    ``client-output-buffer-limit pubsub``) instead of queueing in memory.
    Each call is cut off after ``handler_timeout`` seconds; exceptions and
    timeouts are logged and counted and never stop the subscriber. Sync
    handlers run in a worker thread.

    Malformed messages (not JSON, fields missing, written by another
    publisher) are logged with their channel, counted and skipped. Events
    with no handler are counted as ``unhandled``.

    ``on_reconnect(gap)`` (sync or async) is called with a :class:`Gap` each
    time subscriptions are restored after a loss. ``drain_timeout`` bounds how
    long cancellation waits for running handlers before cancelling them.

    ``sharded=True`` subscribes with SSUBSCRIBE (Redis 7.0+; no patterns); on
    a cluster one connection per slot goes to the node owning it. Otherwise a
    cluster subscription uses one node (classic PUBLISH reaches every node's
    subscribers) and moves to another node if that one fails.
    """

    def __init__(
        self,
        client: Client,
        *,
        max_concurrency: int = 16,
        handler_timeout: float = 30.0,
        on_reconnect: Callable[[Gap], Any] | None = None,
        ping_interval: float = 5.0,
        ping_timeout: float = 3.0,
        connect_timeout: float | None = None,
        backoff_base: float = 0.1,
        backoff_max: float = 10.0,
        drain_timeout: float = 10.0,
        sharded: bool = False,
    ) -> None:
        if not isinstance(client, (Redis, RedisCluster)):
            raise ConfigError(
                f"client must be a redis.asyncio Redis or RedisCluster, got {type(client).__name__}"
            )
        self.client = client
        self.max_concurrency = check_count("max_concurrency", max_concurrency)
        self.handler_timeout = check_seconds("handler_timeout", handler_timeout)
        self.ping_interval = check_seconds("ping_interval", ping_interval)
        self.ping_timeout = check_seconds("ping_timeout", ping_timeout)
        self.connect_timeout = check_seconds(
            "connect_timeout",
            connect_timeout if connect_timeout is not None else client_connect_timeout(client),
        )
        self.backoff_base = check_seconds("backoff_base", backoff_base)
        self.backoff_max = check_seconds("backoff_max", backoff_max)
        self.drain_timeout = check_seconds("drain_timeout", drain_timeout, allow_zero=True)
        if on_reconnect is not None and not callable(on_reconnect):
            raise ConfigError(f"on_reconnect must be callable, got {on_reconnect!r}")
        self.on_reconnect = on_reconnect
        self.sharded = bool(sharded)
        self._registry = HandlerRegistry()
        self._sweeper: Sweeper | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # gap callbacks
        self._workers: list[asyncio.Task[None]] = []
        self._idle: collections.deque[asyncio.Future[_Job]] = collections.deque()
        self._reader_wait: asyncio.Future[None] | None = None
        self._in_flight = 0
        self._channel_names: dict[bytes, str] = {}
        self._links: list[Link] = []
        self._subscribed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._stop: asyncio.Event | None = None
        self._received = 0
        self._handled = 0
        self._handler_errors = 0
        self._handler_timeouts = 0
        self._unhandled = 0
        self._malformed = 0
        self._link_counts = _counters.counts_for(LinkStats)  # shared by every link

    def __repr__(self) -> str:
        state = "running" if self._running else "idle"
        return f"<Subscriber {state} types={sorted(self._registry.types)}>"

    # -- registration -------------------------------------------------------

    @overload
    def on(
        self, event_type: str, handler: None = None, *, payload_type: Any = None
    ) -> Callable[[H], H]: ...
    @overload
    def on(self, event_type: str, handler: H, *, payload_type: Any = None) -> H: ...
    def on(self, event_type: str, handler: Any = None, *, payload_type: Any = None) -> Any:
        """Register ``handler`` for events of ``event_type``; without a
        handler, return a decorator. With ``payload_type`` the handler gets
        ``event.payload`` built as that type (dataclass, msgspec Struct,
        pydantic model, ``list[T]`` ...). Several handlers of one type all run.
        """
        return self._registry.decorator(event_type, handler, payload_type)

    # -- running ------------------------------------------------------------

    async def run(self, *channels: str, patterns: Iterable[str] = ()) -> None:
        """Subscribe and dispatch events until cancelled (or :meth:`stop`).

        Connection problems never end it: it reconnects with backoff for as
        long as it runs. On cancellation it stops reading, waits up to
        ``drain_timeout`` for running handlers, cancels the rest and re-raises
        the cancellation. Raises :class:`~redkit.ConfigError` for a
        configuration the server cannot serve (``sharded=True`` before 7.0).
        """
        chans = _unique(check_channel(c) for c in channels)
        pats = _unique(check_channel(p, "pattern") for p in patterns)
        if not chans and not pats:
            raise ConfigError("run() needs at least one channel or pattern")
        if self.sharded and pats:
            raise ConfigError("sharded pub/sub has no patterns; subscribe to them unsharded")
        if self._running:
            raise RuntimeError("this Subscriber is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        if self._subscribed is None or self._loop is not loop:
            # Kept across runs of one loop, so wait_subscribed() called before
            # a run starts sees that run.
            self._loop = loop
            self._subscribed = asyncio.Event()
            self._stop = asyncio.Event()
        assert self._stop is not None
        self._stop.clear()
        self._subscribed.clear()
        self._sweeper = Sweeper(
            self.handler_timeout, interval=min(1.0, max(0.01, self.handler_timeout / 10))
        )
        self._idle.clear()
        self._workers = [asyncio.ensure_future(self._worker()) for _ in range(self.max_concurrency)]
        try:
            self._links = self._plan(chans, pats)
            if len(self._links) == 1:
                await self._links[0].run(self._stop)
            else:
                await _all_or_none([link.run(self._stop) for link in self._links])
        except Exception:
            log.error(
                "subscriber on %s %s stopped; their events are no longer handled",
                chans,
                pats,
                exc_info=True,
            )
            raise
        finally:
            self._running = False
            self._subscribed.clear()
            await self._drain()

    def stop(self) -> None:
        """Ask a running :meth:`run` to stop reading, drain and return."""
        if self._stop is not None:
            self._stop.set()

    @contextlib.asynccontextmanager
    async def running(
        self, *channels: str, patterns: Iterable[str] = (), ready_timeout: float | None = None
    ) -> AsyncIterator[Subscriber]:
        """Run in a background task for the ``async with`` block.

        Entering waits until every subscription is confirmed (at most
        ``ready_timeout`` seconds, default 10) and raises
        :class:`~redkit.ConnectionUnavailable` if that does not happen.
        Leaving cancels the task, which drains running handlers.

        Should :meth:`run` end with an exception inside the block (it never
        does for connection problems, malformed messages or handler errors),
        the block is cancelled where it waits and that exception is raised
        from the ``async with``, as :class:`asyncio.TaskGroup` does.
        """
        timeout = 10.0 if ready_timeout is None else check_seconds("ready_timeout", ready_timeout)
        task: asyncio.Future[Any] = asyncio.ensure_future(self.run(*channels, patterns=patterns))
        try:
            await self._wait_ready(task, timeout)
            async with supervised(task):
                yield self
        finally:
            await cancel_and_wait(task, self.drain_timeout + 10.0)
            if task.done() and not task.cancelled():
                task.result()

    async def _wait_ready(self, task: asyncio.Future[Any], timeout: float) -> None:
        await asyncio.sleep(0)  # let run() set up its state
        if task.done():
            task.result()
        assert self._subscribed is not None
        waiter: asyncio.Future[Any] = asyncio.ensure_future(self._subscribed.wait())
        try:
            done, _ = await asyncio.wait(
                {task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if task in done:
            task.result()
            raise ConnectionUnavailable("subscriber stopped before it was subscribed")
        if waiter not in done:
            raise ConnectionUnavailable(
                f"subscriber not subscribed within {timeout:g}s: Redis unreachable or not answering"
            )

    async def wait_subscribed(self, timeout: float) -> bool:
        """Wait until every subscription is active; False after ``timeout``."""
        deadline = time.monotonic() + check_seconds("timeout", timeout, allow_zero=True)
        while self._subscribed is None:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        try:
            await asyncio.wait_for(self._subscribed.wait(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            return False
        return True

    @property
    def subscribed(self) -> bool:
        """True while every channel and pattern is subscribed."""
        return self._subscribed is not None and self._subscribed.is_set()

    def stats(self) -> SubscriberStats:
        return SubscriberStats(
            received=self._received,
            handled=self._handled,
            handler_errors=self._handler_errors,
            handler_timeouts=self._handler_timeouts,
            unhandled=self._unhandled,
            malformed=self._malformed,
            **self._link_counts,
            in_flight=self._in_flight,
        )

    # -- connections --------------------------------------------------------

    def _plan(self, channels: tuple[str, ...], patterns: tuple[str, ...]) -> list[Link]:
        client = self.client
        if isinstance(client, RedisCluster) and self.sharded:
            by_slot: dict[int, list[str]] = {}
            for channel in channels:
                by_slot.setdefault(client.keyslot(channel), []).append(channel)
            return [
                self._link(tuple(chs), (), endpoint(client, slot=slot))
                for slot, chs in sorted(by_slot.items())
            ]
        return [self._link(channels, patterns, endpoint(client))]

    def _link(self, channels: tuple[str, ...], patterns: tuple[str, ...], where: Any) -> Link:
        def on_up(outage: Outage | None) -> None:
            self._on_subscribed(outage, channels, patterns)

        return Link(
            where,
            self._deliver,
            channels=channels,
            patterns=patterns,
            sharded=self.sharded,
            timing=Timing(
                self.ping_interval,
                self.ping_timeout,
                self.connect_timeout,
                self.backoff_base,
                self.backoff_max,
            ),
            log=log,
            label=f"subscriber ({where.label})",
            on_up=on_up,
            on_down=self._on_lost,
            check_reply=self._check_reply,
            counts=self._link_counts,
        )

    def _check_reply(self, exc: BaseException) -> None:
        if self.sharded and sharded_unsupported(exc):
            raise ConfigError(
                "sharded=True needs Redis 7.0 or newer (SSUBSCRIBE); this server "
                f"does not know it: {describe_error(exc)}"
            ) from exc

    def _on_lost(self, reason: str) -> None:
        assert self._subscribed is not None
        self._subscribed.clear()

    def _on_subscribed(
        self, outage: Outage | None, channels: tuple[str, ...], patterns: tuple[str, ...]
    ) -> None:
        assert self._subscribed is not None
        if all(link.subscribed for link in self._links):
            self._subscribed.set()
        if outage is None or self.on_reconnect is None:
            return
        self._spawn(self._report_gap(Gap(**vars(outage), channels=channels, patterns=patterns)))

    async def _report_gap(self, gap: Gap) -> None:
        assert self.on_reconnect is not None
        try:
            result = self.on_reconnect(gap)
            if isinstance(result, Awaitable):
                await asyncio.wait_for(result, self.handler_timeout)
        except Exception:
            log.exception("on_reconnect callback raised")

    # -- dispatch -----------------------------------------------------------

    def _prepare(
        self, channel: bytes, data: bytes
    ) -> tuple[tuple[Registration, ...], Event[Any], bytes] | None:
        """Decode one message into its event and handlers; None when it is
        skipped (malformed, or no handler for its type)."""
        self._received += 1
        try:
            wire, payload = _decode_wire(data)
            regs = self._registry.get(wire.type)
            if regs is None:
                self._unhandled += 1
                log.debug("no handler for event type %r on %r", wire.type, _text(channel))
                return None
            untyped = (
                decode_plain_payload(payload) if self._registry.needs_untyped(wire.type) else None
            )
            name = self._channel_names.get(channel)
            if name is None:
                if len(self._channel_names) >= 4096:  # patterns can match many
                    self._channel_names.clear()
                name = self._channel_names[channel] = _text(channel)
            return regs, _to_event(wire, untyped, data, name, None), payload
        except SerializationError as exc:
            self._malformed += 1
            log.warning("skipped a malformed message on channel %r: %s", _text(channel), exc)
            return None
        except Exception as exc:
            # Decoding has no other failure; should one ever appear (a bug),
            # it costs this message, not the subscription.
            self._malformed += 1
            log.warning(
                "skipped a message on channel %r that failed to decode (%s: %s); data starts %r",
                _text(channel),
                type(exc).__name__,
                exc,
                bytes(data[:80]),
            )
            return None

    def _deliver(self, channel: bytes, data: bytes) -> Awaitable[None] | None:
        """Hand one message to a free worker; an awaitable when the reader
        must wait for one first."""
        prepared = self._prepare(channel, data)
        if prepared is None:
            return None
        regs, event, payload = prepared
        idle = self._idle
        if len(regs) == 1 and idle:
            idle.popleft().set_result((regs[0], event, payload))
            return None
        return self._hand_out(regs, event, payload)

    async def _hand_out(
        self, regs: tuple[Registration, ...], event: Event[Any], payload: bytes
    ) -> None:
        idle = self._idle
        for reg in regs:
            if not idle:
                await self._wait_for_worker()
            idle.popleft().set_result((reg, event, payload))

    async def _wait_for_worker(self) -> None:
        """Every worker is busy: stop reading until one is free."""
        while not self._idle:
            waiter = self._reader_wait = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._reader_wait = None

    async def _worker(self) -> None:
        """Runs handler calls one after another; ``max_concurrency`` of these
        run at once (cheaper than a task per message)."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        sweeper = self._sweeper
        assert task is not None
        assert sweeper is not None
        idle = self._idle
        while True:
            waiter: asyncio.Future[_Job] = loop.create_future()
            idle.append(waiter)
            reader = self._reader_wait
            if reader is not None and not reader.done():
                reader.set_result(None)
            reg, event, payload = await waiter
            sweeper.enter()
            self._in_flight += 1
            try:
                if reg.payload_type is not None:
                    event = event_for(reg, event, payload)
                if reg.is_async and _telemetry.tracing is None:
                    await reg.handler(event)
                else:
                    await call_unbounded(reg, event)
                self._handled += 1
            except asyncio.CancelledError:
                if not sweeper.timed_out(task):
                    raise
                # The worker lives on.
                self._handler_timeouts += 1
                log.error(
                    "handler %s for %r timed out after %gs (event %s)",
                    reg.name,
                    event.type,
                    self.handler_timeout,
                    event.id,
                )
            except Exception as exc:
                self._handler_failed(reg, event, exc)
            finally:
                self._in_flight -= 1
                sweeper.leave(task)

    def _handler_failed(self, reg: Registration, event: Event[Any], exc: Exception) -> None:
        if isinstance(exc, PayloadError):
            self._malformed += 1
            log.warning(
                "event %s of type %r on %r: payload is not a %s: %s",
                event.id,
                event.type,
                event.channel,
                getattr(reg.payload_type, "__qualname__", reg.payload_type),
                exc,
            )
            return
        self._handler_errors += 1
        log.error(
            "handler %s for %r raised (event %s)",
            reg.name,
            event.type,
            event.id,
            exc_info=exc,
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        """Let running handler calls finish (at most ``drain_timeout``), then
        cancel them and the workers."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        # Polled: an Event would cost bookkeeping on every message.
        while self._in_flight and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(min(0.01, max(0.0, deadline - loop.time())))
        if self._in_flight:
            log.warning(
                "cancelling %d handler call(s) still running after %gs",
                self._in_flight,
                self.drain_timeout,
            )
        workers, self._workers = self._workers, []
        for task in [*workers, *self._tasks]:
            task.cancel()
        for waiter in self._idle:
            waiter.cancel()
        self._idle.clear()
        if workers or self._tasks:
            await asyncio.wait([*workers, *self._tasks], timeout=1.0)


_Job = tuple[Registration, Event[Any], bytes]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


async def _all_or_none(coros: Sequence[Awaitable[None]]) -> None:
    """Run ``coros`` together; the first failure cancels the others."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
