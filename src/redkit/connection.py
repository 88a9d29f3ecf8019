"""connect(): one redis-py asyncio client for standalone, TLS, unix socket,
Sentinel or Cluster, verified before it is handed out. Its ordinary
commands share a few connections per server (:mod:`redkit._autopipeline`)
unless ``RedisSettings(autopipeline=False)``; the rest use its pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any, Union

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import ExponentialWithJitterBackoff

from ._autopipeline import ClientStats, PipelinedRedis
from ._cluster_pipelining import PipelinedRedisCluster
from ._failures import AUTH_REFUSED, CONNECTION_LOST, NETWORK, describe_error, is_cluster, timed_out
from ._pool import WaitingConnectionPool, WaitingRedisCluster, WaitingSentinelConnectionPool
from ._timing import backoff_delay
from .errors import ConnectionUnavailable, WrongEventLoop
from .settings import RedisSettings

__all__ = [
    "Client",
    "ClientStats",
    "WrongEventLoop",
    "build_client",
    "close",
    "connect",
    "describe_error",
    "is_cluster",
]

log = logging.getLogger("redkit.connection")

Client = Union["Redis", "RedisCluster"]
"""What :func:`connect` returns and every component accepts."""


async def connect(settings: RedisSettings | None = None, **overrides: Any) -> Client:
    """Build the client ``settings`` describe and check it with PING.

    With no settings, :meth:`RedisSettings.from_env` is used; ``overrides``
    replace single fields (``connect(url="redis://...")``). Start-up is tried
    ``1 + max_retries`` times with exponential backoff and full jitter while
    the failure looks transient; each attempt is bounded by
    ``connect_timeout``. A cluster client is fully initialised (slots and
    nodes known) before it is returned.

    Raises :class:`ConnectionUnavailable` naming the address and the cause.
    """
    if settings is None:
        settings = RedisSettings.from_env()
    if overrides:
        settings = settings.replace(**overrides)
    attempts = settings.max_retries + 1
    for attempt in range(attempts):
        client = _build(settings)
        try:
            await asyncio.wait_for(_verify(client), settings.connect_timeout)
            if settings.min_idle_conns and isinstance(client, Redis):
                await _open_idle(client, min(settings.min_idle_conns, settings.pool_size))
            return client
        except BaseException as exc:
            await _close_quietly(client)
            if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
                exc = timed_out(f"no answer to PING within {settings.connect_timeout:g}s")
            if not isinstance(exc, Exception):
                raise
            if attempt + 1 < attempts and _worth_retrying(exc):
                delay = backoff_delay(attempt, 0.05, 2.0)
                log.info(
                    "Redis at %s not reachable (%s), retrying in %.0f ms",
                    settings.address,
                    describe_error(exc),
                    delay * 1000,
                )
                await asyncio.sleep(delay)
                continue
            raise ConnectionUnavailable(
                f"cannot connect to Redis at {settings.address}: {describe_error(exc)}"
            ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def build_client(settings: RedisSettings | None = None, **overrides: Any) -> Client:
    """The client ``settings`` describe, without any I/O: it connects on its
    first command, on the event loop that runs it. For code that must hand a
    client to components before an event loop runs (an ASGI app's module
    level); :class:`redkit.Lifespan` checks it, as :func:`connect` does, when
    the app starts, and closes it when the app stops.

    With no settings, :meth:`RedisSettings.from_env` is used; ``overrides``
    replace single fields, as for :func:`connect`. A cluster client still
    needs ``await client.initialize()`` (the lifespan does it) before a burst
    of first commands."""
    if settings is None:
        settings = RedisSettings.from_env()
    if overrides:
        settings = settings.replace(**overrides)
    return _build(settings)


def _worth_retrying(exc: BaseException) -> bool:
    # The server may be starting or briefly unreachable; a wrong password
    # or a protocol error is final.
    return isinstance(exc, NETWORK) and not isinstance(exc, AUTH_REFUSED)


async def close(client: Client) -> None:
    """Close a client made by :func:`connect` and its pool."""
    await client.aclose()


def command_retry(settings: RedisSettings) -> Retry:
    """redis-py's per-command retry: only when the connection itself failed,
    never on a timeout, because a timed-out write may have been applied and
    repeating INCR or EVALSHA would apply it twice."""
    return Retry(
        ExponentialWithJitterBackoff(base=0.008, cap=0.5),
        settings.max_retries,
        supported_errors=(CONNECTION_LOST,),
    )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # a connection closed by the garbage collector
        return None


def _wrong_loop(owner: asyncio.AbstractEventLoop) -> WrongEventLoop:
    where = (
        "that loop has closed"
        if owner.is_closed()
        else "that loop still runs, in another thread or beside this one"
    )
    return WrongEventLoop(
        "this Redis client's connections were opened on another event loop "
        f"({where}), so it cannot be used on this one; nothing was sent. "
        "A client belongs to the loop that opened it: `asyncio.run(redkit.connect())` "
        "at import time opens it on a loop that ends at once. Create the client "
        "with redkit.build_client() at import time (no I/O) and open it in the app's "
        "lifespan (redkit.Lifespan), or call redkit.connect() inside the running loop."
    )


class _OwnLoop(AbstractConnection):
    """Checks, each time the pool hands the connection out, that it was opened
    on the loop now running. Without it a connection opened by a loop that
    has ended writes the command (which then runs on the server) and fails
    reading the answer with asyncio's "Event loop is closed" or "attached to
    a different loop"."""

    async def connect(self) -> None:
        writer = self._writer
        if writer is not None and self._reader is not None:
            # Connected: the base class would return here too (after its
            # retry wrapper, which this path skips).
            owner = getattr(writer, "_loop", None)
            if owner is not None and owner is not asyncio.get_running_loop():
                raise _wrong_loop(owner)
            return
        await super().connect()  # type: ignore[no-untyped-call]

    async def disconnect(self, *args: Any, **kwargs: Any) -> None:
        writer = self._writer
        owner = getattr(writer, "_loop", None) if writer is not None else None
        if owner is None or owner is _running_loop():
            await super().disconnect(*args, **kwargs)
            return
        # Its transport belongs to the other loop: closing it from here would
        # schedule a callback on that loop (an error once it has closed).
        # End the TCP session and forget the streams instead.
        self._reader = None
        self._writer = None
        self._parser.on_disconnect()  # type: ignore[no-untyped-call]
        if owner.is_closed():
            raw = writer.get_extra_info("socket") if writer is not None else None
            if raw is not None:
                with contextlib.suppress(OSError):
                    raw.shutdown(socket.SHUT_RDWR)
        elif writer is not None:
            with contextlib.suppress(RuntimeError):
                owner.call_soon_threadsafe(writer.close)


class _OwnLoopEachSend(_OwnLoop):
    """The same check for cluster nodes, whose connections are not handed out
    through ``connect()``: each command is written by
    ``send_packed_command``."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        writer = self._writer
        if writer is not None:
            owner = getattr(writer, "_loop", None)
            if owner is not None and owner is not asyncio.get_running_loop():
                raise _wrong_loop(owner)
        await super().send_packed_command(command, check_health)


class _Connection(_OwnLoop, Connection):
    pass


class _SSLConnection(_OwnLoop, SSLConnection):
    pass


class _UnixConnection(_OwnLoop, UnixDomainSocketConnection):
    pass


class _SentinelConnection(_OwnLoop, SentinelManagedConnection):
    pass


class _SentinelSSLConnection(_OwnLoop, SentinelManagedSSLConnection):
    pass


class _ClusterConnection(_OwnLoopEachSend, Connection):
    pass


class _ClusterSSLConnection(_OwnLoopEachSend, SSLConnection):
    pass


def _common_kwargs(settings: RedisSettings) -> dict[str, Any]:
    return {
        "username": settings.username,
        "password": settings.password,
        # redis-py's asyncio client has one socket timeout for reads and
        # writes; the larger of the two settings bounds both.
        "socket_timeout": max(settings.read_timeout, settings.write_timeout),
        "socket_connect_timeout": settings.connect_timeout,
        "socket_keepalive": True,
        "retry": command_retry(settings),
        "client_name": None,
    }


def _ssl_kwargs(settings: RedisSettings) -> dict[str, Any]:
    if not settings.ssl:
        return {}
    return {
        "ssl_ca_certs": settings.ssl_ca_certs,
        "ssl_certfile": settings.ssl_certfile,
        "ssl_keyfile": settings.ssl_keyfile,
        "ssl_cert_reqs": settings.ssl_cert_reqs,
    }


def _build(settings: RedisSettings) -> Client:
    common = _common_kwargs(settings)
    if settings.cluster:
        cluster_class = PipelinedRedisCluster if settings.autopipeline else WaitingRedisCluster
        cluster = cluster_class(
            host=settings.host,
            port=settings.port,
            # Each node gets at least redis-py's own default of 100
            # connections; past that, commands wait for one (see
            # WaitingRedisCluster) instead of failing.
            max_connections=max(settings.pool_size, 100),
            wait_timeout=settings.connect_timeout,
            # Without it, redis-py before 6 adds TimeoutError to the retry
            # object it is given (and so to every node's connections).
            retry_on_error=[CONNECTION_LOST],
            ssl=settings.ssl,
            **_ssl_kwargs(settings),
            **common,
        )
        # redis-py's cluster client takes no connection class; every node it
        # learns about is made from these kwargs, and the seed node exists.
        node_class = _ClusterSSLConnection if settings.ssl else _ClusterConnection
        cluster.connection_kwargs["connection_class"] = node_class
        for node in cluster.nodes_manager.startup_nodes.values():
            node.connection_class = node_class
        return cluster
    if settings.sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(settings.sentinels),
            sentinel_kwargs={
                "socket_timeout": settings.connect_timeout,
                "socket_connect_timeout": settings.connect_timeout,
                "username": settings.username,
                "password": settings.password,
            },
            db=settings.db,
            max_connections=settings.pool_size,
            **_ssl_kwargs(settings),
            **common,
        )
        # The pool asks Sentinel for the master like redis-py's own, and
        # waits for a free connection like the standalone pool.
        master: Redis = sentinel.master_for(
            settings.sentinel_master or "",
            redis_class=PipelinedRedis if settings.autopipeline else Redis,
            connection_pool_class=WaitingSentinelConnectionPool,
            connection_class=_SentinelSSLConnection if settings.ssl else _SentinelConnection,
            timeout=settings.connect_timeout,
        )
        return master
    pool_kwargs: dict[str, Any] = dict(common)
    retry = pool_kwargs.pop("retry")
    if settings.unix_socket_path:
        pool_kwargs.pop("socket_keepalive")
        pool_kwargs.pop("socket_connect_timeout")
        pool_kwargs["path"] = settings.unix_socket_path
        pool_kwargs["connection_class"] = _UnixConnection
    else:
        pool_kwargs["host"] = settings.host
        pool_kwargs["port"] = settings.port
        pool_kwargs["connection_class"] = _Connection
        if settings.ssl:
            pool_kwargs["connection_class"] = _SSLConnection
            pool_kwargs.update(_ssl_kwargs(settings))
    pool = WaitingConnectionPool(
        max_connections=settings.pool_size,
        # Waiting for a free connection is bounded like any other wait.
        timeout=settings.connect_timeout,
        db=settings.db,
        retry=retry,
        **pool_kwargs,
    )
    client_class = PipelinedRedis if settings.autopipeline else Redis
    client = client_class(connection_pool=pool, retry=retry)
    # A client given a pool leaves it open on aclose(); this pool is the
    # client's own, so closing the client closes its connections too.
    client.auto_close_connection_pool = True
    return client


async def _verify(client: Client) -> None:
    if isinstance(client, RedisCluster):
        await client.initialize()
        await client.ping(target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.ping()


async def _open_idle(client: Redis, count: int) -> None:
    pool = client.connection_pool
    conns = []
    try:
        for _ in range(count):
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
            conns.append(conn)
            await conn.connect()
    finally:
        for conn in conns:
            await pool.release(conn)


async def _close_quietly(client: Client) -> None:
    try:
        await client.aclose()
    except Exception:
        log.debug("closing a failed client raised", exc_info=True)
