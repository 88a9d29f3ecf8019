"""Session ids, key layouts and RFC 3339 timestamps."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from datetime import datetime, timedelta, timezone

from ..errors import SerializationError

SECRET_CHARS = 43  # 32 random bytes, base64url without padding
TAG_CHARS = 22  # 16 bytes of a user tag, base64url without padding

_TAGGED_ID = re.compile(r"([A-Za-z0-9_-]{22})\.[A-Za-z0-9_-]{43}")
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{43}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAX_ID_LENGTH = TAG_CHARS + 1 + SECRET_CHARS


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def user_tag(user_id: str) -> str:
    """The hash tag shared by a user's session ids and index: 128 bits of
    SHA-256 of the user id. An anonymous session gets a random tag."""
    if not user_id:
        return secrets.token_urlsafe(16)
    digest = hashlib.sha256(user_id.encode("utf-8")).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def tag_of(session_id: str) -> str | None:
    """The tag of a well-formed tagged id, else None."""
    if len(session_id) != MAX_ID_LENGTH:
        return None
    match = _TAGGED_ID.fullmatch(session_id)
    return match.group(1) if match else None


def is_go_id(session_id: str) -> bool:
    """A well-formed id of the Go layout: a UUID (the Go service's ids) or a
    43-character secret (redkit's ids in that layout)."""
    n = len(session_id)
    if n == SECRET_CHARS:
        return _PLAIN_ID.fullmatch(session_id) is not None
    if n == 36:
        return _UUID.fullmatch(session_id) is not None
    return False


_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d\d):(\d\d))"
)
_ZONES: dict[tuple[str, str, str], timezone] = {}


def parse_time(text: str) -> datetime:
    """An aware datetime from RFC 3339 text as Go writes it: ``Z`` or a
    numeric offset (kept), up to 9 fraction digits, truncated to
    microseconds."""
    if len(text) == 27 and text[26] == "Z" and text[19] == ".":
        # What redkit writes: six fraction digits, UTC.
        try:
            return datetime.fromisoformat(text[:26]).replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    match = _TIME.fullmatch(text)
    if match is None:
        raise SerializationError(f"not an RFC 3339 timestamp: {text[:60]!r}")
    year, month, day, hour, minute, second, frac, sign, oh, om = match.groups()
    micros = int((frac + "00000")[:6]) if frac else 0
    if sign is None:
        zone = timezone.utc
    else:
        key = (sign, oh, om)
        found = _ZONES.get(key)
        if found is None:
            delta = timedelta(hours=int(oh), minutes=int(om))
            found = timezone.utc if not delta else timezone(-delta if sign == "-" else delta)
            _ZONES[key] = found
        zone = found
    try:
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, zone
        )
    except ValueError as exc:
        raise SerializationError(f"not a valid timestamp: {text[:60]!r}: {exc}") from exc
