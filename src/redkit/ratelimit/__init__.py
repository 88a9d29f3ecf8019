"""Rate limiting on Redis: exact, atomic decisions on Redis time, four
algorithms, and pure ASGI middleware with the standard headers::

    limiter = RateLimiter(client, prefix="app", algorithm="sliding_window")
    decision = await limiter.hit("ip:10.0.0.1", "100/minute")
    if not decision.allowed:
        ...  # decision.retry_after seconds from now it will be

See ``docs/ratelimit.md``.
"""

from .asgi import RateLimitMiddleware, RateLimitRule
from .headers import rate_limit_headers
from .identity import KeyFunc, RequestInfo, by_client_ip, by_user_or_ip, client_ip
from .limiter import ALGORITHMS, Algorithm, Decision, RateLimiter, RateLimitStats, RateState
from .rate import API_RATE, AUTH_RATE, USER_RATE, Rate, RateSpec

__all__ = [
    "ALGORITHMS",
    "API_RATE",
    "AUTH_RATE",
    "USER_RATE",
    "Algorithm",
    "Decision",
    "KeyFunc",
    "Rate",
    "RateLimitMiddleware",
    "RateLimitRule",
    "RateLimitStats",
    "RateLimiter",
    "RateSpec",
    "RateState",
    "RequestInfo",
    "by_client_ip",
    "by_user_or_ip",
    "client_ip",
    "rate_limit_headers",
]
