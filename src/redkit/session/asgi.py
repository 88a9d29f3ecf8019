"""SessionMiddleware: server-side sessions for any ASGI app (Starlette,
FastAPI), with ``load_session``, ``login`` and ``logout`` for handlers.

Starlette is not imported: handlers pass a ``Request`` (anything with a
``.scope``) or the ASGI scope itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Iterator, MutableMapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec

from .._asgi import ASGIApp, Message, Receive, Scope, Send, send_json
from .._timing import bounded
from .._validate import seconds
from ..codec import guarded_decoder, strict_json_encoder
from ..errors import ConfigError, ConnectionUnavailable, SerializationError
from . import _ids
from .store import Session, SessionStore

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

__all__ = ["SessionMiddleware", "load_session", "login", "logout", "session_user_id"]

log = logging.getLogger("redkit.session")

T = TypeVar("T")

STATE_KEY = "redkit.session"
_SIG_CHARS = 43
_MAX_COOKIE_CHARS = 256
# Spelled out rather than made by _asgi.error_body: compact JSON, the bytes
# this 503 has always had.
_UNAVAILABLE_BODY = (
    b'{"error":{"code":"SESSION_STORE_UNAVAILABLE",'
    b'"message":"The session store is unavailable; try again shortly."}}'
)
_UNAVAILABLE_HEADERS = [(b"cache-control", b"no-store")]

_encode = strict_json_encoder(None, "session data")
_decode_dict = guarded_decoder(msgspec.json.Decoder(dict[str, Any]).decode, "session data")


class _Signer:
    """HMAC-SHA256 over the session id; the first key signs, every key
    verifies (so a key can be rotated without logging everyone out)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._keys = list(keys)

    def _mac(self, key: bytes, value: str) -> str:
        digest = hmac.new(key, _ids.COOKIE_CONTEXT + value.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def sign(self, value: str) -> str:
        return f"{value}.{self._mac(self._keys[0], value)}"

    def unsign(self, signed: object) -> str | None:
        """The value of a cookie this signer made; None for anything else
        (any object, any text), never an exception."""
        if type(signed) is not str or len(signed) > _MAX_COOKIE_CHARS or not signed.isascii():
            return None
        value, dot, sig = signed.rpartition(".")
        if not dot or not value or len(sig) != _SIG_CHARS:
            return None
        for key in self._keys:
            if hmac.compare_digest(self._mac(key, value), sig):
                return value
        return None


class _NotLoaded(MutableMapping[str, Any]):
    """``scope["session"]`` under ``eager=False`` until the handler calls
    ``await load_session(request)``: any use says so instead of silently
    looking empty."""

    def _fail(self) -> RuntimeError:
        return RuntimeError(
            "the session is not loaded yet (SessionMiddleware(eager=False)): call "
            "`await redkit.load_session(request)` before using request.session"
        )

    def __getitem__(self, key: str) -> Any:
        raise self._fail()

    def __setitem__(self, key: str, value: Any) -> None:
        raise self._fail()

    def __delitem__(self, key: str) -> None:
        raise self._fail()

    def __iter__(self) -> Iterator[str]:
        raise self._fail()

    def __len__(self) -> int:
        raise self._fail()

    def __repr__(self) -> str:
        return "<session not loaded: await redkit.load_session(request)>"


class _State:
    """Per-request session bookkeeping, kept in ``scope["redkit.session"]``."""

    __slots__ = (
        "clear_cookie",
        "cookie_id",
        "loaded",
        "middleware",
        "new_cookie",
        "original",
        "scope",
        "session",
    )

    def __init__(self, middleware: SessionMiddleware, scope: Scope, cookie_id: str | None) -> None:
        self.middleware = middleware
        self.scope = scope
        self.cookie_id = cookie_id
        self.session: Session | None = None
        self.original = b"{}"
        self.loaded = False
        self.new_cookie: str | None = None
        self.clear_cookie = False

    def _start(self, session: Session | None) -> dict[str, Any]:
        """Make ``session`` the request's; SerializationError (and no
        change) if its data does not survive the copy."""
        if session is None or not session.data:
            original = b"{}"
            data: dict[str, Any] = {}
        else:
            # The handler gets its own copy, compared with the stored data
            # when the response starts.
            original = _encode(session.data)
            data = _decode_dict(original)
        self.session = session
        self.original = original
        self.loaded = True
        self.scope["session"] = data
        return data

    async def load(self) -> MutableMapping[str, Any]:
        if self.loaded:
            working: MutableMapping[str, Any] = self.scope["session"]
            return working
        if self.cookie_id is not None:
            store = self.middleware.store
            # Whatever is stored under the id that is not a session record
            # was not written by a session store: the request is served as
            # one without a session (counted in the store's errors).
            try:
                session = await self.middleware.bounded(
                    store.touch(self.cookie_id, self.middleware.refresh_every)
                )
            except SerializationError as exc:
                log.warning("unreadable session record, starting a fresh session: %s", exc)
            else:
                if session is not None:
                    try:
                        return self._start(session)
                    except SerializationError as exc:
                        store._note_unreadable()
                        log.warning("session data does not copy, starting a fresh session: %s", exc)
            self.clear_cookie = True
        return self._start(None)

    def working(self) -> MutableMapping[str, Any]:
        data = self.scope.get("session")
        if type(data) is dict:  # the usual case; skips the slower ABC check
            return data
        if not isinstance(data, MutableMapping) or isinstance(data, _NotLoaded):
            data = {}
            self.scope["session"] = data
        return data

    async def commit(self) -> None:
        """Write what the handler changed (only that) before the response
        headers go out."""
        if not self.loaded:
            return
        working = self.working()
        if self.session is None and not working:
            return
        store = self.middleware.store
        encoded = _encode(dict(working))
        if encoded == self.original:
            return
        if self.session is not None:
            changes = _diff(_decode_dict(self.original), working)
            if not changes:
                return
            updated = await self.middleware.bounded(store.update(self.session.id, changes))
            if updated is None:
                # Ended meanwhile (expired, logged out elsewhere): not revived.
                self.session = None
                self.new_cookie = None
                self.clear_cookie = True
            else:
                self.session = updated
            self.original = encoded
        elif working:
            self.session = await self.middleware.bounded(store.create("", working))
            self.original = encoded
            self.new_cookie = self.session.id

    def cookie_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        mw = self.middleware
        if self.new_cookie is not None:
            return [(b"set-cookie", mw.cookie_header(mw.signer.sign(self.new_cookie), scope))]
        if self.clear_cookie and self.session is None:
            return [(b"set-cookie", mw.cookie_header(None, scope))]
        return []


def _diff(original: dict[str, Any], working: MutableMapping[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for key, value in working.items():
        if key not in original or _encode(original[key]) != _encode(value):
            changes[key] = value
    for key in original:
        if key not in working:
            changes[key] = None
    return changes


def _cookie_value(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for header, value in headers:
        if header != b"cookie":
            continue
        for part in value.split(b";"):
            key, eq, val = part.strip().partition(b"=")
            if eq and key == name:
                try:
                    return val.strip(b'"').decode("ascii")
                except UnicodeDecodeError:
                    return ""
    return None


class SessionMiddleware:
    """Pure ASGI middleware giving every HTTP request a server-side session.

    ``app.add_middleware(SessionMiddleware, store=store, secret_key=KEY)``.

    The cookie carries only the session id, signed with HMAC-SHA256 under
    ``secret_key`` (``fallback_secret_keys`` still verify, for key
    rotation). It is HttpOnly and SameSite=Lax by default, Secure when the
    request came over https (``secure=None``) or as set.

    A request without a valid cookie costs no Redis call; its
    ``request.session`` is an empty dict, and a session (anonymous) is
    created only if the handler puts something in it. With a valid cookie
    the session is read before the handler (``eager=True``) in one round
    trip that also restarts the idle timeout when it is at least
    ``refresh_every`` old; with ``eager=False`` nothing is read until the
    handler calls ``await load_session(request)``. Changes are written at
    the start of the response, as one merge of the changed keys, only when
    something changed; the cookie is set only for a new id and cleared for a
    tampered, unknown or expired one (whose request sees a fresh, empty
    session). If Redis cannot be reached, or a store call takes longer than
    ``timeout`` seconds, the request is answered ``503`` with a JSON error.

    WebSocket connections get ``scope["session"]`` read-only (loaded when
    ``eager``); changes made there are not saved.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: SessionStore,
        secret_key: str | bytes,
        fallback_secret_keys: Sequence[str | bytes] = (),
        cookie_name: str = "session",
        max_age: timedelta | int | Literal["absolute_ttl"] | None = "absolute_ttl",
        path: str = "/",
        domain: str | None = None,
        secure: bool | None = None,
        http_only: bool = True,
        same_site: Literal["lax", "strict", "none"] = "lax",
        eager: bool = True,
        refresh_every: timedelta | float | None = None,
        timeout: float | None = 5.0,
    ) -> None:
        if not isinstance(store, SessionStore):
            raise ConfigError(f"store must be a SessionStore, got {type(store).__name__}")
        keys = [_ids.secret_bytes(secret_key, "secret_key")]
        if isinstance(fallback_secret_keys, (str, bytes)) or not isinstance(
            fallback_secret_keys, Sequence
        ):
            raise ConfigError(
                "fallback_secret_keys must be a list of keys, got "
                f"{type(fallback_secret_keys).__name__}"
            )
        keys += [
            _ids.secret_bytes(k, f"fallback_secret_keys[{n}]")
            for n, k in enumerate(fallback_secret_keys)
        ]
        if (
            not isinstance(cookie_name, str)
            or not cookie_name
            or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in cookie_name)
        ):
            raise ConfigError(
                f"cookie_name must be letters, digits, '-', '_', '.': {cookie_name!r}"
            )
        if same_site not in ("lax", "strict", "none"):
            raise ConfigError(f"same_site must be 'lax', 'strict' or 'none', got {same_site!r}")
        if same_site == "none" and secure is False:
            raise ConfigError("same_site='none' needs secure cookies; browsers reject it otherwise")
        for what, value in (("path", path), ("domain", domain)):
            if value is None and what == "domain":
                continue
            if not isinstance(value, str) or not value.isascii():
                raise ConfigError(f"cookie {what} must be ASCII text, got {value!r}")
            if any(c in value for c in ";,\r\n\x00 "):
                raise ConfigError(
                    f"cookie {what} contains a character cookies cannot carry: {value!r}"
                )
        for what, flag in (("eager", eager), ("http_only", http_only)):
            if not isinstance(flag, bool):
                raise ConfigError(f"{what} must be True or False, got {flag!r}")
        if secure is not None and not isinstance(secure, bool):
            raise ConfigError(f"secure must be True, False or None, got {secure!r}")
        if max_age == "absolute_ttl":
            max_age = store.absolute_ttl
        if max_age is not None:
            max_age = int(seconds(max_age, "max_age", allow_zero=True))
        ttl = store.ttl.total_seconds()
        if refresh_every is None:
            # Refresh at most once a minute, and at least twice per idle
            # ttl, so a session in use never comes near its end.
            refresh = min(60.0, ttl / 2)
        else:
            refresh = seconds(refresh_every, "refresh_every")
            if refresh >= ttl:
                raise ConfigError(
                    f"refresh_every ({refresh:g}s) must be shorter than the store's idle "
                    f"ttl ({ttl:g}s), or sessions in use would expire"
                )
        if timeout is not None:
            timeout = seconds(timeout, "timeout")
        self.app = app
        self.store = store
        self.timeout = timeout
        self.signer = _Signer(keys)
        self.cookie_name = cookie_name
        self.eager = eager
        self.refresh_every = refresh
        self.secure = secure
        self._name = cookie_name.encode("ascii")
        attrs = [f"Path={path}"]
        if domain:
            attrs.append(f"Domain={domain}")
        tail = [f"SameSite={same_site.capitalize()}"]
        if http_only:
            tail.append("HttpOnly")
        self._attrs = "; ".join(attrs)
        self._tail = "; ".join(tail)
        self._max_age = max_age
        self._force_secure = same_site == "none"

    async def bounded(self, operation: Awaitable[T]) -> T:
        """Await a store call, at most ``timeout`` seconds (on top of the
        client's own socket timeouts); past it, ConnectionUnavailable."""
        if self.timeout is None:
            return await operation
        try:
            return await bounded(operation, self.timeout)
        except asyncio.TimeoutError as exc:
            raise ConnectionUnavailable(
                f"the session store did not answer within {self.timeout:g}s"
            ) from exc

    def cookie_header(self, value: str | None, scope: Scope) -> bytes:
        """The ``Set-Cookie`` value for a signed id, or one that clears the
        cookie for ``None``."""
        parts = [f"{self.cookie_name}={value or ''}", self._attrs]
        if value is None:
            parts.append("Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        elif self._max_age is not None:
            parts.append(f"Max-Age={self._max_age}")
        parts.append(self._tail)
        secure = self.secure
        if secure is None:
            secure = self._force_secure or scope.get("scheme") in ("https", "wss")
        if secure:
            parts.append("Secure")
        return "; ".join(parts).encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = _cookie_value(scope.get("headers") or (), self._name)
        cookie_id = self.signer.unsign(raw) if raw else None
        state = _State(self, scope, cookie_id)
        scope[STATE_KEY] = state
        if raw is not None and cookie_id is None:
            state.clear_cookie = True
        if cookie_id is None:
            state._start(None)
        elif self.eager:
            try:
                await state.load()
            except ConnectionUnavailable as exc:
                await self._unavailable(scope, send, exc)
                return
        else:
            scope["session"] = _NotLoaded()
        if kind == "websocket":
            await self.app(scope, receive, send)
            return

        started = False
        replaced = False

        async def send_with_session(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                try:
                    await state.commit()
                except ConnectionUnavailable as exc:
                    replaced = True
                    await self._unavailable(scope, send, exc)
                    return
                headers = state.cookie_headers(scope)
                if headers:
                    message = dict(message)
                    message["headers"] = [*message.get("headers", ()), *headers]
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_session)
        except ConnectionUnavailable as exc:
            if started:
                raise
            if not replaced:
                await self._unavailable(scope, send, exc)

    async def _unavailable(self, scope: Scope, send: Send, exc: ConnectionUnavailable) -> None:
        log.warning("session store unavailable, answering 503: %s", exc)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1011})
            return
        await send_json(send, 503, _UNAVAILABLE_BODY, _UNAVAILABLE_HEADERS)


def _state_of(request: HTTPConnection | Scope) -> _State:
    scope = getattr(request, "scope", request)
    state = scope.get(STATE_KEY) if isinstance(scope, MutableMapping) else None
    if not isinstance(state, _State):
        raise RuntimeError("redkit.SessionMiddleware is not installed on this app")
    return state


async def load_session(request: HTTPConnection | Scope) -> MutableMapping[str, Any]:
    """The request's session data as a mutable mapping (also
    ``request.session`` from then on), reading it from Redis on first use.
    Needed under ``SessionMiddleware(eager=False)``; harmless otherwise.

    Raises :class:`~redkit.ConnectionUnavailable` when Redis cannot be
    reached (the middleware turns that into a 503)."""
    return await _state_of(request).load()


def session_user_id(request: HTTPConnection | Scope) -> str | None:
    """The user the loaded session belongs to; None for an anonymous or
    absent session. Call after the session is loaded."""
    state = _state_of(request)
    if state.session is None or not state.session.user_id:
        return None
    return state.session.user_id


async def login(request: HTTPConnection | Scope, user_id: str) -> Session:
    """Bind the session to ``user_id`` under a new id (the id the client had
    before stops working: no session fixation). Data carries over,
    including changes not yet saved; the new cookie goes out with the
    response. Returns the new session."""
    state = _state_of(request)
    await state.load()
    store = state.middleware.store
    working = state.working()
    rotated = None
    if state.session is not None:
        rotated = await state.middleware.bounded(store.rotate(state.session.id, user_id=user_id))
    if rotated is None:
        rotated = await state.middleware.bounded(store.create(user_id, dict(working)))
        state.original = _encode(dict(working))
    else:
        state.original = _encode(rotated.data)
    state.session = rotated
    state.new_cookie = rotated.id
    return rotated


async def logout(request: HTTPConnection | Scope, *, everywhere: bool = False) -> bool:
    """End the session server-side, empty ``request.session`` and clear the
    cookie. With ``everywhere=True`` every session of the same user ends
    too. True if a session existed. Works without loading the session
    first."""
    state = _state_of(request)
    store = state.middleware.store
    if everywhere and not state.loaded:
        await state.load()
    existed = False
    if state.loaded:
        target = state.session.id if state.session is not None else None
        user = state.session.user_id if state.session is not None else ""
    else:
        target, user = state.cookie_id, ""
    if everywhere and user:
        try:
            existed = await state.middleware.bounded(store.destroy_all_for_user(user)) > 0
        except ConfigError as exc:
            # A record written elsewhere whose user id no store accepts (a
            # control character, 600 characters): it has no index to walk.
            log.warning("cannot end the other sessions of this session's user: %s", exc)
    if target is not None:
        try:
            existed = await state.middleware.bounded(store.destroy(target)) or existed
        except SerializationError as exc:
            # Not a session record under that id (another kind of Redis
            # value): nothing of this user's to end.
            log.warning("logout found no session record, only: %s", exc)
    working = state.working() if state.loaded else None
    if working is not None:
        working.clear()
    else:
        state.scope["session"] = {}
    state.loaded = True
    state.session = None
    state.original = b"{}"
    state.new_cookie = None
    state.clear_cookie = True
    return existed
