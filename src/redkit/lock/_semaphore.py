"""Semaphore: at most N holders at once, across processes."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from .._counters import counts_for, snapshot
from .._failures import mapped
from ..errors import ConfigError
from ..scripts import Script
from ._acquire import Acquisition, backoff
from ._common import LockStats, Seconds, check_on_lost, to_seconds, to_ttl_ms
from ._host import Host, Resource
from ._lease import OnLost, Permit

_ACQUIRE = Script.from_package("redkit.lock", "lua/sem_acquire.lua")
_EXTEND = Script.from_package("redkit.lock", "lua/sem_extend.lua")
_RELEASE = Script.from_package("redkit.lock", "lua/sem_release.lua")
_COUNT = Script.from_package("redkit.lock", "lua/sem_count.lua")


class _Permits(Resource):
    kind = "semaphore"
    __slots__ = ("fence_key", "key", "limit")

    def __init__(self, host: Host, key: str, name: str, limit: int, counts: dict[str, int]) -> None:
        super().__init__(host, name, key + ":released", counts)
        self.key = key
        self.fence_key = key + ":fence"
        self.limit = limit

    def busy(self) -> str:
        return f"all {self.limit} permits of {self.describe()} are held"

    def try_acquire(self, token: str, ttl_ms: int) -> Awaitable[Any]:
        host = self.host
        keys, args = (self.key, self.fence_key), (token, ttl_ms, self.limit)
        if host.replicas is None:
            return _ACQUIRE(host.client, keys, args)
        return host.confirmed(self, _ACQUIRE, keys, args, "took a permit of")

    def extend(self, token: str, ttl_ms: int) -> Awaitable[Any]:
        return self.write(_EXTEND, (self.key,), (token, ttl_ms), "extended a permit of")

    def release(self, token: str) -> Awaitable[Any]:
        return _RELEASE(self.host.client, (self.key,), (token, self.channel))


class Semaphore:
    """At most ``limit`` holders of ``name`` at once, across processes.

    Made by :meth:`DistributedLock.semaphore`. Holders are kept in a sorted
    set scored by their expiry in Redis time; an acquire first drops permits
    whose holders stopped renewing them (a crashed process frees its permit
    after ``ttl``). Permits have the lease guarantees of locks: a fencing
    token, token-checked extend and release, automatic renewal, ``lost``,
    release on leaving ``async with`` even when cancelled, early wake-up of
    waiters.

    Every process should use the same ``limit`` for a name; the limit is
    checked by each acquire with the value that acquirer passes.
    """

    def __init__(self, host: Host, key: str, name: str, limit: int, ttl: Seconds) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"semaphore limit must be an int >= 1, got {limit!r}")
        self._ttl_ms = to_ttl_ms(ttl)
        self._host = host
        self._counts = counts_for(LockStats)
        self._permits = _Permits(host, key, name, limit, self._counts)

    def __repr__(self) -> str:
        return f"Semaphore({self.name!r}, limit={self.limit}, ttl={self.ttl:g})"

    @property
    def name(self) -> str:
        return self._permits.name

    @property
    def limit(self) -> int:
        return self._permits.limit

    @property
    def ttl(self) -> float:
        """Seconds each permit lasts without renewal."""
        return self._ttl_ms / 1000

    def stats(self) -> LockStats:
        return snapshot(LockStats, self._counts)

    def acquire(
        self,
        timeout: Seconds = 10.0,
        *,
        auto_renew: bool = True,
        on_lost: OnLost = "signal",
    ) -> Acquisition[Permit]:
        """Take a permit, waiting up to ``timeout`` seconds; the same
        contract as :meth:`DistributedLock.acquire` (``async with`` or
        ``await``; :class:`~redkit.LockNotAcquired` on timeout,
        :class:`~redkit.ConnectionUnavailable` when Redis is unreachable)."""
        wait = to_seconds(timeout, "timeout", allow_zero=True)
        check_on_lost(on_lost)
        return Acquisition(
            self._permits,
            Permit,
            self._ttl_ms,
            timeout=wait,
            delay=backoff(self._host.retry_base, self._host.retry_cap),
            auto_renew=auto_renew,
            on_lost=on_lost,
        )

    async def count(self) -> int:
        """How many permits are held right now (expired ones not counted)."""
        with mapped(f"cannot count permits of {self.name!r}"):
            return int(await _COUNT(self._host.client, (self._permits.key,)))
