"""The event envelope: the Go service's JSON ``{type, payload, timestamp,
source}`` plus an ``id`` for deduplication and, while :mod:`redkit.otel`
traces, the W3C ``traceparent`` (and ``tracestate``) of the publishing span.
Go's ``json.Unmarshal`` ignores fields its struct does not name, so the Go
service reads these envelopes as it reads its own.

``timestamp`` is Go's ``time.Time`` JSON: RFC 3339 with up to nine fractional
digits (trailing zeros dropped) and ``Z`` or a numeric offset. Python keeps
microseconds, so the extra digits are truncated (not rounded: rounding could
move an instant across a second, a day or a year boundary), and the offset is
kept as written.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, TypeVar

import msgspec

from .. import _telemetry
from .._ids import uuid4_text
from ..codec import _dec_hook, guarded_decoder, strict_json_encoder
from ..errors import ConfigError, SerializationError

__all__ = [
    "Event",
    "decode_event",
    "encode_event",
    "format_timestamp",
    "new_event",
    "parse_timestamp",
]

P = TypeVar("P")

# ASCII digits only: Go's parser (and RFC 3339) know no others, and \d would
# also take Arabic-Indic or full-width ones.
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_OFFSETS: dict[tuple[str, int, int], timezone] = {}
# Python 3.11+ reads RFC 3339 with "Z" natively.
_FAST_ISO = sys.version_info >= (3, 11)


class Event(msgspec.Struct, Generic[P], frozen=True):
    """One event as a handler receives it (immutable).

    ``type``, ``payload``, ``timestamp`` and ``source`` are the Go envelope's
    fields. ``id`` identifies the event for deduplication: events redkit
    publishes carry a random UUID; an event written without one (by the Go
    service) gets ``"sha1:..."`` of its exact bytes, so a redelivered copy has
    the same id. ``channel`` is the pub/sub channel or stream it came from and
    ``entry_id`` the stream entry id (``None`` for pub/sub). ``traceparent``
    and ``tracestate`` are the W3C trace context the publisher sent (see
    :mod:`redkit.otel`), ``None`` when it sent none.
    """

    type: str
    payload: P
    timestamp: datetime
    source: str
    id: str
    channel: str | None = None
    entry_id: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None


class _Wire(msgspec.Struct):
    """The envelope as it travels; ``payload`` stays raw until a handler asks
    for a type."""

    type: str
    payload: msgspec.Raw
    timestamp: str
    source: str
    id: str | None = None
    # Any JSON: trace context is advisory, and a field of the wrong type
    # (written by someone else) must not cost the event itself.
    traceparent: Any = None
    tracestate: Any = None


class _Out(msgspec.Struct):
    """The envelope as redkit writes it, fields in the Go struct's order."""

    type: str
    payload: Any
    timestamp: str
    source: str
    id: str


class _TracedOut(msgspec.Struct, omit_defaults=True):
    """:class:`_Out` with the publishing span's trace context."""

    type: str
    payload: Any
    timestamp: str
    source: str
    id: str
    traceparent: str
    tracestate: str | None = None


# Every decoder of bytes that arrive from Redis is guarded: whatever the bytes
# (nesting past the recursion limit included), it returns or raises
# SerializationError, so one hostile message cannot end a subscriber's loop.
_decode_wire_json = guarded_decoder(msgspec.json.Decoder(_Wire).decode, "message")
decode_plain_payload = guarded_decoder(msgspec.json.Decoder().decode, "payload")
# NaN, infinities, deep nesting and unsupported types raise SerializationError
# before anything is sent (msgspec alone writes NaN as null).
_encode_json = strict_json_encoder(what="event")
_PAYLOAD_DECODERS: dict[Any, Callable[[bytes], Any]] = {}


def parse_timestamp(text: str) -> datetime:
    """An aware ``datetime`` for an RFC 3339 timestamp as Go writes it.

    Fractional digits beyond microseconds are truncated; the offset is kept
    (``+07:00`` stays ``+07:00``, ``Z`` becomes UTC). Raises ``ValueError``
    naming the text when it is not RFC 3339.
    """
    if (
        _FAST_ISO
        and text[-1:] == "Z"
        and 20 <= len(text) <= 27
        and text[4] == "-"
        and text[7] == "-"
        and text[10] == "T"
        and text[13] == ":"
        and text[16] == ":"
        and (len(text) == 20 or text[19] == ".")
    ):
        # The common case (what redkit and Go write for UTC) in C.
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass  # the full parser names the problem
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueError(f"timestamp is not RFC 3339: {text[:64]!r}")
    year, month, day, hour, minute, second, frac, zulu, sign, oh, om = match.groups()
    micros = int((frac + "00000")[:6]) if frac else 0
    tz = timezone.utc if zulu else _offset(sign, int(oh), int(om))
    try:
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tz
        )
    except ValueError as exc:
        raise ValueError(f"timestamp is not a valid date and time: {text[:64]!r}: {exc}") from None


def _offset(sign: str, hours: int, minutes: int) -> timezone:
    key = (sign, hours, minutes)
    tz = _OFFSETS.get(key)
    if tz is None:
        if hours > 23 or minutes > 59:
            raise ValueError(f"timestamp offset out of range: {sign}{hours:02d}:{minutes:02d}")
        delta = timedelta(hours=hours, minutes=minutes)
        tz = timezone.utc if not delta else timezone(-delta if sign == "-" else delta)
        _OFFSETS[key] = tz
    return tz


def format_timestamp(moment: datetime) -> str:
    """``moment`` as Go's ``time.Time`` JSON writes it: RFC 3339, trailing
    fractional zeros dropped, ``Z`` for UTC, the numeric offset otherwise.
    A naive ``datetime`` (or anything else) is refused with
    :class:`~redkit.ConfigError`: its zone is unknown."""
    if not isinstance(moment, datetime):
        raise ConfigError(f"timestamp must be an aware datetime, got {_show(moment)}")
    offset = moment.utcoffset()
    if offset is None:
        raise ConfigError(f"timestamp must carry a time zone, got naive {moment!r}")
    if not offset:
        # Every event is stamped in UTC: isoformat() (C) writes the same
        # digits, then "+00:00", in a quarter of the time.
        text = moment.isoformat()[:-6]
        return (text.rstrip("0") if moment.microsecond else text) + "Z"
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{text}{sign}{hours:02d}:{mins:02d}"


def new_event(
    type: str, payload: Any, source: str, *, timestamp: datetime | None = None
) -> Event[Any]:
    """An :class:`Event` stamped now (UTC) with a fresh random id."""
    _check_type(type)
    check_text(source, "source", allow_empty=True)
    if timestamp is not None:
        format_timestamp(timestamp)  # refuses what could not be sent
    return Event(
        type=type,
        payload=payload,
        timestamp=timestamp or datetime.now(timezone.utc),
        source=source,
        id=uuid4_text(),
    )


def check_text(value: object, what: str, *, allow_empty: bool = False) -> str:
    """``value`` as a string that can travel (UTF-8 encodable, so no lone
    surrogates), else :class:`~redkit.ConfigError` naming ``what``."""
    if not isinstance(value, str) or (not value and not allow_empty):
        kind = "a string" if allow_empty else "a non-empty string"
        raise ConfigError(f"{what} must be {kind}, got {_show(value)}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ConfigError(
                f"{what} must be valid Unicode (no lone surrogates), got {_show(value)}"
            ) from None
    return value


def _check_type(type: object) -> None:
    check_text(type, "event type")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def encode_event(event: Event[Any]) -> bytes:
    """The JSON envelope for ``event``: ``{type, payload, timestamp, source, id}``,
    plus ``traceparent`` and ``tracestate`` when the event carries them (or,
    while :mod:`redkit.otel` traces, the current span's).

    Raises :class:`~redkit.SerializationError` naming the payload's type when
    the payload has no faithful JSON form: an unsupported type, NaN or an
    infinite float, nesting deeper than the recursion limit (nothing is sent
    then).
    """
    stamp = format_timestamp(event.timestamp)
    if event.traceparent is None:
        return _encode(event.type, event.payload, stamp, event.source, event.id)
    check_text(event.traceparent, "traceparent")
    if event.tracestate is not None:
        check_text(event.tracestate, "tracestate", allow_empty=True)
    return _encode_out(
        _TracedOut(
            event.type,
            event.payload,
            stamp,
            event.source,
            event.id,
            event.traceparent,
            event.tracestate,
        )
    )


def _encode(kind: str, payload: Any, timestamp: str, source: str, event_id: str) -> bytes:
    """The envelope of a new event; it carries the current span's trace
    context while :mod:`redkit.otel` traces."""
    tracing = _telemetry.tracing
    fields = None if tracing is None else tracing.trace_fields()
    if fields is None:
        return _encode_out(_Out(kind, payload, timestamp, source, event_id))
    return _encode_out(_TracedOut(kind, payload, timestamp, source, event_id, *fields))


def _encode_out(out: _Out | _TracedOut) -> bytes:
    kind, payload = out.type, out.payload
    try:
        return _encode_json(out)
    except SerializationError as exc:
        raise SerializationError(
            f"payload of event {kind!r} (a {type(payload).__qualname__}) "
            f"cannot be encoded as JSON: {exc.__cause__ or exc}"
        ) from exc


def payload_decoder(payload_type: Any) -> Callable[[bytes], Any]:
    """The decode function building ``payload_type`` from payload JSON; it
    raises :class:`~redkit.SerializationError` for bytes that do not fit.
    :class:`~redkit.ConfigError` when msgspec cannot build that type at all."""
    decode = _PAYLOAD_DECODERS.get(payload_type)
    if decode is None:
        name = type_name(payload_type)
        try:
            decoder = msgspec.json.Decoder(payload_type, dec_hook=_dec_hook)
        except TypeError as exc:
            raise ConfigError(f"payload_type {name} cannot be built from JSON: {exc}") from None
        decode = _PAYLOAD_DECODERS[payload_type] = guarded_decoder(
            decoder.decode, f"payload as {name}"
        )
    return decode


def type_name(tp: Any) -> str:
    """How an error names a payload type."""
    return str(getattr(tp, "__qualname__", None) or tp)


def decode_event(
    data: bytes | str,
    payload_type: type[P] | None = None,
    *,
    channel: str | None = None,
    entry_id: str | None = None,
) -> Event[Any]:
    """The :class:`Event` in a JSON envelope.

    ``type``, ``payload`` (``null`` allowed), ``timestamp`` and ``source`` are
    required, ``id`` is optional. With ``payload_type`` the payload is built
    as that type (dataclasses, msgspec Structs, pydantic models ...). Raises
    :class:`~redkit.SerializationError` saying what is wrong when the data is
    not such an envelope, whatever it holds, and
    :class:`~redkit.ConfigError` for a ``payload_type`` that JSON cannot
    build.
    """
    decode = decode_plain_payload if payload_type is None else payload_decoder(payload_type)
    if isinstance(data, str):
        try:
            raw = data.encode()
        except UnicodeEncodeError:
            raise SerializationError("not an event envelope: text with lone surrogates") from None
    else:
        raw = data
    wire, payload_bytes = _decode_wire(raw)
    try:
        payload = decode(payload_bytes)
    except SerializationError:
        raise
    except Exception as exc:  # a payload type's own validation code failing
        raise SerializationError(f"payload does not decode: {type(exc).__name__}: {exc}") from exc
    return _to_event(wire, payload, raw, channel, entry_id)


def _decode_wire(raw: bytes) -> tuple[_Wire, bytes]:
    """The envelope's fields and its raw payload; SerializationError for
    anything else."""
    try:
        wire = _decode_wire_json(raw)
    except SerializationError as exc:
        raise SerializationError(
            f"not an event envelope: {exc}; data starts {bytes(raw[:80])!r}"
        ) from None
    if not wire.type:
        raise SerializationError("not an event envelope: empty `type`")
    return wire, bytes(wire.payload)


def _to_event(
    wire: _Wire, payload: Any, raw: bytes, channel: str | None, entry_id: str | None
) -> Event[Any]:
    try:
        timestamp = parse_timestamp(wire.timestamp)
    except ValueError as exc:
        raise SerializationError(f"not an event envelope: {exc}") from None
    event_id = wire.id or "sha1:" + hashlib.sha1(raw, usedforsecurity=False).hexdigest()
    traceparent = wire.traceparent
    if traceparent is None:
        return Event(wire.type, payload, timestamp, wire.source, event_id, channel, entry_id)
    return Event(
        wire.type,
        payload,
        timestamp,
        wire.source,
        event_id,
        channel,
        entry_id,
        _trace_text(traceparent),
        _trace_text(wire.tracestate),
    )


def _trace_text(value: Any) -> str | None:
    """A trace context field as text, None unless it is a short string."""
    return value if type(value) is str and 0 < len(value) <= 512 else None
