"""The one pub/sub link: a dedicated connection kept subscribed.

The cache's invalidation listener, the events subscriber and the lock
waker each hold a :class:`Link`. It owns everything about the connection,
so that the three behave alike:

- **Where it connects** (:func:`endpoint`): a connection built from the
  client's own connection parameters, never one of its pooled connections.
  Standalone: the pool's connection class and arguments. Sentinel: the
  same, so each new connection asks the sentinels where the master is; and
  when the client's Sentinel pool hears the master moved (its
  ``master_address`` changes), the link leaves the deposed primary within
  a tenth of a second. Cluster: a node's connection class and arguments, the
  first primary the client lists (classic ``PUBLISH`` reaches every node;
  links of every process meet on the same node, so an announcement reaches
  them all at once) and the next one after each failure, or the slot's
  owner for sharded ``SSUBSCRIBE``. Every connection speaks RESP2
  with raw bytes, runs no health check and **never retries inside
  redis-py**: a connect fails once, at once, and this loop decides when to
  try again (redis-py's own retries would hold a read for seconds that the
  heartbeat needs).
- **Heartbeat**: subscriptions must be confirmed within
  ``connect_timeout``; then, whenever the connection has been quiet for
  ``ping_interval`` seconds, a PING goes out and some reply must come within
  ``ping_timeout``, or the connection is closed. A dropped connection, a
  half-open one and a paused server are all noticed that way. While the
  user stops reading on purpose (its workers are busy) the link counts as
  alive.
- **Reconnect schedule** (full jitter, :func:`redkit._timing.backoff_delay`):

  * a link that has not subscribed yet waits ``U(0, min(backoff_max,
    backoff_base * 2**n))`` before attempt ``n + 1``;
  * a subscription that worked and was lost is tried again within
    ``backoff_base``, and for the first :data:`redkit._timing.RECOVERY_WINDOW` seconds of
    the gap the waits stay below :data:`redkit._timing.RECOVERY_CAP` (or ``backoff_max``
    if smaller): a failover promotes a replica within seconds, and delivery
    then resumes within about ``RECOVERY_CAP`` of the new primary serving,
    instead of after a backoff that grew through the outage. A gap longer
    than the window falls back to the schedule above, so that a long outage
    is not hammered;
  * a Sentinel master announced moved: at once.
- **Gap report**: when a lost subscription is back, ``on_up`` gets an
  :class:`Outage` (when it was lost, when it came back, why, and how many
  attempts it took); ``on_down`` is told the moment it is lost.

Message dispatch stays the user's: the read loop hands each message's
channel and data to ``deliver``, which returns None, or an awaitable when
the reader must wait (the heartbeat knows it is waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from . import _counters
from ._failures import ANY, NETWORK, TIMED_OUT, describe_error
from ._timing import (
    TaskSet,
    backoff_delay,
    bounded,
    cancel_and_wait,
    raise_if_cancelled,
    recovery_delay,
)

__all__ = [
    "Endpoint",
    "Link",
    "LinkStats",
    "Outage",
    "Timing",
    "client_connect_timeout",
    "endpoint",
]

_FOLLOW_TICK = 0.1  # how often a Sentinel link looks whether the master moved

_SUBSCRIBED = {b"subscribe": False, b"ssubscribe": False, b"psubscribe": True}
_UNSUBSCRIBED = frozenset({b"unsubscribe", b"sunsubscribe", b"punsubscribe"})


@dataclasses.dataclass(frozen=True)
class Timing:
    """A link's heartbeat and reconnect schedule, in seconds."""

    ping_interval: float
    ping_timeout: float
    connect_timeout: float
    backoff_base: float
    backoff_max: float


@dataclasses.dataclass(frozen=True)
class LinkStats:
    """Connection counters of one or more links."""

    disconnects: int
    """Subscriptions that worked and were lost."""
    reconnects: int
    """Lost subscriptions restored (= outages reported)."""
    connect_failures: int
    """Connection or subscription attempts that failed."""
    gap_ms: int
    """Total milliseconds of outages."""


@dataclasses.dataclass(frozen=True)
class Outage:
    """A stretch of time a link was not subscribed."""

    started: datetime
    """Wall-clock time (UTC) the loss was noticed."""
    ended: datetime
    """Wall-clock time (UTC) every subscription was back."""
    seconds: float
    """Its length, on the monotonic clock."""
    attempts: int
    """Connection attempts it took to come back."""
    error: str
    """Why the connection was given up."""


class Dropped(Exception):
    """Raised inside a link's loop when its connection is given up (no
    heartbeat reply, the server ended a subscription, the master moved)."""


# -- where a link connects ----------------------------------------------------

# Options a subscription connection needs whatever the client's: raw bytes
# and RESP2 (the read loop parses push frames itself), no health-check PING
# before a command, and no retries inside redis-py (the link's loop retries).
_OVERRIDES: dict[str, Any] = {
    "decode_responses": False,
    "protocol": 2,
    "health_check_interval": 0,
    "retry_on_timeout": False,
    "retry_on_error": [],
}
# redis-py 8's maintenance notifications need RESP3 or hiredis; a RESP2
# connection built from a pool's arguments leaves them out.
_LEFT_OUT = frozenset({"maint_notifications_config", "maint_notifications_pool_handler"})


def connection_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A link connection's arguments, from a pool's or a cluster node's."""
    options = {k: v for k, v in kwargs.items() if k not in _LEFT_OUT}
    options.update(_OVERRIDES)
    options["retry"] = Retry(NoBackoff(), 0)
    return options


def client_connect_timeout(client: Any) -> float:
    """The client's connect timeout (its socket timeout, or 5 s)."""
    kwargs = (
        client.connection_kwargs
        if isinstance(client, RedisCluster)
        else client.connection_pool.connection_kwargs
    )
    value = kwargs.get("socket_connect_timeout") or kwargs.get("socket_timeout")
    return float(value) if value else 5.0


class Endpoint:
    """Makes a link's connections: see :func:`endpoint`."""

    __slots__ = ("_client", "_slot", "_turn", "follows", "label")

    def __init__(self, client: Any, slot: int | None, label: str) -> None:
        self._client = client
        self._slot = slot
        self._turn = -1
        self.label = label
        pool = None if isinstance(client, RedisCluster) else client.connection_pool
        # A Sentinel pool keeps where the master is now.
        self.follows = pool is not None and hasattr(pool, "master_address")

    def connection(self) -> AbstractConnection:
        client = self._client
        if not isinstance(client, RedisCluster):
            pool = client.connection_pool
            conn: AbstractConnection = pool.connection_class(
                **connection_kwargs(pool.connection_kwargs)
            )
            return conn
        if self._slot is not None:
            node = client.nodes_manager.get_node_from_slot(self._slot)
        else:
            nodes = client.get_primaries() or client.get_nodes()
            if not nodes:
                raise Dropped("the cluster client knows no nodes")
            # After a failure the next attempt tries the next node.
            self._turn += 1
            node = nodes[self._turn % len(nodes)]
        conn = node.connection_class(**connection_kwargs(node.connection_kwargs))
        return conn

    def moved(self, conn: AbstractConnection) -> bool:
        """True when ``conn`` is no longer where the master is."""
        if not self.follows:
            return False
        where = self._client.connection_pool.master_address
        here = (getattr(conn, "host", None), getattr(conn, "port", None))
        return where is not None and tuple(where) != here

    async def refresh(self) -> None:
        """Learn a moved slot's owner (sharded links only)."""
        if self._slot is not None:
            await self._client.nodes_manager.initialize()


def endpoint(client: Any, *, slot: int | None = None) -> Endpoint:
    """Where a link on ``client`` connects: its own server (standalone, or
    the Sentinel master), a cluster primary in turn, or on a cluster the
    owner of ``slot`` (for sharded subscriptions)."""
    if isinstance(client, RedisCluster):
        return Endpoint(client, slot, "cluster" if slot is None else f"slot {slot}")
    pool = getattr(client, "connection_pool", None)
    if pool is None or not hasattr(pool, "connection_kwargs"):
        raise TypeError(f"a pub/sub link needs a redis-py client, got {type(client).__name__}")
    return Endpoint(client, None, "sentinel" if hasattr(pool, "master_address") else "standalone")


# -- the link -----------------------------------------------------------------


class Link:
    """One dedicated connection subscribed to ``channels`` and ``patterns``
    (``sharded``: SSUBSCRIBE), kept subscribed by :meth:`run` on the
    schedule of ``timing``.

    ``deliver(channel, data)`` gets every message; ``on_up(outage)`` is
    called once every subscription is confirmed (``outage`` is None the
    first time), ``on_down(reason)`` as soon as a working subscription is
    lost, ``on_confirm(name)`` for every confirmed channel (channels added
    while connected included), and ``check_reply(exc)`` may raise instead of
    retrying after an error reply. Counters go to ``counts`` (a dict of
    :class:`LinkStats` fields, which several links may share). Messages go
    to ``log`` under ``label``.
    """

    def __init__(
        self,
        where: Endpoint,
        deliver: Callable[[bytes, bytes], Awaitable[Any] | None],
        *,
        channels: Iterable[str] = (),
        patterns: Iterable[str] = (),
        sharded: bool = False,
        timing: Timing,
        log: logging.Logger,
        label: str,
        on_up: Callable[[Outage | None], None] | None = None,
        on_down: Callable[[str], None] | None = None,
        on_confirm: Callable[[str], None] | None = None,
        check_reply: Callable[[BaseException], None] | None = None,
        counts: dict[str, int] | None = None,
    ) -> None:
        self.where = where
        self.channels: dict[str, None] = dict.fromkeys(channels)
        self.patterns: dict[str, None] = dict.fromkeys(patterns)
        self.sharded = sharded
        self.timing = timing
        self.log = log
        self.label = label
        self.counts = counts if counts is not None else _counters.counts_for(LinkStats)
        self.subscribed = False
        self.rx = 0
        """Replies read on the current connection."""
        self.reader_waiting = False
        """True while the reader waits for ``deliver``'s awaitable."""
        self._deliver = deliver
        self._on_up = on_up
        self._on_down = on_down
        self._on_confirm = on_confirm
        self._check_reply = check_reply
        self._conn: AbstractConnection | None = None  # subscribed or subscribing
        self._pending: set[tuple[bool, bytes]] = set()
        self._leaving: dict[bytes, int] = {}  # unsubscribes in flight
        self._writes = TaskSet()
        self._write_lock: asyncio.Lock | None = None
        self._drop_reason = ""
        self._attempts = 0
        self._failures = 0
        self._lost_at: float | None = None
        self._lost_wall: datetime | None = None
        self._lost_error = ""

    def __repr__(self) -> str:
        state = "subscribed" if self.subscribed else "not subscribed"
        return f"<Link {self.label} {state}>"

    @property
    def failing(self) -> bool:
        """True from the loss of a subscription (or a failed first attempt)
        until every subscription is confirmed again."""
        return not self.subscribed and (self._lost_at is not None or self._failures > 0)

    # -- channels added and removed while running ---------------------------

    def add(self, channel: str) -> None:
        """Subscribe to ``channel`` too (now if connected, else on connect)."""
        if channel in self.channels:
            return
        self.channels[channel] = None
        conn = self._conn
        if conn is not None:
            command = "SSUBSCRIBE" if self.sharded else "SUBSCRIBE"
            self._writes.spawn(self._send(conn, command, channel))

    def remove(self, channel: str) -> None:
        """Stop receiving ``channel``."""
        if channel not in self.channels:
            return
        del self.channels[channel]
        conn = self._conn
        if conn is not None:
            name = channel.encode()
            self._leaving[name] = self._leaving.get(name, 0) + 1
            self._writes.spawn(
                self._send(conn, "SUNSUBSCRIBE" if self.sharded else "UNSUBSCRIBE", channel)
            )

    async def _send(self, conn: AbstractConnection, *args: str) -> None:
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        try:
            async with self._write_lock:
                if conn is self._conn:
                    await conn.send_command(*args, check_health=False)
        except NETWORK as exc:
            # The read loop notices a broken connection by itself.
            self.log.debug("%s: %s not sent: %s", self.label, args[0], describe_error(exc))

    # -- the loop -------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Keep subscribed until cancelled or ``stop`` is set; connection
        failures never end it. Exceptions from ``deliver`` or
        ``check_reply`` do."""
        stop = stop if stop is not None else asyncio.Event()
        try:
            while not stop.is_set():
                conn: AbstractConnection | None = None
                moved = False
                stop_wait: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
                try:
                    self._attempts += 1
                    conn = self.where.connection()
                    await bounded(conn.connect(), self.timing.connect_timeout)  # type: ignore[no-untyped-call]
                    raise_if_cancelled()
                    session = asyncio.ensure_future(self._session(conn))
                    try:
                        await asyncio.wait(
                            {session, stop_wait}, return_when=asyncio.FIRST_COMPLETED
                        )
                    finally:
                        if not session.done():
                            await cancel_and_wait(session, 10.0)
                    if not session.cancelled():
                        session.result()  # raises why the session ended
                    return  # stopped
                except Dropped as exc:
                    reason = str(exc)
                    moved = conn is not None and self.where.moved(conn)
                except NETWORK as exc:
                    reason = describe_error(exc) or type(exc).__name__
                except ANY as exc:  # an error reply
                    if self._check_reply is not None:
                        self._check_reply(exc)
                    reason = describe_error(exc)
                finally:
                    stop_wait.cancel()
                    self._conn = None
                    if conn is not None:
                        await _close(conn)
                delay = self._failed(reason, moved)
                with contextlib.suppress(*TIMED_OUT):
                    await bounded(stop.wait(), delay)
                raise_if_cancelled()
                try:
                    await bounded(self.where.refresh(), self.timing.connect_timeout)
                except ANY as exc:
                    self.log.debug("cluster topology refresh failed: %s", describe_error(exc))
                raise_if_cancelled()
        finally:
            self.subscribed = False
            await self._writes.cancel(1.0)

    def _failed(self, reason: str, moved: bool) -> float:
        """Account for a failed connection; the seconds to wait."""
        now = time.monotonic()
        if self.subscribed:
            # A working subscription was lost: the gap starts now.
            self.subscribed = False
            self.counts["disconnects"] += 1
            self._lost_at = now
            self._lost_wall = datetime.now(timezone.utc)
            self._lost_error = reason
            self._attempts = 0
            self._failures = 0
            self.log.warning("%s: subscription lost (%s); reconnecting", self.label, reason)
            if self._on_down is not None:
                self._on_down(reason)
            return (
                0.0
                if moved
                else backoff_delay(0, self.timing.backoff_base, self.timing.backoff_base)
            )
        self.counts["connect_failures"] += 1
        self._failures += 1
        lost_for = None if self._lost_at is None else now - self._lost_at
        delay = (
            0.0
            if moved
            else recovery_delay(
                self._attempts, self.timing.backoff_base, self.timing.backoff_max, lost_for=lost_for
            )
        )
        # The first failure of a stretch is worth a warning; the retries not.
        self.log.log(
            logging.WARNING if self._failures == 1 else logging.DEBUG,
            "%s: cannot subscribe (attempt %d): %s; next try in %.0f ms",
            self.label,
            self._attempts,
            reason,
            delay * 1000,
        )
        return delay

    async def _session(self, conn: AbstractConnection) -> None:
        """Subscribe on ``conn`` and read what arrives until it fails.

        Reads block without a timer (a timer per message costs as much as
        the rest of the dispatch); the heartbeat task closes the connection
        when it stops answering, which ends the read.
        """
        self.rx = 0
        self.reader_waiting = False
        self._drop_reason = ""
        self._leaving.clear()
        confirmed = asyncio.Event()
        channels, patterns = tuple(self.channels), tuple(self.patterns)
        self._pending = {(False, c.encode()) for c in channels}
        self._pending.update((True, p.encode()) for p in patterns)
        self._conn = conn
        if channels:
            await self._send(conn, "SSUBSCRIBE" if self.sharded else "SUBSCRIBE", *channels)
        if patterns:
            await self._send(conn, "PSUBSCRIBE", *patterns)
        raise_if_cancelled()
        if not self._pending:
            self._up(confirmed)
        heartbeat = asyncio.ensure_future(self._heartbeat(conn, confirmed))
        read = conn.read_response
        deliver = self._deliver
        try:
            while True:
                try:
                    msg = await read(timeout=math.inf, disconnect_on_error=False)
                except NETWORK:
                    if self._drop_reason:
                        raise Dropped(self._drop_reason) from None
                    raise
                self.rx += 1
                kind = msg[0]
                if kind == b"message" or kind == b"smessage":
                    waiting = deliver(msg[1], msg[2])
                elif kind == b"pmessage":
                    waiting = deliver(msg[2], msg[3])
                else:
                    self._control(kind, msg, confirmed)
                    continue
                if waiting is not None:
                    self.reader_waiting = True
                    try:
                        await waiting
                    finally:
                        self.reader_waiting = False
        finally:
            heartbeat.cancel()

    def _control(self, kind: bytes, msg: Any, confirmed: asyncio.Event) -> None:
        pattern = _SUBSCRIBED.get(kind)
        if pattern is not None:
            name = msg[1]
            if self._on_confirm is not None and not pattern:
                self._on_confirm(_text(name))
            pending = self._pending
            if pending:
                pending.discard((pattern, name))
                if not pending:
                    self._up(confirmed)
        elif kind in _UNSUBSCRIBED:
            name = msg[1]
            left = self._leaving.get(name)
            if left is not None:
                if left > 1:
                    self._leaving[name] = left - 1
                else:
                    del self._leaving[name]
                return
            # Nobody here asked for it: the server dropped the subscription
            # (a slot moved to another node).
            raise Dropped(f"server ended the subscription to {_text(name)!r}")
        # PONG carries nothing

    def _up(self, confirmed: asyncio.Event) -> None:
        confirmed.set()
        self.subscribed = True
        attempts, self._attempts = self._attempts, 0
        self._failures = 0
        if self._lost_at is None or self._lost_wall is None:
            self.log.info(
                "%s: subscribed (%s) %s %s",
                self.label,
                self.where.label,
                list(self.channels),
                list(self.patterns),
            )
            if self._on_up is not None:
                self._on_up(None)
            return
        seconds = time.monotonic() - self._lost_at
        self.counts["reconnects"] += 1
        self.counts["gap_ms"] += int(seconds * 1000)
        outage = Outage(
            started=self._lost_wall,
            ended=datetime.now(timezone.utc),
            seconds=seconds,
            attempts=attempts,
            error=self._lost_error,
        )
        self._lost_at = self._lost_wall = None
        self.log.warning(
            "%s: subscribed again after a %.2fs gap (%s)", self.label, seconds, outage.error
        )
        if self._on_up is not None:
            self._on_up(outage)

    async def _heartbeat(self, conn: AbstractConnection, confirmed: asyncio.Event) -> None:
        """Close ``conn`` when subscriptions are not confirmed within
        ``connect_timeout``, when a quiet connection does not answer a PING
        within ``ping_timeout``, or when the Sentinel master moved."""
        try:
            try:
                await bounded(confirmed.wait(), self.timing.connect_timeout)
            except TIMED_OUT:
                reason = f"subscriptions not confirmed within {self.timing.connect_timeout:g}s"
                await self._give_up(conn, reason)
                return
            seen = self.rx
            while True:
                if await self._quiet(conn, self.timing.ping_interval):
                    await self._give_up(conn, "the Sentinel master moved")
                    return
                if self.rx != seen or self.reader_waiting:
                    seen = self.rx  # traffic, or the user's workers are full: alive
                    continue
                await self._send(conn, "PING")
                if await self._quiet(conn, self.timing.ping_timeout):
                    await self._give_up(conn, "the Sentinel master moved")
                    return
                if self.rx == seen and not self.reader_waiting:
                    reason = (
                        f"no reply to PING within {self.timing.ping_timeout:g}s (half-open "
                        "connection or stalled server)"
                    )
                    await self._give_up(conn, reason)
                    return
                seen = self.rx
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave a dead link unwatched
            await self._give_up(conn, f"heartbeat failed: {describe_error(exc)}")

    async def _quiet(self, conn: AbstractConnection, seconds: float) -> bool:
        """Sleep ``seconds``; True as soon as the master moved away from ``conn``."""
        where = self.where
        if not where.follows:
            await asyncio.sleep(seconds)
            return False
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while True:
            if where.moved(conn):
                return True
            left = end - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(left, _FOLLOW_TICK))

    async def _give_up(self, conn: AbstractConnection, reason: str) -> None:
        self._drop_reason = reason
        await _close(conn)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


async def _close(conn: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.disconnect(nowait=True)
