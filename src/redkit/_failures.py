"""What counts as "Redis cannot serve this now", in one place.

Components that fail closed raise :class:`~redkit.ConnectionUnavailable`
for these and :class:`~redkit.RedisReplyError` for any other error answer;
components that fail open count both. Out of memory, read-only and a
cluster reconfiguring are here: retrying later (or on the new primary) can
succeed, and nothing the caller passed is wrong.
"""

from __future__ import annotations

import asyncio

from redis import exceptions as redis_errors

from .connection import describe_error
from .errors import ConnectionUnavailable, RedisReplyError

__all__ = ["UNAVAILABLE", "failure"]

UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # BusyLoadingError and AuthenticationError among them
    redis_errors.TimeoutError,
    redis_errors.ClusterError,
    redis_errors.RedisClusterException,
    redis_errors.ReadOnlyError,
    redis_errors.MasterDownError,
    redis_errors.TryAgainError,
    redis_errors.OutOfMemoryError,
    redis_errors.SlotNotCoveredError,
    OSError,
    asyncio.TimeoutError,
    TimeoutError,
)


def failure(what: str, exc: BaseException) -> ConnectionUnavailable | RedisReplyError:
    """The error to raise when Redis failed ``what`` with ``exc``."""
    if isinstance(exc, UNAVAILABLE):
        return ConnectionUnavailable(f"{what}: {describe_error(exc)}")
    return RedisReplyError(f"{what}: Redis answered with an error: {describe_error(exc)}")
