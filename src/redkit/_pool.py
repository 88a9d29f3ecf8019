"""A connection pool that waits for a free connection, cheaply.

redis-py's ``BlockingConnectionPool`` takes a condition variable and arms a
timeout on every checkout and return, which costs a standalone GET about 10%
of its throughput. This pool counts free slots with a semaphore instead: when
a slot is free, checkout is one uncontended semaphore step; only a caller
that must wait arms a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterPipeline
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ClusterDownError, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._sentinel_watch import MasterWatch

try:  # redis-py 6.2 and later run cluster pipelines through a strategy
    from redis.asyncio.cluster import PipelineStrategy as _PipelineStrategy
except ImportError:  # pragma: no cover - older redis-py
    _PipelineStrategy = None  # type: ignore[assignment,misc]

log = logging.getLogger("redkit.connection")

__all__ = ["WaitingConnectionPool", "WaitingRedisCluster", "WaitingSentinelConnectionPool"]


class WaitingConnectionPool(ConnectionPool):
    """At most ``max_connections`` connections; a checkout past that waits up
    to ``timeout`` seconds, then raises redis-py's ``ConnectionError``."""

    def __init__(self, *args: Any, timeout: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self._slots = asyncio.Semaphore(self.max_connections)

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), self.timeout)
            except asyncio.TimeoutError:
                raise RedisConnectionError(
                    f"no free connection within {self.timeout:g}s (pool of {self.max_connections})"
                ) from None
        else:
            await self._slots.acquire()
        try:
            async with self._lock:
                connection: AbstractConnection = self.get_available_connection()  # type: ignore[no-untyped-call]
        except BaseException:
            self._slots.release()
            raise
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        try:
            await super().release(connection)
        finally:
            self._slots.release()


class WaitingSentinelConnectionPool(WaitingConnectionPool, SentinelConnectionPool):
    """redis-py's Sentinel pool (each new connection asks Sentinel where the
    master is, and idle connections are dropped when it moves) with the
    waiting checkout of WaitingConnectionPool instead of failing with
    ``MaxConnectionsError`` past ``max_connections``.

    It also listens for the sentinels' ``+switch-master`` announcement
    (:mod:`redkit._sentinel_watch`): when the master moves, idle
    connections to the old address close at once and busy ones close as
    they come back, so no new command goes to a deposed primary."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)
        self._watch = MasterWatch(
            list(getattr(sentinel_manager, "sentinels", ())), service_name, self._master_moved
        )
        self._on_move: set[Callable[[], None]] = set()

    def watch_master(self, on_move: Callable[[], None]) -> None:
        """Call ``on_move`` each time the master moves (connections outside
        the pool, such as the shared ones, follow it that way)."""
        self._on_move.add(on_move)
        self._watch.start()

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        self._watch.start()
        return await super().get_connection(*args, **kwargs)

    async def _master_moved(self, address: tuple[str, int]) -> None:
        if self.master_address is not None and tuple(self.master_address) == address:
            return
        log.info("Sentinel master %s moved to %s:%s", self.service_name, *address)
        self.master_address = address
        for on_move in list(self._on_move):
            on_move()
        await super().disconnect(inuse_connections=False)

    async def release(self, connection: AbstractConnection) -> None:
        address = (getattr(connection, "host", None), getattr(connection, "port", None))
        if self.master_address is not None and address != tuple(self.master_address):
            # Written to the old primary before the move: its reply is in,
            # and the next use reconnects, asking Sentinel where to.
            with contextlib.suppress(Exception):
                await connection.disconnect()
        await super().release(connection)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        if inuse_connections:  # the client is closing
            await self._watch.stop()
            # The sentinels' own clients hold sockets too (the master lookup).
            for sentinel in getattr(self.sentinel_manager, "sentinels", ()):
                await sentinel.connection_pool.disconnect()
        await super().disconnect(inuse_connections)


# What the cluster client may send again after a failure: a connection that
# failed, or a cluster that was down or moving slots. Never a timeout: the
# command was written and may have run, and running INCR or a script twice is
# worse than reporting the failure (the standalone client's rule, see
# connection.command_retry). redis-py retries a TimeoutError too, whatever the
# ``retry`` object says.
_SEND_AGAIN_AFTER: tuple[type[Exception], ...] = (
    RedisConnectionError,
    ClusterDownError,
    SlotNotCoveredError,
)


_TIMEOUTS = (RedisTimeoutError, asyncio.TimeoutError, TimeoutError)


def _timed_out(result: object) -> bool:
    return isinstance(result, _TIMEOUTS)


class WaitingRedisCluster(RedisCluster):
    """redis-py's cluster client fails a command with ``MaxConnectionsError``
    when its node has no free connection; this one lets at most
    ``max_connections`` commands be in flight at once (so no node can run out,
    each command holding at most one connection per node) and makes the rest
    wait up to ``wait_timeout`` seconds.

    A command, pipeline or transaction that timed out is never sent again; one
    whose connection failed is retried as redis-py does."""

    # redis-py's execute_command retries ``type(e) in
    # self.__class__.ERRORS_ALLOW_RETRY`` (every version since 5.0), as do
    # cluster pipelines before redis-py 6.2.
    ERRORS_ALLOW_RETRY = _SEND_AGAIN_AFTER  # type: ignore[assignment]

    def __init__(self, *args: Any, wait_timeout: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wait_timeout = wait_timeout
        self._in_flight = asyncio.Semaphore(kwargs.get("max_connections", 100))

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        slots = self._in_flight
        if slots.locked():
            try:
                await asyncio.wait_for(slots.acquire(), self._wait_timeout)
            except asyncio.TimeoutError:
                raise RedisConnectionError(
                    f"no free cluster connection within {self._wait_timeout:g}s"
                ) from None
        else:
            await slots.acquire()
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            slots.release()

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint or (transaction and _PipelineStrategy is None):
            # redis-py's own refusal, with its message (no cluster
            # transactions before 6.2).
            return super().pipeline(transaction, shard_hint)
        return _NoRepeatPipeline(self, transaction)  # type: ignore[abstract]


class _NoRepeatPipeline(ClusterPipeline):
    """A cluster pipeline that keeps WaitingRedisCluster's rule."""

    __slots__ = ()
    ERRORS_ALLOW_RETRY = _SEND_AGAIN_AFTER  # type: ignore[assignment]  # redis-py < 6.2

    def __init__(self, client: RedisCluster, transaction: Any | None = None) -> None:
        if _PipelineStrategy is None:  # pragma: no cover - redis-py < 6.2
            super().__init__(client)
            return
        super().__init__(client, transaction)
        strategy = self._execution_strategy
        if type(strategy) is _PipelineStrategy:
            self._execution_strategy = _NoRepeatPipelineStrategy(self)
        elif isinstance(getattr(strategy, "_retry", None), Retry):
            # A transaction retries through its own copy of the client's
            # Retry, to which redis-py adds TimeoutError: make it one that
            # leaves timeouts out.
            old: Retry = strategy._retry  # type: ignore[attr-defined]
            strategy._retry = Retry(  # type: ignore[attr-defined]
                old._backoff,
                old.get_retries(),
                supported_errors=tuple(
                    e for e in old._supported_errors if not issubclass(e, _TIMEOUTS)
                ),
            )

    if _PipelineStrategy is None:  # pragma: no cover - redis-py < 6.2

        async def _execute(self, client: Any, stack: list[Any], *args: Any, **kwargs: Any) -> Any:
            # The pipeline's retry loop sends the batch again after the first
            # failed command's error when it is retryable; a command on
            # another node may have timed out, and its timeout is raised
            # instead, which ends the loop.
            try:
                return await super()._execute(client, stack, *args, **kwargs)  # type: ignore[misc]
            except _SEND_AGAIN_AFTER:
                timeout = next((c.result for c in stack if _timed_out(c.result)), None)
                if timeout is None:
                    raise
                raise timeout from None


if _PipelineStrategy is not None:

    class _NoRepeatPipelineStrategy(_PipelineStrategy):
        """redis-py's non-transactional cluster pipeline (6.2 and later) sends
        the whole batch again after any error in ERRORS_ALLOW_RETRY, timeouts
        included; this one stops at a timeout of any of its commands."""

        async def execute(
            self, raise_on_error: bool = True, allow_redirections: bool = True
        ) -> list[Any]:
            queue = self._command_queue
            if not queue:
                return []
            client = self._pipe.cluster_client
            attempts_left = client.retry.get_retries()
            try:
                while True:
                    try:
                        if client._initialize:
                            await client.initialize()
                        result: list[Any] = await self._execute(
                            client,
                            queue,
                            raise_on_error=raise_on_error,
                            allow_redirections=allow_redirections,
                        )
                        return result
                    except _SEND_AGAIN_AFTER:
                        # The error raised is the first failed command's; a
                        # command on another node may have timed out.
                        if attempts_left <= 0 or any(_timed_out(c.result) for c in queue):
                            raise
                        attempts_left -= 1
                        await client.aclose()
                        await asyncio.sleep(0.25)
            finally:
                await self.reset()  # type: ignore[no-untyped-call]
