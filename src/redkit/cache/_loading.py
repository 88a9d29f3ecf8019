"""Loading on a miss, once: a single flight per key in this process and a
lease in Redis across processes (waiters give up after ``wait_timeout``),
and the early refresh of hot values close to expiry (XFetch).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import inspect
import math
import os
import random
import struct
import time
from collections.abc import Callable
from typing import Any

from .._failures import ANY
from .._timing import TaskSet
from ..scripts import Script
from ._base import NOTHING, log
from ._values import StoredValues

__all__ = ["MIN_REFRESH_WINDOW_MS", "SingleFlight", "call_loader"]

# The shortest load time early refresh assumes (and the Go layout's, whose
# values do not record it).
MIN_REFRESH_WINDOW_MS = 100
_GEN_BYTES = struct.Struct("<I")
_POLL_FIRST = 0.005
_POLL_MAX = 0.1
# How long aclose() waits for cancelled refreshes (one may be freeing its
# lease on a Redis that does not answer).
_STOP_WAIT = 5.0
_LEASE = Script.from_package("redkit.cache", "lua/lease.lua")


async def call_loader(loader: Callable[[], Any]) -> Any:
    result = loader()
    if inspect.isawaitable(result):
        result = await result
    return result


@dataclasses.dataclass(slots=True)
class _Flight:
    """One load of one key: what the caller asked to load and, for a load
    shared by every caller that asks for the key meanwhile, what came of it
    (the loader's value, or the payload another process stored)."""

    key: str
    loader: Callable[[], Any]
    ttl_ms: int
    tag_keys: list[str]
    cache_none: bool
    task: asyncio.Task[None] | None = None
    value: Any = NOTHING
    payload: bytes | None = None


class SingleFlight(StoredValues):
    """Fills a missing key once, however many callers ask at once."""

    wait_timeout: float
    _lease_ms: int

    def _init_loading(self) -> None:
        self._flights: dict[str, _Flight] = {}
        self._refreshing: set[str] = set()
        self._refreshes = TaskSet()

    async def _stop_refreshes(self) -> None:
        await self._refreshes.cancel(_STOP_WAIT)

    async def _fill(
        self,
        full: str,
        key: str,
        loader: Callable[[], Any],
        ttl_ms: int,
        tag_keys: list[str],
        type: Any,
        cache_none: bool,
        redis_up: bool,
    ) -> Any:
        flight = self._flights.get(full)
        if flight is None or flight.task is None or flight.task.done():
            flight = _Flight(key, loader, ttl_ms, tag_keys, cache_none)
            task = asyncio.get_running_loop().create_task(self._load(flight, full, type, redis_up))
            flight.task = task
            self._flights[full] = flight
            task.add_done_callback(functools.partial(self._landed, full, flight))
            await asyncio.shield(task)
            if flight.value is not NOTHING:
                return flight.value
            return await self._decode_loaded(flight, full, loader, type)
        # Another caller in this process is loading this key: share it.
        counts = self._counts
        counts["stampede_waits"] += 1
        try:
            await asyncio.wait_for(asyncio.shield(flight.task), self.wait_timeout)
        except asyncio.TimeoutError:
            counts["wait_timeouts"] += 1
            counts["loads"] += 1
            return await call_loader(loader)
        return await self._decode_loaded(flight, full, loader, type)

    def _landed(self, full: str, flight: _Flight, task: asyncio.Task[None]) -> None:
        if self._flights.get(full) is flight:
            del self._flights[full]
        if not task.cancelled():
            task.exception()  # retrieved: the callers re-raise it

    async def _decode_loaded(
        self, flight: _Flight, full: str, loader: Callable[[], Any], type: Any
    ) -> Any:
        """The shared load's value as ``type``. Its payload may be what
        another process stored, read as another caller's type: if it does
        not decode as this one's, this caller loads for itself."""
        payload = flight.payload
        if payload is None or payload == self._null:
            return None
        try:
            return self._codec.decode(payload, type)
        except Exception as exc:
            if isinstance(exc.__cause__, NotImplementedError):
                raise
            self._undecodable(full, str(exc) or exc.__class__.__name__)
        self._counts["loads"] += 1
        return await call_loader(loader)

    async def _load(self, flight: _Flight, full: str, type: Any, redis_up: bool) -> None:
        """Fill ``flight`` from Redis (another process loaded meanwhile) or
        from the loader, under the cross-process lease when Redis answers."""
        lease_token = ""
        lease_key = self._lease_key(full)
        gen = self._gen
        # A call goes to Redis only once a generation is known (see _sync);
        # checked again here so that no later change can make a load depend
        # on one it does not have.
        if redis_up and gen is not None:
            try:
                found = await self._await_lease(full, lease_key, gen, type)
            except ANY as exc:
                self._failed("take the load lease for", full, exc)
                found = None
                redis_up = False
            if isinstance(found, bytes):
                flight.payload = found
                return
            if isinstance(found, str):
                lease_token = found
        else:
            redis_up = False
        try:
            self._counts["loads"] += 1
            value, delta_ms = await self._timed_load(flight.loader)
            flight.value = value
            if value is None and not flight.cache_none:
                flight.payload = None
                if lease_token:
                    await self._release(lease_key, lease_token)
                return
            flight.payload = self._codec.encode(value)
        except BaseException:
            if lease_token:
                await self._release(lease_key, lease_token)
            raise
        if redis_up:
            await self._write(
                full,
                flight.key,
                flight.payload,
                flight.ttl_ms,
                flight.tag_keys,
                delta_ms=delta_ms,
                lease_token=lease_token,
            )

    @staticmethod
    async def _timed_load(loader: Callable[[], Any]) -> tuple[Any, int]:
        """The loader's value and how long (ms) it took, which early
        refresh reads back from the stored value."""
        started = time.perf_counter()
        value = await call_loader(loader)
        return value, int((time.perf_counter() - started) * 1000)

    async def _await_lease(
        self, full: str, lease_key: str, gen: int, type: Any
    ) -> bytes | str | None:
        """The payload someone else stored meanwhile, our lease token, or
        None when the wait timed out (the caller loads without a lease).

        The script re-reads the key and takes the lease atomically, and only
        a value of the current generation counts as stored: a caller whose
        miss was answered late, or who saw a stale value, finds the value a
        concurrent load wrote instead of loading again."""
        token = os.urandom(12).hex()
        lease_ms = self._lease_ms
        # A plain value (the Go layout) has no generation: any value counts.
        generation = b"" if self._plain else _GEN_BYTES.pack(gen)
        deadline = time.monotonic() + self.wait_timeout
        delay = _POLL_FIRST
        waited = False
        while True:
            reply = await _LEASE(self._client, (full, lease_key), (token, lease_ms, generation))
            state = int(reply[0])
            if state == 2:
                return token
            if state == 1:
                raw = reply[1]
                if self._parse(raw, full, type) is NOTHING:
                    return None  # our generation but unreadable: load, no lease
                return self._payload_of(raw)
            if not waited:
                waited = True
                self._counts["stampede_waits"] += 1
            if time.monotonic() >= deadline:
                self._counts["wait_timeouts"] += 1
                return None
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, _POLL_MAX)

    # -------------------------------------------------------- early refresh

    def _maybe_refresh(
        self,
        full: str,
        key: str,
        remaining: float,
        window: float,
        loader: Callable[[], Any],
        ttl: float | dt.timedelta | None,
        tag_keys: list[str],
        cache_none: bool,
    ) -> None:
        # XFetch: reload when now - delta * beta * ln(U) passes the expiry,
        # delta being how long the last load took (at least 100 ms); the
        # caller skipped the draw when the expiry is over 20 windows away
        # (P(refresh) < e^-20).
        if window * -math.log(1.0 - random.random()) < remaining:
            return
        if full in self._refreshing or full in self._flights or self._closed:
            return
        self._refreshing.add(full)
        load = _Flight(key, loader, self._ttl_ms(ttl), tag_keys, cache_none)
        self._refreshes.spawn(self._refresh(full, load))

    async def _refresh(self, full: str, load: _Flight) -> None:
        lease_key = self._lease_key(full)
        token = os.urandom(12).hex()
        try:
            try:
                taken = await self._client.set(lease_key, token, nx=True, px=self._lease_ms)
            except ANY as exc:
                self._failed("take the refresh lease for", full, exc)
                return
            if not taken:
                return  # another process is reloading it
            self._counts["early_refreshes"] += 1
            self._counts["loads"] += 1
            try:
                value, delta_ms = await self._timed_load(load.loader)
                if value is None and not load.cache_none:
                    await self._release(lease_key, token)
                    return
                payload = self._codec.encode(value)
            except Exception:
                log.warning("early refresh of cache key %s failed", full, exc_info=True)
                await self._release(lease_key, token)
                return
            await self._write(
                full,
                load.key,
                payload,
                load.ttl_ms,
                load.tag_keys,
                delta_ms=delta_ms,
                lease_token=token,
            )
        finally:
            self._refreshing.discard(full)
