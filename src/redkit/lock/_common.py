"""Pieces shared by locks and semaphores: input checks, clock allowances and
the counters' fields."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import timedelta
from typing import Any

from .. import _validate
from ..errors import ConfigError
from ..keys import validate_key_part

log = logging.getLogger("redkit.lock")

Seconds = float | int | timedelta
"""A duration: seconds as a number, or a :class:`datetime.timedelta`."""

# Redis expires keys by its own clock; the client measures validity with its
# monotonic clock. The two may run at slightly different rates, so a lease is
# trusted for a little less than its TTL.
CLOCK_DRIFT = 0.01
CLOCK_MARGIN = 0.002


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
