"""A Sentinel group of embedded servers: a primary, its replicas and the
sentinels that watch them, with failover on demand."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .._failures import ERROR_REPLY
from ..errors import ConfigError, RedisServerError
from ._admin import admin_client, in_sync, text, wait_until
from ._binary import find_redis_server
from ._process import EmbeddedRedis

# Redis 7 waits 5 s before a diskless full sync, to batch replicas; a test
# group wants its replicas now (any server may become the primary).
_SYNC_NOW = ("--repl-diskless-sync-delay", "0")


class _SentinelProcess(EmbeddedRedis):
    """``redis-server --sentinel``: Sentinel insists on a config file it can
    rewrite, so the options go there instead of on the command line."""

    def __init__(self, group: EmbeddedSentinelGroup) -> None:
        super().__init__(binary=group.binary)
        self._group = group

    def _command(self) -> list[str]:
        group = self._group
        primary = group.servers[0]
        name = group.master_name
        conf = self.directory / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\n"
            f"bind {self.host}\n"
            f"dir {self.directory}\n"
            f"logfile {self.directory / 'redis.log'}\n"
            "daemonize no\n"
            f"sentinel monitor {name} {primary.host} {primary.port} {group.quorum}\n"
            f"sentinel down-after-milliseconds {name} {group.down_after_ms}\n"
            f"sentinel failover-timeout {name} {group.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {name} 1\n"
        )
        return [self.binary, str(conf), "--sentinel"]


class EmbeddedSentinelGroup:
    """One primary, ``replicas`` replicas and ``sentinels`` sentinels (quorum
    ``quorum``) on loopback ports, monitoring the primary as
    ``master_name``.

    :attr:`sentinels` is what :class:`~redkit.RedisSettings` takes
    (``RedisSettings(sentinels=group.sentinels, sentinel_master=group.master_name)``).
    :meth:`failover` (``SENTINEL FAILOVER``) and :meth:`kill_primary`
    (SIGKILL, as a crash) return the new primary once every sentinel names
    it and it accepts writes. A crash is noticed after ``down_after_ms``.
    """

    def __init__(
        self,
        master_name: str = "mymaster",
        *,
        replicas: int = 1,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 10_000,
        binary: str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if replicas < 1:
            raise ConfigError(f"a Sentinel group needs at least one replica, got {replicas}")
        if not 1 <= quorum <= sentinels:
            raise ConfigError(f"quorum must be between 1 and sentinels ({sentinels}), got {quorum}")
        self.master_name = master_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.binary = binary or find_redis_server()
        self.start_timeout = start_timeout
        self.servers: list[EmbeddedRedis] = [
            EmbeddedRedis(binary=self.binary, extra_args=_SYNC_NOW)
        ]
        """The data nodes: the first starts as the primary, the rest as its
        replicas; roles change with failovers."""
        self._replica_count = replicas
        self.sentinel_nodes = [_SentinelProcess(self) for _ in range(sentinels)]

    def __repr__(self) -> str:
        ports = ",".join(str(s.port) for s in self.servers)
        return f"<EmbeddedSentinelGroup {self.master_name} servers={ports}>"

    @property
    def sentinels(self) -> tuple[tuple[str, int], ...]:
        """``(host, port)`` of every sentinel."""
        return tuple((s.host, s.port) for s in self.sentinel_nodes)

    def start(self) -> EmbeddedSentinelGroup:
        """Start the primary and its replicas, wait for them to sync, start
        the sentinels and wait until each knows every replica and every
        other sentinel (a failover needs that)."""
        try:
            primary = self.servers[0].start()
            for _ in range(self._replica_count):
                replica = EmbeddedRedis(
                    binary=self.binary,
                    extra_args=(*_SYNC_NOW, "--replicaof", primary.host, str(primary.port)),
                )
                self.servers.append(replica.start())
            self._wait(lambda: all(in_sync(s) for s in self.servers[1:]), "replicas in sync")
            for sentinel in self.sentinel_nodes:
                sentinel.start()
            self._wait(self._sentinels_agree, "sentinels discovering each other")
        except BaseException:
            self.cleanup()
            raise
        return self

    def primary(self) -> EmbeddedRedis:
        """The server the sentinels name as primary now."""
        port = self._named_port(self._running_sentinels()[0])
        return self._server_at(port)

    def failover(self, *, timeout: float = 30.0) -> EmbeddedRedis:
        """``SENTINEL FAILOVER``: promote a replica without waiting for the
        primary to fail, and return it once it serves."""
        old = self.primary()
        deadline = time.monotonic() + timeout

        def started() -> bool:
            with admin_client(self._running_sentinels()[0]) as sentinel:
                try:
                    sentinel.execute_command("SENTINEL FAILOVER", self.master_name)
                except ERROR_REPLY as exc:
                    # A replica that came back a moment ago is not "good"
                    # until the sentinels have seen it answer for a while.
                    if str(exc).startswith(("NOGOODSLAVE", "INPROG")):
                        return False
                    raise
            return True

        self._wait(started, "replica the sentinels would promote", timeout)
        return self._await_new_primary(old, max(0.0, deadline - time.monotonic()))

    def kill_primary(self, *, timeout: float = 30.0) -> EmbeddedRedis:
        """SIGKILL the primary, as a crash would, and return the replica the
        sentinels promoted once it serves. :meth:`revive` brings the killed
        server back as a replica."""
        old = self.primary()
        old.kill()
        return self._await_new_primary(old, timeout)

    def revive(self, server: EmbeddedRedis, *, timeout: float = 30.0) -> EmbeddedRedis:
        """Start a killed or stopped server again and return once the
        sentinels have made it an in-sync replica of the current primary."""
        server.restart()
        self._demote(server, timeout)
        return server

    def settle(self, *, timeout: float = 30.0) -> None:
        """Return once every running server but the primary is an in-sync
        replica of it, as every sentinel sees it. After :meth:`failover` the
        sentinels take about ten seconds to demote the deposed primary; this
        demotes it at once (with the ``REPLICAOF`` they would send), so that
        the next failover can start."""
        for server in self.servers:
            if server.running and server is not self.primary():
                self._demote(server, timeout)

    def _demote(self, server: EmbeddedRedis, timeout: float) -> None:
        primary = self.primary()
        with admin_client(server) as client:
            if text(client.execute_command("ROLE")[0]) == "master":
                client.execute_command("REPLICAOF", primary.host, primary.port)

        def replica_again() -> bool:
            if not in_sync(server):
                return False
            for sentinel in self._running_sentinels():
                with admin_client(sentinel) as client:
                    replicas = client.execute_command("SENTINEL REPLICAS", self.master_name)
                    flags = {_pairs(r).get("port"): _pairs(r).get("flags", "") for r in replicas}
                    if "down" in flags.get(str(server.port), "down"):
                        return False
            return True

        self._wait(replica_again, f"replica on port {server.port} again", timeout)

    def _await_new_primary(self, old: EmbeddedRedis, timeout: float) -> EmbeddedRedis:
        found: list[EmbeddedRedis] = []

        def promoted() -> bool:
            ports = {self._named_port(s) for s in self._running_sentinels()}
            if len(ports) != 1 or old.port in ports:
                return False
            new = self._server_at(ports.pop())
            with admin_client(new) as client:
                if text(client.execute_command("ROLE")[0]) != "master":
                    return False
                client.set("__redkit_failover_probe__", "1", px=1000)
            found[:] = [new]
            return True

        self._wait(promoted, "a new primary serving", timeout)
        return found[0]

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinel_nodes:
            with admin_client(sentinel) as client:
                master = _pairs(client.execute_command("SENTINEL MASTER", self.master_name))
                if int(master.get("num-slaves", 0)) != self._replica_count:
                    return False
                if int(master.get("num-other-sentinels", 0)) != len(self.sentinel_nodes) - 1:
                    return False
        return True

    def _named_port(self, sentinel: EmbeddedRedis) -> int:
        with admin_client(sentinel) as client:
            _host, port = client.execute_command(
                "SENTINEL GET-MASTER-ADDR-BY-NAME", self.master_name
            )
        return int(port)

    def _running_sentinels(self) -> list[EmbeddedRedis]:
        running: list[EmbeddedRedis] = [s for s in self.sentinel_nodes if s.running]
        if not running:
            raise RedisServerError("no sentinel is running")
        return running

    def _server_at(self, port: int) -> EmbeddedRedis:
        for server in self.servers:
            if server.port == port:
                return server
        raise RedisServerError(f"port {port} is not a server of this group")

    def _wait(self, done: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        wait_until(done, f"no {what}", self.start_timeout if timeout is None else timeout)

    def stop(self) -> None:
        for node in self._nodes():
            node.stop()

    def cleanup(self) -> None:
        for node in self._nodes():
            node.cleanup()

    def _nodes(self) -> list[EmbeddedRedis]:
        return [*self.sentinel_nodes, *self.servers]

    def __enter__(self) -> EmbeddedSentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _pairs(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):
        return {text(k): text(v) for k, v in reply.items()}
    items = [text(item) for item in reply]
    return dict(zip(items[::2], items[1::2], strict=True))
