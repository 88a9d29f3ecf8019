"""Properties of the decoders of bytes the cache reads back from Redis: the
stored value (header and payload), the hit path's parse of it (in both
layouts), and the generation sync reply. Whatever the bytes, each returns a value or its
documented answer (SerializationError, or a miss), never another exception."""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from redkit import SerializationError
from redkit.cache import Cache, _envelope
from redkit.cache._base import NOTHING as _NOTHING
from redkit.cache._generation import sync_reply as _sync_reply

BUDGET = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

GEN = 7


@dataclasses.dataclass
class Item:
    name: str
    count: int


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@st.composite
def stored_values(draw: st.DrawFn) -> bytes:
    """Bytes as the cache writes them, compressed or not."""
    payload = msgspec.json.encode(draw(json_values))
    compress_above = draw(st.sampled_from([0, 1, 10_000]))
    return _envelope.pack(
        payload,
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(0, 2**64 - 1)),
        draw(st.integers(0, 2**32 - 1)),
        compress_above,
    )


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A valid stored value truncated, with bytes flipped, inserted or its
    body replaced by a hostile one."""
    raw = bytearray(draw(stored_values()))
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "body"]))
    if kind == "truncate":
        return bytes(raw[: draw(st.integers(0, len(raw)))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(raw) - 1))
            raw[at] ^= draw(st.integers(1, 255))
        return bytes(raw)
    if kind == "insert":
        at = draw(st.integers(0, len(raw)))
        return bytes(raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:])
    depth = draw(st.integers(500, 50_000))
    body = draw(
        st.sampled_from(
            [
                b"[" * depth + b"]" * depth,
                b'{"a":' * depth + b"1" + b"}" * depth,
                b"9" * depth,
                b'"\xed\xa0\x80"',  # a lone surrogate encoded as if UTF-8
                b'"\\ud800"',
                b"1e400",
            ]
        )
    )
    if draw(st.booleans()):
        return bytes(raw[: _envelope.HEADER_SIZE]) + body
    header = _envelope.HEADER.pack(_envelope.MAGIC, _envelope.COMPRESSED, GEN, 0, 0)
    return header + zlib.compress(body, 1)


any_bytes = st.binary(max_size=64) | st.binary(min_size=18, max_size=64).map(
    lambda b: bytes([_envelope.MAGIC]) + b[1:]
)


def _unpack_or_error(raw: bytes) -> None:
    try:
        flags, gen, expiry, delta, payload = _envelope.unpack(raw)
    except SerializationError:
        return
    assert flags in (0, _envelope.COMPRESSED)
    assert 0 <= gen < 2**32 and 0 <= expiry < 2**64 and 0 <= delta < 2**32
    assert isinstance(payload, bytes)


@BUDGET
@given(any_bytes)
def test_header_decoder_on_arbitrary_bytes(raw: bytes) -> None:
    _unpack_or_error(raw)


@BUDGET
@given(damaged())
def test_header_decoder_on_damaged_values(raw: bytes) -> None:
    _unpack_or_error(raw)


@BUDGET
@given(stored_values())
def test_header_decoder_round_trips(raw: bytes) -> None:
    flags, gen, expiry, delta, payload = _envelope.unpack(raw)
    again = _envelope.pack(payload, gen, expiry, delta, 1 if flags else 0)
    assert _envelope.unpack(again)[1:] == (gen, expiry, delta, payload)


@pytest.fixture(scope="module")
def cache() -> Cache:
    # never connects: the parse of stored bytes is pure
    instance = Cache(Redis())
    instance._gen = GEN
    return instance


TYPES = [None, list[int], dict[str, Any], Item, str]


@BUDGET
@given(raw=any_bytes | damaged() | stored_values(), type=st.sampled_from(TYPES))
def test_hit_path_parse_reads_a_value_or_a_miss(cache: Cache, raw: bytes, type: Any) -> None:
    value = cache._parse(raw, "app:k", type)
    if value is _NOTHING:
        return
    _flags, gen, _e, _d, payload = _envelope.unpack(raw)
    assert gen == GEN
    if type is None:
        assert value == msgspec.json.decode(payload)


def test_compressed_payload_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_envelope, "MAX_PAYLOAD", 1000)
    header = _envelope.HEADER.pack(_envelope.MAGIC, _envelope.COMPRESSED, GEN, 0, 0)
    with pytest.raises(SerializationError, match="larger than"):
        _envelope.unpack(header + zlib.compress(b"0" * 1001))
    assert _envelope.unpack(header + zlib.compress(b"0" * 1000))[4] == b"0" * 1000


replies = st.recursive(
    st.none()
    | st.integers()
    | st.binary(max_size=12)
    | st.text(max_size=12)
    | st.floats()
    | st.sampled_from([b"12", b"-3", b"99999999999999999999999", b"1.5", b"9" * 5000]),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner),
    max_leaves=8,
)


@BUDGET
@given(replies)
def test_sync_reply_decoder(reply: Any) -> None:
    try:
        gen, server_ms = _sync_reply(reply)
    except SerializationError:
        return
    assert 0 <= gen < 2**32
    assert isinstance(server_ms, float)


def test_sync_reply_of_the_script() -> None:
    assert _sync_reply([b"5", [b"1700000000", b"250000"]]) == (5, 1_700_000_000_250.0)
    assert _sync_reply([b"-1", [b"1", b"0"]])[0] == 2**32 - 1
    for bad in (None, [], [b"x", [b"1", b"2"]], [b"1", [b"1"]], [b"1", b"2"], [b"1.5", [1, 2]]):
        with pytest.raises(SerializationError):
            _sync_reply(bad)


@pytest.fixture(scope="module")
def go_cache() -> Cache:
    return Cache(Redis(), layout="go")  # never connects


plain_json = json_values.map(msgspec.json.encode)
hostile_json = st.sampled_from(
    [
        b"[" * 50_000 + b"]" * 50_000,
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b'"\xed\xa0\x80"',
        b'"\\ud800"',
        b"1e400",
        b"9" * 50_000,
        b"nul",
        b"",
    ]
)


@BUDGET
@given(raw=any_bytes | damaged() | plain_json | hostile_json, type=st.sampled_from(TYPES))
def test_go_layout_parse_reads_a_value_or_a_miss(go_cache: Cache, raw: bytes, type: Any) -> None:
    """Plain values from the Go service (or anyone) decode or read as a
    miss, whatever the bytes."""
    value = go_cache._parse(raw, "app:k", type)
    if value is _NOTHING:
        return
    if raw == b"null":
        assert value is None
    elif type is None:
        assert value == msgspec.json.decode(raw)


@BUDGET
@given(raw=stored_values(), type=st.sampled_from(TYPES))
def test_a_redkit_layout_value_is_a_miss_in_the_go_layout(
    go_cache: Cache, raw: bytes, type: Any
) -> None:
    assert go_cache._parse(raw, "app:k", type) is _NOTHING
