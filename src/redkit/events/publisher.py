"""Publisher: one PUBLISH (or SPUBLISH) per event, with the Go envelope."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from datetime import datetime, timezone
from typing import Any

from .. import _failures
from .._failures import describe_error, is_cluster
from .._telemetry import operation
from .._timing import bounded, raise_if_cancelled
from ..connection import Client
from ..errors import ConfigError
from ._envelope import _check_type, _encode, check_text, format_timestamp
from ._handlers import check_seconds

__all__ = [
    "Publisher",
    "PublisherStats",
    "check_channel",
    "sharded_unsupported",
]

log = logging.getLogger("redkit.events")


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
        self.timeout = None if timeout is None else check_seconds("timeout", timeout)
        self._command = "SPUBLISH" if sharded else "PUBLISH"
        self._published = 0
        self._errors = 0
        self._serialization_errors = 0

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
            data = _encode(type, payload, stamp, self.source, id or str(uuid.uuid4()))
        except Exception:
            self._serialization_errors += 1
            raise
        try:
            if self.timeout is None:
                receivers = await self._send(channel, data)
            else:
                receivers = await _within(self._send(channel, data), self.timeout)
        except _failures.ANY as exc:
            self._errors += 1
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
        self._published += 1
        raise_if_cancelled()
        return int(receivers)

    async def _send(self, channel: str, data: bytes) -> Any:
        if self.sharded and is_cluster(self.client):
            return await self.client.spublish(channel, data)
        return await self.client.execute_command(self._command, channel, data)

    def stats(self) -> PublisherStats:
        return PublisherStats(self._published, self._errors, self._serialization_errors)


async def _within(awaitable: Any, timeout: float) -> Any:
    try:
        return await bounded(awaitable, timeout)
    except asyncio.TimeoutError as exc:
        raise TimeoutError(f"no answer within {timeout:g}s") from exc
