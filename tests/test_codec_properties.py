"""Property tests: the codecs decode any bytes or raise SerializationError,
and encode any value faithfully or raise SerializationError."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _json_values import holds_non_finite, json_values, nested
from redkit import SerializationError
from redkit.codec import get_codec

# Scalars JSON carries, plus the ones it cannot (NaN, infinities) and ints
# far past 64 bits.
values = json_values(finite=False, width=4, max_leaves=30, text=20, keys=8)

json_texts = st.one_of(
    st.binary(max_size=200),
    st.builds(nested, st.integers(min_value=1, max_value=50_000)),
    st.builds(lambda n: b"[" * n, st.integers(min_value=1, max_value=50_000)),
    st.sampled_from(
        [
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"1e400",
            b"-1e400",
            b'"\\ud800"',
            b'"\\udfff x"',
            b"9" * 500,
            b'{"a":',
            b'"\xff\xfe"',
            b"\x00",
        ]
    ),
    values.map(lambda v: msgspec.json.encode(v)).flatmap(
        lambda data: st.integers(min_value=0, max_value=len(data)).map(lambda cut: data[:cut])
    ),
)


@dataclasses.dataclass
class Record:
    id: int
    name: str
    tags: list[str]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(data=json_texts, typed=st.sampled_from([None, Record, list[int], dict[str, float]]))
def test_json_decodes_or_raises_serialization_error(data: bytes, typed: Any) -> None:
    with contextlib.suppress(SerializationError):
        get_codec("json").decode(data, type=typed)


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=200)
    | st.builds(lambda n: b"\x91" * n + b"\x90", st.integers(1, 50_000))
)
def test_msgpack_decodes_or_raises_serialization_error(data: bytes) -> None:
    with contextlib.suppress(SerializationError):
        get_codec("msgpack").decode(data, type=None)


@settings(max_examples=300, deadline=None)
@given(value=values)
def test_json_encodes_faithfully_or_refuses(value: Any) -> None:
    codec = get_codec("json")
    try:
        data = codec.encode(value)
    except SerializationError:
        # Refused only for what JSON cannot carry.
        assert holds_non_finite(value) or _has_big_int(value)
        return
    assert not holds_non_finite(value)
    assert _same(codec.decode(data), value)


@pytest.mark.parametrize("name", ["json", "msgpack"])
@pytest.mark.parametrize(
    ("depth", "fits"), [(10, True), (500, True), (5_000, False), (50_000, False)]
)
def test_nesting_encodes_up_to_a_depth_then_is_refused(name: str, depth: int, fits: bool) -> None:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    codec = get_codec(name)
    if fits:
        assert codec.decode(codec.encode(value)) == value
    else:
        with pytest.raises(SerializationError, match="nested too deeply"):
            codec.encode(value)


def _has_big_int(value: Any) -> bool:
    # msgspec writes ints up to 64 bits (signed or unsigned).
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not (-(2**63) <= value < 2**64)
    if isinstance(value, list):
        return any(_has_big_int(item) for item in value)
    if isinstance(value, dict):
        return any(_has_big_int(item) for item in value.values())
    return False
