"""Which of redkit's operations can be observed, and what observes them now.

Components mark their public operations with :func:`operation`. The mark
returns the function unchanged: while nothing observes, an operation runs
exactly the code it would without telemetry. Turning on latency histograms
(:mod:`redkit.metrics`) or tracing (:mod:`redkit.otel`) puts a wrapper in
place of each marked function on its class (every attribute that holds it,
aliases such as ``Lease.__call__`` included); turning both off puts the
originals back. A wrapper per call was the alternative, and it costs an
extra coroutine (about 0.4 us) on every cache hit and lock acquire of every
user, most of whom observe nothing.

Nothing here imports an optional dependency: :mod:`redkit.otel` hands in a
:class:`Tracing` object.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import inspect
import math
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from .errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
Args = tuple[Any, ...]
Kwargs = dict[str, Any]
Attributes = dict[str, Any]

#: Upper bounds (seconds) of the latency histograms' buckets: a local
#: round trip takes 50-200 us, a lock wait or a loader can take seconds.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


# -- what can be observed --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Details:
    """How one marked function is named and described.

    ``name``: the operation's public name (``"lock.acquire"``), or a
    function of the call's arguments for a function that serves several
    (``RateLimiter.decide`` is a hit or a peek). ``attributes``: span
    attributes from the arguments, computed only for a span that records.
    ``kind``: ``"client"`` (a request to Redis) or ``"producer"`` (sends an
    event). ``result``: span attributes from the return value.
    """

    name: str | Callable[[Args, Kwargs], str]
    attributes: Callable[[Args, Kwargs], Attributes] | None = None
    kind: str = "client"
    result: Callable[[Any], Attributes] | None = None


@dataclasses.dataclass
class Operation:
    key: str
    fn: Callable[..., Any]
    details: Details
    is_async: bool

    def owner(self) -> Any:
        """The class the function was defined in."""
        owner: Any = sys.modules[self.fn.__module__]
        for part in self.fn.__qualname__.split(".")[:-1]:
            owner = getattr(owner, part)
        return owner

    def name_for(self, args: Args, kwargs: Kwargs) -> str:
        name = self.details.name
        return name if isinstance(name, str) else name(args, kwargs)


_OPERATIONS: dict[str, Operation] = {}


def operation(key: str) -> Callable[[F], F]:
    """Mark ``fn`` as the observable operation ``key`` (one of
    :data:`DETAILS`). The function is returned as it is."""

    def mark(fn: F) -> F:
        details = DETAILS.get(key)
        if details is None:
            raise ConfigError(f"no telemetry details for operation {key!r}")
        # An async def, or a plain function handing back a coroutine (the
        # lock's flat hot paths): the wrapper keeps the shape.
        _OPERATIONS[key] = Operation(key, fn, details, inspect.iscoroutinefunction(fn))
        return fn

    return mark


def operations() -> Mapping[str, Operation]:
    return dict(_OPERATIONS)


# -- latency ---------------------------------------------------------------


class Histogram:
    """Counts of durations per bucket (not cumulative; the last bucket is
    everything above the largest bound) and their sum. Updated without a
    lock: the operations it times run on event loops, one per thread."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def add(self, seconds: float) -> None:
        # bisect_left: a duration equal to a bound belongs to that bucket
        # (Prometheus' "le" is "less than or equal").
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds


class Latency:
    """One histogram per operation name, all with the same buckets."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.histograms: dict[str, Histogram] = {}

    def histogram(self, name: str) -> Histogram:
        found = self.histograms.get(name)
        if found is None:
            found = self.histograms[name] = Histogram(self.bounds)
        return found

    def observe(self, name: str, seconds: float) -> None:
        self.histogram(name).add(seconds)


def check_buckets(buckets: object) -> tuple[float, ...]:
    """``buckets`` as increasing finite positive bounds, else ConfigError."""
    if isinstance(buckets, (str, bytes)) or not isinstance(buckets, Sequence):
        raise ConfigError(f"buckets must be a sequence of seconds, got {buckets!r:.80}")
    bounds: list[float] = []
    for bound in buckets:
        if (
            isinstance(bound, bool)
            or not isinstance(bound, (int, float))
            or not math.isfinite(bound)
            or bound <= 0
        ):
            raise ConfigError(f"bucket bounds must be finite seconds > 0, got {bound!r:.80}")
        if bounds and bound <= bounds[-1]:
            raise ConfigError(f"bucket bounds must increase, got {bound!r} after {bounds[-1]!r}")
        bounds.append(float(bound))
    if not bounds:
        raise ConfigError("buckets must name at least one bound")
    return tuple(bounds)


# -- tracing ---------------------------------------------------------------


class Scope(Protocol):
    """One span in progress (see :class:`Tracing`)."""

    def succeeded(self, result: Any) -> None: ...
    def failed(self, exc: BaseException) -> None: ...
    def end(self) -> None: ...


class Tracing(Protocol):
    """What :mod:`redkit.otel` provides while it is instrumenting."""

    def start(self, op: Operation, name: str, args: Args, kwargs: Kwargs) -> Scope | None:
        """A span for this call made current, or None when no span records
        (no tracer provider set, or not sampled)."""

    def trace_fields(self) -> tuple[str, str | None] | None:
        """``(traceparent, tracestate)`` of the current span, to travel in
        an event envelope; None without a recording span."""

    def handle(self, event: Any, handler: str, call: Awaitable[None]) -> Awaitable[None]:
        """Run an event handler's ``call`` in a span continuing the trace
        the event carries."""


# -- what observes now -----------------------------------------------------

#: The observers in place; read by the events code on its paths (a module
#: attribute read costs ~20 ns where nobody traces).
tracing: Tracing | None = None
_latency: Latency | None = None  # recording now
_kept: Latency | None = None  # its data, kept while disabled
_latency_holders = 0


def enable_latency(buckets: Sequence[float] | None = None) -> None:
    """Start timing (counted: each call needs a :func:`disable_latency`)."""
    global _latency, _kept, _latency_holders
    bounds = DEFAULT_BUCKETS if buckets is None else check_buckets(buckets)
    if _kept is not None and _kept.bounds != bounds:
        if buckets is None:
            bounds = _kept.bounds  # the layout already chosen
        else:
            raise ConfigError(
                f"latency histograms already use buckets {list(_kept.bounds)}; "
                f"one process has one layout, got {list(bounds)}"
            )
    if _kept is None:
        _kept = Latency(bounds)
    _latency_holders += 1
    if _latency is None:
        _latency = _kept
        _install()


def disable_latency() -> None:
    global _latency, _latency_holders
    if _latency_holders == 0:
        return
    _latency_holders -= 1
    if _latency_holders == 0:
        _latency = None
        _install()


def latency() -> Latency | None:
    """The recorded histograms (also while timing is off), None before the
    first :func:`enable_latency`."""
    return _kept


def latency_enabled() -> bool:
    return _latency is not None


def set_tracing(new: Tracing | None) -> None:
    global tracing
    tracing = new
    _install()


def _install() -> None:
    for op in _OPERATIONS.values():
        owner = op.owner()
        target = op.fn if _latency is None and tracing is None else _wrap(op, _latency, tracing)
        # Every attribute that holds the function or one of its wrappers:
        # aliases (``__call__ = release``) must be swapped with it.
        for attr, value in list(vars(owner).items()):
            if value is op.fn or getattr(value, "__redkit_operation__", None) is op:
                setattr(owner, attr, target)


def _wrap(op: Operation, recorder: Latency | None, tracer: Tracing | None) -> Callable[..., Any]:
    if tracer is None:
        assert recorder is not None
        wrapper = _timed(op, recorder)
    else:
        wrapper = _traced(op, recorder, tracer)
    wrapper.__redkit_operation__ = op  # type: ignore[attr-defined]
    return wrapper


def _around(
    fn: Callable[..., Awaitable[Any]],
    observe: Callable[[Awaitable[Any], Args, Kwargs], Coroutine[Any, Any, Any]],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """The wrapper of an operation that returns an awaitable without being a
    coroutine function: it calls ``fn`` at once, so arguments are checked
    before anything is awaited, as without the wrapper."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        return observe(fn(*args, **kwargs), args, kwargs)

    return call


def _timed(op: Operation, recorder: Latency) -> Callable[..., Any]:
    """Timing only, the usual Prometheus setup: a clock read on either side
    and the histogram update written out (three Python calls fewer than
    ``recorder.observe``: ~0.3 us of the ~0.5 us a timed call costs)."""
    fn = op.fn
    clock = time.perf_counter
    histograms = recorder.histograms
    bounds = recorder.bounds
    slot = bisect.bisect_left
    name = op.details.name
    fixed = name if isinstance(name, str) else None
    name_for = op.name_for

    def record(args: Args, kwargs: Kwargs, elapsed: float) -> None:
        key = fixed or name_for(args, kwargs)
        histogram = histograms.get(key) or recorder.histogram(key)
        histogram.counts[slot(bounds, elapsed)] += 1
        histogram.sum += elapsed

    async def timing(awaitable: Awaitable[Any], args: Args, kwargs: Kwargs) -> Any:
        start = clock()
        try:
            return await awaitable
        finally:
            record(args, kwargs, clock() - start)

    if not op.is_async:
        return _around(fn, timing)

    @functools.wraps(fn)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return await fn(*args, **kwargs)
        finally:
            elapsed = clock() - start
            histogram = histograms.get(fixed or name_for(args, kwargs))
            if histogram is None:
                record(args, kwargs, elapsed)
            else:
                histogram.counts[slot(bounds, elapsed)] += 1
                histogram.sum += elapsed

    return timed


def _traced(op: Operation, recorder: Latency | None, tracer: Tracing) -> Callable[..., Any]:
    fn = op.fn
    clock = time.perf_counter
    name = op.details.name
    fixed = name if isinstance(name, str) else None
    name_for = op.name_for
    start_span = tracer.start

    async def observed(awaitable: Awaitable[Any], args: Args, kwargs: Kwargs) -> Any:
        name = fixed or name_for(args, kwargs)
        scope = start_span(op, name, args, kwargs)
        start = clock()
        try:
            result = await awaitable
        except BaseException as exc:
            if recorder is not None:
                recorder.observe(name, clock() - start)
            if scope is not None:
                scope.failed(exc)
                scope.end()
            raise
        if recorder is not None:
            recorder.observe(name, clock() - start)
        if scope is not None:
            scope.succeeded(result)
            scope.end()
        return result

    if not op.is_async:
        return _around(fn, observed)

    # observed() once more, with the call inside: one coroutine per call
    # rather than two, and the ending written out in both (a shared helper
    # would cost every traced call one Python call more).
    @functools.wraps(fn)
    async def traced(*args: Any, **kwargs: Any) -> Any:
        name = fixed or name_for(args, kwargs)
        scope = start_span(op, name, args, kwargs)
        start = clock()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            if recorder is not None:
                recorder.observe(name, clock() - start)
            if scope is not None:
                scope.failed(exc)
                scope.end()
            raise
        if recorder is not None:
            recorder.observe(name, clock() - start)
        if scope is not None:
            scope.succeeded(result)
            scope.end()
        return result

    return traced


# -- the operations --------------------------------------------------------


def _arg(args: Args, kwargs: Kwargs, index: int, name: str, default: Any = None) -> Any:
    """Argument ``name`` at position ``index`` (``self`` is 0)."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _decision_name(args: Args, kwargs: Kwargs) -> str:
    return "ratelimit.hit" if _arg(args, kwargs, 3, "charge", True) else "ratelimit.peek"


def _lease_name(verb: str) -> Callable[[Args, Kwargs], str]:
    # An acquisition or a lease of a lock or of a semaphore: its resource
    # says which.
    locked = f"lock.{verb}"
    counted = f"semaphore.{verb}"

    def name(args: Args, kwargs: Kwargs) -> str:
        return counted if args[0]._resource.kind == "semaphore" else locked

    return name


def _lock_name(args: Args, kwargs: Kwargs) -> Attributes:
    return {"redkit.lock.name": str(_arg(args, kwargs, 1, "name"))}


def _resource_name(args: Args, kwargs: Kwargs) -> Attributes:
    return {"redkit.lock.name": str(args[0]._resource.name)}


def _fencing(lease: Any) -> Attributes:
    return {"redkit.lock.fencing_token": int(lease.fencing_token)}


def _channel(args: Args, kwargs: Kwargs) -> Attributes:
    return {
        "messaging.system": "redis",
        "messaging.operation.type": "send",
        "messaging.destination.name": str(_arg(args, kwargs, 1, "channel")),
        "redkit.event.type": str(_arg(args, kwargs, 2, "type")),
    }


def _stream(args: Args, kwargs: Kwargs) -> Attributes:
    return {
        "messaging.system": "redis",
        "messaging.operation.type": "send",
        "messaging.destination.name": str(_arg(args, kwargs, 1, "stream")),
    }


def _stream_event(args: Args, kwargs: Kwargs) -> Attributes:
    return {**_stream(args, kwargs), "redkit.event.type": str(_arg(args, kwargs, 2, "type"))}


def _allowed(decision: Any) -> Attributes:
    return {"redkit.ratelimit.allowed": bool(decision.allowed)}


# Keys, session ids and rate-limit keys never become attributes: they carry
# user ids and addresses (a session id is a credential).
DETAILS: dict[str, Details] = {
    "cache.get": Details("cache.get"),
    "cache.get_or_set": Details("cache.get_or_set"),
    "cache.set": Details("cache.set"),
    "cache.delete": Details("cache.delete"),
    "session.get": Details("session.get"),
    "session.touch": Details("session.touch"),
    "session.refresh": Details("session.refresh"),
    "session.create": Details("session.create"),
    "session.update": Details("session.update"),
    "session.rotate": Details("session.rotate"),
    "session.destroy": Details("session.destroy"),
    "ratelimit.decide": Details(_decision_name, result=_allowed),
    "events.publish": Details("events.publish", _channel, kind="producer"),
    "streams.publish": Details("streams.publish", _stream_event, kind="producer"),
    "streams.publish_many": Details("streams.publish", _stream, kind="producer"),
    "lock.lock": Details("lock.acquire", _lock_name, result=_fencing),
    "lock.try_lock_with_retry": Details("lock.acquire", _lock_name, result=_fencing),
    "lock.take": Details(_lease_name("acquire"), _resource_name, result=_fencing),
    "lock.release": Details(_lease_name("release"), _resource_name),
    "lock.extend": Details(_lease_name("extend"), _resource_name),
}
