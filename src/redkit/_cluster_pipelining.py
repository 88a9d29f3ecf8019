"""Auto-pipelining on a Redis Cluster: shared connections per node.

redis-py's cluster client routes each command to a node (slot map,
``MOVED``/``ASK``, retries) and then calls that node's ``execute_command``.
:class:`PipelinedRedisCluster` keeps all of that and changes only the last
step: a node that carries a shared command becomes a :class:`_SharedNode`,
whose ordinary commands go on the node's shared connections
(:class:`~redkit._autopipeline.Shared`, keyed by address so a node object
rebuilt by a slot-map refresh finds them again); the rest use the node's
own connections as before.

``ASKING`` must come straight before the command it lets through, on the
same connection: a shared node does not send it alone, but remembers it
for the task that asked and sends the two together.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from typing import Any

from redis.asyncio.cluster import ClusterNode

from . import _counters
from ._autopipeline import ClientStats, Shared, shares
from ._mux import SharedConnection
from ._pool import WaitingRedisCluster

__all__ = ["PipelinedRedisCluster"]

# redis-py's cluster client calls its own aclose() to forget the slot map
# (after CLUSTERDOWN, or every so many MOVED); that must not close the
# shared connections other tasks are using, only the user's aclose() does.
_routing = contextvars.ContextVar("redkit_cluster_routing", default=False)


_NODE_TAKES_ASKING = "asking" in inspect.signature(ClusterNode.execute_command).parameters


class _Nodes:
    """The shared connections of one cluster client, per node address."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.counts = _counters.counts_for(ClientStats)
        self.by_address: dict[str, Shared] = {}
        self.asking: set[tuple[asyncio.Task[Any] | None, str]] = set()

    def shared(self, node: ClusterNode) -> Shared:
        found = self.by_address.get(node.name)
        if found is None:
            connection_class = node.connection_class
            kwargs = node.connection_kwargs

            def make() -> Any:
                return connection_class(**kwargs)

            found = self.by_address[node.name] = Shared(
                functools.partial(SharedConnection, make, self.counts, timeout=self.timeout),
                timeout=self.timeout,
            )
        return found

    async def execute(
        self, node: ClusterNode, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        name = args[0]
        if name == "ASKING":
            self.asking.add((asyncio.current_task(), node.name))
            return True
        asking = kwargs.pop("asking", False)
        if self.asking:
            ticket = (asyncio.current_task(), node.name)
            if ticket in self.asking:
                self.asking.discard(ticket)
                asking = True
        if not shares(args, kwargs):
            self.counts["dedicated"] += 1
            if asking:
                if _NODE_TAKES_ASKING:
                    kwargs["asking"] = True  # redis-py sends both on one connection
                else:  # pragma: no cover - redis-py before 8
                    await ClusterNode.execute_command(node, "ASKING")
            return await ClusterNode.execute_command(node, *args, **kwargs)
        return await self.shared(node).run(args, kwargs, node.response_callbacks, asking=asking)

    @property
    def in_flight(self) -> int:
        return sum(shared.in_flight for shared in self.by_address.values())

    async def aclose(self) -> None:
        shared, self.by_address = list(self.by_address.values()), {}
        for each in shared:
            await each.aclose()


def _node_class(nodes: _Nodes) -> type[ClusterNode]:
    class _SharedNode(ClusterNode):
        __slots__ = ()

        async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            return await nodes.execute(self, args, kwargs)

    return _SharedNode


class PipelinedRedisCluster(WaitingRedisCluster):
    """A cluster client whose ordinary commands share a few connections per
    node; ``stats()`` counts what it did."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        timeout = kwargs.get("socket_timeout")
        self._nodes = _Nodes(float(timeout) if timeout else None)
        self._shared_node = _node_class(self._nodes)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if shares(args, kwargs):
            # No cap on commands in flight: they do not hold a connection each.
            return await super(WaitingRedisCluster, self).execute_command(*args, **kwargs)
        return await super().execute_command(*args, **kwargs)

    def _share(self, node: ClusterNode) -> None:
        # Same slots, one more method: the node now sends shared commands on
        # its shared connections.
        if type(node) is ClusterNode:
            node.__class__ = self._shared_node

    async def _execute_command(self, target_node: ClusterNode, *args: Any, **kwargs: Any) -> Any:
        self._share(target_node)
        token = _routing.set(True)
        try:
            return await super()._execute_command(target_node, *args, **kwargs)
        finally:
            _routing.reset(token)

    def get_node(
        self, host: str | None = None, port: int | None = None, node_name: str | None = None
    ) -> ClusterNode | None:
        node = super().get_node(host, port, node_name)
        if node is not None and hasattr(self, "_shared_node"):  # not while __init__ runs
            # An ASK redirect looks its node up here, inside redis-py's
            # retry loop (past the conversion above), and sends ASKING and
            # then the command through it: on a plain node those take two
            # pooled connections, and with more than one free the command
            # goes without ASKING (MOVED back, until the TTL runs out).
            self._share(node)
        return node

    def stats(self) -> ClientStats:
        """What this client sent, and how."""
        return _counters.snapshot(ClientStats, self._nodes.counts, in_flight=self._nodes.in_flight)

    async def aclose(self, *args: Any, **kwargs: Any) -> None:
        routing = _routing.get()
        # The nodes first: a command failed by closing the shared connections
        # marks the client for a new slot map (redis-py's handling of a lost
        # connection), and redis-py's aclose() closes nothing once it is so
        # marked, leaving every node's pooled connections open.
        await super().aclose(*args, **kwargs)
        if not routing:
            await self._nodes.aclose()
