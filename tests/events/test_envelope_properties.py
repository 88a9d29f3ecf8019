"""Properties of the envelope codec: whatever bytes arrive on a channel or in
a stream entry, decoding returns an event or raises SerializationError, never
another exception; whatever a caller publishes is encoded faithfully or
refused with SerializationError.

Budget: a few hundred examples per property, a few seconds for the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import msgspec
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _json_values import holds_non_finite
from redkit.errors import SerializationError
from redkit.events import Event, decode_event, encode_event, new_event
from redkit.events._envelope import _decode_wire, _to_event, decode_plain_payload, payload_decoder

from .hostile import envelopes, fragments

BUDGET = settings(max_examples=200, deadline=None, database=None)


@dataclasses.dataclass
class Order:
    id: int
    tags: list[str]


class OrderStruct(msgspec.Struct):
    id: int
    amount: float


class OrderModel(pydantic.BaseModel):
    id: int
    note: str


PAYLOAD_TYPES: list[Any] = [Order, OrderStruct, OrderModel, list[int], dict[str, float], float]


def decoded_or_refused(data: bytes, payload_type: Any = None) -> Event[Any] | None:
    try:
        event = decode_event(data, payload_type)
    except SerializationError:
        return None
    assert isinstance(event, Event)
    assert isinstance(event.type, str) and event.type
    assert isinstance(event.source, str)
    assert event.timestamp.tzinfo is not None
    return event


def as_the_loops_decode(data: bytes) -> None:
    """The steps the subscriber and the stream consumer take per message."""
    try:
        wire, payload = _decode_wire(data)
        plain = decode_plain_payload(payload)
        _to_event(wire, plain, data, "channel", None)
    except SerializationError:
        pass


@BUDGET
@given(envelopes())
def test_any_envelope_shape_decodes_or_raises_serialization_error(data: bytes) -> None:
    decoded_or_refused(data)
    as_the_loops_decode(data)


@BUDGET
@given(envelopes(), st.sampled_from(PAYLOAD_TYPES))
def test_typed_payloads_decode_or_raise_serialization_error(data: bytes, payload_type: Any) -> None:
    decoded_or_refused(data, payload_type)
    with contextlib.suppress(SerializationError):
        payload_decoder(payload_type)(_decode_wire(data)[1])


@BUDGET
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_serialization_error(data: bytes) -> None:
    decoded_or_refused(data)
    as_the_loops_decode(data)


@BUDGET
@given(st.binary(min_size=1, max_size=40), st.integers(0, 200), st.binary(max_size=40))
def test_a_valid_envelope_with_bytes_spliced_in_decodes_or_raises(
    junk: bytes, position: int, tail: bytes
) -> None:
    good = encode_event(new_event("t", {"id": 1, "name": "ana"}, "api"))
    cut = min(position, len(good))
    decoded_or_refused(good[:cut] + junk + good[cut:])
    decoded_or_refused(good[:cut])  # truncated
    decoded_or_refused(good + tail)


@BUDGET
@given(fragments())
def test_any_payload_fragment_in_a_valid_envelope(payload: bytes) -> None:
    data = (
        b'{"type":"t","payload":' + payload + b',"timestamp":"2026-11-26T11:04:05Z","source":"a"}'
    )
    decoded_or_refused(data)
    as_the_loops_decode(data)


def test_the_hostile_cases_named_in_the_issue_are_refused() -> None:
    deep = b"[" * 1_000_000 + b"]" * 1_000_000
    for payload in [deep, b"1" + b"0" * 5000, b"NaN", b"Infinity", b'"\\ud800"', b'"\xff"']:
        data = b'{"type":"t","payload":' + payload + b',"timestamp":"2026-11-26T11:04:05Z"'
        data += b',"source":"a"}'
        with pytest.raises(SerializationError):
            decode_event(data)
    with pytest.raises(SerializationError, match="nested too deeply"):
        decode_event(b'{"type":"t","payload":' + deep + b',"timestamp":"x","source":"a"}')
    with pytest.raises(SerializationError):
        decode_event('{"type":"\ud800","payload":1,"timestamp":"x","source":"a"}')


# -- the writing side ---------------------------------------------------------

JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.integers(4400, 4500).map(lambda n: 10**n),  # past the int-to-text limit
        st.floats(),  # NaN and the infinities included
        st.text(max_size=10),
        st.sampled_from(["\ud800", "a\udfffb"]),  # lone surrogates: not UTF-8
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@BUDGET
@given(JSON_VALUES)
def test_a_payload_is_written_faithfully_or_refused(value: Any) -> None:
    event = new_event("t", value, "api")
    try:
        data = encode_event(event)
    except SerializationError:
        return
    assert not holds_non_finite(value)  # NaN and infinities never become null
    assert decode_event(data).payload == value


def test_deep_payloads_and_non_finite_floats_are_refused() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    for value in [deep, math.nan, -math.inf, {"a": [1.0, math.inf]}]:
        with pytest.raises(SerializationError):
            encode_event(new_event("t", value, "api"))
