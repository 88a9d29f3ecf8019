"""RateLimitMiddleware: pure ASGI rate limiting for Starlette and FastAPI."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Literal

from .._asgi import ASGIApp, Message, Receive, Scope, Send, send_json
from ..errors import ConfigError, ConnectionUnavailable
from ._decision import Plan, Planner, combine, merge
from .headers import UNAVAILABLE_BODY, UNAVAILABLE_HEADERS, rate_limit_headers, refusal
from .identity import (
    KeyFunc,
    ProxyHeader,
    RequestInfo,
    by_client_ip,
    by_user_or_ip,
    check_proxy_header,
    parse_networks,
    resolve_client,
    safe_key,
)
from .limiter import RateLimiter
from .rate import API_RATE, AUTH_RATE, USER_RATE, Rate, RateSpec, parse_rates

__all__ = ["RateLimitMiddleware", "RateLimitRule"]

log = logging.getLogger("redkit.ratelimit")


def _compile(pattern: str, what: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise ConfigError(f"{what} must be a path starting with '/', got {pattern!r}")
    return re.compile(
        "".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", pattern))
    )


class RateLimitRule:
    """Limits requests whose path matches ``path`` to ``rate`` (one rate or a
    list) per key.

    ``*`` in ``path`` matches any characters, ``/`` included:
    ``"/auth/*"`` covers ``/auth/login`` and ``/auth/a/b``, not ``/auth``.
    ``key`` maps a :class:`RequestInfo` to a key (default
    :func:`by_client_ip`; returning ``None`` skips the rule for that
    request, and the next matching rule is tried). ``methods`` limits the
    rule to those HTTP methods. ``name``
    (default: the path) separates this rule's counters from other rules'
    and names its policy in the ``RateLimit`` headers. Rates, cost and path
    are checked here: a bad value raises :class:`~redkit.ConfigError`.
    """

    def __init__(
        self,
        path: str,
        rate: RateSpec | Iterable[RateSpec],
        key: KeyFunc = by_client_ip,
        *,
        methods: Iterable[str] | None = None,
        name: str | None = None,
        cost: int = 1,
    ) -> None:
        self.path = path
        self._regex = _compile(path, "rule path")
        self.rates: tuple[Rate, ...] = parse_rates(rate)
        if not callable(key):
            raise ConfigError(f"rule key must be a function of the request, got {key!r}")
        self.key = key
        self.methods = (
            None if methods is None else frozenset(m.upper() for m in _strings(methods, "methods"))
        )
        self.name = path if name is None else name
        if not isinstance(self.name, str) or not self.name or "|" in self.name:
            raise ConfigError(f"rule name must be a non-empty string without '|', got {name!r}")
        if type(cost) is not int or cost < 1:
            raise ConfigError(f"rule cost must be an int of at least 1, got {cost!r}")
        for r in self.rates:
            if cost > r.limit:
                raise ConfigError(f"rule cost {cost} exceeds the limit of rate {r}")
        self.cost = cost

    def __repr__(self) -> str:
        rates = ", ".join(str(r) for r in self.rates)
        key = getattr(self.key, "__name__", self.key)
        return f"RateLimitRule({self.path!r}, [{rates}], key={key})"

    def matches(self, path: str, method: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return self._regex.fullmatch(path) is not None

    # Presets with the Go service's numbers.

    @classmethod
    def api(cls, path: str = "/*", *, name: str | None = None) -> RateLimitRule:
        """100 requests a minute per client IP."""
        return cls(path, API_RATE, by_client_ip, name=name)

    @classmethod
    def auth(cls, path: str = "/auth/*", *, name: str | None = None) -> RateLimitRule:
        """5 requests a minute per client IP, for login and similar routes."""
        return cls(path, AUTH_RATE, by_client_ip, name=name)

    @classmethod
    def user(cls, path: str = "/*", *, name: str | None = None) -> RateLimitRule:
        """60 requests a minute per user id, per client IP without a user."""
        return cls(path, USER_RATE, by_user_or_ip, name=name)


def _strings(values: Iterable[str], what: str) -> list[str]:
    if isinstance(values, str):
        values = [values]
    try:
        out = list(values)
    except TypeError:
        raise ConfigError(f"{what} must be a list of strings, got {values!r}") from None
    for v in out:
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{what} must be non-empty strings, got {v!r}")
    return out


class RateLimitMiddleware:
    """Pure ASGI middleware applying :class:`RateLimitRule`\\ s to HTTP requests.

    ``app.add_middleware(RateLimitMiddleware, limiter=limiter, rules=[...])``.
    With ``match="first"`` (default) only the first matching rule applies;
    with ``match="all"`` every matching rule does (rules sharing a key are
    charged in one atomic call). ``exempt_paths`` (same ``*`` patterns) and
    ``exempt_methods`` are never limited. ``trusted_proxies`` (addresses or
    CIDR blocks) enables ``Forwarded``/``X-Forwarded-For`` for requests
    arriving from them.

    A rejected request gets 429 with ``{"error": {"code": "RATE_LIMITED",
    "message": ...}}``, ``Retry-After`` and the rate-limit headers; admitted
    responses get the headers too (``headers=False`` turns them off,
    ``classic_headers=False`` only the ``X-RateLimit-*`` ones). When Redis
    fails, a fail-open limiter lets the request through without headers; a
    fail-closed one answers 503 (code ``RATE_LIMIT_UNAVAILABLE``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        rules: Sequence[RateLimitRule],
        match: Literal["first", "all"] = "first",
        trusted_proxies: Iterable[str] = (),
        proxy_header: ProxyHeader = "x-forwarded-for",
        exempt_paths: Iterable[str] = (),
        exempt_methods: Iterable[str] = (),
        headers: bool = True,
        classic_headers: bool = True,
    ) -> None:
        if not isinstance(limiter, RateLimiter):
            raise ConfigError(f"limiter must be a RateLimiter, got {limiter!r}")
        try:
            rules = list(rules)
        except TypeError:
            raise ConfigError(
                f"rules must be a non-empty list of RateLimitRule, got {rules!r}"
            ) from None
        if not rules or not all(isinstance(r, RateLimitRule) for r in rules):
            raise ConfigError(f"rules must be a non-empty list of RateLimitRule, got {rules!r}")
        if match not in ("first", "all"):
            raise ConfigError(f"match must be 'first' or 'all', got {match!r}")
        self.app = app
        self.limiter = limiter
        self.rules = rules
        self.match_all = match == "all"
        self.trusted = parse_networks(trusted_proxies)
        self.proxy_header: ProxyHeader = check_proxy_header(proxy_header)
        self.exempt_paths = [
            _compile(p, "exempt path") for p in _strings(exempt_paths, "exempt paths")
        ]
        self.exempt_methods = frozenset(
            m.upper() for m in _strings(exempt_methods, "exempt methods")
        )
        self.headers = headers
        self.classic_headers = classic_headers
        planner = Planner(limiter.algorithm)
        self._plans = {id(r): planner.plan(r.rates, r.cost, r.name) for r in rules}
        for plan in self._plans.values():
            if plan.too_costly:
                raise ConfigError(plan.too_costly)
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise ConfigError(f"rule names must be unique, got {names}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        if method in self.exempt_methods or any(p.fullmatch(path) for p in self.exempt_paths):
            await self.app(scope, receive, send)
            return
        rules = [r for r in self.rules if r.matches(path, method)]
        if not rules:
            await self.app(scope, receive, send)
            return
        info = RequestInfo(scope, resolve_client(scope, self.trusted, self.proxy_header))
        groups: dict[str, list[Plan]] = {}
        for rule in rules:
            key = rule.key(info)
            if key is None:  # the rule does not apply to this request
                continue
            groups.setdefault(safe_key(key), []).append(self._plans[id(rule)])
            if not self.match_all:
                break
        if not groups:
            await self.app(scope, receive, send)
            return
        decisions = []
        limiter = self.limiter
        try:
            for key, plans in groups.items():
                decision = await limiter.decide(key, combine(plans), charge=True)
                decisions.append(decision)
                if not decision.allowed:
                    break  # later keys are not charged for a refused request
        except ConnectionUnavailable as exc:
            await send_json(send, 503, UNAVAILABLE_BODY, UNAVAILABLE_HEADERS)
            log.debug("rate limiter failed closed for %s: %s", path, exc)
            return
        decision = merge(decisions)
        if not decision.allowed:
            body, refused_headers = refusal(
                decision, headers=self.headers, classic=self.classic_headers
            )
            await send_json(send, 429, body, refused_headers)
            return
        extra = rate_limit_headers(decision, classic=self.classic_headers) if self.headers else []
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
