"""The FastAPI dependency behind :meth:`RateLimiter.depends`. Imported only
when ``depends`` is called, so redkit does not need Starlette otherwise.
(No ``from __future__ import annotations``: FastAPI reads the parameter
annotations at runtime.)

A refused request answers exactly as under the middleware: the same status,
``{"error": {...}}`` body and headers. A dependency can only refuse by
raising, and FastAPI renders an ``HTTPException`` as ``{"detail": ...}``, so
the dependency raises its own subclass and, the first time it does on an
app, puts the handler that renders it in that app's handler table (unless
the app has one for that class already). An app's handler for the status
code itself (429, 503) still comes first, as Starlette orders them.
"""

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import ConnectionUnavailable
from ._decision import Decision, Plan, admitted
from .headers import UNAVAILABLE_BODY, UNAVAILABLE_HEADERS, rate_limit_headers, refusal
from .identity import KeyFunc, Network, ProxyHeader, RequestInfo, resolve_client, safe_key

if TYPE_CHECKING:
    from .limiter import RateLimiter

# Where Starlette's ExceptionMiddleware puts the app's handler tables for the
# request (exception classes, status codes); the router looks a raised
# exception up there.
_HANDLERS_KEY = "starlette.exception_handlers"


class RateLimitRefused(HTTPException):
    """A request ``limiter.depends()`` turned away (429, or 503 with a
    fail-closed limiter and Redis down); carries the middleware's body."""

    def __init__(self, status_code: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(
            status_code,
            "Too many requests." if status_code == 429 else "Rate limiting is unavailable.",
            {name.decode("latin-1"): value.decode("latin-1") for name, value in headers},
        )
        self.body = body


async def render_refusal(request: Request, exc: Exception) -> Response:
    """The response for a :class:`RateLimitRefused`: the middleware's."""
    assert isinstance(exc, RateLimitRefused)
    return Response(
        exc.body, status_code=exc.status_code, headers=exc.headers, media_type="application/json"
    )


def _answer_like_the_middleware(request: Request) -> None:
    tables: Any = request.scope.get(_HANDLERS_KEY)
    if isinstance(tables, tuple) and tables and isinstance(tables[0], dict):
        handlers: dict[Any, Any] = tables[0]
        handlers.setdefault(RateLimitRefused, render_refusal)
    # Without the table (a Starlette too old or too new to have it) FastAPI's
    # HTTPException handler answers: the same status and headers, its body.


def make_dependency(
    limiter: "RateLimiter",
    plan: Plan,
    key: KeyFunc,
    trusted: tuple[Network, ...],
    proxy_header: ProxyHeader,
    *,
    headers: bool,
    classic_headers: bool,
) -> Callable[..., Awaitable[Decision]]:
    async def rate_limit(request: Request, response: Response) -> Decision:
        scope = request.scope
        client_key = key(RequestInfo(scope, resolve_client(scope, trusted, proxy_header)))
        if client_key is None:
            return admitted(plan)
        try:
            decision = await limiter.decide(safe_key(client_key), plan, charge=True)
        except ConnectionUnavailable:
            _answer_like_the_middleware(request)
            raise RateLimitRefused(503, UNAVAILABLE_BODY, UNAVAILABLE_HEADERS) from None
        if not decision.allowed:
            body, extra = refusal(decision, headers=headers, classic=classic_headers)
            _answer_like_the_middleware(request)
            raise RateLimitRefused(429, body, extra)
        if headers:
            for name, value in rate_limit_headers(decision, classic=classic_headers):
                response.headers[name.decode("latin-1")] = value.decode("latin-1")
        return decision

    return rate_limit
