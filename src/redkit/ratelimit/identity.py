"""Who is asking: the client IP (a proxy header only from trusted proxies)
and the key functions that turn a request into a rate-limit key."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any, Literal

from ..errors import ConfigError
from ..keys import validate_key_part

__all__ = [
    "PROXY_HEADERS",
    "KeyFunc",
    "ProxyHeader",
    "RequestInfo",
    "by_client_ip",
    "by_user_or_ip",
    "check_proxy_header",
    "client_ip",
    "parse_networks",
    "resolve_client",
    "safe_key",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Scope = MutableMapping[str, Any]

ProxyHeader = Literal["x-forwarded-for", "forwarded"]
"""The header a deployment's trusted proxies append the client address to."""
PROXY_HEADERS: tuple[ProxyHeader, ...] = ("x-forwarded-for", "forwarded")

# The longest hop that can be an address: a full IPv6 address with an
# embedded IPv4 part, a zone, brackets and a port. Anything longer is
# malformed, and is neither parsed nor cached (a client could otherwise fill
# the cache with 16 KB strings).
_MAX_HOP = 96
_MAX_CACHED_ELEMENT = 256
_PORT = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+")  # RFC 7239 port or obfuscated port
_OWS = " \t"


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
        try:
            wanted = name.lower().encode("latin-1")
        except (AttributeError, UnicodeEncodeError):
            return None  # no header can have that name
        found = None
        for raw_name, value in self.scope.get("headers", ()):
            if isinstance(raw_name, bytes) and raw_name.lower() == wanted:
                found = _latin1(value)
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
    user_id = _user_id(request.scope)
    return by_client_ip(request) if user_id is None else f"user:{user_id}"


def _user_id(scope: Scope) -> str | None:
    # Whatever the user object or state holds, the answer is an id or None:
    # Starlette's BaseUser raises NotImplementedError from the properties a
    # subclass left out, and an id's __str__ is someone else's code.
    try:
        user = scope.get("user")
        if user is not None and _attribute(user, "is_authenticated"):
            identity = _attribute(user, "identity") or _attribute(user, "display_name")
            if identity:
                return str(identity)
    except Exception:
        pass
    try:
        state = scope.get("state")
        if isinstance(state, Mapping):
            user_id = state.get("user_id")
            if user_id is not None and user_id != "":
                return str(user_id)
    except Exception:
        pass
    return None


def _attribute(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # a property that raises is one that is not there
        return None


def safe_key(key: object) -> str:
    """``key`` if it is usable as a rate-limit key, else a digest of it
    (``"sha256:<hex>"``), so that odd user ids or header values (braces,
    control characters, lone surrogates, over-long text, not a string at
    all) still get their own allowance rather than an error."""
    try:
        return validate_key_part(key, "rate-limit key", allow_braces=False)
    except ConfigError:
        pass
    if isinstance(key, str):
        # surrogatepass: a lone surrogate has no UTF-8 form, but this one is
        # still distinct from every real text's
        data = key.encode("utf-8", "surrogatepass")
    else:
        try:
            text = repr(key)
        except Exception:
            text = ""
        data = f"{type(key).__qualname__}:{text}".encode("utf-8", "surrogatepass")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_networks(values: Iterable[str] | str) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "127.0.0.1"]`` as networks; raises :class:`ConfigError`
    naming an entry that is not an address or CIDR block."""
    if isinstance(values, str):
        values = [values]
    try:
        items = list(values)
    except TypeError:
        raise ConfigError(
            f"trusted proxies must be a list of addresses or CIDR blocks, got {_show(values)}"
        ) from None
    networks = []
    for value in items:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"trusted proxy {_show(value)} is not an IP address or CIDR block"
            ) from None
    return tuple(networks)


def check_proxy_header(value: object) -> ProxyHeader:
    """``value`` as one of :data:`PROXY_HEADERS` (any case); else
    :class:`ConfigError` naming it."""
    if isinstance(value, str):
        name = value.strip().lower()
        for known in PROXY_HEADERS:
            if name == known:
                return known
    raise ConfigError(
        "proxy_header must be 'x-forwarded-for' or 'forwarded' (the header your "
        f"trusted proxies append the client address to), got {_show(value)}"
    )


def client_ip(
    scope: Mapping[str, Any],
    trusted_proxies: tuple[Network, ...] = (),
    *,
    proxy_header: ProxyHeader = "x-forwarded-for",
) -> str | None:
    """The client's IP address for an ASGI ``scope``.

    Without trusted proxies, or when the peer is not one of them, it is the
    peer address from the scope and proxy headers are ignored. When the peer
    is a trusted proxy, only ``proxy_header`` is read (``"x-forwarded-for"``
    or ``"forwarded"``; the other is ignored, whatever it says), its lines
    joined in order. Its hops are walked from the right, skipping trusted
    proxies, and the first untrusted address is the client; if every hop
    is trusted, the leftmost one. A hop that is not an address (``unknown``,
    an obfuscated name, garbage) ends the walk at the trusted proxy that
    reported it, so what a client writes to the left of its own address is
    never used. Never raises for anything a client sent.
    """
    if proxy_header not in PROXY_HEADERS:
        proxy_header = check_proxy_header(proxy_header)
    return resolve_client(scope, trusted_proxies, proxy_header)


def resolve_client(
    scope: Mapping[str, Any], trusted: tuple[Network, ...], header: ProxyHeader
) -> str | None:
    """:func:`client_ip` with networks parsed and ``header`` checked
    already: the per-request step of the middleware and ``depends()``."""
    peer = _peer(scope.get("client"))
    if peer is None or not trusted or not _trusted(peer, trusted):
        return peer
    wanted = b"forwarded" if header == "forwarded" else b"x-forwarded-for"
    lines = []
    try:
        for raw_name, value in scope.get("headers", ()):
            if isinstance(raw_name, bytes) and raw_name.lower() == wanted:
                lines.append(_latin1(value))
    except (TypeError, ValueError):  # not a list of pairs: the server's bug, not a hop
        return peer
    if not lines:
        return peer
    parse = _forwarded_for if header == "forwarded" else _hop
    current = peer
    # Split on every comma, quotes or not: the elements a proxy appends have
    # no comma inside, so nothing a client wrote further left (an unclosed
    # quote, say) can change how they are read.
    for hop in reversed(",".join(lines).split(",")):
        address = parse(hop)
        if address is None:
            return current
        if not _trusted(address, trusted):
            return address
        current = address
    return current


def _latin1(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    return ""  # unreadable: an empty hop, which ends the walk


def _peer(client: object) -> str | None:
    if isinstance(client, (tuple, list)) and client and isinstance(client[0], str):
        return _hop(client[0])
    return None


def _forwarded_for(element: str) -> str | None:
    """The ``for=`` node of one ``Forwarded`` element as an address, or
    ``None`` when it has none, has two, or it is not an address."""
    if len(element) <= _MAX_CACHED_ELEMENT:
        return _cached_forwarded_for(element)
    return _parse_forwarded_for(element)


def _parse_forwarded_for(element: str) -> str | None:
    found = None
    for pair in element.split(";"):
        name, _, value = pair.partition("=")
        if name.strip(_OWS).lower() == "for":
            if found is not None:
                return None
            found = value.strip(_OWS)
    if found is None:
        return None
    if found.startswith('"'):
        if len(found) < 2 or not found.endswith('"'):
            return None
        found = found[1:-1]
    if '"' in found or "\\" in found:
        return None  # escapes never occur in an address
    return _hop(found)


_cached_forwarded_for = functools.lru_cache(maxsize=4096)(_parse_forwarded_for)


def _hop(text: str) -> str | None:
    """One hop (``192.0.2.1``, ``192.0.2.1:80``, ``2001:db8::1``,
    ``[2001:db8::1]:80``) as a normalised address, or ``None``."""
    text = text.strip(_OWS)
    if len(text) > _MAX_HOP:
        return None
    return _address(text)


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> str | None:
    if text.startswith("["):
        close = text.find("]")
        rest = text[close + 1 :]
        if close < 0 or (rest and not (rest[0] == ":" and _PORT.fullmatch(rest, 1))):
            return None
        text = text[1:close]
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not _PORT.fullmatch(port):
            return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if address.scope_id is not None:
            # the zone names an interface of whoever wrote it; the client
            # is the address
            address = ipaddress.IPv6Address(int(address))
    return str(address)


@functools.lru_cache(maxsize=4096)
def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in net for net in networks)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
