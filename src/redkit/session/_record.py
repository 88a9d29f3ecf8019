"""Session records as stored: the :class:`Session` type and the decoder of
either layout's bytes."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import msgspec

from ..codec import guarded_decoder
from ..errors import SerializationError
from . import _ids

__all__ = ["Session", "decode_record"]


class Session(msgspec.Struct, frozen=True):
    """One stored session, as the Go service's record
    ``{id, user_id, data, created_at, expires_at}``.

    ``user_id`` is ``""`` for an anonymous session. ``expires_at`` is when
    the session ends unless it is used again: the idle timeout from its last
    use, capped by the absolute timeout from ``created_at``. Timestamps are
    timezone-aware (UTC for records redkit writes; the offset of a record
    written elsewhere is kept).
    """

    id: str
    user_id: str
    data: dict[str, Any]
    created_at: datetime
    expires_at: datetime


class _Wire(msgspec.Struct):
    id: str
    user_id: str
    created_at: str
    expires_at: str
    data: dict[str, Any] | None = None


# Both raise SerializationError and nothing else, deep nesting included.
_decode_wire = guarded_decoder(msgspec.json.Decoder(_Wire).decode, "the stored value")
_decode_session = guarded_decoder(msgspec.json.Decoder(Session).decode, "the stored value")
# msgspec rounds fraction digits past six; Go writes up to nine, which must
# be truncated. Records with such a run of digits anywhere take the slow path.
_LONG_FRACTION = re.compile(rb"\.\d{7}")


def decode_record(raw: object) -> Session:
    """A stored session record (either layout) as a :class:`Session`;
    :class:`~redkit.SerializationError` for anything else, never another
    exception."""
    if type(raw) is not bytes:
        raw = _as_bytes(raw)
    if _LONG_FRACTION.search(raw) is not None:
        return _decode_slow(raw)
    try:
        return _decode_session(raw)
    except SerializationError:
        # "data": null, an offset msgspec refuses, or not a record: the
        # slow path says which.
        return _decode_slow(raw)


def _as_bytes(raw: object) -> bytes:
    if isinstance(raw, str):  # a client made with decode_responses=True
        try:
            return raw.encode("utf-8")
        except UnicodeEncodeError:
            raise SerializationError("a session record is not valid UTF-8 text") from None
    if isinstance(raw, bytes):
        return raw
    raise SerializationError(f"a session record is text, got {type(raw).__name__}")


def _decode_slow(raw: bytes) -> Session:
    wire = _decode_wire(raw)
    return Session(
        wire.id,
        wire.user_id,
        wire.data if wire.data is not None else {},
        _ids.parse_time(wire.created_at),
        _ids.parse_time(wire.expires_at),
    )
