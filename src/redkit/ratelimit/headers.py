"""Rate-limit response headers: the IETF draft's ``RateLimit-Policy`` and
``RateLimit`` (draft-ietf-httpapi-ratelimit-headers, structured-field form),
the classic ``X-RateLimit-*`` and ``Retry-After``."""

from __future__ import annotations

import functools
import math

from .._asgi import Headers
from .._asgi import error_body as rejection_body
from ._decision import Decision, RateState

__all__ = [
    "RATE_LIMITED_BODY_CODE",
    "UNAVAILABLE_BODY",
    "UNAVAILABLE_HEADERS",
    "rate_limit_headers",
    "refusal",
    "rejection_body",
    "seconds_up",
]

RATE_LIMITED_BODY_CODE = "RATE_LIMITED"


def seconds_up(value: float) -> int:
    """Whole seconds, rounded up so a client never comes back early."""
    return max(0, math.ceil(value - 1e-9))


@functools.lru_cache(maxsize=1024)
def _sf_string(text: str) -> str:
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


_POLICIES: dict[tuple[str, ...], bytes] = {}


def _policy(names: tuple[str, ...], states: tuple[RateState, ...]) -> bytes:
    policy = _POLICIES.get(names)
    if policy is None:
        policy = ", ".join(
            f"{_sf_string(s.name)};q={s.rate.limit};w={seconds_up(s.rate.period)}" for s in states
        ).encode()
        if len(_POLICIES) < 4096:
            _POLICIES[names] = policy
    return policy


def rate_limit_headers(decision: Decision, *, draft: bool = True, classic: bool = True) -> Headers:
    """Headers describing ``decision`` (nothing for a degraded, fail-open
    decision: the numbers are unknown). ``Retry-After`` is added for a
    rejection that waiting can cure, in whole seconds rounded up."""
    out: Headers = []
    if decision.degraded:
        return out
    if draft and decision.states:
        # a state's name spells out its rate, so the names alone key the cache
        policy = _policy(tuple(s.name for s in decision.states), decision.states)
        current = ", ".join(
            f"{_sf_string(s.name)};r={s.remaining};t={seconds_up(s.reset_after)}"
            for s in decision.states
        )
        out.append((b"ratelimit-policy", policy))
        out.append((b"ratelimit", current.encode()))
    if classic:
        out.append((b"x-ratelimit-limit", str(decision.limit).encode()))
        out.append((b"x-ratelimit-remaining", str(decision.remaining).encode()))
        out.append((b"x-ratelimit-reset", str(seconds_up(decision.reset_after)).encode()))
    if not decision.allowed and decision.retry_after is not None:
        out.append((b"retry-after", str(max(1, seconds_up(decision.retry_after))).encode()))
    return out


# A fail-closed limiter with Redis down: the 503 the middleware sends.
UNAVAILABLE_BODY = rejection_body(
    "RATE_LIMIT_UNAVAILABLE", "Rate limiting is unavailable; try again shortly."
)
UNAVAILABLE_HEADERS: Headers = [(b"retry-after", b"1")]


def refusal(
    decision: Decision, *, headers: bool = True, classic: bool = True
) -> tuple[bytes, Headers]:
    """The body and headers of the 429 for a refused ``decision``: the
    rate-limit headers (``headers=False``: ``Retry-After`` alone) and
    ``{"error": {"code": "RATE_LIMITED", "message": ...}}`` saying when to
    come back. The middleware and ``limiter.depends()`` answer with it."""
    wait = decision.retry_after
    if headers:
        extra = rate_limit_headers(decision, classic=classic)
    elif wait is not None:
        extra = [(b"retry-after", str(max(1, seconds_up(wait))).encode())]
    else:
        extra = []
    message = (
        f"Too many requests; retry in {max(1, seconds_up(wait))} seconds."
        if wait is not None
        else "Too many requests."
    )
    return rejection_body(RATE_LIMITED_BODY_CODE, message), extra
