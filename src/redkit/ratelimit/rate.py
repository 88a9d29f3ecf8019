"""Rates: how many hits a key may make per period, parsed once."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable

from .._validate import seconds as check_seconds
from ..errors import ConfigError

__all__ = ["API_RATE", "AUTH_RATE", "USER_RATE", "Rate", "RateSpec", "parse_rates"]

MAX_LIMIT = 1_000_000_000
MAX_PERIOD = 10 * 366 * 86400.0  # ten years
_MAX_DIGITS = len(str(MAX_LIMIT))

_UNITS = {
    "ms": 0.001,
    "millisecond": 0.001,
    "milliseconds": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}
_NAMES = ((86400.0, "day"), (3600.0, "hour"), (60.0, "minute"), (1.0, "second"))
_RATE = re.compile(
    r"^\s*(?P<limit>[0-9]+)\s*(?:/|\s+per\s+)\s*(?P<count>[0-9]+(?:\.[0-9]+)?)?\s*(?P<unit>[a-z]+)\s*$",
    re.IGNORECASE | re.ASCII,
)


@dataclasses.dataclass(frozen=True)
class Rate:
    """``limit`` hits per ``period`` seconds.

    ``burst`` is used by the ``gcra`` algorithm only: how many hits a fresh
    key may make at once (default: ``limit``). The period (seconds, or a
    ``timedelta``) is kept to whole milliseconds, at least 1 ms and at most
    ten years. Invalid values raise :class:`ConfigError` naming them.

    >>> Rate.parse("5 per 30 seconds")
    Rate(limit=5, period=30.0, burst=None)
    >>> str(Rate.parse("100/minute"))
    '100/minute'
    """

    limit: int
    period: float
    burst: int | None = None

    def __post_init__(self) -> None:
        limit, period, burst = self.limit, self.period, self.burst
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise ConfigError(f"rate limit must be an int, got {limit!r}")
        if not 1 <= limit <= MAX_LIMIT:
            raise ConfigError(f"rate limit must be between 1 and {MAX_LIMIT}, got {limit}")
        # bounded well below what a Redis expiry can hold (redkit._validate)
        period = check_seconds(period, "rate period", maximum=MAX_PERIOD)
        ms = round(period * 1000)
        if ms < 1 or abs(ms - period * 1000) > 1e-6 * max(1.0, period * 1000):
            raise ConfigError(
                "rate period must be a whole number of milliseconds (at least 1 ms), "
                f"got {period!r}"
            )
        object.__setattr__(self, "period", ms / 1000)
        if burst is not None:
            if isinstance(burst, bool) or not isinstance(burst, int):
                raise ConfigError(f"rate burst must be an int, got {burst!r}")
            if not 1 <= burst <= MAX_LIMIT:
                raise ConfigError(f"rate burst must be between 1 and {MAX_LIMIT}, got {burst}")

    @property
    def period_ms(self) -> int:
        """The period in whole milliseconds."""
        return round(self.period * 1000)

    @property
    def capacity(self) -> int:
        """The largest cost one hit can have: ``burst`` if set, else ``limit``
        (only ``gcra`` uses ``burst``; the others always use ``limit``)."""
        return self.limit if self.burst is None else self.burst

    @staticmethod
    def parse(text: str) -> Rate:
        """Parse ``"100/minute"``, ``"10/s"``, ``"100/5 minutes"``,
        ``"5 per 30 seconds"``, ``"1000 per hour"``.

        Units: ms, s/sec/second, m/min/minute, h/hr/hour, d/day (singular or
        plural). Raises :class:`ConfigError` naming the text when it is not
        a rate or its limit or period is out of range.
        """
        if not isinstance(text, str):
            raise ConfigError(f"a rate must be a string like '100/minute', got {text!r}")
        return _parse(text)

    @classmethod
    def coerce(cls, value: RateSpec) -> Rate:
        """``value`` if it is a :class:`Rate`, else :meth:`parse` it."""
        if isinstance(value, Rate):
            return value
        return cls.parse(value)

    def __str__(self) -> str:
        for seconds, name in _NAMES:
            if self.period == seconds:
                text = f"{self.limit}/{name}"
                break
            if self.period % seconds == 0:
                # a whole count: not :g, which turns 1000000 into 1e+06
                text = f"{self.limit} per {round(self.period / seconds)} {name}s"
                break
        else:
            text = f"{self.limit} per {self.period_ms} ms"
        return text if self.burst is None else f"{text} (burst {self.burst})"


RateSpec = Rate | str
"""A :class:`Rate` or a string :meth:`Rate.parse` accepts."""


@functools.lru_cache(maxsize=1024)
def _parse(text: str) -> Rate:
    match = _RATE.match(text)
    if match is None:
        raise ConfigError(
            f"invalid rate {_show(text)}: expected '<limit>/<unit>', '<limit>/<n> <unit>' "
            "or '<limit> per <n> <unit>', e.g. '100/minute' or '5 per 30 seconds'"
        )
    unit = _UNITS.get(match["unit"].lower())
    if unit is None:
        raise ConfigError(
            f"invalid rate {_show(text)}: unknown unit {_show(match['unit'])} "
            "(use ms, second, minute, hour or day)"
        )
    digits = match["limit"].lstrip("0")
    if len(digits) > _MAX_DIGITS:
        # int() would refuse past 4,300 digits with a bare ValueError; any
        # limit this long is out of range anyway
        raise ConfigError(
            f"invalid rate {_show(text)}: rate limit must be between 1 and {MAX_LIMIT}"
        )
    count = float(match["count"]) if match["count"] else 1.0
    try:
        return Rate(int(digits or "0"), count * unit)
    except ConfigError as exc:
        raise ConfigError(f"invalid rate {_show(text)}: {exc}") from None


def _show(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def parse_rates(rates: RateSpec | Iterable[RateSpec]) -> tuple[Rate, ...]:
    """One or several rates as a tuple; raises :class:`ConfigError` for an
    empty list, a bad rate or the same rate given twice."""
    if isinstance(rates, (str, Rate)):
        return (Rate.coerce(rates),)
    try:
        items = list(rates)
    except TypeError:
        raise ConfigError(f"rates must be a rate or a list of rates, got {rates!r}") from None
    if not items:
        raise ConfigError("at least one rate is needed, got an empty list")
    parsed = tuple(Rate.coerce(item) for item in items)
    if len(set(parsed)) != len(parsed):
        raise ConfigError(f"the same rate is given twice in {[str(r) for r in parsed]}")
    return parsed


API_RATE = Rate(100, 60)
"""The API preset: 100 requests a minute per client IP."""
AUTH_RATE = Rate(5, 60)
"""The authentication preset: 5 attempts a minute per client IP."""
USER_RATE = Rate(60, 60)
"""The per-user preset: 60 requests a minute per user id (client IP when
there is no user)."""
