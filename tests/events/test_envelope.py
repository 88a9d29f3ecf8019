"""The Go envelope: golden records, timestamps, ids, typed payloads, bad input."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pydantic
import pytest

from redkit.errors import ConfigError, SerializationError
from redkit.events import (
    Event,
    decode_event,
    encode_event,
    format_timestamp,
    new_event,
    parse_timestamp,
)

# Byte-for-byte copies of the Go service's golden records.
GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "go"
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


@dataclasses.dataclass
class UserCreated:
    id: str
    email: str
    roles: list[str]


class UserStruct(msgspec.Struct):
    id: str
    email: str
    roles: list[str]


class UserModel(pydantic.BaseModel):
    id: str
    email: str
    roles: list[str]


def golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes().strip()


def test_golden_user_created_decodes_with_offset_kept_and_nanoseconds_truncated() -> None:
    event = decode_event(golden("event_user_created.json"))
    assert event.type == "user.created"
    assert event.source == "api"
    assert event.payload == {
        "id": "7f9c2a4e-1b7d-4c8e-9a0b-3d2f6e5c4b1a",
        "email": "ana@example.com",
        "roles": ["admin", "ops"],
    }
    # .123456789 -> .123456 (truncated, not rounded to .123457)
    assert event.timestamp == datetime(2026, 11, 26, 18, 4, 5, 123456, timezone(timedelta(hours=7)))
    assert event.timestamp.utcoffset() == timedelta(hours=7)
    assert event.id.startswith("sha1:")


def test_golden_null_payload_utc() -> None:
    event = decode_event(golden("event_utc_nopayload.json"))
    assert event.type == "cache.invalidate"
    assert event.payload is None
    assert event.source == "worker"
    assert event.timestamp == datetime(2026, 11, 26, 11, 4, 5, tzinfo=timezone.utc)


def test_go_events_get_a_stable_content_id() -> None:
    data = golden("event_user_created.json")
    assert decode_event(data).id == decode_event(data).id
    other = data.replace(b"ana@", b"bob@")
    assert decode_event(other).id != decode_event(data).id


@pytest.mark.parametrize("payload_type", [UserCreated, UserStruct, UserModel])
def test_golden_payload_builds_requested_type(payload_type: type) -> None:
    event = decode_event(golden("event_user_created.json"), payload_type)
    assert isinstance(event.payload, payload_type)
    assert event.payload.email == "ana@example.com"
    assert event.payload.roles == ["admin", "ops"]


def test_payload_of_the_wrong_shape_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match="UserCreated"):
        decode_event(golden("event_utc_nopayload.json"), UserCreated)


def test_published_envelope_is_the_go_format_plus_id() -> None:
    event = new_event("user.created", {"id": "42"}, "api")
    data = encode_event(event)
    fields = json.loads(data)
    assert list(fields) == ["type", "payload", "timestamp", "source", "id"]
    assert RFC3339.fullmatch(fields["timestamp"])
    assert fields["timestamp"].endswith("Z")
    back = decode_event(data)
    assert back == event
    assert back.id == event.id


def test_round_trip_keeps_offset_and_microseconds() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, 120000, timezone(timedelta(hours=-5, minutes=-30)))
    event = new_event("x", [1, 2], "svc", timestamp=stamp)
    data = encode_event(event)
    assert b'"2026-01-02T03:04:05.12-05:30"' in data
    assert decode_event(data).timestamp == stamp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T11:04:05Z", datetime(2026, 11, 26, 11, 4, 5, tzinfo=timezone.utc)),
        ("2026-11-26T11:04:05.5Z", datetime(2026, 11, 26, 11, 4, 5, 500000, timezone.utc)),
        (
            "2026-12-31T23:59:59.999999999Z",
            datetime(2026, 12, 31, 23, 59, 59, 999999, timezone.utc),
        ),
        (
            "2026-11-26T11:04:05.000001+00:00",
            datetime(2026, 11, 26, 11, 4, 5, 1, timezone.utc),
        ),
        (
            "2026-11-26T06:04:05-05:00",
            datetime(2026, 11, 26, 6, 4, 5, tzinfo=timezone(timedelta(hours=-5))),
        ),
    ],
)
def test_parse_timestamp(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-26 11:04:05Z",
        "2026-11-26T11:04:05",
        "2026-13-26T11:04:05Z",
        "2026-11-26T11:04:05+24:00",
        "yesterday",
        "",
    ],
)
def test_parse_timestamp_refuses_non_rfc3339(text: str) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp(text)


def test_format_timestamp_like_go() -> None:
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == (
        "2026-01-02T03:04:05Z"
    )
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5, 100, timezone.utc)) == (
        "2026-01-02T03:04:05.0001Z"
    )
    with pytest.raises(ConfigError, match="naive"):
        format_timestamp(datetime(2026, 1, 2, 3, 4, 5))


@pytest.mark.parametrize(
    "data",
    [
        b"hello",
        b"",
        b"[1, 2]",
        b'{"payload":{},"timestamp":"2026-11-26T11:04:05Z","source":"a"}',
        b'{"type":"x","timestamp":"2026-11-26T11:04:05Z","source":"a"}',
        b'{"type":"x","payload":1,"source":"a"}',
        b'{"type":"x","payload":1,"timestamp":"2026-11-26T11:04:05Z"}',
        b'{"type":"","payload":1,"timestamp":"2026-11-26T11:04:05Z","source":"a"}',
        b'{"type":7,"payload":1,"timestamp":"2026-11-26T11:04:05Z","source":"a"}',
        b'{"type":"x","payload":1,"timestamp":"soon","source":"a"}',
        b'{"type":"x","payload":1,"timestamp":"2026-11-26T11:04:05Z","source":"a"',
    ],
)
def test_malformed_envelopes_raise_serialization_error(data: bytes) -> None:
    with pytest.raises(SerializationError, match="envelope"):
        decode_event(data)


def test_unencodable_payload_names_its_type() -> None:
    event = new_event("x", {"when": object()}, "api")
    with pytest.raises(SerializationError, match="dict"):
        encode_event(event)


def test_event_is_frozen_and_generic() -> None:
    event: Event[int] = new_event("x", 3, "api")
    with pytest.raises(AttributeError):
        event.type = "y"  # type: ignore[misc]
    with pytest.raises(ConfigError, match="event type"):
        new_event("", 1, "api")
