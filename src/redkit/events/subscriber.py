"""Subscriber: typed handlers on pub/sub channels and patterns, bounded
concurrency, and a dedicated connection that heals itself.

The subscriber reads from its own connection (never one of the client's pool),
built from the client's connection parameters. While the connection is quiet
it sends a PING every ``ping_interval`` seconds and expects some reply within
``ping_timeout``; a dropped connection, a half-open one, or a server that has
stopped answering are all seen that way and lead to a reconnect with
exponential backoff and full jitter, after which every channel and pattern is
subscribed again and the gap is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection

from .. import _counters
from .._failures import describe_error
from .._timing import backoff_delay, bounded, cancel_and_wait, raise_if_cancelled
from ..connection import Client
from ..errors import ConfigError, SerializationError
from ._dispatch import Dispatcher, HandlerHost, HandlerStats, check_client, in_background
from ._envelope import Event, _decode_wire, _to_event, decode_plain_payload
from ._handlers import Registration, check_seconds
from .publisher import check_channel, sharded_unsupported

__all__ = ["Gap", "Subscriber", "SubscriberStats"]

log = logging.getLogger("redkit.events")

H = TypeVar("H", bound=Callable[..., Any])
_NETWORK_ERRORS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    OSError,
    asyncio.TimeoutError,
    TimeoutError,
)


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


@dataclasses.dataclass
class _Link:
    """One dedicated connection's share of the subscriptions."""

    channels: tuple[str, ...]
    patterns: tuple[str, ...]
    make: Callable[[], AbstractConnection]
    label: str
    refresh: Callable[[], Awaitable[Any]] | None = None
    subscribed: bool = False
    attempts: int = 0
    lost_at: float | None = None
    lost_wall: datetime | None = None
    lost_error: str = ""
    rx: int = 0
    reader_waiting: bool = False
    drop_reason: str = ""


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
        self._counts = _counters.counts_for(SubscriberStats)
        self._dispatch = Dispatcher(
            self._counts,
            max_concurrency=max_concurrency,
            handler_timeout=handler_timeout,
            drain_timeout=drain_timeout,
        )
        self.max_concurrency = self._dispatch.max_concurrency
        self.handler_timeout = self._dispatch.handler_timeout
        self.drain_timeout = self._dispatch.drain_timeout
        self.ping_interval = check_seconds("ping_interval", ping_interval)
        self.ping_timeout = check_seconds("ping_timeout", ping_timeout)
        self.connect_timeout = check_seconds(
            "connect_timeout",
            connect_timeout if connect_timeout is not None else _client_connect_timeout(client),
        )
        self.backoff_base = check_seconds("backoff_base", backoff_base)
        self.backoff_max = check_seconds("backoff_max", backoff_max)
        if on_reconnect is not None and not callable(on_reconnect):
            raise ConfigError(f"on_reconnect must be callable, got {on_reconnect!r}")
        self.on_reconnect = on_reconnect
        self.sharded = bool(sharded)
        self._registry = self._dispatch.registry
        self._idle = self._dispatch.idle  # the reader hands calls to these workers
        self._channel_names: dict[bytes, str] = {}
        self._links: list[_Link] = []
        self._subscribed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._stop: asyncio.Event | None = None
        self._disconnects = 0
        self._reconnects = 0
        self._connect_failures = 0
        self._gap_ms = 0

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
                await self._serve(self._links[0])
            else:
                await _all_or_none([self._serve(link) for link in self._links])
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
        timeout = 10.0 if ready_timeout is None else check_seconds("ready_timeout", ready_timeout)
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
        deadline = time.monotonic() + check_seconds("timeout", timeout, allow_zero=True)
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
        # The connection side counts in attributes of its own.
        counts = {
            **self._counts,
            "disconnects": self._disconnects,
            "reconnects": self._reconnects,
            "connect_failures": self._connect_failures,
            "gap_ms": self._gap_ms,
        }
        return _counters.snapshot(SubscriberStats, counts, in_flight=self._dispatch.in_flight)

    # -- connections --------------------------------------------------------

    def _plan(self, channels: tuple[str, ...], patterns: tuple[str, ...]) -> list[_Link]:
        client = self.client
        if isinstance(client, RedisCluster):
            if self.sharded:
                by_slot: dict[int, list[str]] = {}
                for channel in channels:
                    by_slot.setdefault(client.keyslot(channel), []).append(channel)
                return [
                    _Link(
                        tuple(chs),
                        (),
                        _slot_owner_factory(client, slot),
                        f"slot {slot}",
                        # The slot may have moved: learn the owner again.
                        refresh=client.nodes_manager.initialize,
                    )
                    for slot, chs in sorted(by_slot.items())
                ]
            return [_Link(channels, patterns, _any_node_factory(client), "cluster")]
        return [_Link(channels, patterns, _pool_factory(client), "standalone")]

    async def _serve(self, link: _Link) -> None:
        """Keep ``link`` subscribed until stopped; every failure leads to a
        new connection after a backoff."""
        assert self._stop is not None
        while not self._stop.is_set():
            conn: AbstractConnection | None = None
            stop_wait: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
            try:
                link.attempts += 1
                conn = link.make()
                await asyncio.wait_for(conn.connect(), self.connect_timeout)  # type: ignore[no-untyped-call]
                raise_if_cancelled()
                session: asyncio.Future[Any] = asyncio.ensure_future(self._session(link, conn))
                try:
                    await asyncio.wait({session, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not session.done():
                        await cancel_and_wait(session, 10.0)
                if not session.cancelled():
                    session.result()  # raises why the session ended
                return  # stopped
            except _Dropped as exc:
                reason = str(exc)
            except _NETWORK_ERRORS as exc:
                reason = describe_error(exc) or type(exc).__name__
            except redis_errors.ResponseError as exc:
                if self.sharded and sharded_unsupported(exc):
                    raise ConfigError(
                        "sharded=True needs Redis 7.0 or newer (SSUBSCRIBE); this server "
                        f"does not know it: {describe_error(exc)}"
                    ) from exc
                reason = describe_error(exc)
            except redis_errors.RedisError as exc:
                reason = describe_error(exc)
            finally:
                stop_wait.cancel()
                if conn is not None:
                    await _close(conn)
            if link.subscribed:
                # A working subscription was lost: the gap starts now.
                link.subscribed = False
                assert self._subscribed is not None
                self._subscribed.clear()
                self._disconnects += 1
                link.lost_at = time.monotonic()
                link.lost_wall = datetime.now(timezone.utc)
                link.lost_error = reason
                link.attempts = 0
                delay = backoff_delay(0, self.backoff_base, self.backoff_base)
                log.warning("subscriber (%s) lost its connection: %s", link.label, reason)
            else:
                self._connect_failures += 1
                delay = backoff_delay(link.attempts, self.backoff_base, self.backoff_max)
                log.warning(
                    "subscriber (%s) cannot subscribe (attempt %d): %s; next try in %.0f ms",
                    link.label,
                    link.attempts,
                    reason,
                    delay * 1000,
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            raise_if_cancelled()
            if link.refresh is not None:
                try:
                    await asyncio.wait_for(link.refresh(), self.connect_timeout)
                except (redis_errors.RedisError, *_NETWORK_ERRORS) as exc:
                    log.debug("cluster topology refresh failed: %s", describe_error(exc))
                raise_if_cancelled()

    async def _session(self, link: _Link, conn: AbstractConnection) -> None:
        """Subscribe on ``conn`` and dispatch what arrives; raises
        :class:`_Dropped` (or a redis-py error) when the connection fails.

        Reads block without a timer (a timer per message costs as much as the
        rest of the dispatch); a heartbeat task watches the connection and
        closes it when it stops answering, which ends the read.
        """
        link.rx = 0
        link.reader_waiting = False
        link.drop_reason = ""
        confirmed = asyncio.Event()
        pending = 0
        if link.channels:
            command = "SSUBSCRIBE" if self.sharded else "SUBSCRIBE"
            await conn.send_command(command, *link.channels, check_health=False)
            pending += len(link.channels)
        if link.patterns:
            await conn.send_command("PSUBSCRIBE", *link.patterns, check_health=False)
            pending += len(link.patterns)
        raise_if_cancelled()
        heartbeat = asyncio.ensure_future(self._heartbeat(link, conn, confirmed))
        read = conn.read_response
        prepare = self._prepare
        idle = self._idle
        try:
            while True:
                try:
                    msg = await read(timeout=math.inf, disconnect_on_error=False)
                except _NETWORK_ERRORS:
                    if link.drop_reason:
                        raise _Dropped(link.drop_reason) from None
                    raise
                link.rx += 1
                kind = msg[0]
                if kind == b"message" or kind == b"smessage":
                    prepared = prepare(msg[1], msg[2])
                elif kind == b"pmessage":
                    prepared = prepare(msg[2], msg[3])
                else:
                    if kind in (b"subscribe", b"psubscribe", b"ssubscribe"):
                        pending -= 1
                        if pending == 0:
                            confirmed.set()
                            self._on_subscribed(link)
                    elif kind in (b"unsubscribe", b"punsubscribe", b"sunsubscribe"):
                        # Nobody here asked for it: the server dropped the
                        # subscription (a slot moved to another node).
                        raise _Dropped(f"server ended the subscription to {_text(msg[1])!r}")
                    continue  # PONG and confirmations carry no event
                if prepared is None:
                    continue
                regs, event, payload = prepared
                for reg in regs:
                    if idle:
                        idle.popleft().set_result((reg, event, payload))
                    else:
                        await self._wait_for_worker(link)
                        idle.popleft().set_result((reg, event, payload))
        finally:
            heartbeat.cancel()

    async def _heartbeat(
        self, link: _Link, conn: AbstractConnection, confirmed: asyncio.Event
    ) -> None:
        """Close ``conn`` when subscriptions are not confirmed within
        ``connect_timeout``, or when a quiet connection does not answer a
        PING within ``ping_timeout``."""
        try:
            await asyncio.wait_for(confirmed.wait(), self.connect_timeout)
        except asyncio.TimeoutError:
            await self._give_up(
                link, conn, f"subscriptions not confirmed within {self.connect_timeout:g}s"
            )
            return
        seen = link.rx
        while True:
            await asyncio.sleep(self.ping_interval)
            if link.rx != seen or link.reader_waiting:
                seen = link.rx  # traffic, or handlers full: alive
                continue
            await conn.send_command("PING", check_health=False)
            await asyncio.sleep(self.ping_timeout)
            if link.rx == seen and not link.reader_waiting:
                await self._give_up(
                    link,
                    conn,
                    f"no reply to PING within {self.ping_timeout:g}s (half-open connection "
                    "or stalled server)",
                )
                return
            seen = link.rx

    async def _give_up(self, link: _Link, conn: AbstractConnection, reason: str) -> None:
        link.drop_reason = reason
        await _close(conn)

    def _on_subscribed(self, link: _Link) -> None:
        link.subscribed = True
        assert self._subscribed is not None
        if all(other.subscribed for other in self._links):
            self._subscribed.set()
        attempts, link.attempts = link.attempts, 0
        if link.lost_at is None or link.lost_wall is None:
            log.info("subscribed (%s): %s %s", link.label, link.channels, link.patterns)
            return
        seconds = time.monotonic() - link.lost_at
        self._reconnects += 1
        self._gap_ms += int(seconds * 1000)
        report = Gap(
            started=link.lost_wall,
            ended=datetime.now(timezone.utc),
            seconds=seconds,
            attempts=attempts,
            error=link.lost_error,
            channels=link.channels,
            patterns=link.patterns,
        )
        link.lost_at = link.lost_wall = None
        log.warning(
            "subscriber (%s) resubscribed after a %.2fs gap (%s)",
            link.label,
            seconds,
            report.error,
        )
        if self.on_reconnect is not None:
            self._spawn(self._report_gap(report))

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
        counts = self._counts
        counts["received"] += 1
        registry = self._registry
        try:
            wire, payload = _decode_wire(data)
            regs = registry.get(wire.type)
            if regs is None:
                counts["unhandled"] += 1
                log.debug("no handler for event type %r on %r", wire.type, _text(channel))
                return None
            untyped = decode_plain_payload(payload) if registry.needs_untyped(wire.type) else None
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

    async def _wait_for_worker(self, link: _Link) -> None:
        """Every worker is busy: stop reading until one is free (the
        heartbeat takes a waiting reader for a live connection)."""
        link.reader_waiting = True
        try:
            await self._dispatch.worker_free()
        finally:
            link.reader_waiting = False

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._dispatch.tasks.spawn(coro)


class _Dropped(Exception):
    """The subscription connection is gone or no longer answers."""


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _client_connect_timeout(client: Client) -> float:
    kwargs = (
        client.connection_kwargs
        if isinstance(client, RedisCluster)
        else client.connection_pool.connection_kwargs
    )
    value = kwargs.get("socket_connect_timeout") or kwargs.get("socket_timeout")
    return float(value) if value else 5.0


_OVERRIDES = {"decode_responses": False, "protocol": 2, "health_check_interval": 0}
# redis-py 8's maintenance notifications need RESP3 or hiredis; a RESP2
# subscription connection built from a pool's arguments must leave them out,
# or it cannot connect where hiredis is not installed.
_DROPPED = frozenset({"maint_notifications_config", "maint_notifications_pool_handler", "protocol"})


def _connection_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in kwargs.items() if k not in _DROPPED}, **_OVERRIDES}


def _pool_factory(client: Redis) -> Callable[[], AbstractConnection]:
    pool = client.connection_pool

    def make() -> AbstractConnection:
        conn: AbstractConnection = pool.connection_class(
            **_connection_kwargs(pool.connection_kwargs)
        )
        return conn

    return make


def _node_connection(node: Any) -> AbstractConnection:
    conn: AbstractConnection = node.connection_class(**_connection_kwargs(node.connection_kwargs))
    return conn


def _any_node_factory(client: RedisCluster) -> Callable[[], AbstractConnection]:
    """Connections to the cluster's primaries in turn, starting at a random
    one: after a failure the next attempt tries another node."""
    turn = [random.randrange(1 << 16)]

    def make() -> AbstractConnection:
        nodes = client.get_primaries() or client.get_nodes()
        if not nodes:
            raise redis_errors.ConnectionError("the cluster client knows no nodes")
        turn[0] += 1
        return _node_connection(nodes[turn[0] % len(nodes)])

    return make


def _slot_owner_factory(client: RedisCluster, slot: int) -> Callable[[], AbstractConnection]:
    def make() -> AbstractConnection:
        node = client.nodes_manager.get_node_from_slot(slot)
        return _node_connection(node)

    return make


async def _close(conn: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.disconnect(nowait=True)


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
