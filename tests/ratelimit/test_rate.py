"""Rate parsing and validation (no Redis needed)."""

from __future__ import annotations

import pytest

from redkit import ConfigError
from redkit.ratelimit import API_RATE, AUTH_RATE, USER_RATE, Rate
from redkit.ratelimit.rate import parse_rates


@pytest.mark.parametrize(
    ("text", "limit", "period"),
    [
        ("100/minute", 100, 60.0),
        ("10/s", 10, 1.0),
        ("10/second", 10, 1.0),
        ("5 per 30 seconds", 5, 30.0),
        ("5 per second", 5, 1.0),
        ("1000 per hour", 1000, 3600.0),
        ("100/5 minutes", 100, 300.0),
        ("100/5minutes", 100, 300.0),
        ("3/day", 3, 86400.0),
        ("7 PER 2 Hours", 7, 7200.0),
        ("  20 / min ", 20, 60.0),
        ("50/250ms", 50, 0.25),
        ("1/1.5s", 1, 1.5),
    ],
)
def test_parses_the_usual_spellings(text, limit, period):
    rate = Rate.parse(text)
    assert (rate.limit, rate.period) == (limit, period)
    assert rate.burst is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("100", "invalid rate '100'"),
        ("100/", "invalid rate '100/'"),
        ("/minute", "invalid rate '/minute'"),
        ("0/minute", "between 1 and"),
        ("-5/minute", "invalid rate '-5/minute'"),
        ("5/0 seconds", "> 0, got 0.0"),
        ("5/fortnight", "unknown unit 'fortnight'"),
        ("five per minute", "invalid rate 'five per minute'"),
        ("5 per minute extra", "invalid rate"),
        ("5/0.0001s", "whole number of milliseconds"),
        ("5/1.0005s", "whole number of milliseconds"),
        ("", "invalid rate ''"),
        ("99999999999/second", "between 1 and"),
        ("1/100000 days", "at most 316224000 seconds"),
    ],
)
def test_bad_strings_raise_naming_the_value(text, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")) as info:
        Rate.parse(text)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((0, 60), "limit must be between 1 and"),
        ((-1, 60), "got -1"),
        ((5, 0), "> 0, got 0"),
        ((5, -3), "got -3"),
        ((5, float("nan")), "finite number of seconds > 0, got nan"),
        ((5, float("inf")), "finite number of seconds > 0, got inf"),
        ((5, 1e300), "at most 316224000 seconds, got 1e\\+300"),
        ((5, 10**400), "finite number of seconds"),
        ((True, 60), "must be an int"),
        ((5.5, 60), "must be an int, got 5.5"),
        (("5", 60), "must be an int"),
        ((5, "60"), "number of seconds"),
        ((5, 60, 0), "burst must be between 1"),
        ((5, 60, 2.5), "burst must be an int"),
    ],
)
def test_bad_values_raise_naming_the_value(args, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Rate(*args)


def test_non_strings_are_refused():
    with pytest.raises(ConfigError, match="42"):
        Rate.parse(42)  # type: ignore[arg-type]


def test_str_round_trips():
    for text in ("100/minute", "5 per 30 seconds", "1/second", "3/day", "7 per 2 hours"):
        assert str(Rate.parse(text)) == text
        assert Rate.parse(str(Rate.parse(text))) == Rate.parse(text)
    assert str(Rate(5, 0.25)) == "5 per 250 ms"
    assert str(Rate(1, 1_000_000)) == "1 per 1000000 seconds"  # not 1e+06
    assert Rate.parse(str(Rate(1, 1_000_000))) == Rate(1, 1_000_000)
    assert str(Rate(5, 60, burst=2)) == "5/minute (burst 2)"


def test_equal_rates_compare_and_hash_equal():
    assert Rate.parse("60/minute") == Rate(60, 60) == Rate(60, 60.0)
    assert len({Rate(1, 1), Rate.parse("1/s"), Rate.parse("1 per second")}) == 1
    assert Rate(5, 60, burst=2) != Rate(5, 60)


def test_capacity_and_period_ms():
    assert Rate(5, 60).capacity == 5
    assert Rate(5, 60, burst=9).capacity == 9
    assert Rate(5, 0.25).period_ms == 250


def test_parse_rates_validates_lists():
    assert parse_rates("1/s") == (Rate(1, 1),)
    assert parse_rates(["1/s", Rate(10, 60)]) == (Rate(1, 1), Rate(10, 60))
    with pytest.raises(ConfigError, match="empty"):
        parse_rates([])
    with pytest.raises(ConfigError, match="twice"):
        parse_rates(["1/s", "1 per second"])
    with pytest.raises(ConfigError, match="42"):
        parse_rates(42)  # type: ignore[arg-type]


def test_presets_match_the_go_service():
    assert Rate(100, 60) == API_RATE
    assert Rate(5, 60) == AUTH_RATE
    assert Rate(60, 60) == USER_RATE


@pytest.mark.parametrize(
    "text",
    [
        "1" * 5000 + "/second",  # int() refuses past 4,300 digits with a bare ValueError
        "0" * 5000 + "1" * 11 + "/second",
        "5/" + "9" * 5000 + " seconds",
        "5/\u212a",  # KELVIN SIGN, which [a-z] matches case-insensitively in Unicode mode
        "5/\u017fecond",  # LATIN SMALL LETTER LONG S, likewise
        "5\u00a0per\u00a0minute",
        "\ud800/minute",
        "5/minute\x00",
    ],
    ids=lambda text: ascii(text)[:30],
)
def test_hostile_strings_raise_config_error(text):
    with pytest.raises(ConfigError, match="invalid rate") as info:
        Rate.parse(text)
    assert len(str(info.value)) < 400  # the value is named, not echoed whole


def test_leading_zeros_and_timedelta_periods():
    from datetime import timedelta

    assert Rate.parse("0" * 100 + "5/minute") == Rate(5, 60)
    assert Rate(5, timedelta(minutes=1)) == Rate(5, 60)
    assert Rate(5, timedelta(minutes=1)).period == 60.0
