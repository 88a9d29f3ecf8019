"""The redkit error tree.

Every error redkit raises on purpose derives from :class:`RedkitError`, so an
application can catch the library's failures in one place. Errors caused by a
redis-py exception keep it as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConnectionUnavailable",
    "LockError",
    "LockLost",
    "LockNotAcquired",
    "NotReplicated",
    "RedisReplyError",
    "RedisServerError",
    "RedkitError",
    "SerializationError",
    "WrongEventLoop",
]


class RedkitError(Exception):
    """Base class of every error redkit raises on purpose; catch it to handle
    any redkit failure. Raised itself only when an invariant that should
    never fail does (three freshly drawn random session ids all taken)."""


class ConfigError(RedkitError, ValueError):
    """Raised when a setting, environment variable or option has a value redkit
    cannot use. The message names the setting and the bad value (never a
    password). It is a ``ValueError`` too, so generic validation handlers see
    it."""


class ConnectionUnavailable(RedkitError, ConnectionError):
    """Raised when Redis cannot be reached or does not answer in time: refused
    connection, DNS failure, authentication failure, a paused or overloaded
    server past the timeout. Components that fail closed (sessions, locks,
    publishers, a fail-closed rate limiter) raise it; components that fail
    open (cache, default rate limiter) count it and carry on. The message
    names host and port, never the password."""


class NotReplicated(ConnectionUnavailable):
    """Raised by a write of a :class:`~redkit.SessionStore` or an acquire of
    a :class:`~redkit.lock.DistributedLock` made with ``replicas=N`` when
    fewer than N replicas acknowledged it within ``replica_timeout``
    (Redis ``WAIT``). The session write WAS applied on the primary and
    stays there (``WAIT`` undoes nothing); it is only not known to survive
    a failover. A lock attempt that took the lock gives it back (best
    effort) and fails. ``acknowledged`` and ``required`` are the counts. A
    :class:`ConnectionUnavailable`, so the session middleware answers 503."""

    def __init__(self, message: str, acknowledged: int = 0, required: int = 1) -> None:
        super().__init__(message)
        self.acknowledged = acknowledged
        self.required = required


class RedisReplyError(RedkitError):
    """Raised when Redis answers a command with an error that is not about
    reaching it and that retrying will not fix: ``WRONGTYPE`` (the key holds
    another kind of value), ``NOPERM`` (the ACL user may not run it), an
    unknown command. Components that fail closed (sessions, publishers)
    raise it; the cache and a fail-open rate limiter count it and carry on.
    Out of memory, read-only and cluster-reconfiguring answers mean Redis
    cannot serve now: those are :class:`ConnectionUnavailable`. The message
    quotes the server; the redis-py exception is the ``__cause__``."""


class SerializationError(RedkitError, TypeError):
    """Raised when a value cannot be encoded for Redis (an unsupported type,
    a non-string mapping key) or bytes read back cannot be decoded into the
    requested type. Nothing is written when encoding fails."""


class WrongEventLoop(RedkitError, RuntimeError):
    """Raised when a client is used on an event loop other than the one its
    connections were opened on, typically a client made with
    ``asyncio.run(redkit.connect())`` at import time and then used by an
    ASGI server's loop. Nothing is sent. The message says how to build the
    client instead: :func:`redkit.build_client` at import time (no I/O), opened in
    the app's lifespan (:class:`redkit.Lifespan`)."""


class RedisServerError(RedkitError):
    """Raised by the embedded server launcher (:mod:`redkit.server`) when no
    ``redis-server`` binary can be found, or a server process cannot be
    started, answer, or form a cluster (for instance, its port is taken)."""


class LockError(RedkitError):
    """Base class of :class:`LockNotAcquired` and :class:`LockLost`, to catch
    any lock failure in one place; never raised itself."""


class LockNotAcquired(LockError):
    """Raised when a lock or semaphore permit could not be acquired: held by
    someone else after every retry, or the wait timed out."""


class LockLost(LockError):
    """Raised by an operation on a lease that is no longer held: it expired,
    was deleted, or another holder took it."""
