"""Rate-limit decisions without I/O.

A :class:`Plan` is everything about a set of rates and a cost that does not
depend on the client key: the hash fields, the script arguments, whether
the cost can ever be admitted. :class:`Planner` makes and caches plans for
one algorithm; :func:`combine` joins plans into one atomic call;
:func:`decision` turns the script's answer into a :class:`Decision`;
:func:`merge` joins the decisions of several keys. The limiter
(``limiter.py``) does the I/O around them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

from ..errors import ConfigError
from ..keys import validate_key_part
from .rate import Rate, RateSpec, parse_rates

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Decision",
    "Plan",
    "Planner",
    "RateState",
    "admitted",
    "combine",
    "decision",
    "merge",
    "refused",
]

T = TypeVar("T")

Algorithm = Literal["fixed_window", "sliding_window", "sliding_log", "gcra"]
ALGORITHMS: tuple[str, ...] = ("fixed_window", "sliding_window", "sliding_log", "gcra")
# The prefix of a rate's hash field: the algorithms keep apart in one hash.
_TAGS = {"fixed_window": "fw", "sliding_window": "sw", "sliding_log": "sl", "gcra": "gcra"}
_CACHED_PLANS = 4096


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


B = TypeVar("B", RateState, Decision)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything about a set of (name, rate, cost) items that does not
    depend on the client key: script arguments are built once.

    ``logs`` are the fields that keep a log key of their own beside the
    hash (the sliding log's), ``too_costly`` says why a hit is never
    admitted, when it is not."""

    rates: tuple[Rate, ...]
    names: tuple[str, ...]
    fields: tuple[str, ...]
    args: tuple[str, ...]
    too_costly: str | None
    logs: tuple[str, ...] = ()
    hit_args: tuple[str, ...] = ()
    peek_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # the script's first argument: charge (1) or only look (0)
        object.__setattr__(self, "hit_args", ("1", *self.args))
        object.__setattr__(self, "peek_args", ("0", *self.args))


class Planner:
    """Plans for one algorithm; the same rates, cost and name cost a dict
    look-up the second time."""

    __slots__ = ("_burst_field", "_logged", "_plans", "_tag", "algorithm")

    def __init__(self, algorithm: object) -> None:
        if not isinstance(algorithm, str) or algorithm not in _TAGS:
            raise ConfigError(
                f"unknown rate-limit algorithm {algorithm!r}; use one of {ALGORITHMS}"
            )
        self.algorithm = algorithm
        self._tag = _TAGS[algorithm]
        self._burst_field = algorithm == "gcra"
        self._logged = algorithm == "sliding_log"
        self._plans: dict[Any, Plan] = {}

    def plan(
        self, rates: RateSpec | Iterable[RateSpec], cost: int = 1, namespace: str = ""
    ) -> Plan:
        """Validate ``rates``, ``cost`` and ``namespace`` (a rule's or a
        dependency's name, keeping its counters apart) and prepare the
        script arguments; :class:`~redkit.ConfigError` for a bad one."""
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
        plan = self._make(parse_rates(rates), cost, namespace)
        if cache_key is not None and len(self._plans) < _CACHED_PLANS:
            self._plans[cache_key] = plan
        return plan

    def _make(self, rates: tuple[Rate, ...], cost: int, namespace: str) -> Plan:
        if namespace:
            validate_key_part(namespace, "rate-limit name")
            if "|" in namespace:
                raise ConfigError(f"rate-limit name must not contain '|': {namespace!r}")
        args: list[str] = []
        fields: list[str] = []
        names: list[str] = []
        too_costly = None
        for rate in rates:
            burst = rate.capacity if self._burst_field else rate.limit
            field = f"{self._tag}:{rate.limit}:{rate.period_ms}"
            if self._burst_field and rate.burst is not None:
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
        logs = tuple(fields) if self._logged else ()
        return Plan(tuple(rates), tuple(names), tuple(fields), tuple(args), too_costly, logs)


def combine(plans: Sequence[Plan]) -> Plan:
    """One plan charging every item of ``plans`` in one call."""
    if len(plans) == 1:
        return plans[0]
    fields = [f for p in plans for f in p.fields]
    if len(set(fields)) != len(fields):
        raise ConfigError("two rate-limit rules use the same name and rate")
    return Plan(
        rates=tuple(r for p in plans for r in p.rates),
        names=tuple(n for p in plans for n in p.names),
        fields=tuple(fields),
        args=tuple(a for p in plans for a in p.args),
        too_costly=next((p.too_costly for p in plans if p.too_costly), None),
        logs=tuple(f for p in plans for f in p.logs),
    )


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


def decision(plan: Plan, raw: Sequence[int]) -> Decision:
    """The decision the script's answer ``raw`` means: four integers per
    rate (admitted, remaining, microseconds to reset, microseconds to wait
    or -1)."""
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
    admitted_all = too_costly is None
    for i, rate in enumerate(plan.rates):
        ok, remaining, reset, retry = raw[4 * i : 4 * i + 4]
        admitted_all = admitted_all and ok == 1
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
    binding = _binding(states, admitted_all)
    return _new_decision(
        admitted_all,
        binding.rate.limit,
        binding.remaining,
        binding.reset_after,
        None if admitted_all or too_costly else binding.retry_after,
        binding.rate,
        tuple(states),
        None if admitted_all else too_costly,
        False,
    )


def _binding(candidates: Sequence[B], allowed: bool) -> B:
    # The rate (or key) that binds: when admitted, the one with the least
    # left; when not, the refusal with the longest wait, one that waiting
    # cannot cure first.
    if len(candidates) == 1:
        return candidates[0]
    if allowed:
        return min(candidates, key=lambda c: (c.remaining, -c.reset_after))
    blocked = [c for c in candidates if not c.allowed] or candidates
    return max(blocked, key=lambda c: (c.retry_after is None, c.retry_after or 0.0))


def refused(plan: Plan) -> Decision:
    """The rejection of a hit ``plan`` can never admit (its cost is above a
    limit), made without asking Redis."""
    rate = plan.rates[0]
    return Decision(False, rate.limit, 0, 0.0, None, rate, (), plan.too_costly)


def admitted(plan: Plan, reason: str | None = None) -> Decision:
    """An admission made without Redis: for a request no limit applies to,
    or (with the ``reason``) one the limiter let through failing open."""
    rate = plan.rates[0]
    return Decision(
        True, rate.limit, rate.limit, 0.0, None, rate, (), reason, degraded=reason is not None
    )


def merge(decisions: Sequence[Decision]) -> Decision:
    """One decision for a request charged under several keys (the
    middleware's ``match="all"``): admitted only if every key admitted it,
    the binding numbers of the key that binds as :func:`decision` picks a
    binding rate, every key's states."""
    if len(decisions) == 1:
        return decisions[0]
    allowed = all(d.allowed for d in decisions)
    return dataclasses.replace(
        _binding(decisions, allowed),
        allowed=allowed,
        states=tuple(s for d in decisions for s in d.states),
        degraded=all(d.degraded for d in decisions),
    )
