"""Trace context in the Go envelope: the optional ``traceparent`` and
``tracestate`` fields, what a reader of the Go struct's four fields makes of
them, and what crosses a real server."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest

from redkit import Client, ConfigError, Event, StreamConsumer, Subscriber
from redkit.events import decode_event, encode_event, new_event

from .helpers import eventually

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "go"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "vendor=opaque"


class GoEnvelope(msgspec.Struct):
    """The Go service's struct, read as encoding/json reads it: these four
    fields required and typed, any other field ignored."""

    type: str
    payload: msgspec.Raw
    timestamp: datetime
    source: str


def golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes().strip()


def with_fields(data: bytes, **extra: Any) -> bytes:
    envelope = json.loads(data)
    envelope.update(extra)
    return json.dumps(envelope, separators=(",", ":")).encode()


@pytest.mark.parametrize("name", ["event_user_created.json", "event_utc_nopayload.json"])
def test_go_golden_records_carry_no_trace_context(name: str) -> None:
    event = decode_event(golden(name))
    assert event.traceparent is None and event.tracestate is None
    # re-encoded untraced: the four Go fields and the id, nothing else
    assert list(json.loads(encode_event(event))) == ["type", "payload", "timestamp", "source", "id"]


def test_a_traced_envelope_reads_as_the_go_struct() -> None:
    event = msgspec.structs.replace(
        new_event("user.created", {"id": "7"}, "api"),
        traceparent=TRACEPARENT,
        tracestate=TRACESTATE,
    )
    data = encode_event(event)
    envelope = json.loads(data)
    assert envelope["traceparent"] == TRACEPARENT
    assert envelope["tracestate"] == TRACESTATE
    go = msgspec.json.decode(data, type=GoEnvelope)
    assert (go.type, go.source) == ("user.created", "api")
    assert msgspec.json.decode(go.payload) == {"id": "7"}
    assert go.timestamp == event.timestamp
    again = decode_event(data)
    assert (again.traceparent, again.tracestate, again.id) == (TRACEPARENT, TRACESTATE, event.id)


def test_a_go_record_with_trace_context_is_read_with_it() -> None:
    data = with_fields(golden("event_user_created.json"), traceparent=TRACEPARENT)
    event = decode_event(data)
    assert event.traceparent == TRACEPARENT and event.tracestate is None
    assert event.payload["email"] == "ana@example.com"
    # the id of an envelope without one is the hash of its exact bytes
    assert event.id.startswith("sha1:")


@pytest.mark.parametrize(
    "odd",
    [7, None, "", {"version": "00"}, ["00"], "x" * 513, [[[[[[[[[[]]]]]]]]]]],
)
def test_trace_context_of_the_wrong_shape_costs_only_the_context(odd: Any) -> None:
    data = with_fields(golden("event_user_created.json"), traceparent=odd, tracestate=odd)
    event = decode_event(data)
    assert event.traceparent is None and event.tracestate is None
    assert event.type == "user.created"


def test_only_text_travels_as_trace_context() -> None:
    event = new_event("user.created", {}, "api")
    with pytest.raises(ConfigError, match="traceparent"):
        encode_event(msgspec.structs.replace(event, traceparent=5))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tracestate"):
        encode_event(
            msgspec.structs.replace(event, traceparent=TRACEPARENT, tracestate=b"x")  # type: ignore[arg-type]
        )


async def test_handlers_see_the_trace_context_a_publisher_sent(client: Client) -> None:
    # Written as another service would: plain PUBLISH and XADD of the
    # Go envelope with a traceparent, no redkit publisher involved.
    data = with_fields(golden("event_user_created.json"), traceparent=TRACEPARENT)
    heard: list[Event[Any]] = []
    consumed: list[Event[Any]] = []
    subscriber = Subscriber(client)
    subscriber.on("user.created", heard.append)
    consumer = StreamConsumer(client, "tm-trace-users", group="g", consumer="c1")
    consumer.on("user.created", consumed.append)
    await client.xadd("tm-trace-users", {"event": data})
    async with subscriber.running("tm-trace-users"), consumer.running():
        await client.publish("tm-trace-users", data)
        await eventually(lambda: heard and consumed, what="both handlers ran")
    assert heard[0].traceparent == consumed[0].traceparent == TRACEPARENT
    assert heard[0].timestamp == consumed[0].timestamp
    assert heard[0].timestamp.utcoffset() != timezone.utc.utcoffset(None)  # +07:00 kept
