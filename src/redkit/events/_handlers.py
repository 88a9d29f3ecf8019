"""Handler registration and invocation shared by the pub/sub subscriber and
the stream consumer: typed payloads, per-call timeout, sync handlers in a
worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, overload

import msgspec

from .. import _telemetry
from .._timing import withdraw_cancellation
from ..errors import ConfigError, SerializationError
from ._envelope import Event, _check_type, payload_decoder, type_name

__all__ = [
    "Handler",
    "HandlerRegistry",
    "PayloadError",
    "Registration",
    "supervised",
]

Handler = Callable[[Event[Any]], "Awaitable[None] | None"]
H = TypeVar("H", bound=Callable[..., Any])


class PayloadError(SerializationError):
    """The payload does not decode as the ``payload_type`` a handler asked for."""


@dataclasses.dataclass(frozen=True)
class Registration:
    handler: Callable[[Event[Any]], Any]
    payload_type: Any
    is_async: bool
    name: str
    decode: Callable[[bytes], Any] | None
    """Builds ``payload_type`` from the payload bytes (None: plain JSON)."""


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    )


def _name(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


class HandlerRegistry:
    """Handlers by event type; several handlers may share a type and all run."""

    def __init__(self) -> None:
        self._by_type: dict[str, tuple[Registration, ...]] = {}
        self._untyped: set[str] = set()

    def add(self, event_type: str, handler: Callable[..., Any], payload_type: Any) -> None:
        _check_type(event_type)
        if not callable(handler):
            raise ConfigError(f"handler for {event_type!r} must be callable, got {handler!r}")
        # Built now, so a type JSON cannot build is refused here and not
        # counted against every message that arrives later.
        decode = None if payload_type is None else payload_decoder(payload_type)
        reg = Registration(handler, payload_type, _is_async(handler), _name(handler), decode)
        self._by_type[event_type] = (*self._by_type.get(event_type, ()), reg)
        if payload_type is None:
            self._untyped.add(event_type)

    def needs_untyped(self, event_type: str) -> bool:
        """True when some handler of ``event_type`` takes the plain payload."""
        return event_type in self._untyped

    def get(self, event_type: str) -> tuple[Registration, ...] | None:
        return self._by_type.get(event_type)

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._by_type)

    @overload
    def decorator(self, event_type: str, handler: None, payload_type: Any) -> Callable[[H], H]: ...
    @overload
    def decorator(self, event_type: str, handler: H, payload_type: Any) -> H: ...
    def decorator(self, event_type: str, handler: Any, payload_type: Any) -> Any:
        if handler is not None:
            self.add(event_type, handler, payload_type)
            return handler

        def register(fn: H) -> H:
            self.add(event_type, fn, payload_type)
            return fn

        return register


def event_for(reg: Registration, event: Event[Any], payload: bytes) -> Event[Any]:
    """``event`` with its payload built as the registration's type;
    :class:`PayloadError` whatever goes wrong while building it (a payload
    type's own validation code may raise anything)."""
    if reg.decode is None:
        return event
    try:
        typed = reg.decode(payload)
    except SerializationError as exc:
        raise PayloadError(str(exc)) from exc
    except Exception as exc:
        raise PayloadError(
            f"payload as {type_name(reg.payload_type)} does not decode: {type(exc).__name__}: {exc}"
        ) from exc
    return msgspec.structs.replace(event, payload=typed)


async def call_unbounded(reg: Registration, event: Event[Any]) -> None:
    """Run one handler on ``event`` (the caller's sweeper bounds it), in a
    span continuing the event's trace while :mod:`redkit.otel` traces."""
    tracing = _telemetry.tracing
    if tracing is not None:
        await tracing.handle(event, reg.name, _invoke(reg, event))
    elif reg.is_async:
        await reg.handler(event)
    else:
        await _invoke(reg, event)


async def _invoke(reg: Registration, event: Event[Any]) -> None:
    if reg.is_async:
        await reg.handler(event)
        return
    result = await asyncio.to_thread(reg.handler, event)
    if inspect.isawaitable(result):
        await result


def check_count(name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")
    return value


@contextlib.asynccontextmanager
async def supervised(task: asyncio.Future[Any]) -> AsyncIterator[None]:
    """Watch ``task`` (a component's ``run()`` in the background) while the
    ``async with`` body runs.

    If the task ends with an exception meanwhile, the body is cancelled at
    the ``await`` it is at, as :class:`asyncio.TaskGroup` does, so it never
    carries on believing events are being handled; the caller then raises
    the task's exception (``running()`` does in its ``finally``).
    """
    host = asyncio.current_task()
    fired = False
    consumed = False
    armed = True

    def on_done(done: asyncio.Future[Any]) -> None:
        nonlocal fired
        if armed and host is not None and not done.cancelled() and done.exception() is not None:
            fired = True
            host.cancel()

    task.add_done_callback(on_done)
    try:
        yield
    except asyncio.CancelledError:
        if not fired:
            raise
        consumed = True
        if host is not None and withdraw_cancellation(host) > 0:
            raise
    finally:
        armed = False
        task.remove_done_callback(on_done)
        if fired and not consumed and host is not None:
            # The body swallowed the cancellation: forget it all the same.
            withdraw_cancellation(host)
