"""Session ids, key layouts and RFC 3339 timestamps."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from ..errors import ConfigError, SerializationError

SECRET_CHARS = 43  # 32 random bytes, base64url without padding
TAG_CHARS = 22  # 16 bytes of a user tag, base64url without padding

_TAGGED_ID = re.compile(r"([A-Za-z0-9_-]{22})\.[A-Za-z0-9_-]{43}")
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{43}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAX_ID_LENGTH = TAG_CHARS + 1 + SECRET_CHARS


def new_secret() -> str:
    return secrets.token_urlsafe(32)


MIN_SECRET_BYTES = 16

# Prefixes of the messages each HMAC key signs. Neither is a prefix of the
# other, so the same secret given to the store and to the cookie signer
# never yields a tag that is also a valid cookie signature, or the reverse.
TAG_CONTEXT = b"redkit.session.user-tag\x00"
COOKIE_CONTEXT = b"redkit.session.cookie\x00"


def secret_bytes(secret: object, what: str) -> bytes:
    """A secret as bytes (str as UTF-8), at least 16 of them; else
    ConfigError naming ``what`` and never the secret itself."""
    if isinstance(secret, str):
        try:
            secret = secret.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{what} is not valid text (it holds a lone surrogate)") from None
    if not isinstance(secret, bytes):
        raise ConfigError(f"{what} must be str or bytes, got {type(secret).__name__}")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{what} is {len(secret)} bytes; use at least {MIN_SECRET_BYTES} random bytes "
            "(for example secrets.token_urlsafe(32))"
        )
    return secret


def secret_list(secrets_: object, what: str) -> list[bytes]:
    """One secret, or a non-empty sequence of them (current first), as a
    list of distinct byte strings in the given order."""
    items: object = [secrets_] if isinstance(secrets_, (str, bytes)) else secrets_
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise ConfigError(
            f"{what} must be str, bytes or a list of them, got {type(secrets_).__name__}"
        )
    if not items:
        raise ConfigError(f"{what} is an empty list; give at least the current secret")
    out: list[bytes] = []
    for n, item in enumerate(items):
        key = secret_bytes(item, what if len(items) == 1 else f"{what}[{n}]")
        if key not in out:
            out.append(key)
    return out


class UserTags:
    """The hash tag shared by a user's session ids and index: 128 bits of
    HMAC-SHA256 of the user id under the store's secret, so a tag says
    nothing about the user to anyone without the secret. The first secret
    tags new sessions; every secret's tag is where older sessions of the
    user may be. An anonymous session gets a random tag."""

    __slots__ = ("_macs",)

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._macs = [hmac.new(key, TAG_CONTEXT, hashlib.sha256) for key in keys]

    @staticmethod
    def _tag(base: hmac.HMAC, user_id: str) -> str:
        mac = base.copy()
        mac.update(user_id.encode("utf-8"))
        return base64.urlsafe_b64encode(mac.digest()[:16]).decode("ascii").rstrip("=")

    def current(self, user_id: str) -> str:
        """The tag of new sessions of ``user_id``."""
        if not user_id:
            return secrets.token_urlsafe(16)
        return self._tag(self._macs[0], user_id)

    def every(self, user_id: str) -> list[str]:
        """The user's tag under each secret, current first, without repeats."""
        tags: list[str] = []
        for base in self._macs:
            tag = self._tag(base, user_id)
            if tag not in tags:
                tags.append(tag)
        return tags


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


# ASCII digits only, as RFC 3339 and Go's parser have it.
_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d\d):(\d\d))",
    re.ASCII,
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
            if int(oh) > 23 or int(om) > 59:
                raise SerializationError(f"not a valid UTC offset in timestamp: {text[:60]!r}")
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
