"""OpenTelemetry spans for redkit's operations (``pip install 'redkit[otel]'``).

    import redkit.otel

    redkit.otel.instrument()        # the global tracer provider
    redkit.otel.instrument(tracer_provider=provider)

From then on each cache read or write, session operation, rate-limit
decision, publish and lock acquire, release or extend runs in a span named
after the operation (``cache.get``, ``lock.acquire`` ...), and every event
handler call in a span (``events.handle``, ``streams.handle``). Published
events carry the publishing span's W3C trace context in two optional
envelope fields, ``traceparent`` and ``tracestate``, which the Go service's
JSON decoding ignores; a handler's span is a child of it, so one trace runs
from the request that published to every handler.

Without :func:`instrument` redkit runs no tracing code; instrumented with
no tracer provider set yet, an operation costs one check of the global
provider until one is set. Cache keys, session ids and rate-limit keys
never become span attributes (they carry user ids; a session id is a
credential); lock names, channels, streams and event types do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:
    raise ImportError("redkit.otel needs opentelemetry-api: pip install 'redkit[otel]'") from exc

from . import _telemetry
from ._version import __version__

__all__ = ["instrument", "instrumented", "uninstrument"]

_KINDS = {"client": SpanKind.CLIENT, "producer": SpanKind.PRODUCER}
# W3C Trace Context whatever propagators the application configured: the
# envelope's fields are named after it, and the Go side reads them as such.
_PROPAGATOR = TraceContextTextMapPropagator()
_NO_PROVIDER = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_TEXT_LIMIT = 512
_UNKNOWN: Any = object()


def instrument(tracer_provider: trace.TracerProvider | None = None) -> None:
    """Trace redkit's operations with ``tracer_provider`` (default: the
    global one, also when it is set later). Calling it again replaces the
    provider."""
    if tracer_provider is None:
        trace.get_tracer_provider()  # loads one named by the environment
    _telemetry.set_tracing(_Tracing(tracer_provider))


def uninstrument() -> None:
    """Stop tracing: the operations run as they do without OpenTelemetry."""
    _telemetry.set_tracing(None)


def instrumented() -> bool:
    """True between :func:`instrument` and :func:`uninstrument`."""
    return isinstance(_telemetry.tracing, _Tracing)


class _Scope:
    """A span of one operation call, current until :meth:`end`."""

    __slots__ = ("op", "span", "token")

    def __init__(self, span: trace.Span, token: object, op: _telemetry.Operation | None) -> None:
        self.span = span
        self.token = token
        self.op = op

    def succeeded(self, result: Any) -> None:
        describe = self.op.details.result if self.op is not None else None
        if describe is not None:
            with contextlib.suppress(Exception):  # telemetry must not fail the operation
                self.span.set_attributes(describe(result))

    def failed(self, exc: BaseException) -> None:
        span = self.span
        if isinstance(exc, Exception):
            span.record_exception(exc)
            span.set_attribute("error.type", f"{type(exc).__module__}.{type(exc).__qualname__}")
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:_TEXT_LIMIT]))
        else:
            # Cancelled (a timeout, a shutdown): not the operation's error.
            span.set_attribute("redkit.cancelled", True)

    def end(self) -> None:
        otel_context.detach(self.token)  # type: ignore[arg-type]
        self.span.end()


class _Tracing:
    def __init__(self, provider: trace.TracerProvider | None) -> None:
        self._tracer = None if provider is None else _tracer_of(provider)

    def _live(self) -> trace.Tracer | None:
        tracer = self._tracer
        if tracer is not None:
            return tracer
        provider = _global_provider()
        if provider is None:
            return None  # nothing would record: no span work at all
        tracer = self._tracer = _tracer_of(provider)
        return tracer

    def start(
        self,
        op: _telemetry.Operation,
        name: str,
        args: _telemetry.Args,
        kwargs: _telemetry.Kwargs,
    ) -> _Scope | None:
        tracer = self._live()
        if tracer is None:
            return None
        details = op.details
        span = tracer.start_span(name, kind=_KINDS[details.kind])
        if not span.is_recording():
            # Not sampled: the parent's context stays current (and is what
            # travels in events), which keeps the sampling decision.
            return None
        if details.kind == "client":
            span.set_attribute("db.system.name", "redis")
        if details.attributes is not None:
            with contextlib.suppress(Exception):  # telemetry must not fail the operation
                span.set_attributes(details.attributes(args, kwargs))
        token = otel_context.attach(trace.set_span_in_context(span))
        return _Scope(span, token, op)

    def trace_fields(self) -> tuple[str, str | None] | None:
        if self._live() is None:
            return None
        if not trace.get_current_span().get_span_context().is_valid:
            return None
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        traceparent = carrier.get("traceparent")
        if traceparent is None:
            return None
        return traceparent, carrier.get("tracestate") or None

    async def handle(self, event: Any, handler: str, call: Awaitable[None]) -> None:
        tracer = self._live()
        if tracer is None:
            await call
            return
        from_stream = event.entry_id is not None
        attributes: dict[str, Any] = {
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.message.id": event.id,
            "redkit.event.type": event.type,
            "redkit.handler": handler,
        }
        if event.channel is not None:
            attributes["messaging.destination.name"] = event.channel
        if from_stream:
            attributes["redkit.stream.entry_id"] = event.entry_id
        span = tracer.start_span(
            "streams.handle" if from_stream else "events.handle",
            context=_parent_of(event),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        scope = _Scope(span, otel_context.attach(trace.set_span_in_context(span)), None)
        try:
            await call
        except BaseException as exc:
            scope.failed(exc)
            raise
        finally:
            scope.end()


def _global_provider() -> trace.TracerProvider | None:
    """The global tracer provider, None while none is set.

    ``get_tracer_provider()`` looks in ``os.environ`` on every call until a
    provider is set (0.6 us, on every operation of an app that instruments
    before it configures OpenTelemetry); the module global it returns gives
    the same answer for nothing. Read with a fallback to the public call,
    should a later API drop it. :func:`instrument` makes the public call
    once, which loads a provider named by ``OTEL_PYTHON_TRACER_PROVIDER``.
    """
    provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None:
        return None
    if provider is _UNKNOWN:
        provider = trace.get_tracer_provider()
    return None if isinstance(provider, _NO_PROVIDER) else provider


def _tracer_of(provider: trace.TracerProvider) -> trace.Tracer:
    return provider.get_tracer("redkit", __version__)


def _parent_of(event: Any) -> Context:
    """The context the event's publisher sent, or an empty one: a handler
    runs in a long-lived worker whose own context belongs to nobody's
    trace."""
    traceparent = event.traceparent
    if traceparent is None:
        return Context()
    carrier = {"traceparent": traceparent}
    if event.tracestate:
        carrier["tracestate"] = event.tracestate
    return _PROPAGATOR.extract(carrier, context=Context())
