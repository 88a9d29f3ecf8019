"""Stampede protection: single flight in a process, a Redis lease across
processes, bounded waits, loader errors, early refresh of hot keys."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import redkit
from redkit.cache import MISSING, Cache

from ._helpers import Loader, address, another_client, until


async def test_single_flight_in_one_process(client: Any) -> None:
    # A cluster client refuses (rather than queues) requests beyond its pool;
    # give it room for 200 concurrent reads, as an application would.
    wide = await another_client(client, pool_size=256)
    cache = Cache(wide)
    calls = 0

    async def load() -> dict[str, int]:
        nonlocal calls
        calls += 1

        async def all_joined() -> bool:
            return cache.stats().stampede_waits == 199

        # The value comes only once every other caller waits on this flight,
        # however slowly a loaded machine schedules them.
        await until(all_joined)
        return {"n": 7}

    try:
        results = await asyncio.gather(
            *(cache.get_or_set("cold", load, ttl=60) for _ in range(200))
        )
        assert calls == 1
        assert results == [{"n": 7}] * 200
        # every caller but the loader got its own decoded copy
        assert len({id(r) for r in results}) == 200
        stats = cache.stats()
        assert stats.loads == 1
        assert stats.stampede_waits == 199
        assert stats.errors == 0
        assert await cache.get("cold") == {"n": 7}
    finally:
        await wide.aclose()


async def test_lease_makes_other_instances_wait(client: Any) -> None:
    other_client = await another_client(client)
    first = Cache(client)
    second = Cache(other_client)
    calls = 0
    release = asyncio.Event()

    async def slow() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "loaded"

    try:
        leader = asyncio.ensure_future(first.get_or_set("k", slow, ttl=60))
        # wait until the leader holds the lease, then start the follower
        lease = first._lease_key(first.key("k"))
        deadline = time.monotonic() + 5
        while not await client.exists(lease):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        follower = asyncio.ensure_future(second.get_or_set("k", slow, ttl=60))
        await asyncio.sleep(0.1)
        assert not follower.done()
        release.set()
        assert await asyncio.wait_for(leader, 5) == "loaded"
        assert await asyncio.wait_for(follower, 5) == "loaded"
        assert calls == 1
        assert second.stats().stampede_waits == 1
        assert second.stats().loads == 0
        assert await client.exists(lease) == 0  # released with the write
    finally:
        await other_client.aclose()


async def test_a_late_miss_finds_the_value_a_concurrent_load_wrote(client: Any) -> None:
    """A caller whose GET missed just before another load wrote the value
    (and released its lease) must not load again: the lease script re-reads
    the key. This is the window the 4-process test hits under CPU load."""
    cache = Cache(client)
    writer = Cache(client)
    load = Loader("second load")

    assert await cache.get("k") is None  # the miss ...
    await writer.set("k", "first load", ttl=60)  # ... then someone fills it
    # ... then the caller goes on from its miss, as get_or_set does
    full = cache.key("k")
    result = await cache._fill(full, "k", load, 60_000, [], None, True, True)
    assert result == "first load"
    assert load.calls == 0
    # a value from before clear() does not count as found
    await writer.clear()
    await cache._sync()
    result = await cache._fill(full, "k", load, 60_000, [], None, True, True)
    assert result == "second load"
    assert load.calls == 1


@pytest.mark.parametrize(
    ("lease_ms", "wait_timeout", "fastest", "slowest", "timeouts"),
    [
        # another process holds the lease and will never write: waiters
        # give up after wait_timeout
        (30_000, 0.3, 0.25, 3.0, 1),
        # the lease of a loader that died expires: a waiter takes it over
        (300, 5.0, 0.2, 4.0, 0),
    ],
    ids=["held-lease-waiters-give-up", "dead-loaders-lease-taken-over"],
)
async def test_a_lease_held_by_another_process(
    client: Any, lease_ms: int, wait_timeout: float, fastest: float, slowest: float, timeouts: int
) -> None:
    cache = Cache(client, wait_timeout=wait_timeout)
    await client.set(cache._lease_key(cache.key("k")), "someone-else", px=lease_ms)
    load = Loader("mine")

    started = time.monotonic()
    assert await cache.get_or_set("k", load, ttl=60) == "mine"
    assert fastest <= time.monotonic() - started < slowest
    assert load.calls == 1
    assert cache.stats().wait_timeouts == timeouts
    # cached either way (without the lease, best effort)
    assert await cache.get("k") == "mine"


async def test_loader_error_propagates_to_all_and_is_not_cached(client: Any) -> None:
    cache = Cache(client, wait_timeout=5.0)

    class Boom(Exception):
        pass

    error = Boom("database down")
    calls = 0

    async def failing() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        raise error

    results = await asyncio.gather(
        *(cache.get_or_set("fragile", failing, ttl=60) for _ in range(10)),
        return_exceptions=True,
    )
    assert calls == 1
    assert all(r is error for r in results)
    assert await cache.get("fragile", default=MISSING) is MISSING
    # the lease went with the failure: the next caller loads at once
    started = time.monotonic()

    async def works() -> str:
        return "ok"

    assert await cache.get_or_set("fragile", works, ttl=60) == "ok"
    assert time.monotonic() - started < 1.0


async def test_a_cancelled_caller_does_not_cancel_the_shared_load(client: Any) -> None:
    cache = Cache(client)
    load = Loader("done", delay=0.2)

    first = asyncio.ensure_future(cache.get_or_set("c", load, ttl=60))
    deadline = time.monotonic() + 5
    while load.calls == 0:  # the first caller's load is running
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)
    second = asyncio.ensure_future(cache.get_or_set("c", load, ttl=60))
    while cache.stats().stampede_waits == 0:  # the second caller joined it
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 5) == "done"
    assert load.calls == 1
    assert await cache.get("c") == "done"


async def test_hot_key_is_refreshed_before_it_expires(client: Any) -> None:
    cache = Cache(client, jitter=0, early_refresh=5.0)
    load = Loader(make=lambda n: n, delay=0.1)

    assert await cache.get_or_set("hot", load, ttl=1.5) == 1
    misses_before = cache.stats().misses
    seen = set()
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        seen.add(await cache.get_or_set("hot", load, ttl=1.5))
        await asyncio.sleep(0.01)
    stats = cache.stats()
    # the key never went missing: no caller waited on a load
    assert stats.misses == misses_before
    assert stats.early_refreshes >= 2
    assert load.calls >= 3
    assert len(seen) >= 3
    await cache.aclose()


async def test_early_refresh_off(client: Any) -> None:
    cache = Cache(client, jitter=0, early_refresh=0)
    load = Loader(make=lambda n: n)

    await cache.get_or_set("k", load, ttl=0.5)
    deadline = time.monotonic() + 0.35
    while time.monotonic() < deadline:
        assert await cache.get_or_set("k", load, ttl=0.5) == 1
        await asyncio.sleep(0.01)
    assert cache.stats().early_refreshes == 0


_SRC = str(Path(redkit.__file__).resolve().parent.parent)
_WORKER = textwrap.dedent(
    """
    import asyncio, dataclasses, json, sys
    import redkit
    from redkit.cache import Cache

    async def main():
        host, port, cluster = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
        client = await redkit.connect(redkit.RedisSettings(
            host=host, port=port, cluster=cluster, pool_size=256, min_idle_conns=0,
            read_timeout=10, write_timeout=10, connect_timeout=10))
        cache = Cache(client, prefix="mp")

        async def loader():
            await client.incr("mp-test:loader-calls")
            await asyncio.sleep(0.3)
            return {"value": 42}

        loop = asyncio.get_running_loop()
        await client.incr("mp-test:ready")
        deadline = loop.time() + 60
        while not await client.exists("mp-test:go"):
            if loop.time() > deadline:
                sys.exit(3)
            await asyncio.sleep(0.002)
        results = await asyncio.gather(
            *(cache.get_or_set("hot", loader, ttl=60) for _ in range(200)))
        assert all(r == {"value": 42} for r in results), results
        print(json.dumps(dataclasses.asdict(cache.stats())))
        await client.aclose()

    asyncio.run(main())
    """
)


async def test_four_processes_call_the_loader_once(client: Any) -> None:
    host, port, cluster = address(client)
    env = dict(os.environ, PYTHONPATH=_SRC)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER,
            host,
            str(port),
            "1" if cluster else "0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        for _ in range(4)
    ]
    try:
        deadline = time.monotonic() + 60
        while int(await client.get("mp-test:ready") or 0) < 4:
            assert time.monotonic() < deadline, "workers did not start"
            assert all(p.returncode is None for p in procs), "a worker died at start-up"
            await asyncio.sleep(0.02)
        await client.set("mp-test:go", 1)
        outputs = []
        for proc in procs:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            outputs.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert await client.get("mp-test:loader-calls") == b"1"
    assert sorted(o["loads"] for o in outputs) == [0, 0, 0, 1]
    assert all(o["errors"] == 0 for o in outputs)


@pytest.mark.parametrize("concurrency", [64])
async def test_many_tasks_on_one_hot_key(client: Any, concurrency: int) -> None:
    wide = await another_client(client, pool_size=128)
    cache = Cache(wide)
    try:
        await cache.set("hot", {"v": 1}, ttl=60)
        for _ in range(5):
            results = await asyncio.gather(
                *(cache.get_or_set("hot", lambda: {"v": 2}, ttl=60) for _ in range(concurrency))
            )
            assert results == [{"v": 1}] * concurrency
        assert cache.stats().loads == 0
        assert cache.stats().hits == 5 * concurrency
    finally:
        await wide.aclose()


async def test_a_cache_started_again_after_aclose_refreshes_early_again(client: Any) -> None:
    # An app's lifespan closes the cache and the next one starts it (a test
    # client per test does this): early refresh must come back with it.
    cache = Cache(client, jitter=0, early_refresh=5.0)
    await cache.aclose()
    await cache.start()
    load = Loader(make=lambda n: n)

    assert await cache.get_or_set("again", load, ttl=1.0) == 1
    deadline = time.monotonic() + 3.0
    while cache.stats().early_refreshes == 0:
        assert time.monotonic() < deadline, "no early refresh after start()"
        await cache.get_or_set("again", load, ttl=1.0)
        await asyncio.sleep(0.01)
    assert cache.stats().misses == 1
    await cache.aclose()
