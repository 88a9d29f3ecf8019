"""Publishers: one PUBLISH (or SPUBLISH) per event, with the Go envelope,
and one XADD per event appended to a stream."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from .. import _counters, _failures
from .._failures import describe_error, is_cluster
from .._ids import uuid4_text
from .._telemetry import operation
from .._timing import bounded, raise_if_cancelled
from .._validate import seconds
from ..connection import Client
from ..errors import ConfigError
from ..keys import validate_key_part
from ._envelope import _check_type, _encode, check_text, format_timestamp
from ._handlers import check_count

__all__ = [
    "EVENT_FIELD",
    "Publisher",
    "PublisherStats",
    "StreamPublisher",
    "StreamPublisherStats",
    "check_channel",
    "check_stream",
    "sharded_unsupported",
]

log = logging.getLogger("redkit.events")

EVENT_FIELD = "event"
"""The one field of a stream entry: the JSON envelope."""


@dataclasses.dataclass(frozen=True)
class PublisherStats:
    """Counters of a :class:`Publisher`."""

    published: int
    """Events sent."""
    errors: int
    """Publishes that failed in Redis (unavailable, or an error answer)."""
    serialization_errors: int
    """Publishes refused because the payload has no JSON form."""


def check_channel(channel: object, what: str = "channel") -> str:
    return check_text(channel, what)


def sharded_unsupported(exc: BaseException) -> bool:
    """True when ``exc`` says the server has no sharded pub/sub (before 7.0)."""
    text = str(exc).lower()
    unknown = "unknown command" in text or "doesn't exist" in text
    return unknown and ("spublish" in text or "ssubscribe" in text)


class Publisher:
    """Publishes events on pub/sub channels.

    ``publish(channel, type, payload)`` sends ``{type, payload, timestamp,
    source, id}`` as JSON in one PUBLISH and returns how many subscribers
    received it (on a cluster: those connected to the node that took it, as
    Redis reports). Pub/sub is fire-and-forget: subscribers that are not
    connected miss the event; use :class:`StreamPublisher` for events that
    must not be lost.

    ``sharded=True`` uses SPUBLISH (Redis 7.0+): on a cluster the event
    travels only within the shard owning the channel's slot. Subscribers
    must then use ``Subscriber(..., sharded=True)``. On an older server the
    first publish raises :class:`~redkit.ConfigError`.

    ``timeout`` bounds a publish on top of the client's own socket timeout.
    Redis unreachable or not answering in time (or out of memory, or a
    cluster reconfiguring) raises :class:`~redkit.ConnectionUnavailable`;
    any other error answer (``NOPERM`` ...) raises :class:`~redkit.RedkitError`
    with the server's message. A payload with no faithful JSON form (an
    unsupported type, NaN or an infinity, nesting past the recursion limit)
    raises :class:`~redkit.SerializationError` before anything is sent; a bad
    argument raises :class:`~redkit.ConfigError`.
    """

    def __init__(
        self,
        client: Client,
        source: str = "",
        *,
        sharded: bool = False,
        timeout: float | None = None,
    ) -> None:
        self.client = client
        self.source = check_text(source, "source", allow_empty=True)
        self.sharded = bool(sharded)
        self.timeout = None if timeout is None else seconds(timeout, "timeout")
        self._command = "SPUBLISH" if sharded else "PUBLISH"
        self._counts = _counters.counts_for(PublisherStats)

    def __repr__(self) -> str:
        return f"<Publisher source={self.source!r} sharded={self.sharded}>"

    @operation("events.publish")
    async def publish(
        self,
        channel: str,
        type: str,
        payload: Any = None,
        *,
        id: str | None = None,
        timestamp: datetime | None = None,
    ) -> int:
        """Publish one event and return the number of receivers.

        ``id`` defaults to a random UUID and ``timestamp`` to now (UTC); pass
        them to republish an event unchanged.
        """
        check_channel(channel)
        _check_type(type)
        if id is not None:
            check_text(id, "id")
        stamp = format_timestamp(timestamp or datetime.now(timezone.utc))
        try:
            data = _encode(type, payload, stamp, self.source, id or uuid4_text())
        except Exception:
            self._counts["serialization_errors"] += 1
            raise
        try:
            if self.timeout is None:
                receivers = await self._send(channel, data)
            else:
                receivers = await _within(self._send(channel, data), self.timeout)
        except _failures.ANY as exc:
            self._counts["errors"] += 1
            if self.sharded and sharded_unsupported(exc):
                raise ConfigError(
                    "sharded=True needs Redis 7.0 or newer (SPUBLISH); this server does not "
                    f"know it: {describe_error(exc)}"
                ) from exc
            log.warning(
                "publish of %r on channel %r failed: %s", type, channel, describe_error(exc)
            )
            raise _failures.failure(
                f"cannot publish event {type!r} on channel {channel!r}", exc
            ) from exc
        self._counts["published"] += 1
        raise_if_cancelled()
        return int(receivers)

    async def _send(self, channel: str, data: bytes) -> Any:
        if self.sharded and is_cluster(self.client):
            return await self.client.spublish(channel, data)
        return await self.client.execute_command(self._command, channel, data)

    def stats(self) -> PublisherStats:
        return _counters.snapshot(PublisherStats, self._counts)


async def _within(awaitable: Any, timeout: float) -> Any:
    try:
        return await bounded(awaitable, timeout)
    except asyncio.TimeoutError as exc:
        raise TimeoutError(f"no answer within {timeout:g}s") from exc


def check_stream(stream: object) -> str:
    # Braces only as one {tag}: the dead-letter stream must land in the
    # stream's hash slot, which a stray brace would make ambiguous.
    return validate_key_part(stream, "stream name", allow_braces="tag")


@dataclasses.dataclass(frozen=True)
class StreamPublisherStats:
    """Counters of a :class:`StreamPublisher`."""

    published: int
    errors: int


class StreamPublisher:
    """Appends events to streams with XADD, trimmed to about ``maxlen`` entries.

    Each entry has one field, ``event``, holding the JSON envelope (the Go
    format plus ``id``). ``publish`` returns the event id that consumers see
    as ``event.id``. Trimming is approximate (``MAXLEN ~``), which costs
    nothing per call; entries trimmed before a group read them are lost, so
    ``maxlen`` must exceed the largest backlog you expect. ``maxlen=None``
    never trims.
    """

    def __init__(self, client: Client, maxlen: int | None = 100_000, *, source: str = "") -> None:
        self.client = client
        self.maxlen = None if maxlen is None else check_count("maxlen", maxlen)
        self.source = check_text(source, "source", allow_empty=True)
        self._counts = _counters.counts_for(StreamPublisherStats)

    def __repr__(self) -> str:
        return f"<StreamPublisher maxlen={self.maxlen} source={self.source!r}>"

    def _entry(
        self, type: str, payload: Any, event_id: str | None, timestamp: datetime | None
    ) -> tuple[str, bytes]:
        _check_type(type)
        if event_id is None:
            event_id = uuid4_text()
        else:
            check_text(event_id, "id")
        stamp = format_timestamp(timestamp or datetime.now(timezone.utc))
        return event_id, _encode(type, payload, stamp, self.source, event_id)

    @operation("streams.publish")
    async def publish(
        self,
        stream: str,
        type: str,
        payload: Any = None,
        *,
        id: str | None = None,
        timestamp: datetime | None = None,
    ) -> str:
        """Append one event (one round trip) and return its id.

        Raises :class:`~redkit.SerializationError` before sending when the
        payload has no faithful JSON form, :class:`~redkit.ConnectionUnavailable`
        when Redis cannot serve the write now (unreachable, no answer in time,
        out of memory, cluster reconfiguring) and :class:`~redkit.RedkitError`
        for any other error answer (``WRONGTYPE``: the key is not a stream),
        like :meth:`Publisher.publish`.
        """
        check_stream(stream)
        event_id, data = self._entry(type, payload, id, timestamp)
        try:
            await self.client.xadd(
                stream,
                {EVENT_FIELD: data},
                maxlen=self.maxlen,
                approximate=True,
            )
        except _failures.ANY as exc:
            self._counts["errors"] += 1
            log.warning("append of %r to stream %r failed: %s", type, stream, describe_error(exc))
            raise _failures.failure(
                f"cannot append event {type!r} to stream {stream!r}", exc
            ) from exc
        self._counts["published"] += 1
        raise_if_cancelled()
        return event_id

    @operation("streams.publish_many")
    async def publish_many(self, stream: str, events: Iterable[tuple[str, Any]]) -> list[str]:
        """Append several ``(type, payload)`` events in one pipelined round
        trip; returns their ids in order. Every payload is encoded before
        anything is sent."""
        check_stream(stream)
        entries = [self._entry(*_pair(item), None, None) for item in events]
        if not entries:
            return []
        try:
            pipe = self.client.pipeline(transaction=False)
            for _, data in entries:
                pipe.xadd(stream, {EVENT_FIELD: data}, maxlen=self.maxlen, approximate=True)
            await pipe.execute()
        except _failures.ANY as exc:
            self._counts["errors"] += 1
            log.warning(
                "append of %d events to stream %r failed: %s",
                len(entries),
                stream,
                describe_error(exc),
            )
            raise _failures.failure(
                f"cannot append {len(entries)} events to stream {stream!r}", exc
            ) from exc
        self._counts["published"] += len(entries)
        return [event_id for event_id, _ in entries]

    def stats(self) -> StreamPublisherStats:
        return _counters.snapshot(StreamPublisherStats, self._counts)


def _pair(item: object) -> tuple[str, Any]:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise ConfigError(f"publish_many takes (type, payload) pairs, got {item!r:.80}")
    return item[0], item[1]
