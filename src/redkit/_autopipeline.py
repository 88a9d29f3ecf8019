"""The auto-pipelining client :func:`redkit.connect` returns.

:class:`PipelinedRedis` is a ``redis.asyncio.Redis`` whose ordinary
commands, from any number of tasks, go out on a few connections shared per
server (:mod:`redkit._mux`), so a burst of requests costs the server and
the client a handful of socket writes and reads instead of one round trip
per request on a pooled connection each. Replies are parsed by the same
redis-py callbacks, so every command method returns what it always did.

What keeps a connection of its own (:func:`shares` is the rule): commands
that block the connection (``BLPOP`` ..., ``XREAD``/``XREADGROUP`` with
``BLOCK``, ``WAIT``), transactions (``MULTI``/``EXEC``/``WATCH``), pub/sub,
commands that change the connection's state (``SELECT``, ``AUTH``,
``HELLO``, ``CLIENT ...``, ``RESET``, ``READONLY`` ...) and replies read
without decoding. They, and ``pipeline()``, use the client's pool as
before.

Head of line: replies come back in order, so a command queued behind a
large one waits for it. A connection with more than :data:`SPILL_BYTES`
of requests outstanding sends new commands to a second one
(:data:`SPREAD` per server), so a 10 MB write delays only what was already
queued behind it; a large *reply* (a ``GET`` of 10 MB) still holds up the
commands written after it on the same connection, for as long as the
transfer takes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.client import EMPTY_RESPONSE, NEVER_DECODE

from . import _counters
from ._failures import ERROR_REPLY
from ._mux import SharedConnection
from .errors import WrongEventLoop

__all__ = ["SPILL_BYTES", "SPREAD", "ClientStats", "PipelinedRedis", "Shared", "shares"]

SPREAD = 2
"""Shared connections per server at most."""
SPILL_BYTES = 256 << 10
"""Outstanding request bytes past which new commands try the next one."""

# Commands that hold or change the connection they run on.
_OWN_CONNECTION = frozenset(
    {
        # blocking
        "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP",
        "WAIT", "WAITAOF",
        # transactions
        "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH",
        # pub/sub and other modes
        "SUBSCRIBE", "UNSUBSCRIBE", "PSUBSCRIBE", "PUNSUBSCRIBE", "SSUBSCRIBE", "SUNSUBSCRIBE",
        "MONITOR", "SYNC", "PSYNC",
        # connection state
        "SELECT", "AUTH", "HELLO", "CLIENT", "RESET", "QUIT", "READONLY", "READWRITE",
        "ASKING",
        # stop the server or this connection for a while
        "SHUTDOWN", "DEBUG",
    }
)  # fmt: skip
# Blocking only with their BLOCK option.
_BLOCK_OPTION = frozenset({"XREAD", "XREADGROUP"})

_SHARED, _OWN, _IF_NOT_BLOCKING = 1, 0, 2
_routes: dict[Any, int] = {}


def shares(args: tuple[Any, ...], options: Mapping[str, Any]) -> bool:
    """Whether the command ``args`` may go on a shared connection."""
    name = args[0]
    route = _routes.get(name)
    if route is None:
        route = _route(name)
        if len(_routes) < 4096:  # names are few; never let odd ones grow it
            _routes[name] = route
    if route == _IF_NOT_BLOCKING:
        return not any(_is_block(arg) for arg in args[1:])
    return route == _SHARED and NEVER_DECODE not in options


def _route(name: Any) -> int:
    if isinstance(name, (bytes, bytearray, memoryview)):
        text = bytes(name).decode("utf-8", "replace")
    else:
        text = str(name)
    first = text.split(" ", 1)[0].upper()
    if first in _OWN_CONNECTION:
        return _OWN
    if first in _BLOCK_OPTION:
        return _IF_NOT_BLOCKING
    return _SHARED


def _is_block(arg: Any) -> bool:
    # redis-py passes the option as b"BLOCK" or "BLOCK"; a user may write it
    # in any case.
    if isinstance(arg, bytes):
        return len(arg) == 5 and arg.upper() == b"BLOCK"
    if isinstance(arg, str):
        return len(arg) == 5 and arg.upper() == "BLOCK"
    return False


@dataclasses.dataclass(frozen=True)
class ClientStats:
    """Counters of an auto-pipelining client (``client.stats()``)."""

    commands: int
    """Commands sent on shared connections."""
    batches: int
    """Socket writes that carried them."""
    dedicated: int
    """Commands that took a pooled connection of their own."""
    dropped: int
    """Replies read and thrown away because their caller had given up."""
    reconnects: int
    """Shared connections lost (or closed to follow a moved primary)."""
    in_flight: int = _counters.gauge()
    """Commands sent on shared connections and not answered yet."""

    @property
    def commands_per_write(self) -> float:
        """How many commands a socket write carried on average."""
        return self.commands / self.batches if self.batches else 0.0


class Shared:
    """The shared connections to one server (up to :data:`SPREAD`)."""

    def __init__(self, new: Callable[[], SharedConnection], *, timeout: float | None) -> None:
        self._new = new  # a connection to the server, unopened
        self._timeout = timeout
        self._connections = [new()]

    def pick(self) -> SharedConnection:
        """The connection the next command goes on."""
        connections = self._connections
        first = connections[0]
        if first.outstanding_bytes < SPILL_BYTES:
            return first
        for other in connections[1:]:
            if other.outstanding_bytes < SPILL_BYTES:
                return other
        if len(connections) < SPREAD:
            fresh = self._new()
            connections.append(fresh)
            return fresh
        return min(connections, key=lambda c: c.outstanding_bytes)

    @property
    def in_flight(self) -> int:
        return sum(c.outstanding for c in self._connections)

    async def run(
        self,
        args: tuple[Any, ...],
        options: dict[str, Any],
        callbacks: Mapping[Any, Callable[..., Any]],
        *,
        asking: bool = False,
    ) -> Any:
        """Send ``args`` and parse the reply the way redis-py's
        ``parse_response`` does; with ``asking``, ``ASKING`` goes right
        before it on the same connection (a cluster's ASK redirect)."""
        connection = self.pick()
        owner = connection.loop
        if owner is not None and owner is not asyncio.get_running_loop():
            raise wrong_loop(owner)
        if connection.full:
            await connection.wait_for_room(self._timeout)
        parts = connection.pack(args)
        size = len(parts[0]) if len(parts) == 1 else sum(map(len, parts))
        if asking:
            # Its reply is read in turn; only the command's matters.
            connection.send(_ASKING, len(_ASKING[0])).add_done_callback(_consume)
        try:
            response = await connection.send(parts, size)
        except ERROR_REPLY:
            if EMPTY_RESPONSE in options:
                return options[EMPTY_RESPONSE]
            raise
        if options:
            options.pop(EMPTY_RESPONSE, None)
            options.pop("keys", None)
        name = args[0]
        if name in callbacks:
            value = callbacks[name](response, **options)
            return await value if inspect.isawaitable(value) else value
        return response

    def retire(self) -> None:
        """Move every shared connection to a new socket (the primary moved)."""
        for connection in self._connections:
            connection.retire()

    async def aclose(self) -> None:
        for connection in self._connections:
            await connection.aclose()


_ASKING = [b"*1\r\n$6\r\nASKING\r\n"]


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def wrong_loop(owner: asyncio.AbstractEventLoop) -> WrongEventLoop:
    from .connection import _wrong_loop  # the one wording of this error

    return _wrong_loop(owner)


def _counts() -> dict[str, int]:
    return _counters.counts_for(ClientStats)


def _pool_timeout(pool: ConnectionPool) -> float | None:
    value = pool.connection_kwargs.get("socket_timeout")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


class PipelinedRedis(Redis):
    """A ``redis.asyncio.Redis`` that pipelines automatically (see the
    module's docstring); ``stats()`` counts what it did."""

    _shared: Shared | None = None
    _shared_counts: dict[str, int] | None = None

    def _group(self) -> Shared:
        shared = self._shared
        if shared is None:
            pool = self.connection_pool
            counts = self._stats_counts()
            watch = getattr(pool, "watch_master", None)
            if watch is not None:  # a Sentinel pool: follow the master's moves
                watch(self._moved)

            def make() -> AbstractConnection:
                connection: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
                return connection

            timeout = _pool_timeout(pool)
            shared = self._shared = Shared(
                functools.partial(
                    SharedConnection,
                    make,
                    counts,
                    timeout=timeout,
                    follow_primary=watch is not None,
                ),
                timeout=timeout,
            )
        return shared

    def _moved(self) -> None:
        if self._shared is not None:
            self._shared.retire()

    def _stats_counts(self) -> dict[str, int]:
        counts = self._shared_counts
        if counts is None:
            counts = self._shared_counts = _counts()
        return counts

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if (
            self.connection is not None
            or self.single_connection_client
            or not shares(args, options)
        ):
            self._stats_counts()["dedicated"] += 1
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        shared = self._shared
        if shared is None:
            shared = self._group()
        return await shared.run(args, options, self.response_callbacks)

    def stats(self) -> ClientStats:
        """What this client sent, and how."""
        shared = self._shared
        return _counters.snapshot(
            ClientStats,
            self._stats_counts(),
            in_flight=shared.in_flight if shared is not None else 0,
        )

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            await shared.aclose()
        await super().aclose(close_connection_pool)
