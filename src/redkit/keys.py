"""Key naming: ``{prefix}:{entity}:{identifier}:{field}`` (``app:user:123``,
``app:session:abc``, ``app:lock:payment:order-123``), validated, with hash
tags for keys that one script or transaction touches together on a cluster."""

from __future__ import annotations

from typing import Literal

from .errors import ConfigError

__all__ = ["KeySpace", "validate_key_part"]

MAX_PART_LENGTH = 512
_FORBIDDEN = frozenset(chr(c) for c in range(32)) | {"\x7f"}


def validate_key_part(
    value: object, what: str = "key part", *, allow_braces: bool | Literal["tag"] = True
) -> str:
    """Return ``value`` if it may stand in a key, else raise
    :class:`~redkit.errors.ConfigError` naming it: it must be a non-empty
    ``str`` of at most 512 characters, encodable as UTF-8 (no lone
    surrogates, which JSON can carry but Redis keys cannot), with no control
    characters. With ``allow_braces=False`` it may not contain ``{`` or ``}``
    (they would move a hash tag); with ``allow_braces="tag"`` braces may only
    form one non-empty ``{tag}`` pair."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise ConfigError(f"{what} must not be empty")
    if len(value) > MAX_PART_LENGTH:
        raise ConfigError(f"{what} is {len(value)} characters long; at most {MAX_PART_LENGTH}")
    if not _FORBIDDEN.isdisjoint(value):
        raise ConfigError(f"{what} contains a control character: {value[:80]!r}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ConfigError(
                f"{what} is not valid Unicode text (a lone surrogate): {value[:80]!r}"
            ) from None
    if allow_braces is not True and ("{" in value or "}" in value):
        if allow_braces is False:
            raise ConfigError(f"{what} must not contain '{{' or '}}': {value[:80]!r}")
        if not _is_one_tag(value):
            raise ConfigError(
                f"{what} may use braces only as one non-empty '{{tag}}' pair: {value[:80]!r}"
            )
    return value


def _is_one_tag(value: str) -> bool:
    opening = value.find("{")
    closing = value.find("}")
    return value.count("{") == 1 and value.count("}") == 1 and opening < closing - 1


class KeySpace:
    """Builds keys under one prefix.

    >>> ks = KeySpace("app")
    >>> ks.key("user", "123")
    'app:user:123'
    >>> ks.tagged("ratelimit", "client-1", "a")
    'app:ratelimit:{client-1}:a'

    A prefix may contain ``:`` (``"app:v2"``) but no braces, so that the hash
    tag a component puts in a key is the one Redis Cluster sees.
    """

    __slots__ = ("_head", "prefix")

    def __init__(self, prefix: str = "app") -> None:
        self.prefix = validate_key_part(prefix, "key prefix", allow_braces=False)
        self._head = prefix + ":"

    def __repr__(self) -> str:
        return f"KeySpace({self.prefix!r})"

    def key(self, *parts: str) -> str:
        """``prefix:part1:part2...``; every part is validated."""
        if not parts:
            raise ConfigError("a key needs at least one part after the prefix")
        for part in parts:
            validate_key_part(part)
        return self._head + ":".join(parts)

    def tagged(self, entity: str, tag: str, *fields: str) -> str:
        """``prefix:entity:{tag}:field...``: every key with the same ``tag``
        lands in the same cluster slot."""
        validate_key_part(entity, "entity")
        validate_key_part(tag, "hash tag", allow_braces=False)
        for part in fields:
            validate_key_part(part)
        tail = (":" + ":".join(fields)) if fields else ""
        return f"{self._head}{entity}:{{{tag}}}{tail}"

    def pattern(self, *parts: str) -> str:
        """A SCAN/KEYS match pattern under the prefix: glob characters in
        ``parts`` are kept, the prefix itself is escaped."""
        for part in parts:
            validate_key_part(part)
        return escape_glob(self._head) + ":".join(parts)

    def owns(self, key: str | bytes) -> bool:
        """True when ``key`` lies under this prefix."""
        text = key.decode() if isinstance(key, bytes) else key
        return text.startswith(self._head)

    def relative(self, key: str | bytes) -> str:
        """``key`` without the prefix and its colon."""
        text = key.decode() if isinstance(key, bytes) else key
        if not text.startswith(self._head):
            raise ConfigError(f"{text!r} is not under prefix {self.prefix!r}")
        return text[len(self._head) :]


def escape_glob(text: str) -> str:
    """``text`` with Redis glob characters escaped, to match it literally."""
    out = []
    for char in text:
        if char in "*?[]\\":
            out.append("\\")
        out.append(char)
    return "".join(out)
