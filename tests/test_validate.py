from __future__ import annotations

import datetime as dt

import pytest

from redkit import ConfigError
from redkit._validate import MAX_MS, MAX_SECONDS, seconds, ttl_ms


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1.0), (0.25, 0.25), (dt.timedelta(minutes=2), 120.0), (MAX_SECONDS, MAX_SECONDS)],
)
def test_seconds_accepts_numbers_and_timedeltas(value: object, expected: float) -> None:
    assert seconds(value, "ttl") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "> 0"),
        (-1, "> 0"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (10**400, "finite"),  # past the float range: no OverflowError
        (1e300, "at most 281474976710 seconds"),
        (MAX_SECONDS * 1.0001, "at most"),
        (True, "number of seconds"),
        ("3s", "number of seconds"),
        (None, "number of seconds"),
    ],
)
def test_seconds_refuses_with_config_error_naming_the_argument(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        seconds(value, "idle ttl")
    assert str(caught.value).startswith("idle ttl ")
    assert len(str(caught.value)) < 120  # a 400-digit int is not printed whole


def test_zero_only_when_allowed() -> None:
    assert seconds(0, "timeout", allow_zero=True) == 0.0
    with pytest.raises(ConfigError):
        seconds(-0.5, "timeout", allow_zero=True)


def test_ttl_ms_rounds_up_and_stays_in_redis_range() -> None:
    assert ttl_ms(1) == 1000
    assert ttl_ms(0.0001) == 1
    assert ttl_ms(1.0005) == 1001
    assert ttl_ms(MAX_SECONDS) == MAX_MS
    with pytest.raises(ConfigError, match="ttl"):
        ttl_ms(1e14 * 10)
