"""DistributedLock: mutual exclusion across processes, with fencing tokens,
renewal, loss signalling and early wake-up of waiters."""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine
from types import TracebackType
from typing import Any, Literal

from .._counters import counts_for, snapshot
from .._failures import mapped
from .._replicas import replicas_for
from .._telemetry import operation
from ..connection import Client
from ..errors import ConfigError
from ..keys import validate_key_part
from ..scripts import Script
from ._acquire import Acquisition, backoff, jittered, take
from ._common import LockStats, Seconds, check_name, check_on_lost, to_seconds, to_ttl_ms
from ._host import Host, Resource
from ._lease import Lease, OnLost
from ._semaphore import Semaphore

_ACQUIRE = Script.from_package("redkit.lock", "lua/acquire.lua")
_EXTEND = Script.from_package("redkit.lock", "lua/extend.lua")
_RELEASE = Script.from_package("redkit.lock", "lua/release.lua")
# How many lock names' keys one DistributedLock keeps built.
_KEPT_NAMES = 1024
# lock() makes one attempt, so it never waits between attempts.
_NO_WAIT = jittered(0.0)


class _Mutex(Resource):
    """The keys of one lock name. Redkit layout: ``{prefix}:lock:{name}``
    holds the token, ``{prefix}:lock:{name}:fence`` counts acquisitions;
    releases are published on ``{prefix}:lock:{name}:released``."""

    kind = "lock"
    __slots__ = ("fence_key", "key")

    def __init__(
        self, host: Host, name: str, key: str, fence_key: str, counts: dict[str, int]
    ) -> None:
        super().__init__(host, name, key + ":released", counts)
        self.key = key
        self.fence_key = fence_key

    def try_acquire(self, token: str, ttl_ms: int) -> Awaitable[Any]:
        host = self.host
        if host.replicas is None:
            return _ACQUIRE(host.client, (self.key, self.fence_key), (token, ttl_ms))
        return host.confirmed(self, _ACQUIRE, (self.key, self.fence_key), (token, ttl_ms), "took")

    def extend(self, token: str, ttl_ms: int) -> Awaitable[Any]:
        return self.write(_EXTEND, (self.key,), (token, ttl_ms), "extended")

    def release(self, token: str) -> Awaitable[Any]:
        return _RELEASE(self.host.client, (self.key,), (token, self.channel))


class _GoMutex(_Mutex):
    """A lock at the Go service's key (``lock:{name}``, no hash tag) with a
    UUID token, which the Go service's release script compares as it
    compares its own."""

    uuid_tokens = True
    __slots__ = ()


_LAYOUTS = ("redkit", "go")


class DistributedLock:
    """Locks and semaphores shared by every process that uses the same Redis.

    ``client`` is what :func:`redkit.connect` returns (standalone or
    cluster); it is never closed here.

    ``layout="redkit"`` (default): keys live under ``prefix`` (default
    ``"app"``): ``app:lock:{payment:order-123}``; the braces are a hash
    tag, so all keys of one lock sit in one cluster slot. ``layout="go"``:
    the Go service's key, ``lock:payment:order-123`` (``prefix="app"``
    gives ``app:lock:payment:order-123``), holding a UUID token, so that a
    Go service and this one exclude each other on the same names; the
    fencing counter is ``{lock:payment:order-123}:fence``, in the lock
    key's slot (docs/lock.md, "Sharing Redis with the Go service").

    ``early_wakeup``: waiters subscribe to the lock's release channel and
    retry as soon as the holder releases, besides their backoff; with
    ``False`` they rely on backoff alone. ``request_timeout`` bounds a
    release and any request not already bounded by a wait's timeout.
    ``retry_base`` and ``retry_cap`` shape the exponential backoff (full
    jitter) of waiting acquirers.

    ``replicas=N`` (N >= 1): an acquire, whose script also draws the
    fencing token, and every extension (renewals included) count only once
    N replicas acknowledged them (Redis ``WAIT``, in the same round trip),
    within ``replica_timeout``. An acquire they do not acknowledge gives
    the lock back (in the background, best effort) and raises
    :class:`~redkit.NotReplicated` (fail closed, no retry); an extension
    they do not acknowledge leaves the lease's validity where it was (a
    renewal retries, and ``lost`` is set if the lease runs out first).
    Semaphores made here do the same. docs/lock.md, "Replica-acknowledged
    locks", says what this buys and costs.

    Call :meth:`aclose` (or use ``async with``) at shutdown to drop the
    wake-up subscription and let background releases finish.
    """

    def __init__(
        self,
        client: Client,
        prefix: str | None = None,
        *,
        layout: Literal["redkit", "go"] = "redkit",
        early_wakeup: bool = True,
        request_timeout: Seconds = 5.0,
        retry_base: Seconds = 0.005,
        retry_cap: Seconds = 0.5,
        replicas: int = 0,
        replica_timeout: Seconds = 0.25,
    ) -> None:
        if layout not in _LAYOUTS:
            raise ConfigError(f"layout must be 'redkit' or 'go', got {layout!r}")
        if prefix is None and layout == "redkit":
            prefix = "app"
        if prefix is not None:
            # No braces: the hash tag a key gets must be the one redkit puts there.
            validate_key_part(prefix, "key prefix", allow_braces=False)
        self._prefix = prefix
        self._layout: Literal["redkit", "go"] = layout
        self._head = f"{prefix}:" if prefix is not None else ""
        self._host = Host(
            client,
            early_wakeup=early_wakeup,
            request_timeout=to_seconds(request_timeout, "request_timeout"),
            retry_base=to_seconds(retry_base, "retry_base"),
            retry_cap=to_seconds(retry_cap, "retry_cap"),
            replicas=replicas_for(client, replicas, replica_timeout),
        )
        self._counts = counts_for(LockStats)
        self._backoff = backoff(self._host.retry_base, self._host.retry_cap)
        self._mutexes: dict[str, _Mutex] = {}

    def __repr__(self) -> str:
        return f"DistributedLock(prefix={self._prefix!r}, layout={self._layout!r})"

    @property
    def prefix(self) -> str | None:
        """The key prefix; None in the Go layout without one."""
        return self._prefix

    @property
    def layout(self) -> Literal["redkit", "go"]:
        """``"redkit"`` or ``"go"`` (the Go service's lock keys)."""
        return self._layout

    def key(self, name: str) -> str:
        """The Redis key that holds the token of lock ``name``
        (``app:lock:{report-42}``; in the Go layout ``lock:report-42``)."""
        return self._mutex(name).key

    async def __aenter__(self) -> DistributedLock:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Wait (bounded by ``request_timeout``) for background releases and
        drop the wake-up subscription. The client stays open."""
        await self._host.aclose()

    def stats(self) -> LockStats:
        """Counters of this object's locks (semaphores count their own)."""
        return snapshot(LockStats, self._counts)

    def _mutex(self, name: str) -> _Mutex:
        # Most services lock a handful of names over and over: their checked
        # names and built keys are kept (a bounded number, dropped in bulk).
        mutex = self._mutexes.get(name) if type(name) is str else None
        if mutex is None:
            mutex = self._new_mutex(check_name(name))
            if len(self._mutexes) >= _KEPT_NAMES:
                self._mutexes.clear()
            self._mutexes[name] = mutex
        return mutex

    def _new_mutex(self, name: str) -> _Mutex:
        # ``name`` was checked by check_name(): no braces, so it is a valid
        # hash tag, and a Go key holds no tag of its own.
        if self._layout == "go":
            key = f"{self._head}lock:{name}"
            # Redis hashes a tag-less key whole; the same text as a tag puts
            # the counter in the lock key's slot, so one script takes both.
            return _GoMutex(self._host, name, key, f"{{{key}}}:fence", self._counts)
        key = f"{self._head}lock:{{{name}}}"
        return _Mutex(self._host, name, key, key + ":fence", self._counts)

    @operation("lock.lock")
    def lock(
        self, name: str, ttl: Seconds, *, auto_renew: bool = False
    ) -> Coroutine[Any, Any, Lease]:
        """Take ``name`` for ``ttl`` seconds in one attempt (one round trip).

        Returns the :class:`Lease`; calling it releases (``release = await
        locks.lock(...)``, then ``await release()``). Without
        ``auto_renew`` the lease ends after ``ttl`` unless extended
        (``lease.lost`` is then set and a warning logged if it was not
        released). Raises :class:`~redkit.LockNotAcquired` when the lock is
        held, :class:`~redkit.ConnectionUnavailable` when Redis cannot be
        reached, ``ValueError`` for a bad name or ttl (raised by the call
        itself, before anything is awaited).
        """
        # A plain function handing back take()'s coroutine: one coroutine
        # less on the uncontended path.
        resource = self._mutex(name)
        ttl_ms = to_ttl_ms(ttl)
        return take(
            resource,
            Lease,
            ttl_ms,
            timeout=None,
            max_attempts=1,
            delay=_NO_WAIT,
            auto_renew=auto_renew,
            on_lost="signal",
            task=None,
        )

    @operation("lock.try_lock_with_retry")
    async def try_lock_with_retry(
        self,
        name: str,
        ttl: Seconds,
        max_retries: int = 3,
        retry_delay: Seconds = 0.1,
        *,
        auto_renew: bool = False,
    ) -> Lease:
        """:meth:`lock` with up to ``max_retries`` more attempts, about
        ``retry_delay`` seconds apart (jittered 0.5x-1.5x so competing
        processes drift apart), ending a delay early when the holder
        releases. ``max_retries=0`` is a single attempt.

        Raises :class:`~redkit.LockNotAcquired` after the last attempt.
        """
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be an int >= 0, got {max_retries!r}")
        delay = to_seconds(retry_delay, "retry_delay", allow_zero=True)
        resource = self._mutex(name)
        return await take(
            resource,
            Lease,
            to_ttl_ms(ttl),
            timeout=None,
            max_attempts=max_retries + 1,
            delay=jittered(delay),
            auto_renew=auto_renew,
            on_lost="signal",
            task=None,
        )

    def acquire(
        self,
        name: str,
        ttl: Seconds,
        timeout: Seconds = 10.0,
        *,
        auto_renew: bool = True,
        on_lost: OnLost = "signal",
    ) -> Acquisition[Lease]:
        """Take ``name``, waiting up to ``timeout`` seconds for it.

        ``async with locks.acquire("report", ttl=10, timeout=5) as lease:``
        releases on leaving the block, also on an error or cancellation;
        ``lease = await locks.acquire(...)`` leaves the release to you.

        While waiting: exponential backoff with full jitter, cut short when
        the holder releases (early wake-up) and never past the holder's
        expiry. ``timeout=0`` is one attempt. Raises
        :class:`~redkit.LockNotAcquired` when the wait times out,
        :class:`~redkit.ConnectionUnavailable` when Redis cannot be reached
        (fail closed; each request is bounded by the time left, at least
        0.5 s), ``ValueError`` for a bad name, ttl or timeout.

        With ``auto_renew`` the lease is extended every ``ttl / 3``. When
        it is lost (taken, expired, deleted, or Redis unreachable until its
        validity ran out) ``lease.lost`` is set and a warning logged; with
        ``on_lost="cancel"`` the task that entered the block is cancelled
        and the block raises :class:`~redkit.LockLost`; a callable
        ``on_lost`` is called with the lease.
        """
        resource = self._mutex(name)
        ttl_ms = to_ttl_ms(ttl)
        wait = to_seconds(timeout, "timeout", allow_zero=True)
        check_on_lost(on_lost)
        return Acquisition(
            resource,
            Lease,
            ttl_ms,
            timeout=wait,
            delay=self._backoff,
            auto_renew=auto_renew,
            on_lost=on_lost,
        )

    async def is_locked(self, name: str) -> bool:
        """Whether someone holds ``name`` right now (one EXISTS)."""
        resource = self._mutex(name)
        with mapped(f"cannot check lock {name!r}"):
            return bool(await self._host.client.exists(resource.key))

    def semaphore(self, name: str, limit: int, ttl: Seconds) -> Semaphore:
        """A semaphore of ``limit`` permits, each a lease of ``ttl`` seconds
        (``async with sem.acquire(timeout=10) as permit:``). Its keys are
        ``{prefix}:semaphore:{name}`` (the holders) and
        ``{prefix}:semaphore:{name}:fence`` (in the Go layout without a
        prefix, ``semaphore:{name}``: the Go service has no semaphores)."""
        name = check_name(name, "semaphore name")
        return Semaphore(self._host, f"{self._head}semaphore:{{{name}}}", name, limit, ttl)
