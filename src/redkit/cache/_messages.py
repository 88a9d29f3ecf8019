"""Invalidation messages: the Go service's event envelope
``{"type", "payload", "timestamp", "source"}`` with type ``cache.invalidate``.

Payloads redkit writes (every field optional)::

    {"keys": ["user:42", ...], "prefix": "app"}   keys to evict under a prefix
    {"generation": 7, "prefix": "app"}   clear(): the prefix's namespace moved on
    {"entity": "user", "id": "42", "action": "update"}   Invalidator events
    "origin": "<instance id>"            the writer, which ignores its own echo

A payload of ``null`` (the Go service's bare ``cache.invalidate``) or one
redkit does not understand evicts the whole local tier: when in doubt,
forget.

Messages come from anyone who can publish on the channel: :func:`decode`
either returns an envelope or raises :class:`~redkit.errors.SerializationError`,
and :func:`as_invalidation` never raises.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec

from ..codec import guarded_decoder, strict_json_encoder

__all__ = ["EVENT_TYPE", "Envelope", "Invalidation", "decode", "encode", "rfc3339"]

EVENT_TYPE = "cache.invalidate"


class Envelope(msgspec.Struct):
    type: str
    payload: Any = None
    timestamp: str = ""
    source: str = ""


# A generation is what Redis INCR keeps: a signed 64-bit integer.
_Generation = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class Invalidation(msgspec.Struct, omit_defaults=True):
    keys: list[str] | None = None
    prefix: str | None = None
    generation: _Generation | None = None
    entity: str | None = None
    id: str | None = None
    action: str | None = None
    origin: str | None = None


class _Outgoing(msgspec.Struct):
    type: str
    payload: Invalidation
    timestamp: str
    source: str


_encode = strict_json_encoder(enc_hook=None, what="a cache invalidation message")
_decode = guarded_decoder(msgspec.json.Decoder(Envelope).decode, "a cache invalidation message")


def rfc3339(moment: dt.datetime) -> str:
    """``moment`` as Go's ``time.Time`` marshals it: RFC 3339, fractional
    seconds without trailing zeros, ``Z`` for UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    offset = moment.utcoffset() or dt.timedelta(0)
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def encode(payload: Invalidation, source: str) -> bytes:
    """One ``cache.invalidate`` event, stamped now (UTC)."""
    now = dt.datetime.now(dt.timezone.utc)
    return _encode(_Outgoing(EVENT_TYPE, payload, rfc3339(now), source))


def decode(data: bytes) -> Envelope:
    """The envelope in ``data``; :class:`~redkit.errors.SerializationError`
    when it is not one, whatever the bytes."""
    return _decode(data)


def as_invalidation(payload: Any) -> Invalidation | None:
    """A redkit payload, or None when the payload is null or unknown."""
    if not isinstance(payload, dict):
        return None
    try:
        return msgspec.convert(payload, Invalidation)
    except (msgspec.ValidationError, RecursionError, ValueError, TypeError):
        # A decoded payload nests less deeply than the decoder allows, but a
        # hostile one is still not an invalidation.
        return None
