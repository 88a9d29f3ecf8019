"""A Redis Cluster of embedded servers, with replicas and failover on demand."""

from __future__ import annotations

from typing import Any

from redis.crc import key_slot

from ..errors import ConfigError, RedisServerError
from ._admin import admin_client, in_sync, text, wait_until
from ._binary import find_redis_server
from ._process import EmbeddedRedis


class EmbeddedCluster:
    """A Redis Cluster of ``masters`` primaries, each with ``replicas``
    replicas, on loopback ports; slots split evenly, formed with the
    server's own ``CLUSTER`` commands.

    With replicas, :meth:`failover` (``CLUSTER FAILOVER`` on a replica) and
    :meth:`kill_primary` (SIGKILL, as a crash) promote a replica and return
    once the whole cluster routes its slots to it. A crash is noticed after
    ``node_timeout_ms``, so failover tests want a short one (1000-2000 ms).
    """

    def __init__(
        self,
        masters: int = 3,
        *,
        replicas: int = 0,
        binary: str | None = None,
        node_timeout_ms: int = 5000,
        start_timeout: float = 30.0,
        first_port: int | None = None,
    ) -> None:
        if masters < 1:
            raise ConfigError(f"a cluster needs at least one master, got {masters}")
        if replicas < 0:
            raise ConfigError(f"replicas must be 0 or more, got {replicas}")
        total = masters * (1 + replicas)
        if first_port is not None and not 0 < first_port <= 55536 - total:
            raise ConfigError(
                f"first_port must leave room for the cluster bus (port + 10000), got {first_port}"
            )
        self.binary = binary or find_redis_server()
        self.start_timeout = start_timeout
        self.masters = masters
        self.replicas = replicas
        self.nodes = [
            EmbeddedRedis(
                None if first_port is None else first_port + index,
                binary=self.binary,
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                    # Redis 7 waits 5 s before a diskless full sync, to
                    # batch replicas; replicas here should sync at once.
                    "--repl-diskless-sync-delay",
                    "0",
                ),
            )
            for index in range(total)
        ]
        """Every node: the first ``masters`` start as primaries, the rest as
        their replicas; roles change with failovers."""

    def __repr__(self) -> str:
        ports = ",".join(str(n.port) for n in self.nodes)
        return f"<EmbeddedCluster ports={ports}>"

    @property
    def host(self) -> str:
        return self.nodes[0].host

    @property
    def port(self) -> int:
        """The seed node's port."""
        return self.nodes[0].port

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> EmbeddedCluster:
        """Start every node, assign slots, join them, attach the replicas and
        wait for ``cluster_state:ok`` with every replica in sync."""
        try:
            for node in self.nodes:
                node.start()
            self._form()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _form(self) -> None:
        clients = [admin_client(n) for n in self.nodes]
        try:
            count = len(self.nodes)
            for index, client in enumerate(clients):
                if index < self.masters:
                    first = index * 16384 // self.masters
                    last = (index + 1) * 16384 // self.masters - 1
                    client.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", index + 1)
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER MEET", node.host, node.port)
            wait_until(
                lambda: all(_cluster_ready(c, count) for c in clients),
                "the cluster did not reach state ok",
                self.start_timeout,
            )
            for index in range(self.masters, count):
                primary = clients[(index - self.masters) % self.masters]
                clients[index].execute_command(
                    "CLUSTER REPLICATE", text(primary.execute_command("CLUSTER MYID"))
                )
            # A primary ignores a manual failover from a node it does not
            # yet know as its replica, so wait until every node's view has
            # every replica attached, not only until the replicas synced.
            replicas = count - self.masters
            wait_until(
                lambda: (
                    all(in_sync(n) for n in self.nodes[self.masters :])
                    and all(_cluster_ready(c, count) for c in clients)
                    and all(_replicas_seen(node) == replicas for node in self.nodes)
                ),
                "the replicas did not come in sync",
                self.start_timeout,
            )
        finally:
            for client in clients:
                client.close()

    # ------------------------------------------------------------ failover

    def primary_for(self, key: str | bytes = b"") -> EmbeddedRedis:
        """The running node that serves ``key``'s slot now."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        owner = self._owner(slot, self._running()[0])
        return self._node_at(owner["port"])

    def failover(self, key: str | bytes = b"", *, timeout: float = 30.0) -> EmbeddedRedis:
        """Promote a replica of the primary serving ``key`` with ``CLUSTER
        FAILOVER`` (a graceful hand-over: the replica catches up first) and
        return it once every running node routes the slot to it."""
        slot, replica = self._replica_for(key)
        old = self.primary_for(key)
        with admin_client(replica) as client:
            client.execute_command("CLUSTER FAILOVER")
        self._await_owner(slot, replica, timeout)
        # The old primary turns into the new one's replica; wait for every
        # view to say so, so that a failover can follow this one at once.
        wait_until(
            lambda: all(
                any(e["port"] == old.port and e["master"] != "-" for e in _nodes(node))
                for node in self._running()
            ),
            f"node {old.port} did not become a replica",
            timeout,
        )
        return replica

    def kill_primary(self, key: str | bytes = b"", *, timeout: float = 30.0) -> EmbeddedRedis:
        """SIGKILL the primary serving ``key``, as a crash would, and return
        the replica that took over once every running node routes the slot
        to it. :meth:`revive` brings the killed node back as a replica."""
        slot, replica = self._replica_for(key)
        self.primary_for(key).kill()
        self._await_owner(slot, replica, timeout)
        return replica

    def revive(self, node: EmbeddedRedis, *, timeout: float = 30.0) -> EmbeddedRedis:
        """Start a killed or stopped node again with its cluster config, and
        return once it is an in-sync replica in every node's view (so it can
        take part in the next failover)."""
        node.restart()
        wait_until(
            lambda: (
                in_sync(node)
                and all(
                    any(e["port"] == node.port and e["master"] != "-" for e in _nodes(other))
                    for other in self._running()
                )
            ),
            f"node {node.port} did not rejoin as a replica",
            timeout,
        )
        return node

    def _replica_for(self, key: str | bytes) -> tuple[int, EmbeddedRedis]:
        if not self.replicas:
            raise RedisServerError("this cluster has no replicas to fail over to")
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        view = _nodes(self._running()[0])
        owner = self._owner(slot, self._running()[0])
        for entry in view:
            node = self._find(entry["port"])
            if entry["master"] == owner["id"] and node is not None and node.running:
                return slot, node
        raise RedisServerError(f"no running replica of the primary on port {owner['port']}")

    def _await_owner(self, slot: int, node: EmbeddedRedis, timeout: float) -> None:
        def served() -> bool:
            running = self._running()
            for other in running:
                with admin_client(other) as client:
                    if not _cluster_ready(client, None):
                        return False
                if self._owner(slot, other)["port"] != node.port:
                    return False
            with admin_client(node) as client:
                return text(client.execute_command("ROLE")[0]) == "master"

        wait_until(served, f"node {node.port} did not take over slot {slot}", timeout)

    def _owner(self, slot: int, via: EmbeddedRedis) -> dict[str, Any]:
        for entry in _nodes(via):
            live = entry["master"] == "-" and "fail" not in entry["flags"]
            if live and any(first <= slot <= last for first, last in entry["slots"]):
                return entry
        raise RedisServerError(f"no live primary serves slot {slot}")

    def _running(self) -> list[EmbeddedRedis]:
        running = [n for n in self.nodes if n.running]
        if not running:
            raise RedisServerError("no cluster node is running")
        return running

    def _find(self, port: int) -> EmbeddedRedis | None:
        return next((n for n in self.nodes if n.port == port), None)

    def _node_at(self, port: int) -> EmbeddedRedis:
        node = self._find(port)
        if node is None:
            raise RedisServerError(f"port {port} is not a node of this cluster")
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _nodes(via: EmbeddedRedis) -> list[dict[str, Any]]:
    """``CLUSTER NODES`` as seen by ``via``, one dict per node."""
    with admin_client(via) as client:
        reply = text(client.execute_command("CLUSTER NODES"))
    entries = []
    for line in reply.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = fields[1].split("@", 1)[0]
        slots = []
        for part in fields[8:]:
            if part.startswith("["):  # a slot being migrated
                continue
            first, _, last = part.partition("-")
            slots.append((int(first), int(last or first)))
        entries.append(
            {
                "id": fields[0],
                "port": int(address.rsplit(":", 1)[1]),
                "flags": fields[2].replace("myself,", ""),
                "master": fields[3],
                "slots": slots,
            }
        )
    return entries


def _replicas_seen(via: EmbeddedRedis) -> int:
    return sum(1 for entry in _nodes(via) if entry["master"] != "-")


def _cluster_ready(client: Any, count: int | None) -> bool:
    info = client.execute_command("CLUSTER INFO")
    if not isinstance(info, dict):  # older redis-py returns the raw text
        text = info.decode() if isinstance(info, bytes) else str(info)
        info = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return (
        info.get("cluster_state") == "ok"
        and (count is None or str(info.get("cluster_known_nodes")) == str(count))
        and str(info.get("cluster_slots_ok")) == "16384"
    )
