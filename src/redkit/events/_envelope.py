"""The event envelope: the Go service's JSON ``{type, payload, timestamp,
source}`` plus an ``id`` for deduplication.

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
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, TypeVar

import msgspec

from ..codec import Codec, get_codec
from ..errors import SerializationError

__all__ = [
    "Event",
    "decode_event",
    "encode_event",
    "format_timestamp",
    "new_event",
    "parse_timestamp",
]

P = TypeVar("P")

_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_OFFSETS: dict[tuple[str, int, int], timezone] = {}
# Python 3.11+ reads RFC 3339 with "Z" natively.
_FAST_ISO = sys.version_info >= (3, 11)
_JSON: Codec = get_codec("json")


class Event(msgspec.Struct, Generic[P], frozen=True):
    """One event as a handler receives it (immutable).

    ``type``, ``payload``, ``timestamp`` and ``source`` are the Go envelope's
    fields. ``id`` identifies the event for deduplication: events redkit
    publishes carry a random UUID; an event written without one (by the Go
    service) gets ``"sha1:..."`` of its exact bytes, so a redelivered copy has
    the same id. ``channel`` is the pub/sub channel or stream it came from and
    ``entry_id`` the stream entry id (``None`` for pub/sub).
    """

    type: str
    payload: P
    timestamp: datetime
    source: str
    id: str
    channel: str | None = None
    entry_id: str | None = None


class _Wire(msgspec.Struct):
    """The envelope as it travels; ``payload`` stays raw until a handler asks
    for a type."""

    type: str
    payload: msgspec.Raw
    timestamp: str
    source: str
    id: str | None = None


class _Out(msgspec.Struct):
    """The envelope as redkit writes it, fields in the Go struct's order."""

    type: str
    payload: Any
    timestamp: str
    source: str
    id: str


_WIRE_DECODER = msgspec.json.Decoder(_Wire)


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
    A naive ``datetime`` is refused (``ValueError``): its zone is unknown."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError(f"timestamp must carry a time zone, got naive {moment!r}")
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{text}{sign}{hours:02d}:{mins:02d}"


def new_event(
    type: str, payload: Any, source: str, *, timestamp: datetime | None = None
) -> Event[Any]:
    """An :class:`Event` stamped now (UTC) with a fresh random id."""
    _check_type(type)
    return Event(
        type=type,
        payload=payload,
        timestamp=timestamp or datetime.now(timezone.utc),
        source=source,
        id=str(uuid.uuid4()),
    )


def _check_type(type: object) -> None:
    if not isinstance(type, str) or not type:
        raise ValueError(f"event type must be a non-empty string, got {type!r}")


def encode_event(event: Event[Any]) -> bytes:
    """The JSON envelope for ``event``: ``{type, payload, timestamp, source, id}``.

    Raises :class:`~redkit.SerializationError` naming the payload's type when
    the payload has no JSON form (nothing is sent then).
    """
    return _encode(
        event.type, event.payload, format_timestamp(event.timestamp), event.source, event.id
    )


def _encode(kind: str, payload: Any, timestamp: str, source: str, event_id: str) -> bytes:
    try:
        return _JSON.encode(_Out(kind, payload, timestamp, source, event_id))
    except SerializationError as exc:
        raise SerializationError(
            f"payload of event {kind!r} (a {type(payload).__qualname__}) "
            f"cannot be encoded as JSON: {exc.__cause__ or exc}"
        ) from exc


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
    as that type through :mod:`redkit.codec` (dataclasses, msgspec Structs,
    pydantic models ...). Raises :class:`~redkit.SerializationError` saying
    what is wrong when the bytes are not such an envelope.
    """
    raw = data.encode() if isinstance(data, str) else data
    wire, payload_bytes = _decode_wire(raw)
    payload = _decode_payload(payload_bytes, payload_type)
    return _to_event(wire, payload, raw, channel, entry_id)


def _decode_wire(raw: bytes) -> tuple[_Wire, bytes]:
    try:
        wire = _WIRE_DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise SerializationError(
            f"not an event envelope: {exc}; data starts {raw[:80]!r}"
        ) from None
    if not wire.type:
        raise SerializationError("not an event envelope: empty `type`")
    return wire, bytes(wire.payload)


def _decode_payload(payload: bytes, payload_type: Any) -> Any:
    if payload_type is None:
        return _JSON.decode(payload)
    return _JSON.decode(payload, type=payload_type)


def _to_event(
    wire: _Wire, payload: Any, raw: bytes, channel: str | None, entry_id: str | None
) -> Event[Any]:
    try:
        timestamp = parse_timestamp(wire.timestamp)
    except ValueError as exc:
        raise SerializationError(f"not an event envelope: {exc}") from None
    event_id = wire.id or "sha1:" + hashlib.sha1(raw, usedforsecurity=False).hexdigest()
    return Event(wire.type, payload, timestamp, wire.source, event_id, channel, entry_id)
