"""Argument checks shared by every component: one rule for what a number
of seconds may be, so that a bad ttl or timeout raises the same
:class:`~redkit.errors.ConfigError` wherever it is passed."""

from __future__ import annotations

import math
from datetime import timedelta

from .errors import ConfigError

__all__ = ["MAX_SECONDS", "seconds", "ttl_ms"]

# Redis keeps expiry times as milliseconds in a signed 64-bit integer and
# refuses a PEXPIRE whose deadline would overflow it; 2**48 ms (about 8,900
# years) keeps every "now + ttl" far from that edge on any server clock, and
# is what a lease ttl has always been bounded by.
MAX_MS = 2**48
MAX_SECONDS = MAX_MS / 1000


def seconds(
    value: object,
    what: str,
    *,
    allow_zero: bool = False,
    maximum: float = MAX_SECONDS,
) -> float:
    """``value`` (int, float or timedelta) as finite seconds, positive (or,
    with ``allow_zero``, non-negative) and at most ``maximum``; else
    :class:`ConfigError` naming ``what`` and the value."""
    kind = type(value)
    if kind is float:
        number: float = value  # type: ignore[assignment]
    elif isinstance(value, timedelta):
        number = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int past the float range
            number = math.inf
    else:
        raise ConfigError(f"{what} must be a number of seconds or a timedelta, got {_show(value)}")
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{what} must be a finite number of seconds {bound}, got {_show(value)}")
    if number > maximum:
        raise ConfigError(f"{what} must be at most {int(maximum)} seconds, got {_show(value)}")
    return number


def ttl_ms(value: object, what: str = "ttl") -> int:
    """A ttl in whole milliseconds, at least 1 and at most :data:`MAX_MS`."""
    if type(value) is int and 0 < value <= MAX_MS // 1000:
        return value * 1000  # the common case, without the general checks
    return max(1, math.ceil(seconds(value, what) * 1000))


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
