"""RateLimiter: one Lua script call per decision, on Redis time."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from redis.exceptions import MaxConnectionsError, RedisError

from .._failures import describe_error
from .._telemetry import operation
from .._timing import Sweeper, bounded
from .._validate import seconds
from ..connection import Client
from ..errors import ConfigError, ConnectionUnavailable
from ..keys import KeySpace, validate_key_part
from ..scripts import Script
from .rate import Rate, RateSpec, parse_rates

if TYPE_CHECKING:
    from .identity import KeyFunc, ProxyHeader

__all__ = ["ALGORITHMS", "Algorithm", "Decision", "RateLimitStats", "RateLimiter", "RateState"]

log = logging.getLogger("redkit.ratelimit")
T = TypeVar("T")

Algorithm = Literal["fixed_window", "sliding_window", "sliding_log", "gcra"]
ALGORITHMS: tuple[str, ...] = ("fixed_window", "sliding_window", "sliding_log", "gcra")
_TAGS = {"fixed_window": "fw", "sliding_window": "sw", "sliding_log": "sl", "gcra": "gcra"}
_SCRIPTS = {name: Script.from_package("redkit.ratelimit", f"lua/{name}.lua") for name in ALGORITHMS}
_POOL_WAIT = 5.0
_FAILURES = (RedisError, OSError, TimeoutError, asyncio.TimeoutError)


@dataclasses.dataclass(frozen=True, slots=True)
class RateState:
    """Where one rate of a decision stands.

    ``remaining`` is what is left after this hit (or now, for a peek or a
    rejected hit); ``reset_after`` is the seconds until the rate is back to
    its full allowance; ``retry_after`` the seconds until a hit of the same
    cost would be admitted (``None`` when it was, or when the cost exceeds
    what the rate ever allows). ``name`` identifies the policy in headers.
    """

    rate: Rate
    allowed: bool
    remaining: int
    reset_after: float
    retry_after: float | None
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The answer to :meth:`RateLimiter.hit` or :meth:`RateLimiter.peek`.

    With several rates, ``limit``, ``remaining``, ``reset_after`` and
    ``retry_after`` are those of the binding rate: the one that rejected the
    hit with the longest wait, or, when admitted, the one with the least
    left. ``states`` has every rate. ``reason`` explains a rejection that
    waiting cannot cure (cost above the limit) or an admission made without
    Redis (``degraded`` is then true: the limiter failed open). Times are
    seconds.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float | None
    rate: Rate
    states: tuple[RateState, ...] = ()
    reason: str | None = None
    degraded: bool = False


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


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything about a set of (namespace, rate, cost) items that does not
    depend on the client key: script arguments are built once."""

    rates: tuple[Rate, ...]
    names: tuple[str, ...]
    fields: tuple[str, ...]
    args: tuple[str, ...]
    too_costly: str | None
    hit_args: tuple[str, ...] = ()
    peek_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "hit_args", ("1", *self.args))
        object.__setattr__(self, "peek_args", ("0", *self.args))


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
        if not isinstance(algorithm, str) or algorithm not in _TAGS:
            raise ConfigError(
                f"unknown rate-limit algorithm {algorithm!r}; use one of {ALGORITHMS}"
            )
        if timeout is not None:
            timeout = seconds(timeout, "rate limiter timeout")
        self.client = client
        self.algorithm: Algorithm = algorithm
        self.fail_open = bool(fail_open)
        self.timeout = timeout
        self._deadlines = None if timeout is None else Sweeper(timeout)
        self.keys = KeySpace(prefix)
        self._head = f"{self.keys.prefix}:ratelimit:{{"
        self._tag = _TAGS[algorithm]
        self._script = _SCRIPTS[algorithm]
        self._log = algorithm == "sliding_log"
        self._plans: dict[Any, _Plan] = {}
        self._counts = dict.fromkeys(
            ("hits", "allowed", "rejected", "peeks", "errors", "failed_open", "failed_closed"), 0
        )
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
        return await self._decide(key, self._plan(rates, cost, namespace=name), charge=True)

    async def peek(
        self, key: str, rates: RateSpec | Iterable[RateSpec], cost: int = 1, *, name: str = ""
    ) -> Decision:
        """Where ``key`` stands now, consuming nothing: ``allowed`` says
        whether a hit of ``cost`` would be admitted, ``remaining`` what is
        left. Fails like :meth:`hit`."""
        return await self._decide(key, self._plan(rates, cost, namespace=name), charge=False)

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
        except _FAILURES as exc:
            raise ConnectionUnavailable(
                f"cannot reset rate-limit state of {key!r}: {describe_error(exc)}"
            ) from exc

    def stats(self) -> RateLimitStats:
        """A snapshot of the counters."""
        return RateLimitStats(**self._counts)

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

        plan = self._plan(rates, cost, namespace=name)
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

    # -- internals shared with the middleware --------------------------------

    def _plan(
        self, rates: RateSpec | Iterable[RateSpec], cost: int = 1, *, namespace: str = ""
    ) -> _Plan:
        """Validate ``rates`` and ``cost`` and prepare the script arguments
        (cached: the same rates cost nothing to prepare again)."""
        if type(cost) is not int or cost < 1:
            raise ConfigError(f"cost must be an int of at least 1, got {cost!r}")
        if not isinstance(rates, (str, Rate)):
            try:
                rates = tuple(rates)
            except TypeError:
                raise ConfigError(
                    f"rates must be a rate or a list of rates, got {rates!r}"
                ) from None
        cache_key: Any = (rates, cost, namespace)
        try:
            plan = self._plans.get(cache_key)
        except TypeError:  # unhashable: a list of rates, say
            plan, cache_key = None, None
        if plan is not None:
            return plan
        plan = self._make_plan(parse_rates(rates), cost, namespace)
        if cache_key is not None and len(self._plans) < 4096:
            self._plans[cache_key] = plan
        return plan

    def _combine(self, plans: Sequence[_Plan]) -> _Plan:
        """One plan charging every item of ``plans`` in one call."""
        if len(plans) == 1:
            return plans[0]
        fields = [f for p in plans for f in p.fields]
        if len(set(fields)) != len(fields):
            raise ConfigError("two rate-limit rules use the same name and rate")
        return _Plan(
            rates=tuple(r for p in plans for r in p.rates),
            names=tuple(n for p in plans for n in p.names),
            fields=tuple(fields),
            args=tuple(a for p in plans for a in p.args),
            too_costly=next((p.too_costly for p in plans if p.too_costly), None),
        )

    def _make_plan(self, rates: tuple[Rate, ...], cost: int, namespace: str) -> _Plan:
        if namespace:
            validate_key_part(namespace, "rate-limit name")
            if "|" in namespace:
                raise ConfigError(f"rate-limit name must not contain '|': {namespace!r}")
        args: list[str] = []
        fields: list[str] = []
        names: list[str] = []
        too_costly = None
        for rate in rates:
            burst = rate.capacity if self.algorithm == "gcra" else rate.limit
            field = f"{self._tag}:{rate.limit}:{rate.period_ms}"
            if self.algorithm == "gcra" and rate.burst is not None:
                field += f":{rate.burst}"
            if namespace:
                field = f"{namespace}|{field}"
            fields.append(field)
            names.append(f"{namespace}-{_rate_name(rate)}" if namespace else _rate_name(rate))
            args += (field, str(rate.limit), str(rate.period_ms * 1000), str(cost), str(burst))
            if cost > burst and too_costly is None:
                too_costly = (
                    f"cost {cost} exceeds the {'burst' if burst != rate.limit else 'limit'} "
                    f"of rate {rate} ({burst}); such a hit is never admitted"
                )
        return _Plan(tuple(rates), tuple(names), tuple(fields), tuple(args), too_costly)

    def _check_key(self, key: str) -> None:
        validate_key_part(key, "rate-limit key", allow_braces=False)

    @operation("ratelimit.decide")  # hit(), peek(), the middleware and depends()
    async def _decide(self, key: str, plan: _Plan, *, charge: bool) -> Decision:
        self._check_key(key)
        head = self._head + key + "}"
        keys = [head]
        if self._log:
            keys += [f"{head}:{field}" for field in plan.fields]
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
        except _FAILURES as exc:
            return self._failed(key, plan, charge, exc)
        except asyncio.CancelledError:
            if task is None or deadlines is None or not deadlines.timed_out(task):
                raise
            return self._failed(key, plan, charge, TimeoutError())
        finally:
            if task is not None and deadlines is not None:
                deadlines.leave(task)
        decision = _decision(plan, raw)
        counts = self._counts
        if charge:
            counts["hits"] += 1
            counts["allowed" if decision.allowed else "rejected"] += 1
        else:
            counts["peeks"] += 1
        return decision

    async def _run(self, keys: list[str], args: Sequence[str]) -> Any:
        try:
            return await self._script(self.client, keys, args)
        except MaxConnectionsError:
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
            except MaxConnectionsError:
                if loop.time() >= deadline:
                    raise
                delay = min(delay * 2, 0.02)

    def _failed(self, key: str, plan: _Plan, charge: bool, exc: BaseException) -> Decision:
        counts = self._counts
        counts["errors"] += 1
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) and not str(exc):
            what = f"no answer within {self.timeout}s"
        elif isinstance(exc, MaxConnectionsError):
            what = "no free connection in the client's pool"
        else:
            what = describe_error(exc)
        self._warn(key, what)
        rate = plan.rates[0]
        if plan.too_costly:
            # never admitted, whatever Redis says or does not say
            if charge:
                counts["hits"] += 1
                counts["rejected"] += 1
            return Decision(False, rate.limit, 0, 0.0, None, rate, (), plan.too_costly)
        if not self.fail_open:
            counts["failed_closed"] += 1
            raise ConnectionUnavailable(f"rate limiter cannot decide for {key!r}: {what}") from exc
        counts["failed_open"] += 1
        if charge:
            counts["hits"] += 1
            counts["allowed"] += 1
        return Decision(
            True,
            rate.limit,
            rate.limit,
            0.0,
            None,
            rate,
            (),
            f"admitted without Redis (fail-open): {what}",
            degraded=True,
        )

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


def _rate_name(rate: Rate) -> str:
    return f"{rate.limit}-per-{rate.period_ms / 1000:g}s"


def _fast_constructor(cls: type[T]) -> Callable[..., T]:
    """A positional constructor for a frozen slots dataclass that stores each
    field through its slot directly. The generated ``__init__`` goes through
    ``object.__setattr__`` once per field, which for the two objects of
    every decision cost as much as the rest of the Python work of a hit."""
    setters = tuple(cls.__dict__[f.name].__set__ for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    new = object.__new__

    def make(*values: Any) -> T:
        obj = new(cls)
        for store, value in zip(setters, values, strict=True):
            store(obj, value)
        return obj

    return make


_new_state = _fast_constructor(RateState)
_new_decision = _fast_constructor(Decision)


def _decision(plan: _Plan, raw: Sequence[int]) -> Decision:
    too_costly = plan.too_costly
    if len(raw) == 4:
        ok, remaining, reset, retry = raw
        rate = plan.rates[0]
        state = _new_state(
            rate,
            ok == 1,
            remaining if remaining > 0 else 0,
            reset / 1e6 if reset > 0 else 0.0,
            None if ok == 1 or retry < 0 else retry / 1e6,
            plan.names[0],
        )
        allowed = ok == 1 and too_costly is None
        return _new_decision(
            allowed,
            rate.limit,
            state.remaining,
            state.reset_after,
            None if allowed or too_costly else state.retry_after,
            rate,
            (state,),
            None if allowed else too_costly,
            False,
        )
    states = []
    admitted = too_costly is None
    for i, rate in enumerate(plan.rates):
        ok, remaining, reset, retry = raw[4 * i : 4 * i + 4]
        admitted = admitted and ok == 1
        states.append(
            _new_state(
                rate,
                ok == 1,
                max(0, remaining),
                max(0, reset) / 1e6,
                None if ok == 1 or retry < 0 else retry / 1e6,
                plan.names[i],
            )
        )
    binding = _binding(states, admitted)
    return _new_decision(
        admitted,
        binding.rate.limit,
        binding.remaining,
        binding.reset_after,
        None if admitted or too_costly else binding.retry_after,
        binding.rate,
        tuple(states),
        None if admitted else too_costly,
        False,
    )


def _binding(states: list[RateState], admitted: bool) -> RateState:
    if len(states) == 1:
        return states[0]
    if admitted:
        return min(states, key=lambda s: (s.remaining, -s.reset_after))
    blocked = [s for s in states if not s.allowed] or states
    return max(blocked, key=lambda s: (s.retry_after is None, s.retry_after or 0.0))
