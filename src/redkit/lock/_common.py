"""Pieces shared by locks and semaphores: input checks, error mapping, time
bounds, backoff and counters."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import timedelta
from typing import Any, TypeVar

from redis import exceptions as redis_errors

from .. import _failures, _validate
from .._failures import describe_error
from ..errors import ConfigError, ConnectionUnavailable, RedkitError
from ..keys import validate_key_part

log = logging.getLogger("redkit.lock")

T = TypeVar("T")

Seconds = float | int | timedelta
"""A duration: seconds as a number, or a :class:`datetime.timedelta`."""

# Redis expires keys by its own clock; the client measures validity with its
# monotonic clock. The two may run at slightly different rates, so a lease is
# trusted for a little less than its TTL.
CLOCK_DRIFT = 0.01
CLOCK_MARGIN = 0.002

# Errors that mean "Redis could not be asked" rather than "Redis said no".
UNREACHABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterError,
    redis_errors.RedisClusterException,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
    OSError,
    asyncio.TimeoutError,
    TimeoutError,
)


def check_name(name: object, what: str = "lock name") -> str:
    """The name of a lock or semaphore; it becomes the hash tag of its keys,
    so it may not contain braces."""
    return validate_key_part(name, what, allow_braces=False)


def to_seconds(value: object, what: str, *, allow_zero: bool = False) -> float:
    """``value`` as positive (or, with ``allow_zero``, non-negative) finite
    seconds, else ``ConfigError`` naming it."""
    return _validate.seconds(value, what, allow_zero=allow_zero)


def to_ttl_ms(value: object) -> int:
    """A lease TTL in whole milliseconds (at least 1)."""
    return _validate.ttl_ms(value, "ttl")


def check_on_lost(value: object) -> None:
    if value in ("signal", "cancel") or callable(value):
        return
    raise ConfigError(f"on_lost must be 'signal', 'cancel' or a callable, got {value!r}")


# Any failure of a request: unreachable, or an error answer.
REQUEST_FAILED: tuple[type[BaseException], ...] = (*UNREACHABLE, redis_errors.RedisError)


def detail(exc: BaseException) -> str:
    """A short, password-free account of a failed request."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not str(exc):
        return "no answer in time"
    return describe_error(exc)


def unavailable(what: str, exc: BaseException) -> ConnectionUnavailable:
    """The error raised when Redis could not be asked ``what``."""
    return ConnectionUnavailable(f"{what}: {detail(exc)}")


def server_refused(what: str, exc: redis_errors.RedisError) -> RedkitError:
    """The error raised when Redis answered ``what`` with an error:
    :class:`ConnectionUnavailable` when it cannot serve now (out of memory,
    a cluster reconfiguring), :class:`~redkit.RedisReplyError` otherwise."""
    return _failures.failure(what, exc)


Task = asyncio.Task[Any] | None


@dataclasses.dataclass(frozen=True)
class LockStats:
    """Counters of one :class:`~redkit.lock.DistributedLock` (all its locks)
    or one :class:`~redkit.lock.Semaphore`, since it was created.

    ``acquired``: leases handed out. ``busy``: attempts that found the lock
    held (or every permit taken). ``timeouts``: acquisitions given up
    (``LockNotAcquired``). ``wakeups``: waits ended early because a holder
    released. ``released``: releases that freed a held lease.
    ``release_not_held``: releases that found the lease expired or taken
    (nothing was deleted). ``extended``: successful extensions, automatic or
    not. ``lost``: leases found lost. ``errors``: requests that failed
    because Redis was unreachable or answered with an error.
    """

    acquired: int = 0
    busy: int = 0
    timeouts: int = 0
    wakeups: int = 0
    released: int = 0
    release_not_held: int = 0
    extended: int = 0
    lost: int = 0
    errors: int = 0


class Counters:
    """The mutable side of :class:`LockStats`."""

    __slots__ = (
        "acquired",
        "busy",
        "errors",
        "extended",
        "lost",
        "release_not_held",
        "released",
        "timeouts",
        "wakeups",
    )

    def __init__(self) -> None:
        self.acquired = 0
        self.busy = 0
        self.timeouts = 0
        self.wakeups = 0
        self.released = 0
        self.release_not_held = 0
        self.extended = 0
        self.lost = 0
        self.errors = 0

    def snapshot(self) -> LockStats:
        return LockStats(
            acquired=self.acquired,
            busy=self.busy,
            timeouts=self.timeouts,
            wakeups=self.wakeups,
            released=self.released,
            release_not_held=self.release_not_held,
            extended=self.extended,
            lost=self.lost,
            errors=self.errors,
        )
