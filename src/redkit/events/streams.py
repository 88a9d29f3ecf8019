"""Durable events on Redis Streams: at-least-once delivery through consumer
groups, retries of entries a dead consumer left pending (XAUTOCLAIM), and a
dead-letter stream for events that keep failing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple

from redis.asyncio import RedisCluster
from redis.client import NEVER_DECODE

from .. import _counters, _failures
from .._failures import describe_error, read_timeout
from .._timing import raise_if_cancelled, recovery_delay
from .._validate import seconds
from ..connection import Client
from ..errors import ConfigError, SerializationError
from ..keys import validate_key_part
from ..scripts import Script
from ._dispatch import Dispatcher, HandlerHost, HandlerStats, Job, check_client, in_background
from ._envelope import _decode_wire, _to_event, decode_plain_payload
from ._handlers import check_count
from .publisher import EVENT_FIELD, StreamPublisher, StreamPublisherStats, check_stream

__all__ = [
    "StreamConsumer",
    "StreamConsumerStats",
    "StreamPublisher",
    "StreamPublisherStats",
    "dead_letter_stream_for",
]

log = logging.getLogger("redkit.events")

_DEAD_LETTER = Script.from_package("redkit.events", "lua/dead_letter.lua")
# Entries are read as bytes whatever the client's decode_responses: redis-py
# would otherwise decode them while parsing the reply, and one entry that is
# not UTF-8 would fail the whole read (and every read after it), before the
# consumer could see which entry it was.
_RAW = {NEVER_DECODE: True}


def dead_letter_stream_for(stream: str) -> str:
    """The default dead-letter stream of ``stream``: ``<stream>:dead-letter``
    with the stream's hash tag (``{orders}:dead-letter`` for ``orders``), so
    that moving an entry there is one atomic script on a cluster too."""
    check_stream(stream)
    start = stream.find("{")
    end = stream.find("}", start + 1) if start != -1 else -1
    if start != -1 and end > start + 1:
        return f"{stream}:dead-letter"
    return f"{{{stream}}}:dead-letter"


@dataclasses.dataclass(frozen=True)
class StreamConsumerStats(HandlerStats):
    """Counters of a :class:`StreamConsumer` (since it was made)."""

    claimed: int
    """Entries taken over from idle consumers with XAUTOCLAIM."""
    dead_lettered: int
    """Entries moved to the dead-letter stream."""
    redis_errors: int
    """Failed calls to Redis (the consumer backs off and carries on)."""
    in_flight: int = _counters.gauge()
    """Handler calls running now."""


@dataclasses.dataclass(slots=True, kw_only=True)
class _Entry(Job):
    """A stream entry to run through its handlers."""

    entry_id: Any
    data: bytes
    deliveries: int

    def detail(self) -> str:
        return f", delivery {self.deliveries}"


class _Dead(NamedTuple):
    """An entry to move to the dead-letter stream."""

    entry_id: Any
    data: bytes
    deliveries: int
    error: str


class StreamConsumer(HandlerHost):
    """Reads one stream as ``consumer`` in consumer group ``group`` and runs
    handlers per event type, acknowledging an entry only after all its
    handlers succeeded.

    * The group is created on first use (with the stream, if missing),
      reading from the stream's start (``from_start=True``, the default, so
      events published before any consumer existed are processed) or only
      new events (``from_start=False``).
    * Up to ``max_concurrency`` handler calls run at once, each cut off after
      ``handler_timeout`` seconds (default half of ``claim_idle``).
    * An entry that is not acknowledged (handler failed, consumer died) stays
      pending. Entries pending longer than ``claim_idle`` seconds, whoever
      holds them, are claimed with XAUTOCLAIM every ``claim_interval`` and
      retried. When an entry's handlers failed on its ``max_deliveries``-th
      delivery (or it was delivered more often than that without finishing)
      it is moved, with the error text, to :attr:`dead_letter_stream` and
      acknowledged, in one script.
    * On start the consumer first re-runs its own pending entries (a
      restarted process keeps its name), so a crash loses nothing.

    Delivery is at-least-once: a handler may see an event again after a
    crash or a timeout, so make it idempotent by ``event.id``.
    """

    def __init__(
        self,
        client: Client,
        stream: str,
        *,
        group: str,
        consumer: str,
        max_deliveries: int = 5,
        claim_idle: float = 30.0,
        claim_interval: float | None = None,
        handler_timeout: float | None = None,
        max_concurrency: int = 16,
        batch_size: int | None = None,
        block: float | None = None,
        from_start: bool = True,
        dead_letter_stream: str | None = None,
        dead_letter_maxlen: int = 100_000,
        drain_timeout: float = 10.0,
        backoff_base: float = 0.1,
        backoff_max: float = 10.0,
    ) -> None:
        self.client = check_client(client)
        self.stream = check_stream(stream)
        self.group = validate_key_part(group, "group")
        self.consumer = validate_key_part(consumer, "consumer")
        self.max_deliveries = check_count("max_deliveries", max_deliveries)
        self.claim_idle = seconds(claim_idle, "claim_idle")
        self.claim_interval = seconds(
            claim_interval if claim_interval is not None else min(self.claim_idle / 2, 10.0),
            "claim_interval",
        )
        self.handler_timeout = seconds(
            handler_timeout if handler_timeout is not None else self.claim_idle / 2,
            "handler_timeout",
        )
        if self.handler_timeout >= self.claim_idle:
            raise ConfigError(
                f"handler_timeout ({self.handler_timeout:g}s) must be shorter than claim_idle "
                f"({self.claim_idle:g}s), or other consumers would claim entries still being "
                "handled"
            )
        self._counts = _counters.counts_for(StreamConsumerStats)
        self._dispatch = Dispatcher(
            self._counts,
            max_concurrency=max_concurrency,
            handler_timeout=self.handler_timeout,
            drain_timeout=drain_timeout,
        )
        self.max_concurrency = self._dispatch.max_concurrency
        self.drain_timeout = self._dispatch.drain_timeout
        self.batch_size = check_count(
            "batch_size", batch_size if batch_size is not None else self.max_concurrency
        )
        socket_timeout = read_timeout(client)
        default_block = min(1.0, socket_timeout / 2) if socket_timeout else 1.0
        self.block = seconds(block if block is not None else default_block, "block")
        if socket_timeout and self.block >= socket_timeout:
            raise ConfigError(
                f"block ({self.block:g}s) must be shorter than the client's socket timeout "
                f"({socket_timeout:g}s)"
            )
        self.from_start = bool(from_start)
        self.dead_letter_stream = (
            check_stream(dead_letter_stream)
            if dead_letter_stream is not None
            else dead_letter_stream_for(self.stream)
        )
        if isinstance(client, RedisCluster) and client.keyslot(
            self.dead_letter_stream
        ) != client.keyslot(self.stream):
            raise ConfigError(
                f"dead_letter_stream {self.dead_letter_stream!r} must share the hash slot of "
                f"{self.stream!r} on a cluster (give both the same hash tag)"
            )
        self.dead_letter_maxlen = check_count("dead_letter_maxlen", dead_letter_maxlen)
        self.backoff_base = seconds(backoff_base, "backoff_base")
        self.backoff_max = seconds(backoff_max, "backoff_max")
        self._acks: list[Any] = []
        self._running = False
        self._ready: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<StreamConsumer {self.stream!r} group={self.group!r} consumer={self.consumer!r}>"

    def stats(self) -> StreamConsumerStats:
        return _counters.snapshot(
            StreamConsumerStats, self._counts, in_flight=self._dispatch.in_flight
        )

    # -- running ------------------------------------------------------------

    async def run(self) -> None:
        """Consume until cancelled. Redis failures are logged and counted and
        retried with exponential backoff and jitter; they never end the loop.
        On cancellation running handlers get ``drain_timeout`` seconds, the
        entries that finished are acknowledged, and the cancellation is
        re-raised."""
        if self._running:
            raise RuntimeError("this StreamConsumer is already running")
        self._running = True
        self._ready = asyncio.Event()
        self._acks.clear()
        self._dispatch.start(batches=True)
        try:
            await self._loop()
        except Exception:
            log.error(
                "stream consumer %s/%s on %r stopped; its entries are no longer handled",
                self.group,
                self.consumer,
                self.stream,
                exc_info=True,
            )
            raise
        finally:
            self._running = False
            await self._dispatch.stop()
            if self._acks:
                # Stopped between a batch and the next read.
                with contextlib.suppress(*_failures.ANY):
                    await self._flush_acks()

    @contextlib.asynccontextmanager
    async def running(self, ready_timeout: float = 10.0) -> AsyncIterator[StreamConsumer]:
        """Run in a background task for the ``async with`` block. Entering
        waits (at most ``ready_timeout`` s) until the group exists and the
        consumer's own pending entries were re-run; raises
        :class:`~redkit.ConnectionUnavailable` otherwise.

        Should :meth:`run` end with an exception inside the block (it never
        does for Redis failures, malformed entries or handler errors), the
        block is cancelled where it waits and that exception is raised from
        the ``async with``, as :class:`asyncio.TaskGroup` does."""
        ready_timeout = seconds(ready_timeout, "ready_timeout")
        what = f"stream consumer for {self.stream!r}"
        async with in_background(
            self.run(),
            lambda: self._ready,
            timeout=ready_timeout,
            drain_timeout=self.drain_timeout,
            what=what,
            not_ready=f"{what} not ready within {ready_timeout:g}s",
        ):
            yield self

    async def _loop(self) -> None:
        assert self._ready is not None
        failures = 0
        recovered = False
        worked = False
        lost_at: float | None = None  # when reading last failed after working
        next_claim = 0.0
        while True:
            raise_if_cancelled()
            try:
                if not recovered:
                    await self.ensure_group()
                    await self._recover_own()
                    recovered = True
                    self._ready.set()
                if time.monotonic() >= next_claim:
                    await self._flush_acks()
                    await self._claim_idle_entries()
                    next_claim = time.monotonic() + self.claim_interval
                # Wake up in time for the next claim round.
                wait = min(self.block, max(0.001, next_claim - time.monotonic()))
                reply = await self._ack_and_read(wait)
                raise_if_cancelled()
                entries = _entries(reply)
                if entries:
                    await self._process(entries, None)
                failures = 0
                worked = True
                lost_at = None
            except _failures.ANY as exc:
                if _error_reply(exc, "NOGROUP"):
                    # The stream or group vanished (server restarted without
                    # persistence, key deleted): create them again.
                    log.warning(
                        "group %r of %r is gone; creating it again", self.group, self.stream
                    )
                    recovered = False
                    self._acks.clear()
                    continue
                if worked and lost_at is None:
                    lost_at = time.monotonic()
                lost_for = None if lost_at is None else time.monotonic() - lost_at
                failures = await self._back_off(exc, failures, lost_for)

    async def _ack_and_read(self, wait: float) -> Any:
        """XACK what the last batch finished and XREADGROUP the next batch
        (blocking up to ``wait`` seconds) in one round trip: a pipeline, the
        acknowledgement applied first."""
        read = self._read_args(">", max(1, int(wait * 1000)))
        if not self._acks:
            return await self.client.execute_command(*read, **_RAW)
        acks, self._acks = self._acks, []
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(self.stream, self.group, *acks)
        pipe.execute_command(*read, **_RAW)
        try:
            _, reply = await pipe.execute()
        except BaseException:
            # Unknown whether the XACK was applied; acknowledging twice is harmless.
            self._acks[:0] = acks
            raise
        return reply

    def _read_args(self, start: Any, block: int | None = None) -> list[Any]:
        """XREADGROUP of up to ``batch_size`` entries after ``start``
        (``">"``: never delivered to the group), blocking ``block`` ms."""
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer]
        args += ["COUNT", self.batch_size]
        if block is not None:
            args += ["BLOCK", block]
        return [*args, "STREAMS", self.stream, start]

    async def _flush_acks(self) -> None:
        if self._acks:
            acks, self._acks = self._acks, []
            try:
                await self.client.xack(self.stream, self.group, *acks)
            except BaseException:
                self._acks[:0] = acks
                raise

    async def _back_off(self, exc: BaseException, failures: int, lost_for: float | None) -> int:
        self._counts["redis_errors"] += 1
        delay = recovery_delay(failures, self.backoff_base, self.backoff_max, lost_for=lost_for)
        log.warning(
            "stream consumer %s/%s on %r: %s; retrying in %.0f ms",
            self.group,
            self.consumer,
            self.stream,
            describe_error(exc),
            delay * 1000,
        )
        await asyncio.sleep(delay)
        raise_if_cancelled()
        return failures + 1

    async def ensure_group(self) -> bool:
        """Create the consumer group (and the stream) unless it exists;
        True when it was created now."""
        try:
            await self.client.xgroup_create(
                self.stream, self.group, id="0" if self.from_start else "$", mkstream=True
            )
        except _failures.ANY as exc:
            if _error_reply(exc, "BUSYGROUP"):
                return False
            raise
        log.info(
            "created consumer group %r on %r (%s)",
            self.group,
            self.stream,
            "from the start" if self.from_start else "new events only",
        )
        return True

    async def _recover_own(self) -> None:
        """Re-run the entries this consumer name left pending (a restart
        after a crash), oldest first."""
        cursor: Any = "0-0"
        while True:
            reply = await self.client.execute_command(*self._read_args(cursor), **_RAW)
            entries = _entries(reply)
            if not entries:
                return
            log.info("re-running %d entries %s left pending", len(entries), self.consumer)
            await self._process(entries, await self._deliveries(entries))
            raise_if_cancelled()
            cursor = entries[-1][0]

    async def _claim_idle_entries(self) -> None:
        """XAUTOCLAIM entries idle longer than ``claim_idle`` and run them."""
        cursor: Any = "0-0"
        min_idle = max(1, int(self.claim_idle * 1000))
        for _ in range(100):  # bounded: new events get their turn too
            reply = await self.client.execute_command(
                "XAUTOCLAIM",
                self.stream,
                self.group,
                self.consumer,
                min_idle,
                cursor,
                "COUNT",
                self.batch_size,
                **_RAW,
            )
            cursor = reply[0]
            entries = [(eid, fields) for eid, fields in reply[1] if eid is not None]
            if len(entries) < len(reply[1]):
                # Redis 6.2 claims entries deleted from the stream as nil
                # (7.0 drops them itself): acknowledge them by id.
                await self._ack_vanished()
            if entries:
                self._counts["claimed"] += len(entries)
                log.info(
                    "%s claimed %d entries idle for more than %gs",
                    self.consumer,
                    len(entries),
                    self.claim_idle,
                )
                await self._process(entries, await self._deliveries(entries))
            raise_if_cancelled()
            if cursor in (b"0-0", "0-0"):
                return

    async def _ack_vanished(self) -> None:
        """Acknowledge this consumer's pending entries that no longer exist
        in the stream (trimmed or deleted), so they stop being claimed."""
        rows = await self.client.xpending_range(
            self.stream, self.group, min="-", max="+", count=1000, consumername=self.consumer
        )
        ids = [row["message_id"] for row in rows]
        if not ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.execute_command("XRANGE", self.stream, entry_id, entry_id, **_RAW)
        found = await pipe.execute()
        vanished = [entry_id for entry_id, rows in zip(ids, found, strict=True) if not rows]
        if vanished:
            await self.client.xack(self.stream, self.group, *vanished)
            log.info("acknowledged %d pending entries no longer in %r", len(vanished), self.stream)

    async def _deliveries(self, entries: list[tuple[Any, Any]]) -> dict[Any, int]:
        """How often each entry was delivered so far (this delivery included)."""
        rows = await self.client.xpending_range(
            self.stream,
            self.group,
            min=entries[0][0],
            max=entries[-1][0],
            count=len(entries) * 2 + 10,
            consumername=self.consumer,
        )
        # Entry ids come back as bytes (read raw) or, from XPENDING on a
        # client that decodes responses, as text: keyed by text.
        return {_text(row["message_id"]): int(row["times_delivered"]) for row in rows}

    # -- one batch ----------------------------------------------------------

    async def _process(
        self, entries: list[tuple[Any, Any]], deliveries: Mapping[Any, int] | None
    ) -> None:
        raise_if_cancelled()
        ack: list[Any] = []
        dead: list[_Dead] = []
        jobs: list[_Entry] = []
        counts = self._counts
        registry = self._dispatch.registry
        counts["received"] += len(entries)
        for entry_id, fields in entries:
            count = deliveries.get(_text(entry_id), 1) if deliveries is not None else 1
            data = _event_field(fields)
            if data is None:
                if not fields:
                    ack.append(entry_id)  # deleted or trimmed while pending
                    continue
                counts["malformed"] += 1
                dead.append(_Dead(entry_id, _describe_fields(fields), count, "no 'event' field"))
                continue
            try:
                wire, payload = _decode_wire(data)
                regs = registry.get(wire.type)
                if regs is None:
                    counts["unhandled"] += 1
                    ack.append(entry_id)
                    continue
                untyped = (
                    decode_plain_payload(payload) if registry.needs_untyped(wire.type) else None
                )
                event = _to_event(wire, untyped, data, self.stream, _text(entry_id))
            except SerializationError as exc:
                counts["malformed"] += 1
                log.warning("malformed entry %s on %r: %s", _text(entry_id), self.stream, exc)
                dead.append(_Dead(entry_id, data, count, f"malformed: {exc}"))
                continue
            except Exception as exc:
                # Decoding has no other failure; should one ever appear (a
                # bug), the entry is dead-lettered, not the group stopped.
                counts["malformed"] += 1
                reason = f"malformed: failed to decode ({type(exc).__name__}: {exc})"
                log.warning("entry %s on %r: %s", _text(entry_id), self.stream, reason)
                dead.append(_Dead(entry_id, data, count, reason))
                continue
            if count > self.max_deliveries:
                reason = f"delivered {count} times without finishing (consumer crashed or stalled)"
                dead.append(_Dead(entry_id, data, count, reason))
                continue
            jobs.append(
                _Entry(regs, event, payload, entry_id=entry_id, data=data, deliveries=count)
            )
        try:
            if jobs:
                await self._dispatch.run_batch(jobs)
        except asyncio.CancelledError:
            # Stopping: what finished in the grace period is recorded, so it
            # is not redone.
            await self._settle(ack, dead, jobs, final=True)
            raise
        await self._settle(ack, dead, jobs, final=False)

    async def _settle(
        self, ack: list[Any], dead: list[_Dead], jobs: list[_Entry], *, final: bool
    ) -> None:
        """Acknowledge the entries whose handlers all succeeded and move to
        the dead-letter stream those that failed for the last time; the
        others stay pending, to be claimed and retried."""
        for job in jobs:
            failure = job.failure
            if job.completed:
                ack.append(job.entry_id)
            elif failure is not None and (failure.final or job.deliveries >= self.max_deliveries):
                # Retrying cannot help a final failure: recorded as the last delivery.
                deliveries = max(job.deliveries, self.max_deliveries if failure.final else 0)
                dead.append(_Dead(job.entry_id, job.data, deliveries, failure.reason))
        # Acknowledged with the next read (one round trip for both), or now
        # when stopping.
        self._acks.extend(ack)
        try:
            if final:
                await self._flush_acks()
            for entry in dead:
                await self._dead_letter(entry)
        except _failures.ANY as exc:
            if not final:
                raise
            log.warning(
                "could not acknowledge %d entries while stopping (%s); they will be redelivered",
                len(self._acks),
                describe_error(exc),
            )

    async def _dead_letter(self, entry: _Dead) -> None:
        error = entry.error[:2000]
        # The reason may quote a payload type's own exception text, which can
        # hold anything, lone surrogates included: written as bytes.
        reason = error.encode("utf-8", "backslashreplace")
        moved = await _DEAD_LETTER(
            self.client,
            [self.stream, self.dead_letter_stream],
            [
                self.group,
                entry.entry_id,
                self.dead_letter_maxlen,
                EVENT_FIELD,
                entry.data,
                "error",
                reason,
                "stream",
                self.stream,
                "entry_id",
                entry.entry_id,
                "group",
                self.group,
                "consumer",
                self.consumer,
                "deliveries",
                entry.deliveries,
            ],
        )
        if moved:
            self._counts["dead_lettered"] += 1
            log.error(
                "entry %s of %r moved to %r after %d deliveries: %s",
                _text(entry.entry_id),
                self.stream,
                self.dead_letter_stream,
                entry.deliveries,
                error,
            )


def _entries(reply: Any) -> list[tuple[Any, Any]]:
    """The entries of a one-stream XREADGROUP reply (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        for value in reply.values():
            return list(value[0]) if value and isinstance(value[0], list) else list(value)
        return []
    return list(reply[0][1])


def _event_field(fields: Any) -> bytes | None:
    if not fields:
        return None
    value = fields.get(b"event")
    if value is None:
        value = fields.get("event")
    if isinstance(value, str):
        return value.encode()
    return value if isinstance(value, bytes) else None


def _describe_fields(fields: Any) -> bytes:
    text = repr({_text(k): _text(v) for k, v in dict(fields).items()})
    return text[:2000].encode()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _error_reply(exc: BaseException, code: str) -> bool:
    """True when ``exc`` is an error answer of Redis starting with ``code``."""
    return not isinstance(exc, _failures.UNAVAILABLE) and str(exc).startswith(code)
