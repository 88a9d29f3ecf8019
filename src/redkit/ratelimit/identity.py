"""Who is asking: the client IP (proxy headers only from trusted proxies) and
the key functions that turn a request into a rate-limit key."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

from ..errors import ConfigError
from ..keys import validate_key_part

__all__ = [
    "KeyFunc",
    "RequestInfo",
    "by_client_ip",
    "by_user_or_ip",
    "client_ip",
    "parse_networks",
    "safe_key",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Scope = MutableMapping[str, Any]


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    """What a key function sees: the ASGI ``scope`` and the resolved
    ``client_ip`` (``None`` when the server did not give one)."""

    scope: Scope
    client_ip: str | None

    @property
    def path(self) -> str:
        return str(self.scope.get("path", ""))

    @property
    def method(self) -> str:
        return str(self.scope.get("method", "GET"))

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower().encode("latin-1")
        found = None
        for raw_name, value in self.scope.get("headers", ()):
            if raw_name.lower() == wanted:
                found = value.decode("latin-1")
        return found


KeyFunc = Callable[[RequestInfo], "str | None"]
"""Turns a request into a rate-limit key; ``None`` means the rule does not
apply to this request."""


def by_client_ip(request: RequestInfo) -> str:
    """``"ip:<address>"``; ``"ip:unknown"`` when the server gave no peer
    address (all such requests then share one allowance)."""
    return f"ip:{request.client_ip or 'unknown'}"


def by_user_or_ip(request: RequestInfo) -> str:
    """``"user:<id>"`` for an authenticated user, else :func:`by_client_ip`.

    The user id is taken from Starlette's ``scope["user"]`` (set by
    ``AuthenticationMiddleware``) when it is authenticated, else from
    ``request.state.user_id`` (``scope["state"]["user_id"]``) if an earlier
    middleware or dependency set it.
    """
    scope = request.scope
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        identity = getattr(user, "identity", None) or getattr(user, "display_name", None)
        if identity:
            return f"user:{identity}"
    state = scope.get("state")
    if isinstance(state, Mapping):
        user_id = state.get("user_id")
        if user_id is not None and user_id != "":
            return f"user:{user_id}"
    return by_client_ip(request)


def safe_key(key: str) -> str:
    """``key`` if it is usable as a rate-limit key, else a digest of it, so
    that odd user ids or header values still get their own allowance rather
    than an error."""
    try:
        return validate_key_part(key, "rate-limit key", allow_braces=False)
    except ValueError:
        text = key if isinstance(key, str) else repr(key)
        return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def parse_networks(values: Iterable[str] | str) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "127.0.0.1"]`` as networks; raises :class:`ConfigError`
    naming an entry that is not an address or CIDR block."""
    if isinstance(values, str):
        values = [values]
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"trusted proxy {value!r} is not an IP address or CIDR block"
            ) from None
    return tuple(networks)


def client_ip(scope: Mapping[str, Any], trusted_proxies: tuple[Network, ...] = ()) -> str | None:
    """The client's IP address for an ASGI ``scope``.

    Without trusted proxies, or when the peer is not one of them, it is the
    peer address from the scope and proxy headers are ignored. When the peer
    is a trusted proxy, the chain in ``Forwarded`` (if present) or
    ``X-Forwarded-For`` is walked from the right and the first address that
    is not a trusted proxy is the client; if every hop is trusted, the
    leftmost one. A hop that is not an IP address (``unknown``, an
    obfuscated name) ends the walk at the trusted proxy that reported it.
    """
    client = scope.get("client")
    peer = _normalise(client[0]) if client else None
    if peer is None or not trusted_proxies or not _trusted(peer, trusted_proxies):
        return peer
    forwarded: list[str] = []
    x_forwarded: list[str] = []
    for raw_name, value in scope.get("headers", ()):
        name = raw_name.lower()
        if name == b"forwarded":
            forwarded.append(value.decode("latin-1"))
        elif name == b"x-forwarded-for":
            x_forwarded.append(value.decode("latin-1"))
    if forwarded:
        hops = _forwarded_for(",".join(forwarded))
    elif x_forwarded:
        hops = [h.strip() for h in ",".join(x_forwarded).split(",")]
    else:
        return peer
    current = peer
    for hop in reversed(hops):
        address = _normalise(hop)
        if address is None:
            return current
        current = address
        if not _trusted(address, trusted_proxies):
            return address
    return current


def _forwarded_for(value: str) -> list[str]:
    hops = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, raw = pair.partition("=")
            if name.strip().lower() == "for":
                hops.append(raw.strip().strip('"'))
                break
        else:
            hops.append("")
    return hops


@functools.lru_cache(maxsize=4096)
def _normalise(text: str) -> str | None:
    text = text.strip()
    if text.startswith("["):  # "[2001:db8::1]:4711" (Forwarded) or "[::1]"
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # "192.0.2.1:4711"
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


@functools.lru_cache(maxsize=4096)
def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in net for net in networks)
