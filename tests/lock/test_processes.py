"""Cross-process claims, checked with real processes: mutual exclusion,
fencing order, semaphore bounds, and the lock of a killed holder."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from redkit.lock import DistributedLock
from redkit.server import EmbeddedCluster, EmbeddedRedis
from redkit.testing import connected

ROOT = Path(__file__).resolve().parents[2]
WORKER_TIMEOUT = 120


def _spawn(job: dict[str, Any]) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return subprocess.Popen(
        [sys.executable, "-m", "tests.lock._worker", json.dumps(job)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_all(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    procs = [_spawn(job) for job in jobs]
    results = []
    deadline = time.monotonic() + WORKER_TIMEOUT
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, f"worker failed:\n{err[-3000:]}"
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def _job(server: EmbeddedRedis | EmbeddedCluster, **fields: Any) -> dict[str, Any]:
    return {
        "host": server.host,
        "port": server.port,
        "cluster": isinstance(server, EmbeddedCluster),
        "prefix": "mp",
        **fields,
    }


def _workers(
    server: EmbeddedRedis | EmbeddedCluster, workers: int, **fields: Any
) -> list[dict[str, Any]]:
    """Run ``workers`` processes of one job; their results."""
    return _run_all([_job(server, workers=workers, **fields) for _ in range(workers)])


@pytest.fixture(params=["standalone", "cluster"])
def server(request: pytest.FixtureRequest) -> EmbeddedRedis | EmbeddedCluster:
    fixture = "redis_server" if request.param == "standalone" else "redis_cluster"
    found: EmbeddedRedis | EmbeddedCluster = request.getfixturevalue(fixture)
    return found


@pytest.mark.slow
async def test_eight_processes_never_overlap_and_fencing_follows_order(
    server: EmbeddedRedis | EmbeddedCluster,
) -> None:
    async with connected(server, flushed=True) as client:
        workers, rounds = 8, 200
        results = _workers(
            server,
            workers,
            kind="lock",
            name="shared-record",
            rounds=rounds,
            barrier="mp:test:barrier",
            holder="mp:test:holder",
            log="mp:test:log",
        )

        assert [r["overlaps"] for r in results] == [0] * workers
        assert sum(r["acquired"] for r in results) == workers * rounds
        assert sum(r["released"] for r in results) == workers * rounds
        assert sum(r["lost"] for r in results) == 0
        # Every process saw its own tokens rise ...
        for r in results:
            assert r["fences"] == sorted(r["fences"])
            assert len(set(r["fences"])) == rounds
        # ... and the critical sections, in the order they ran, carry
        # strictly increasing tokens across all processes.
        log = [int(x) for x in await client.lrange("mp:test:log", 0, -1)]
        assert len(log) == workers * rounds
        assert all(a < b for a, b in itertools.pairwise(log))
        assert await client.get("mp:test:holder") is None
        assert not await DistributedLock(client, prefix="mp").is_locked("shared-record")


@pytest.mark.slow
async def test_semaphore_bound_holds_across_processes(redis_server: EmbeddedRedis) -> None:
    async with connected(redis_server, flushed=True) as client:
        workers, limit = 4, 2
        results = _workers(
            redis_server,
            workers,
            kind="semaphore",
            name="exports",
            limit=limit,
            rounds=40,
            barrier="mp:sem:barrier",
            holder="mp:sem:inside",
        )
        worst = max(r["worst"] for r in results)
        assert worst <= limit
        assert worst == limit  # the processes really did overlap
        assert sum(r["acquired"] for r in results) == workers * 40
        assert sum(r["lost"] for r in results) == 0
        assert int(await client.get("mp:sem:inside")) == 0


@pytest.mark.slow
async def test_lock_and_permit_of_a_killed_process_come_back_after_ttl(
    redis_server: EmbeddedRedis,
) -> None:
    async with connected(redis_server, flushed=True) as client:
        locks = DistributedLock(client, prefix="mp")
        proc = _spawn(_job(redis_server, kind="hold", name="crashy", ttl=1.0))
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            held = json.loads(line)
            assert await locks.is_locked("crashy")
            proc.kill()
            proc.wait(timeout=10)
            # Nobody renews or releases now; both come free when the ttl runs out.
            async with locks.acquire("crashy", ttl=5, timeout=10) as lease:
                assert lease.fencing_token > held["fence"]
            sem = locks.semaphore("crashy", 1, ttl=5)
            async with sem.acquire(timeout=10) as permit:
                assert permit.fencing_token > held["permit"]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            await locks.aclose()
