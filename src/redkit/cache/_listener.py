"""The invalidation subscription a cache keeps while it has a local tier or
an event-driven Invalidator: one pub/sub connection, a heartbeat, and a
reconnect loop with backoff. Whenever the subscription is not known to be
intact, ``on_state(False)`` tells the cache to stop trusting its local tier."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis, RedisCluster

from .._failures import describe_error

__all__ = ["Listener"]

log = logging.getLogger("redkit.cache")

# Connection options a cluster node's client carries that a plain client
# subscribed to that node needs too.
_NODE_OPTIONS = (
    "username",
    "password",
    "credential_provider",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "ssl",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_check_hostname",
)


class Listener:
    """Subscribes to ``channel`` and hands each message's data to ``handle``.

    ``on_state(True)`` is called once the subscription is confirmed,
    ``on_state(False)`` as soon as it is lost or suspected lost: the
    connection failed, a heartbeat PING went unanswered for ``2 * heartbeat``
    seconds, or redis-py re-subscribed on its own after a reconnect (a
    second subscribe confirmation), in which case messages may have been
    missed and the state flips to False and straight back to True.

    On a Redis Cluster the subscription is a plain client on one primary:
    classic PUBLISH reaches the subscribers of every node.
    """

    def __init__(
        self,
        client: Any,
        channel: str,
        handle: Callable[[bytes], None],
        on_state: Callable[[bool], None],
        *,
        heartbeat: float = 1.0,
    ) -> None:
        self._client = client
        self._channel = channel
        self._handle = handle
        self._on_state = on_state
        self._heartbeat = heartbeat
        self._task: asyncio.Task[None] | None = None
        self._live = asyncio.Event()
        self._node_index = 0
        self.reconnects = 0

    @property
    def live(self) -> bool:
        return self._live.is_set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"redkit.cache listener {self._channel}"
            )

    async def wait_live(self, timeout: float) -> bool:
        """True once subscribed; False after ``timeout`` seconds without."""
        self.start()
        try:
            await asyncio.wait_for(self._live.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set_live(False)

    def _set_live(self, live: bool) -> None:
        if live:
            self._live.set()
        else:
            self._live.clear()
        self._on_state(live)

    def _subscriber(self) -> tuple[Any, bool]:
        """A client to subscribe with, and whether it is ours to close."""
        client = self._client
        if isinstance(client, RedisCluster):
            nodes = client.get_primaries() or client.get_nodes()
            node = nodes[self._node_index % len(nodes)]
            self._node_index += 1
            options = {k: v for k, v in node.connection_kwargs.items() if k in _NODE_OPTIONS}
            return Redis(host=node.host, port=int(node.port), **options), True
        return client, False

    async def _run(self) -> None:
        backoff = 0.05
        first = True
        while True:
            own: Any = None
            pubsub: Any = None
            try:
                subscriber, mine = self._subscriber()
                own = subscriber if mine else None
                pubsub = subscriber.pubsub()
                await asyncio.wait_for(pubsub.subscribe(self._channel), 2 * self._heartbeat + 1)
                if not first:
                    self.reconnects += 1
                first = False
                await self._pump(pubsub)
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.live:
                    log.warning(
                        "cache invalidation channel %s lost (%s); local tier flushed, reconnecting",
                        self._channel,
                        describe_error(exc) if not isinstance(exc, TimeoutError) else "timeout",
                    )
                else:
                    log.debug("cache invalidation channel %s: %r", self._channel, exc)
            finally:
                if self.live:
                    self._set_live(False)
                await _close(pubsub, own)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _pump(self, pubsub: Any) -> None:
        heartbeat = self._heartbeat
        last_heard = time.monotonic()
        ping_sent: float | None = None
        while True:
            message = await pubsub.get_message(timeout=heartbeat / 2)
            now = time.monotonic()
            if message is not None:
                last_heard = now
                ping_sent = None
                kind = message["type"]
                if kind == "message":
                    try:
                        self._handle(message["data"])
                    except Exception:
                        log.exception("cache invalidation message could not be applied")
                        self._set_live(False)
                        self._set_live(True)
                elif kind == "subscribe":
                    # The first confirmation, or redis-py re-subscribed after
                    # a reconnect and messages may have been lost meanwhile:
                    # either way the local tier starts over.
                    if self.live:
                        self.reconnects += 1
                        self._set_live(False)
                    self._set_live(True)
                continue
            if ping_sent is None:
                if now - last_heard >= heartbeat:
                    await asyncio.wait_for(pubsub.ping(), 2 * heartbeat)
                    ping_sent = now
            elif now - ping_sent >= 2 * heartbeat:
                raise TimeoutError(f"no answer to a heartbeat PING within {2 * heartbeat:g}s")


async def _close(pubsub: Any, own: Any) -> None:
    for closer in (pubsub, own):
        if closer is None:
            continue
        try:
            await asyncio.wait_for(closer.aclose(), 1.0)
        except Exception:
            log.debug("closing the invalidation subscription raised", exc_info=True)
