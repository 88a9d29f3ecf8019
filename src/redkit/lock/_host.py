"""What the leases of one lock service share (the host), and the things
leases are taken on (resources)."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any, TypeVar

from .._failures import request_bound
from .._replicas import Replicas
from .._timing import COUNTS_CANCELLATIONS, TaskSet, bounded
from ..connection import Client
from ..scripts import KeyOrArg, Script
from ._deadlines import Deadlines
from ._waker import Waker

T = TypeVar("T")

# A request made on behalf of a caller (an attempt while waiting, an
# extend) is bounded by the time left, but always gets at least this long,
# so that a zero timeout still means "one real attempt".
REQUEST_FLOOR = 0.5


class Host:
    """What the leases of one :class:`~redkit.lock.DistributedLock` share:
    the client, the wake-up subscriptions, timing knobs, the deadlines of
    every lease and the background tasks (releases finishing after a
    cancellation, renewals)."""

    __slots__ = (
        "client",
        "client_timeout",
        "deadlines",
        "replicas",
        "request_timeout",
        "retry_base",
        "retry_cap",
        "tasks",
        "waker",
    )

    def __init__(
        self,
        client: Client,
        *,
        early_wakeup: bool,
        request_timeout: float,
        retry_base: float,
        retry_cap: float,
        replicas: Replicas | None = None,
    ) -> None:
        self.client = client
        self.replicas = replicas
        self.waker = Waker(client) if early_wakeup else None
        self.request_timeout = request_timeout
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.tasks = TaskSet()
        self.deadlines = Deadlines()
        self.client_timeout = request_bound(client)

    def request(self, awaitable: Awaitable[T], budget: float) -> Awaitable[T]:
        """``awaitable``, bounded to at most ``budget`` seconds. When the
        client bounds a request itself no longer than that
        (:func:`~redkit._failures.request_bound`), neither a timer nor
        another coroutine is added (the uncontended path), unless a
        cancellation lost beneath could go unnoticed
        (:data:`~redkit._timing.COUNTS_CANCELLATIONS`)."""
        if (
            COUNTS_CANCELLATIONS
            and self.client_timeout is not None
            and self.client_timeout <= budget
        ):
            return awaitable
        return bounded(awaitable, budget)

    async def confirmed(
        self,
        resource: Resource,
        script: Script,
        keys: Sequence[KeyOrArg],
        args: Sequence[KeyOrArg],
        done: str,
    ) -> Any:
        """``script``'s reply once :attr:`replicas` acknowledged it (a take or
        an extension, whose reply is > 0 when it took or extended);
        :class:`~redkit.NotReplicated` when fewer did."""
        replicas = self.replicas
        assert replicas is not None
        reply, acked = await replicas.run(script, keys, args)
        if acked < replicas.count and int(reply) > 0:
            raise replicas.shortfall(
                f"{done} {resource.describe()}", acked, "not trusted to survive a failover"
            )
        return reply

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` in the background, kept until it ends."""
        return self.tasks.spawn(coro)

    async def aclose(self) -> None:
        # A background task may itself be what closes the service (an
        # on_lost callback): it does not wait for itself.
        me = asyncio.current_task()
        pending = [t for t in self.tasks if t is not me]
        if pending:
            await asyncio.wait(pending, timeout=self.request_timeout)
        if self.waker is not None:
            await self.waker.aclose()


class Resource(abc.ABC):
    """One thing leases are taken on: a lock name or a semaphore.
    ``counts`` are the counters (of :class:`~redkit.lock.LockStats`) of the
    lock service or semaphore it belongs to."""

    kind = "lock"
    # Whether holders are identified by UUID strings (the Go service's lock
    # values) rather than 32 hex digits, which are cheaper to make.
    uuid_tokens = False
    __slots__ = ("channel", "counts", "host", "name")

    def __init__(self, host: Host, name: str, channel: str, counts: dict[str, int]) -> None:
        self.host = host
        self.name = name
        self.channel = channel
        self.counts = counts

    def describe(self) -> str:
        return f"{self.kind} {self.name!r}"

    # Log calls pass the resource itself, so that its description is only
    # built when the record is emitted.
    __str__ = describe

    def busy(self) -> str:
        """How "not acquired" reads for this resource."""
        return f"{self.describe()} is held by another holder"

    # The requests below return the script's reply unconverted (each is
    # awaited on the hot path, where a wrapping coroutine costs time).

    @abc.abstractmethod
    def try_acquire(self, token: str, ttl_ms: int) -> Awaitable[Any]:
        """One attempt. Replies the fencing token (>= 1) when taken, else
        minus the ms until the current holder's lease ends (0 when
        unknown)."""

    def write(
        self, script: Script, keys: Sequence[KeyOrArg], args: Sequence[KeyOrArg], done: str
    ) -> Awaitable[Any]:
        """``script``'s reply, with :attr:`Host.replicas` once they
        acknowledged it (``done`` names the write in the error). Acquires
        inline this, to keep their path one call shorter."""
        host = self.host
        if host.replicas is None:
            return script(host.client, keys, args)
        return host.confirmed(self, script, keys, args, done)

    @abc.abstractmethod
    def extend(self, token: str, ttl_ms: int) -> Awaitable[Any]:
        """Set the lease of ``token`` to ``ttl_ms``. Replies 1, or 0 when
        not held."""

    @abc.abstractmethod
    def release(self, token: str) -> Awaitable[Any]:
        """Give the lease of ``token`` back. Replies 1, or 0 when it was
        not held."""
