"""The FastAPI dependency behind :meth:`RateLimiter.depends`. Imported only
when ``depends`` is called, so redkit does not need Starlette otherwise.
(No ``from __future__ import annotations``: FastAPI reads the parameter
annotations at runtime.)"""

from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import ConnectionUnavailable
from .headers import rate_limit_headers, seconds_up
from .identity import KeyFunc, Network, ProxyHeader, RequestInfo, _resolve, safe_key
from .limiter import Decision, RateLimiter, _Plan


def make_dependency(
    limiter: RateLimiter,
    plan: _Plan,
    key: KeyFunc,
    trusted: tuple[Network, ...],
    proxy_header: ProxyHeader,
    *,
    headers: bool,
    classic_headers: bool,
) -> Callable[..., Awaitable[Decision]]:
    async def rate_limit(request: Request, response: Response) -> Decision:
        scope = request.scope
        client_key = key(RequestInfo(scope, _resolve(scope, trusted, proxy_header)))
        if client_key is None:
            return Decision(
                True, plan.rates[0].limit, plan.rates[0].limit, 0.0, None, plan.rates[0]
            )
        try:
            decision = await limiter._decide(safe_key(client_key), plan, charge=True)
        except ConnectionUnavailable:
            raise HTTPException(
                503, "Rate limiting is unavailable; try again shortly.", {"Retry-After": "1"}
            ) from None
        extra = (
            {
                k.decode(): v.decode()
                for k, v in rate_limit_headers(decision, classic=classic_headers)
            }
            if headers
            else {}
        )
        if not decision.allowed:
            wait = decision.retry_after
            if wait is not None:
                extra["retry-after"] = str(max(1, seconds_up(wait)))
            raise HTTPException(429, "Too many requests.", extra)
        for name, value in extra.items():
            response.headers[name] = value
        return decision

    return rate_limit
