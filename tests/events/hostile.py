"""Hypothesis strategies for bytes that anyone with access to a channel or a
stream can write: envelopes with every field wrong in every way, JSON that
msgspec must refuse, and plain garbage.

Envelopes are assembled as bytes, not through a JSON encoder, so that they
can hold what no encoder writes: ``NaN``, numbers of 400 digits, lone
surrogate escapes, invalid UTF-8, nesting far past the recursion limit,
truncation.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from redkit.errors import SerializationError
from redkit.events import Event, decode_event

T = TypeVar("T")

GOOD_TIMESTAMP = b'"2026-11-26T11:04:05.123456789+07:00"'

SCALARS = st.sampled_from(
    [b"null", b"true", b"false", b"0", b"-0", b"1.5e3", b'"x"', b'""', b"[]", b"{}"]
)
# Numbers no JSON number type holds: 10**400 and beyond Python's 4300-digit
# int conversion limit, floats past the double range, signs alone.
HUGE_NUMBERS = st.one_of(
    st.integers(300, 6000).map(lambda n: b"1" + b"0" * n),
    st.integers(300, 6000).map(lambda n: b"-9" + b"9" * n),
    st.sampled_from([b"1e400", b"-1e400", b"1e-400", b"1E+99999", b"-", b"1e", b"01", b"0x10"]),
)
NON_FINITE = st.sampled_from([b"NaN", b"nan", b"Infinity", b"-Infinity", b"inf", b"1e309"])
# JSON escapes for UTF-16 halves without their partner, and raw bytes that
# are not UTF-8 (a stray continuation byte, a CESU-8 surrogate, an overlong
# slash, a truncated sequence).
BAD_STRINGS = st.sampled_from(
    [
        b'"\\ud800"',
        b'"\\udfff"',
        b'"a\\ud800b"',
        b'"\\ud800\\u0041"',
        b'"\\udc00\\ud800"',
        b'"\xff"',
        b'"\x80abc"',
        b'"\xed\xa0\x80"',
        b'"\xc0\xaf"',
        b'"\xe2\x82"',
        b'"tab\tinside"',
        b'"\\x41"',
    ]
)
GOOD_STRINGS = st.one_of(
    st.sampled_from([b'"\\ud83d\\ude00"', b'"caf\xc3\xa9"', b'"\\u0000"']),
    st.tuples(st.text(max_size=20), st.booleans()).map(
        lambda args: json.dumps(args[0], ensure_ascii=args[1]).encode()
    ),
)


def nested(depths: st.SearchStrategy[int]) -> st.SearchStrategy[bytes]:
    """Arrays or objects nested ``depth`` deep around a scalar."""

    def build(args: tuple[int, bool, bytes]) -> bytes:
        depth, arrays, inner = args
        if arrays:
            return b"[" * depth + inner + b"]" * depth
        return b'{"a":' * depth + inner + b"}" * depth

    return st.tuples(depths, st.booleans(), SCALARS).map(build)


# Anywhere from harmless to far past any recursion limit.
ANY_DEPTH = st.one_of(st.integers(0, 3000), st.sampled_from([10_000, 100_000]))
# Clearly below or clearly above the limit, for checks that decode the same
# bytes at two different stack depths and must agree on the outcome.
SHARP_DEPTH = st.one_of(st.integers(0, 200), st.just(20_000))


def fragments(depths: st.SearchStrategy[int] = ANY_DEPTH) -> st.SearchStrategy[bytes]:
    """One JSON value: about half well formed, the rest hostile somewhere."""
    good_leaf = st.one_of(SCALARS, GOOD_STRINGS, st.integers(-(2**70), 2**70).map(_ascii))
    bad_leaf = st.one_of(HUGE_NUMBERS, NON_FINITE, BAD_STRINGS)

    def tree(leaf: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
        return st.recursive(
            leaf,
            lambda inner: st.one_of(
                st.lists(inner, max_size=3).map(lambda items: b"[" + b",".join(items) + b"]"),
                st.lists(st.tuples(GOOD_STRINGS, inner), max_size=3).map(
                    lambda pairs: b"{" + b",".join(k + b":" + v for k, v in pairs) + b"}"
                ),
            ),
            max_leaves=6,
        )

    good = tree(good_leaf)
    return st.one_of(
        good,
        good,
        good,
        tree(st.one_of(good_leaf, bad_leaf)),
        bad_leaf,
        nested(depths),
    )


def _ascii(number: int) -> bytes:
    return str(number).encode()


TIMESTAMPS = st.one_of(
    st.just(GOOD_TIMESTAMP),
    st.just(b'"2026-11-26T11:04:05Z"'),
    st.sampled_from(
        [
            b'"soon"',
            b'""',
            b'"2026-13-26T11:04:05Z"',
            b'"2026-02-30T11:04:05Z"',
            b'"0000-01-01T00:00:00Z"',
            b'"2026-11-26T11:04:05+24:00"',
            b'"\xd9\xa2\xd9\xa0\xd9\xa2\xd9\xa6-11-26T11:04:05Z"',  # Arabic-Indic digits
            b'"2026-11-26T11:04:05.' + b"9" * 5000 + b'Z"',
            b"20261126",
            b"null",
        ]
    ),
)


@st.composite
def envelopes(
    draw: st.DrawFn,
    depths: st.SearchStrategy[int] = ANY_DEPTH,
    types: st.SearchStrategy[bytes] | None = None,
) -> bytes:
    """An envelope-shaped JSON object: each field right, wrong, hostile or
    missing, unknown fields added, in any order, possibly truncated."""
    value = fragments(depths)

    def sometimes(one_in: int) -> bool:
        # Hypothesis favours the first of a choice: False, the common case.
        return draw(st.sampled_from([False] * (one_in - 1) + [True]))

    def field(good: st.SearchStrategy[bytes], bad: st.SearchStrategy[bytes]) -> bytes:
        # Mostly right, so that the other fields' faults get their turn too.
        return draw(bad if sometimes(4) else good)

    if types is None:
        types = st.sampled_from([b'"t"', b'"user.created"'])
        if sometimes(4):
            types = st.one_of(st.sampled_from([b'""', b"7", b"null", b"[]"]), BAD_STRINGS, value)
    fields: dict[bytes, bytes] = {
        b"type": draw(types),
        b"payload": draw(value),
        b"timestamp": field(
            st.sampled_from([GOOD_TIMESTAMP, b'"2026-11-26T11:04:05Z"']), TIMESTAMPS
        ),
        b"source": field(st.just(b'"api"'), st.one_of(GOOD_STRINGS, value)),
    }
    if draw(st.booleans()):
        fields[b"id"] = field(st.just(b'"e-1"'), st.one_of(GOOD_STRINGS, value))
    for name in list(fields):
        if sometimes(20):
            del fields[name]
    if sometimes(4):
        for _ in range(draw(st.integers(1, 2))):
            name = draw(st.sampled_from([b"extra", b"type", b"\\ud800", b"x" * 300]))
            fields[name] = draw(value)
    items = draw(st.permutations(list(fields.items())))
    data = b"{" + b",".join(b'"' + k + b'":' + v for k, v in items) + b"}"
    if sometimes(8):
        data = data[: draw(st.integers(0, len(data)))]
    return data


def decodes(data: bytes) -> Event[Any] | None:
    """The event in ``data``, or None when it is malformed; any exception
    other than SerializationError propagates (and fails the caller)."""
    try:
        return decode_event(data)
    except SerializationError:
        return None


def examples(strategy: st.SearchStrategy[T], count: int, seed_value: int = 12) -> list[T]:
    """``count`` values drawn from ``strategy``, the same ones on every run."""
    found: list[T] = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: T) -> None:
        found.append(value)

    collect()
    return found[:count]
