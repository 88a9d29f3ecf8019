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
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from redis.asyncio import RedisCluster

from .. import _counters
from .._failures import describe_error
from .._link import Link, Outage, Timing, client_connect_timeout, endpoint
from .._timing import bounded
from .._validate import seconds
from ..connection import Client
from ..errors import ConfigError, SerializationError
from ._dispatch import Dispatcher, HandlerHost, HandlerStats, check_client, in_background
from ._envelope import Event, _decode_wire, _to_event, decode_plain_payload
from ._handlers import Registration
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
class SubscriberStats(HandlerStats):
    """Counters of a :class:`Subscriber` (since it was made)."""

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


class Subscriber(HandlerHost):
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
        self.client = check_client(client)
        self._counts = _counters.counts_for(SubscriberStats)  # the links count here too
        self._dispatch = Dispatcher(
            self._counts,
            max_concurrency=max_concurrency,
            handler_timeout=handler_timeout,
            drain_timeout=drain_timeout,
        )
        self.max_concurrency = self._dispatch.max_concurrency
        self.handler_timeout = self._dispatch.handler_timeout
        self.drain_timeout = self._dispatch.drain_timeout
        self.ping_interval = seconds(ping_interval, "ping_interval")
        self.ping_timeout = seconds(ping_timeout, "ping_timeout")
        self.connect_timeout = seconds(
            connect_timeout if connect_timeout is not None else client_connect_timeout(client),
            "connect_timeout",
        )
        self.backoff_base = seconds(backoff_base, "backoff_base")
        self.backoff_max = seconds(backoff_max, "backoff_max")
        if on_reconnect is not None and not callable(on_reconnect):
            raise ConfigError(f"on_reconnect must be callable, got {on_reconnect!r}")
        self.on_reconnect = on_reconnect
        self.sharded = bool(sharded)
        self._registry = self._dispatch.registry
        self._idle = self._dispatch.idle  # the reader hands calls to these workers
        self._channel_names: dict[bytes, str] = {}
        self._links: list[Link] = []
        self._subscribed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._stop: asyncio.Event | None = None

    def __repr__(self) -> str:
        state = "running" if self._running else "idle"
        return f"<Subscriber {state} types={sorted(self._registry.types)}>"

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
        self._dispatch.start(batches=False)
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
            await self._dispatch.drain()

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
        timeout = 10.0 if ready_timeout is None else seconds(ready_timeout, "ready_timeout")
        async with in_background(
            self.run(*channels, patterns=patterns),
            lambda: self._subscribed,
            timeout=timeout,
            drain_timeout=self.drain_timeout,
            what="subscriber",
            not_ready=f"subscriber not subscribed within {timeout:g}s: Redis unreachable or "
            "not answering",
        ):
            yield self

    async def wait_subscribed(self, timeout: float) -> bool:
        """Wait until every subscription is active; False after ``timeout``."""
        deadline = time.monotonic() + seconds(timeout, "timeout", allow_zero=True)
        while self._subscribed is None:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        try:
            await bounded(self._subscribed.wait(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            return False
        return True

    @property
    def subscribed(self) -> bool:
        """True while every channel and pattern is subscribed."""
        return self._subscribed is not None and self._subscribed.is_set()

    def stats(self) -> SubscriberStats:
        return _counters.snapshot(SubscriberStats, self._counts, in_flight=self._dispatch.in_flight)

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
            counts=self._counts,
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
                await bounded(result, self.handler_timeout)
        except Exception:
            log.exception("on_reconnect callback raised")

    # -- dispatch -----------------------------------------------------------

    def _prepare(
        self, channel: bytes, data: bytes
    ) -> tuple[tuple[Registration, ...], Event[Any], bytes] | None:
        """Decode one message into its event and handlers; None when it is
        skipped (malformed, or no handler for its type)."""
        counts = self._counts
        counts["received"] += 1
        try:
            wire, payload = _decode_wire(data)
            regs = self._registry.get(wire.type)
            if regs is None:
                counts["unhandled"] += 1
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
            counts["malformed"] += 1
            log.warning("skipped a malformed message on channel %r: %s", _text(channel), exc)
            return None
        except Exception as exc:
            # Decoding has no other failure; should one ever appear (a bug),
            # it costs this message, not the subscription.
            counts["malformed"] += 1
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
        await self._dispatch.worker_free()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._dispatch.tasks.spawn(coro)


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
