"""What counts as "Redis failed", in one place.

Every redis-py and socket failure falls in one of four kinds:

- **unreachable** (:data:`UNREACHABLE`): no connection, or it broke;
- **timed out** (:data:`TIMED_OUT`): no answer within the read timeout;
- **refused now** (:data:`REFUSED`): the server answered that it cannot
  serve this now: out of memory, read-only (a replica, or a primary just
  deposed), no primary, a cluster reconfiguring or a slot not covered;
  retrying later, or on the new primary, can succeed;
- **error reply**: any other error answer (``WRONGTYPE``, ``NOPERM``, a
  script error): retrying cannot help.

The first three together are :data:`UNAVAILABLE`: Redis cannot serve now
and nothing the caller passed is wrong. The policy of each component
(``docs/errors.md`` has the table):

- the cache fails open: any failure (:data:`ANY`) is counted and the
  loader's value served;
- the rate limiter fails open by default (or closed, when configured):
  any failure is a decision of the configured kind, counted;
- the session store, locks and publishers fail closed: :func:`failure`
  turns an :data:`UNAVAILABLE` failure into
  :class:`~redkit.ConnectionUnavailable` and an error reply into
  :class:`~redkit.RedisReplyError` (:func:`mapped` does it around a block);
- the subscriber, the stream consumer and the cache's invalidation
  listener reconnect with backoff after a network failure
  (:data:`NETWORK`) and report the gap.

``ConfigError`` and ``SerializationError`` are never Redis failures: they
are raised before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import RedisCluster
from redis.asyncio.connection import Connection

from .errors import ConnectionUnavailable, RedisReplyError

__all__ = [
    "ANY",
    "AUTH_REFUSED",
    "CONNECTION_LOST",
    "ERROR_REPLY",
    "NETWORK",
    "NO_SCRIPT",
    "POOL_EXHAUSTED",
    "READ_ONLY",
    "REDIRECTED",
    "REFUSED",
    "TIMED_OUT",
    "UNAVAILABLE",
    "UNREACHABLE",
    "ClosedBeforeSent",
    "LostAfterWrite",
    "connection_lost",
    "describe_error",
    "failure",
    "is_cluster",
    "mapped",
    "not_sent",
    "read_timeout",
    "request_bound",
    "timed_out",
]

UNREACHABLE: tuple[type[Exception], ...] = (
    # BusyLoadingError, AuthenticationError and MaxConnectionsError among them
    redis_errors.ConnectionError,
    OSError,
)
TIMED_OUT: tuple[type[Exception], ...] = (
    redis_errors.TimeoutError,
    asyncio.TimeoutError,
    TimeoutError,
)
NETWORK = UNREACHABLE + TIMED_OUT
REFUSED: tuple[type[Exception], ...] = (
    redis_errors.ReadOnlyError,
    redis_errors.MasterDownError,
    redis_errors.TryAgainError,
    redis_errors.OutOfMemoryError,
    redis_errors.ClusterError,  # CLUSTERDOWN
    redis_errors.SlotNotCoveredError,
    redis_errors.RedisClusterException,  # no node known for a slot
)
UNAVAILABLE = NETWORK + REFUSED
ANY: tuple[type[Exception], ...] = (*UNAVAILABLE, redis_errors.RedisError)
"""Every failure of a request to Redis, error replies included."""

# Narrower names for the few places that tell failures apart further.
AUTH_REFUSED: tuple[type[Exception], ...] = (
    redis_errors.AuthenticationError,
    redis_errors.AuthorizationError,
)
"""A wrong password or a user without the right: asking again cannot help."""
CONNECTION_LOST = redis_errors.ConnectionError
"""The connection failed before an answer: the only failure redkit's
command retry repeats (a timed-out command may have been applied)."""
ERROR_REPLY = redis_errors.ResponseError
"""An error answer to a well-formed request."""
NO_SCRIPT = redis_errors.NoScriptError
"""EVALSHA of a script the server does not hold (yet)."""
READ_ONLY: tuple[type[Exception], ...] = (redis_errors.ReadOnlyError,)
"""The server is a replica (or a primary just deposed): a connection that
wants the primary must look for it again."""
POOL_EXHAUSTED: tuple[type[Exception], ...] = (redis_errors.MaxConnectionsError,)
REDIRECTED: tuple[type[Exception], ...] = (redis_errors.AskError,)  # MovedError among them
"""A cluster node's MOVED or ASK: the command did not run there."""
"""Every pooled connection busy (a burst beyond the pool): no request sent."""


def timed_out(message: str) -> Exception:
    """The error of a request that got no answer in time."""
    return redis_errors.TimeoutError(message)


class LostAfterWrite(redis_errors.ConnectionError):
    """Raised for a command written on a shared connection that failed
    before its reply came: it may have run, so nothing sends it again (the
    cluster client retries only the exact classes it lists, and this is
    not one of them)."""


def connection_lost(message: str) -> Exception:
    """The error of a request whose connection failed after it was written."""
    return LostAfterWrite(message)


class ClosedBeforeSent(redis_errors.ConnectionError):
    """Raised for a command whose client was closed before the command was
    written: it did not run, and nothing sends it later (a cluster client
    would otherwise reopen its connections to retry it)."""


def not_sent(message: str) -> Exception:
    """The error of a request that was never written (its client closed)."""
    return ClosedBeforeSent(message)


def failure(what: str, exc: BaseException) -> ConnectionUnavailable | RedisReplyError:
    """The error to raise when Redis failed ``what`` with ``exc``."""
    if isinstance(exc, UNAVAILABLE):
        return ConnectionUnavailable(f"{what}: {describe_error(exc)}")
    return RedisReplyError(f"{what}: Redis answered with an error: {describe_error(exc)}")


@contextlib.contextmanager
def mapped(what: str) -> Iterator[None]:
    """Raise :func:`failure` for any Redis failure of the block."""
    try:
        yield
    except ANY as exc:
        raise failure(what, exc) from exc


def describe_error(exc: BaseException) -> str:
    """A short, password-free account of a failure."""
    if isinstance(exc, redis_errors.AuthenticationError):
        return "authentication failed (wrong username or password)"
    if isinstance(exc, redis_errors.ResponseError) and "NOAUTH" in str(exc):
        return "the server requires a password"
    text = str(exc)
    if not text:
        text = "no answer in time" if isinstance(exc, TIMED_OUT) else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def is_cluster(client: Any) -> bool:
    """True for a Redis Cluster client."""
    return isinstance(client, RedisCluster)


def read_timeout(client: Any) -> float | None:
    """The socket timeout the client's connections apply to every read, or
    None when they wait forever (or it cannot be told)."""
    if isinstance(client, RedisCluster):
        kwargs = client.connection_kwargs
        connection_class: Any = kwargs.get("connection_class", Connection)
    else:
        pool = getattr(client, "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", None) or {}
        connection_class = getattr(pool, "connection_class", Connection)
    if "socket_timeout" in kwargs:
        value = kwargs["socket_timeout"]
    else:
        # Not given: the connection class's default applies (None before
        # redis-py 6, 5 s since).
        value = _default_socket_timeout(connection_class)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def request_bound(client: Any) -> float | None:
    """How long one request can take at most when Redis stops answering, as
    the client itself bounds it: its read timeout, provided it never sends a
    command again after a timeout (redis-py's default client does, up to 10
    times in 8.x; clients from :func:`redkit.connect` do not). None when the
    client does not bound a request that way."""
    timeout = read_timeout(client)
    if timeout is None:
        return None
    if isinstance(client, RedisCluster):
        kwargs = client.connection_kwargs
        retries = [getattr(client, "retry", None), kwargs.get("retry")]
    else:
        pool = getattr(client, "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", None) or {}
        retries = [kwargs.get("retry")]
    if kwargs.get("retry_on_timeout") or _has_timeout(kwargs.get("retry_on_error") or ()):
        return None
    for retry in retries:
        if retry is None:
            continue
        count = getattr(retry, "_retries", None)
        errors = getattr(retry, "_supported_errors", None)
        if not isinstance(count, int) or errors is None:
            return None  # a retry policy we cannot read: assume the worst
        if count != 0 and _has_timeout(errors):
            return None
    return timeout


def _has_timeout(errors: Any) -> bool:
    return any(isinstance(e, type) and issubclass(e, TIMED_OUT) for e in errors)


def _default_socket_timeout(connection_class: Any) -> object:
    for klass in getattr(connection_class, "__mro__", ()):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            parameter = inspect.signature(init).parameters.get("socket_timeout")
        except (TypeError, ValueError):
            return None
        if parameter is not None:
            return parameter.default
    return None
