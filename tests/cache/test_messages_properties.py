"""Properties of the invalidation-message decoder and of the cache's handling
of one message: whatever arrives on the channel decodes or raises
SerializationError, and applying it never raises."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from redkit import SerializationError
from redkit.cache import Cache, LocalCache, _messages

BUDGET = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON text fragments a hostile publisher may send: huge and odd numbers,
# lone surrogate escapes, raw invalid UTF-8, deep nesting.
odd_scalars = st.sampled_from(
    [
        b"1e400",
        b"-1e400",
        b"123456789012345678901234567890",
        b"9" * 5000,
        b"-0",
        b"1.5",
        b"true",
        b"null",
        b'"\\ud800"',
        b'"\\udc00\\ud800"',
        b'"\xff\xfe"',
        b'"\xed\xa0\x80"',
        b'"\\u0000"',
        b'""',
        b'"user:42"',
        b'"a{b"',
        b'"_cache:gen"',
    ]
)


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(1, 100_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    return opener * depth + draw(odd_scalars) + closer * depth


def _text(value: Any) -> bytes:
    return json.dumps(value).encode()


plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
).map(_text)

fragment = plain | odd_scalars | deep()


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """An invalidation payload with hostile field values."""
    fields = draw(
        st.dictionaries(
            st.sampled_from(["keys", "prefix", "generation", "entity", "id", "action", "origin"]),
            fragment
            | st.lists(fragment, max_size=4).map(lambda items: b"[" + b",".join(items) + b"]"),
            max_size=4,
        )
    )
    return b"{" + b",".join(_text(k) + b":" + v for k, v in fields.items()) + b"}"


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    fields = {
        "type": draw(st.sampled_from([b'"cache.invalidate"', b'"other"']) | fragment),
        "payload": draw(payloads() | fragment),
        "timestamp": draw(st.sampled_from([b'"2026-01-01T00:00:00Z"']) | fragment),
        "source": draw(fragment),
    }
    present = draw(st.sets(st.sampled_from(sorted(fields)), min_size=1))
    return b"{" + b",".join(_text(k) + b":" + fields[k] for k in sorted(present)) + b"}"


messages = st.binary(max_size=64) | fragment | envelopes()


def _decode_or_error(data: bytes) -> _messages.Envelope | None:
    try:
        event = _messages.decode(data)
    except SerializationError:
        return None
    assert isinstance(event, _messages.Envelope)
    assert isinstance(event.type, str)
    return event


@BUDGET
@given(messages)
def test_message_decoder_decodes_or_raises_serialization_error(data: bytes) -> None:
    event = _decode_or_error(data)
    if event is None:
        return
    inv = _messages.as_invalidation(event.payload)
    assert inv is None or isinstance(inv, _messages.Invalidation)
    if inv is not None and inv.generation is not None:
        assert -(2**63) <= inv.generation < 2**63


@pytest.fixture(scope="module")
def cache() -> Cache:
    # never connects: applying a message touches only the process
    instance = Cache(Redis(), local=LocalCache())
    instance._gen = 1
    return instance


@BUDGET
@given(messages)
def test_applying_any_message_never_raises(cache: Cache, data: bytes) -> None:
    before = cache.stats().malformed_messages
    cache._on_message(data)
    counted = cache.stats().malformed_messages - before
    event = _decode_or_error(data)
    if event is None:
        assert counted == 1
    assert isinstance(cache._gen, int) and 0 <= cache._gen < 2**32


def test_messages_redkit_writes_round_trip() -> None:
    for inv in (
        _messages.Invalidation(keys=["user:42", "{t}x"], prefix="app", origin="o1"),
        _messages.Invalidation(generation=2**63 - 1, prefix="app"),
        _messages.Invalidation(entity="user", id="42", action="update"),
    ):
        event = _messages.decode(_messages.encode(inv, "redkit"))
        assert event.type == _messages.EVENT_TYPE
        assert _messages.as_invalidation(event.payload) == inv
