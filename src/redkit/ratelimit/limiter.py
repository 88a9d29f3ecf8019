"""RateLimiter: one Lua script call per decision, on Redis time.

This is the I/O half: the script call, its deadline, the failure policy
and the counters. Plans, script arguments and reading the answer are the
pure ``_decision`` module's."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .._counters import counts_for, snapshot
from .._failures import ANY, POOL_EXHAUSTED, TIMED_OUT, describe_error
from .._telemetry import operation
from .._timing import Sweeper, bounded
from .._validate import seconds
from ..connection import Client
from ..errors import ConfigError, ConnectionUnavailable
from ..keys import KeySpace, validate_key_part
from ..scripts import Script
from ._decision import (
    ALGORITHMS,
    Algorithm,
    Decision,
    Plan,
    Planner,
    RateState,
    admitted,
    decision,
    refused,
)
from .rate import RateSpec

if TYPE_CHECKING:
    from .identity import KeyFunc, ProxyHeader

__all__ = ["ALGORITHMS", "Algorithm", "Decision", "RateLimitStats", "RateLimiter", "RateState"]

log = logging.getLogger("redkit.ratelimit")

_SCRIPTS = {
    name: Script.from_package("redkit.ratelimit", "lua/head.lua", f"lua/{name}.lua", "lua/tail.lua")
    for name in ALGORITHMS
}
_POOL_WAIT = 5.0


@dataclasses.dataclass(frozen=True)
class RateLimitStats:
    """Counters since the limiter was made. ``hits`` counts :meth:`~RateLimiter.hit`
    calls (``allowed`` + ``rejected``), ``peeks`` the look-only calls,
    ``errors`` the calls Redis failed (timeout, refused, server error), of
    which ``failed_open`` were admitted anyway and ``failed_closed`` raised."""

    hits: int = 0
    allowed: int = 0
    rejected: int = 0
    peeks: int = 0
    errors: int = 0
    failed_open: int = 0
    failed_closed: int = 0


class RateLimiter:
    """Redis-backed rate limiter.

    ``algorithm`` is one of ``fixed_window``, ``sliding_window`` (default),
    ``sliding_log`` or ``gcra`` (see ``docs/ratelimit.md`` for how they
    differ). Every decision is one EVALSHA that reads Redis ``TIME``, checks
    every rate and charges all of them or none. All state of one client key
    lives under one hash tag (``{prefix}:ratelimit:{<key>}``), so a decision
    works on a cluster.

    ``fail_open`` (default) admits hits while Redis is unreachable or slower
    than ``timeout`` seconds, logs and counts them; with ``fail_open=False``
    :meth:`hit` raises :class:`~redkit.ConnectionUnavailable` instead.
    The client is not closed by the limiter.
    """

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = "app",
        algorithm: Algorithm = "sliding_window",
        fail_open: bool = True,
        timeout: float | None = 0.5,
    ) -> None:
        planner = Planner(algorithm)
        if timeout is not None:
            timeout = seconds(timeout, "rate limiter timeout")
        self.client = client
        self.algorithm: Algorithm = algorithm
        self.fail_open = bool(fail_open)
        self.timeout = timeout
        self._deadlines = None if timeout is None else Sweeper(timeout)
        self.keys = KeySpace(prefix)
        self._head = f"{self.keys.prefix}:ratelimit:{{"
        self._script = _SCRIPTS[algorithm]
        # validates and prepares the rates of hit() and peek(), cached
        self._plan = planner.plan
        self._counts = counts_for(RateLimitStats)
        self._last_warning = 0.0
        self._quiet_failures = 0

    def __repr__(self) -> str:
        return (
            f"RateLimiter(prefix={self.keys.prefix!r}, algorithm={self.algorithm!r}, "
            f"fail_open={self.fail_open})"
        )

    # -- public API --------------------------------------------------------

    async def hit(
        self, key: str, rates: RateSpec | Iterable[RateSpec], cost: int = 1, *, name: str = ""
    ) -> Decision:
        """Count a hit of ``cost`` against every rate in ``rates`` for ``key``.

        Admitted only if every rate has room for ``cost``; then all are
        charged, otherwise none is. A cost larger than a rate's limit (or
        gcra burst) is always rejected with ``retry_after=None`` and a
        ``reason``. Raises :class:`~redkit.ConfigError` for a bad key,
        rate, cost or name, and :class:`~redkit.ConnectionUnavailable`
        when Redis fails and the limiter fails closed.

        ``name`` keeps separate counters for the same key and rate (the
        middleware passes the rule's name, :meth:`depends` its ``name``).
        """
        return await self.decide(key, self._plan(rates, cost, name), charge=True)

    async def peek(
        self, key: str, rates: RateSpec | Iterable[RateSpec], cost: int = 1, *, name: str = ""
    ) -> Decision:
        """Where ``key`` stands now, consuming nothing: ``allowed`` says
        whether a hit of ``cost`` would be admitted, ``remaining`` what is
        left. Fails like :meth:`hit`."""
        return await self.decide(key, self._plan(rates, cost, name), charge=False)

    async def reset(self, key: str) -> None:
        """Forget every rate's state for ``key`` (all algorithms, rates and
        names, middleware rules included)."""
        self._check_key(key)
        head = self._head + key + "}"
        try:
            fields = await self.client.hkeys(head)
            names = [f.decode() if isinstance(f, bytes) else f for f in fields]
            logs = [f"{head}:{f}" for f in names if f.split("|")[-1].startswith("sl:")]
            await self.client.delete(head, *logs)
        except ANY as exc:
            raise ConnectionUnavailable(
                f"cannot reset rate-limit state of {key!r}: {describe_error(exc)}"
            ) from exc

    def stats(self) -> RateLimitStats:
        """A snapshot of the counters."""
        return snapshot(RateLimitStats, self._counts)

    def depends(
        self,
        rates: RateSpec | Iterable[RateSpec],
        *,
        key: KeyFunc | None = None,
        cost: int = 1,
        name: str = "depends",
        trusted_proxies: Sequence[str] = (),
        proxy_header: ProxyHeader = "x-forwarded-for",
        headers: bool = True,
        classic_headers: bool = True,
    ) -> Callable[..., Awaitable[Decision]]:
        """A FastAPI dependency that charges each request to the route.

        ``Depends(limiter.depends("60/minute", key=by_user_or_ip))``. The
        key function gets a :class:`~redkit.ratelimit.RequestInfo` (default
        :func:`~redkit.ratelimit.by_client_ip`); ``trusted_proxies`` and
        ``proxy_header`` as for the middleware. A rejected request gets the
        middleware's answer: 429 with its JSON body, ``Retry-After`` and the
        rate-limit headers; with a fail-closed limiter and Redis down, 503.
        Admitted responses carry the headers too (``headers=False`` turns all
        of them off, ``classic_headers=False`` only the ``X-RateLimit-*``
        ones). The dependency returns the :class:`Decision`. Rates, cost,
        key function and proxy settings are checked here, not per request.
        """
        from ._depends import make_dependency
        from .identity import by_client_ip, check_proxy_header, parse_networks

        plan = self._plan(rates, cost, name)
        if plan.too_costly:
            raise ConfigError(plan.too_costly)
        if key is not None and not callable(key):
            raise ConfigError(f"key must be a function of the request, got {key!r}")
        return make_dependency(
            self,
            plan,
            key or by_client_ip,
            parse_networks(trusted_proxies),
            check_proxy_header(proxy_header),
            headers=headers,
            classic_headers=classic_headers,
        )

    def _check_key(self, key: str) -> None:
        validate_key_part(key, "rate-limit key", allow_braces=False)

    @operation("ratelimit.decide")  # hit(), peek(), the middleware and depends()
    async def decide(self, key: str, plan: Plan, *, charge: bool) -> Decision:
        """One decision for ``key`` on a prepared ``plan``: charged (a hit)
        or not (a peek). :meth:`hit`, :meth:`peek`, the middleware and
        :meth:`depends` all come here; it fails as :meth:`hit` does."""
        self._check_key(key)
        head = self._head + key + "}"
        keys = [head]
        if plan.logs:
            keys += [f"{head}:{field}" for field in plan.logs]
        args = plan.hit_args if charge else plan.peek_args
        deadlines = self._deadlines
        task = None if deadlines is None else deadlines.enter()
        try:
            if task is None and self.timeout is not None:
                # Not in a task (no sweeper deadline can be kept): a
                # bounded() call keeps the limiter's timeout all the same.
                try:
                    raw = await bounded(self._run(keys, args), self.timeout)
                except asyncio.TimeoutError:
                    return self._failed(key, plan, charge, TimeoutError())
            else:
                raw = await self._run(keys, args)
        except ANY as exc:
            return self._failed(key, plan, charge, exc)
        except asyncio.CancelledError:
            if task is None or deadlines is None or not deadlines.timed_out(task):
                raise
            return self._failed(key, plan, charge, TimeoutError())
        finally:
            if task is not None and deadlines is not None:
                deadlines.leave(task)
        answer = decision(plan, raw)
        counts = self._counts
        if charge:
            counts["hits"] += 1
            counts["allowed" if answer.allowed else "rejected"] += 1
        else:
            counts["peeks"] += 1
        return answer

    async def _run(self, keys: list[str], args: Sequence[str]) -> Any:
        try:
            return await self._script(self.client, keys, args)
        except POOL_EXHAUSTED:
            return await self._wait_for_connection(keys, args)

    async def _wait_for_connection(self, keys: list[str], args: Sequence[str]) -> Any:
        # A cluster client's per-node pool does not queue: when every
        # connection is busy it raises at once. That is load on this process,
        # not Redis failing, so wait for a free connection (the limiter's
        # timeout bounds it; without one, _POOL_WAIT does).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout or _POOL_WAIT)
        delay = 0.0005
        while True:
            await asyncio.sleep(delay)
            try:
                return await self._script(self.client, keys, args)
            except POOL_EXHAUSTED:
                if loop.time() >= deadline:
                    raise
                delay = min(delay * 2, 0.02)

    def _failed(self, key: str, plan: Plan, charge: bool, exc: BaseException) -> Decision:
        counts = self._counts
        counts["errors"] += 1
        if isinstance(exc, TIMED_OUT) and not str(exc):
            what = f"no answer within {self.timeout}s"
        elif isinstance(exc, POOL_EXHAUSTED):
            what = "no free connection in the client's pool"
        else:
            what = describe_error(exc)
        self._warn(key, what)
        if plan.too_costly:
            # never admitted, whatever Redis says or does not say
            if charge:
                counts["hits"] += 1
                counts["rejected"] += 1
            return refused(plan)
        if not self.fail_open:
            counts["failed_closed"] += 1
            raise ConnectionUnavailable(f"rate limiter cannot decide for {key!r}: {what}") from exc
        counts["failed_open"] += 1
        if charge:
            counts["hits"] += 1
            counts["allowed"] += 1
        return admitted(plan, f"admitted without Redis (fail-open): {what}")

    def _warn(self, key: str, what: str) -> None:
        # One line per 10 s at most: a Redis outage under load must not turn
        # into a log storm.
        now = time.monotonic()
        if now - self._last_warning >= 10.0:
            suppressed = self._quiet_failures
            self._last_warning = now
            self._quiet_failures = 0
            log.warning(
                "rate limiter (%s) could not reach Redis for %r: %s; failing %s%s",
                self.algorithm,
                key,
                what,
                "open" if self.fail_open else "closed",
                f" ({suppressed} similar failures not logged)" if suppressed else "",
            )
        else:
            self._quiet_failures += 1
