"""Property tests for rates: any text parses to a Rate or raises
ConfigError, any constructor arguments likewise, and a Rate's string form
parses back to it (no Redis needed)."""

from __future__ import annotations

import math
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from redkit import ConfigError
from redkit.ratelimit import Rate
from redkit.ratelimit.rate import MAX_LIMIT, MAX_PERIOD, parse_rates

SETTINGS = settings(max_examples=300, deadline=None)

UNITS = ["ms", "s", "sec", "second", "seconds", "m", "min", "minute", "h", "hour", "d", "days"]
units = st.sampled_from([*UNITS, "fortnight", "K", "\u212a", "\u017fecond", "S", "MINUTES", ""])
numbers = st.one_of(
    st.integers(-10, 10**12).map(str),
    st.integers(0, 6000).map(lambda n: "9" * n),
    st.integers(0, 6000).map(lambda n: "0" * n + "1"),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "1.5", "0.001", "1e3", "\u0661", "\uff15", "-0", "+5"]),
)
separators = st.sampled_from(["/", " / ", " per ", "per", " PER ", "/\u00a0", "\x00/", "//"])
spaces = st.sampled_from(["", " ", "\t", "\u00a0", "\u2003", "\n"])


@st.composite
def rate_like(draw: st.DrawFn) -> str:
    return "".join(
        [
            draw(spaces),
            draw(numbers),
            draw(separators),
            draw(st.one_of(st.just(""), numbers)),
            draw(spaces),
            draw(units),
            draw(spaces),
        ]
    )


texts = st.one_of(
    rate_like(),
    st.text(st.characters(exclude_categories=()), max_size=80),  # lone surrogates too
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)


def check(rate: Rate) -> None:
    assert 1 <= rate.limit <= MAX_LIMIT
    assert 0.001 <= rate.period <= MAX_PERIOD
    assert rate.period_ms == round(rate.period * 1000)
    if rate.burst is None:
        assert Rate.parse(str(rate)) == rate


@SETTINGS
@given(texts)
def test_any_text_is_a_rate_or_config_error(text):
    try:
        rate = Rate.parse(text)
    except ConfigError as exc:
        error = str(exc)
    else:
        check(rate)
        assert parse_rates(text) == (rate,)
        return
    assert len(error) < 500  # names the value without echoing all of it


@SETTINGS
@given(
    st.one_of(st.integers(), st.integers(-(10**400), 10**400), st.floats(), st.booleans()),
    st.one_of(
        st.integers(),
        st.integers(-(10**400), 10**400),
        st.floats(allow_nan=True, allow_infinity=True),
        st.timedeltas(),
        st.booleans(),
        st.text(max_size=5),
        st.none(),
    ),
    st.one_of(st.none(), st.integers(), st.floats()),
)
def test_any_arguments_are_a_rate_or_config_error(limit, period, burst):
    try:
        rate = Rate(limit, period, burst)
    except ConfigError:
        return
    check(rate)
    seconds = period.total_seconds() if isinstance(period, timedelta) else float(period)
    assert math.isclose(rate.period, seconds, rel_tol=1e-6)
