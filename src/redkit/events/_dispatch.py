"""The dispatch core both event consumers stand on: handlers by event type,
a pool of workers running them, each call cut off after ``handler_timeout``
by one sweeper, the drain on stop, the counters they share and the wait
until a consumer started in the background is ready.

What differs stays with each consumer: the subscriber hands every handler
call of a message to a worker as it reads (a pub/sub message has no
outcome), the stream consumer hands a read's entries over as one batch and
then acknowledges, retries or dead-letters each entry by how its handlers
fared.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, NamedTuple, TypeVar, overload

from redis.asyncio import Redis, RedisCluster

from .. import _telemetry
from .._timing import Sweeper, TaskSet, cancel_and_wait
from .._validate import seconds
from ..connection import Client
from ..errors import ConfigError, ConnectionUnavailable
from ._envelope import Event, type_name
from ._handlers import (
    HandlerRegistry,
    PayloadError,
    Registration,
    call_unbounded,
    check_count,
    event_for,
    supervised,
)

__all__ = [
    "Dispatcher",
    "Failure",
    "HandlerHost",
    "HandlerStats",
    "Job",
    "check_client",
    "in_background",
]

log = logging.getLogger("redkit.events")

H = TypeVar("H", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class HandlerStats:
    """The counters every consumer keeps (its ``*Stats`` adds its own)."""

    received: int
    """Messages read from Redis, any content; for a stream consumer, entries
    delivered to it (new, claimed, or its own pending)."""
    handled: int
    """Handler calls that returned normally; for a stream consumer, entries
    whose handlers all succeeded (then acknowledged)."""
    handler_errors: int
    """Handler calls that raised (a stream entry stays pending and is retried)."""
    handler_timeouts: int
    """Handler calls cut off after ``handler_timeout`` (retried likewise)."""
    unhandled: int
    """Well-formed events of a type with no handler here (a stream entry is
    acknowledged)."""
    malformed: int
    """Messages that are not an event envelope, or whose payload does not
    decode as the handler's ``payload_type``: skipped (a stream entry is moved
    to the dead-letter stream)."""


def check_client(client: object) -> Client:
    if not isinstance(client, (Redis, RedisCluster)):
        raise ConfigError(
            f"client must be a redis.asyncio Redis or RedisCluster, got {type(client).__name__}"
        )
    return client


class Failure(NamedTuple):
    """Why an entry's handlers did not all succeed."""

    reason: str
    final: bool
    """True when running the handlers again cannot help (the payload does
    not decode as a handler's ``payload_type``)."""


@dataclasses.dataclass(slots=True)
class Job:
    """One event to run through all its handlers, in turn, stopping at the
    first failure; the stream consumer adds what it needs to settle it."""

    regs: tuple[Registration, ...]
    event: Event[Any]
    payload: bytes
    failure: Failure | None = None
    completed: bool = False

    def detail(self) -> str:
        """Appended to the log line of a failure."""
        return ""


@dataclasses.dataclass(slots=True)
class _Batch:
    """Jobs of one read, taken one by one by the workers."""

    done: asyncio.Future[None]
    queue: collections.deque[Job]
    remaining: int

    def one_less(self, count: int = 1) -> None:
        self.remaining -= count
        if self.remaining <= 0 and not self.done.done():
            self.done.set_result(None)


class Dispatcher:
    """Runs handlers for one consumer.

    It counts the fields of :class:`HandlerStats` in ``counts``, the
    consumer's own dict (made with :func:`redkit._counters.counts_for` from
    its ``*Stats``), which holds the consumer's other counters too.
    ``max_concurrency`` workers run handler calls; :meth:`start` makes them
    for one run, :meth:`drain` or :meth:`stop` ends them.
    """

    def __init__(
        self,
        counts: dict[str, int],
        *,
        max_concurrency: int,
        handler_timeout: float,
        drain_timeout: float,
    ) -> None:
        self.max_concurrency = check_count("max_concurrency", max_concurrency)
        self.handler_timeout = seconds(handler_timeout, "handler_timeout")
        self.drain_timeout = seconds(drain_timeout, "drain_timeout", allow_zero=True)
        self.registry = HandlerRegistry()
        self.counts = counts
        self.in_flight = 0
        self.idle: collections.deque[asyncio.Future[Any]] = collections.deque()
        """Futures of the workers waiting for work; a worker is woken by
        setting its future's result (the subscriber's reader: a
        ``(registration, event, payload)`` call; :meth:`run_batch`: a batch)."""
        self.tasks = TaskSet()
        """Other background work of the run (cancelled by :meth:`drain`)."""
        self._sweeper: Sweeper | None = None
        self._workers: list[asyncio.Task[None]] = []
        # Readers waiting for a free worker: one per connection (a sharded
        # subscriber on a cluster reads several).
        self._readers: list[asyncio.Future[None]] = []

    def start(self, *, batches: bool) -> None:
        """Start the workers of one run: workers of single calls, or of
        batches (:meth:`run_batch`)."""
        self._sweeper = Sweeper(
            self.handler_timeout, interval=min(1.0, max(0.01, self.handler_timeout / 10))
        )
        self.idle.clear()
        worker = self._batch_worker if batches else self._call_worker
        self._workers = [asyncio.ensure_future(worker()) for _ in range(self.max_concurrency)]

    async def worker_free(self) -> None:
        """Return once some worker is idle (every one was busy)."""
        readers = self._readers
        while not self.idle:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            readers.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    readers.remove(waiter)

    def _wake_readers(self) -> None:
        for waiter in self._readers:
            if not waiter.done():
                waiter.set_result(None)

    async def _call_worker(self) -> None:
        """Runs handler calls one after another; ``max_concurrency`` of these
        run at once (cheaper than a task per message)."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        sweeper = self._sweeper
        assert task is not None
        assert sweeper is not None
        idle = self.idle
        counts = self.counts
        readers = self._readers
        while True:
            waiter: asyncio.Future[tuple[Registration, Event[Any], bytes]] = loop.create_future()
            idle.append(waiter)
            if readers:
                self._wake_readers()
            reg, event, payload = await waiter
            sweeper.enter()
            self.in_flight += 1
            try:
                if reg.payload_type is not None:
                    event = event_for(reg, event, payload)
                if reg.is_async and _telemetry.tracing is None:
                    await reg.handler(event)
                else:
                    await call_unbounded(reg, event)
                counts["handled"] += 1
            except asyncio.CancelledError:
                if not sweeper.timed_out(task):
                    raise
                self._timed_out(reg, event, "")  # the worker lives on
            except Exception as exc:
                self._failed(reg, event, exc, "")
            finally:
                self.in_flight -= 1
                sweeper.leave(task)

    async def run_batch(self, jobs: Sequence[Job]) -> None:
        """Run ``jobs`` on the idle workers (in the calling task when none is
        idle) and return when every one has finished, each marked completed
        or with its failure.

        On cancellation nothing new starts, the running jobs get
        ``drain_timeout`` seconds, and the cancellation is re-raised; a job
        that did not finish by then is left unmarked.
        """
        idle = self.idle
        batch = _Batch(
            asyncio.get_running_loop().create_future(), collections.deque(jobs), len(jobs)
        )
        try:
            # Wake as many idle workers as there are jobs; each takes jobs
            # from the batch until none is left.
            woken = min(len(idle), len(jobs))
            for _ in range(woken):
                idle.popleft().set_result(batch)
            while not woken and batch.queue:  # no worker free: run here
                job = batch.queue.popleft()
                try:
                    await self._run(job)
                finally:
                    batch.one_less()
            # Shielded: a cancellation must not cancel the future the drain
            # below still waits on.
            await asyncio.shield(batch.done)
        except asyncio.CancelledError:
            batch.one_less(len(batch.queue))
            batch.queue.clear()
            if not batch.done.done():
                await asyncio.wait({batch.done}, timeout=self.drain_timeout)
            raise

    async def _batch_worker(self) -> None:
        """Runs the jobs of the current batch one after another."""
        loop = asyncio.get_running_loop()
        idle = self.idle
        while True:
            waiter: asyncio.Future[_Batch] = loop.create_future()
            idle.append(waiter)
            batch = await waiter
            queue = batch.queue
            while queue:
                job = queue.popleft()
                try:
                    await self._run(job)
                finally:
                    batch.one_less()

    async def _run(self, job: Job) -> None:
        sweeper = self._sweeper
        task = asyncio.current_task()
        assert sweeper is not None
        assert task is not None
        event = job.event
        self.in_flight += 1
        try:
            for reg in job.regs:
                sweeper.enter()
                try:
                    await call_unbounded(reg, event_for(reg, event, job.payload))
                except asyncio.CancelledError:
                    if not sweeper.timed_out(task):
                        raise
                    job.failure = self._timed_out(reg, event, job.detail())
                    return
                except Exception as exc:
                    job.failure = self._failed(reg, event, exc, job.detail())
                    return
                finally:
                    sweeper.leave(task)
            self.counts["handled"] += 1
            job.completed = True
        finally:
            self.in_flight -= 1

    def _timed_out(self, reg: Registration, event: Event[Any], detail: str) -> Failure:
        self.counts["handler_timeouts"] += 1
        reason = f"handler {reg.name} timed out after {self.handler_timeout:g}s"
        log.error(
            "%s (event %s of type %r on %r%s)", reason, event.id, event.type, event.channel, detail
        )
        return Failure(reason, final=False)

    def _failed(self, reg: Registration, event: Event[Any], exc: Exception, detail: str) -> Failure:
        where = f"event {event.id} of type {event.type!r} on {event.channel!r}{detail}"
        if isinstance(exc, PayloadError):
            self.counts["malformed"] += 1
            reason = f"payload is not a {type_name(reg.payload_type)}: {exc}"
            log.warning("%s: %s", where, reason)
            return Failure(reason, final=True)
        self.counts["handler_errors"] += 1
        reason = f"handler {reg.name} raised {type(exc).__name__}: {exc}"
        log.error("handler %s raised (%s)", reg.name, where, exc_info=exc)
        return Failure(reason, final=False)

    async def drain(self) -> None:
        """Let running handler calls finish (at most ``drain_timeout``), then
        :meth:`stop`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        # Polled: an Event would cost bookkeeping on every message.
        while self.in_flight and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(min(0.01, max(0.0, deadline - loop.time())))
        if self.in_flight:
            log.warning(
                "cancelling %d handler call(s) still running after %gs",
                self.in_flight,
                self.drain_timeout,
            )
        await self.stop()

    async def stop(self) -> None:
        """Cancel the workers (and what they run) and the other tasks."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.cancel()
        for waiter in self.idle:
            waiter.cancel()
        self.idle.clear()
        others = list(self.tasks)
        for task in others:
            task.cancel()
        if workers or others:
            await asyncio.wait([*workers, *others], timeout=1.0)


class HandlerHost:
    """Registration of handlers, shared by the consumers (which set
    ``_dispatch`` in their ``__init__``)."""

    _dispatch: Dispatcher

    @overload
    def on(
        self, event_type: str, handler: None = None, *, payload_type: Any = None
    ) -> Callable[[H], H]: ...
    @overload
    def on(self, event_type: str, handler: H, *, payload_type: Any = None) -> H: ...
    def on(self, event_type: str, handler: Any = None, *, payload_type: Any = None) -> Any:
        """Register ``handler`` for events of ``event_type``; without a
        handler, return a decorator. With ``payload_type`` the handler gets
        ``event.payload`` built as that type (dataclass, msgspec Struct,
        pydantic model, ``list[T]`` ...). Several handlers of one type all
        run; a stream entry is acknowledged once every one succeeded.
        """
        return self._dispatch.registry.decorator(event_type, handler, payload_type)


@contextlib.asynccontextmanager
async def in_background(
    run: Coroutine[Any, Any, None],
    ready: Callable[[], asyncio.Event | None],
    *,
    timeout: float,
    drain_timeout: float,
    what: str,
    not_ready: str,
) -> AsyncIterator[None]:
    """Run ``run`` in a task for the ``async with`` block: entering waits up
    to ``timeout`` seconds for the event ``ready()`` returns (None until the
    run made it) and raises :class:`~redkit.ConnectionUnavailable` with
    ``not_ready`` when it is not set by then; when the run ended first, its
    own exception or, had it none, one saying ``what`` stopped. Leaving
    cancels the task and waits for it to drain; should the run fail inside
    the block, the block is cancelled and the run's exception raised
    (:func:`supervised`)."""
    task: asyncio.Future[None] = asyncio.ensure_future(run)
    try:
        await _wait_ready(task, ready, timeout, what, not_ready)
        async with supervised(task):
            yield
    finally:
        await cancel_and_wait(task, drain_timeout + 10.0)
        if task.done() and not task.cancelled():
            task.result()


async def _wait_ready(
    task: asyncio.Future[None],
    ready: Callable[[], asyncio.Event | None],
    timeout: float,
    what: str,
    not_ready: str,
) -> None:
    await asyncio.sleep(0)  # let the run set up its state
    if task.done():
        task.result()
    event = ready()
    assert event is not None
    waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        waiter.cancel()
    if task in done:
        task.result()
        raise ConnectionUnavailable(f"{what} stopped before it was ready")
    if waiter not in done:
        raise ConnectionUnavailable(not_ready)
