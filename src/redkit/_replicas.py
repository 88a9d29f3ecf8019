"""Writes that return once replicas hold them: a script followed by
``WAIT`` on the same connection.

``WAIT n ms`` waits for the writes of the connection it is sent on, so it
cannot be a separate call (a pooled client may send it on another
connection). On a standalone or Sentinel client the script and ``WAIT`` go
as one non-transactional pipeline: one connection, one round trip. On a
cluster both are sent with ``target_nodes`` set to the primary of the
script's first key, which redis-py's cluster pipeline groups on one
connection of that node; redirections are not followed inside the
pipeline, because a redirected script would run on another connection
than its ``WAIT``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ._failures import NO_SCRIPT, REDIRECTED, is_cluster, read_timeout
from ._validate import seconds
from .errors import ConfigError, NotReplicated
from .scripts import KeyOrArg, Script

__all__ = ["Replicas", "replicas_for"]

# Redis checks blocked clients' timeouts about every 100 ms (hz 10), so a
# WAIT can answer that much after its timeout; the client's read timeout
# must leave room for it.
_READ_MARGIN = 0.25


class Replicas:
    """``count`` replicas must acknowledge each write, within ``timeout_ms``."""

    __slots__ = ("_client", "_cluster", "count", "timeout", "timeout_ms")

    def __init__(self, client: Any, count: int, timeout: float) -> None:
        self._client = client
        self._cluster = is_cluster(client)
        self.count = count
        self.timeout = timeout
        # WAIT 0 would wait forever.
        self.timeout_ms = max(1, round(timeout * 1000))

    def __repr__(self) -> str:
        return f"<Replicas {self.count} within {self.timeout:g}s>"

    async def run(
        self, script: Script, keys: Sequence[KeyOrArg], args: Sequence[KeyOrArg]
    ) -> tuple[Any, int]:
        """Run ``script`` and ``WAIT`` for its replicas: ``(reply, replicas
        that acknowledged)``. Failures of the script's request are raised as
        redis-py raised them (one of :data:`~redkit._failures.ANY`)."""
        started = time.monotonic()
        reply, acked = await self._send("EVALSHA", script.sha, keys, args, self.timeout_ms)
        if isinstance(reply, NO_SCRIPT):
            # The WAIT after the refused EVALSHA waited too (for the
            # writes before it): the second gets what is left, so that a
            # write never waits much longer than the timeout in all.
            spent = round((time.monotonic() - started) * 1000)
            left = max(1, self.timeout_ms - spent)
            reply, acked = await self._send("EVAL", script.source, keys, args, left)
        if isinstance(reply, Exception):
            if self._cluster and isinstance(reply, REDIRECTED):
                # MOVED or ASK: nothing ran. Through the client's own path
                # the script follows the redirection (and the client learns
                # the new slot owner), but on a connection no WAIT follows:
                # applied, not confirmed.
                return await script(self._client, keys, args), 0
            raise reply
        if isinstance(acked, Exception):
            raise acked
        return reply, int(acked)

    async def _send(
        self,
        command: str,
        body: str,
        keys: Sequence[KeyOrArg],
        args: Sequence[KeyOrArg],
        timeout_ms: int,
    ) -> list[Any]:
        client = self._client
        if self._cluster:
            # A client made without I/O learns the slots on first use;
            # a no-op once it has.
            await client.initialize()
            node = client.get_node_from_key(keys[0])
            pipe = client.pipeline()
            pipe.execute_command(command, body, len(keys), *keys, *args, target_nodes=node)
            pipe.execute_command("WAIT", self.count, timeout_ms, target_nodes=node)
            replies: list[Any] = await pipe.execute(raise_on_error=False, allow_redirections=False)
            return replies
        pipe = client.pipeline(transaction=False)
        pipe.execute_command(command, body, len(keys), *keys, *args)
        pipe.execute_command("WAIT", self.count, timeout_ms)
        replies = await pipe.execute(raise_on_error=False)
        return replies

    def shortfall(self, done: str, acknowledged: int, outcome: str) -> NotReplicated:
        """The error of a write (``done``: what it did) that ``acknowledged``
        replicas confirmed, fewer than :attr:`count`; ``outcome`` says what
        became of it."""
        return NotReplicated(
            f"{done}, but only {acknowledged} of {self.count} replicas acknowledged it "
            f"within {self.timeout:g}s (replicas={self.count}): {outcome}",
            acknowledged,
            self.count,
        )


def replicas_for(client: Any, count: object, timeout: object) -> Replicas | None:
    """The ``replicas=``/``replica_timeout=`` settings of a component, checked
    (:class:`~redkit.ConfigError` for bad values); None when ``count`` is 0."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ConfigError(f"replicas must be an int >= 0, got {count!r}")
    wait = seconds(timeout, "replica_timeout", maximum=3600.0)
    if count == 0:
        return None
    bound = read_timeout(client)
    if bound is not None and wait > bound - _READ_MARGIN:
        raise ConfigError(
            f"replica_timeout ({wait:g}s) must be at least {_READ_MARGIN:g}s shorter than "
            f"the client's read timeout ({bound:g}s): WAIT holds the reply that long"
        )
    return Replicas(client, count, wait)
