"""A process killed in the middle of session writes leaves no live session
outside its user's index and no old id alive after a login."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import RedisCluster
from redis.crc import key_slot

from redkit.connection import Client
from redkit.server import EmbeddedCluster, EmbeddedRedis
from redkit.session import SessionStore

from ._helpers import SECRET, all_keys, keyed_tag, wait_for

WORKER = Path(__file__).with_name("_crash_worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def spawn(mode: str, server: EmbeddedRedis | EmbeddedCluster, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    cluster = "1" if isinstance(server, EmbeddedCluster) else "0"
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, server.host, str(server.port), cluster, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_line(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            return line.strip()
        if proc.poll() is not None:
            break
    raise AssertionError(f"worker said nothing (exit code {proc.poll()})")


async def test_sigkilled_creator_leaves_every_record_indexed(
    client: Client, request: pytest.FixtureRequest
) -> None:
    name = "redis_cluster" if isinstance(client, RedisCluster) else "redis_server"
    server = request.getfixturevalue(name)
    tag = keyed_tag(SECRET, "crash")
    index = f"app:session:{{{tag}}}:user"
    proc = spawn("create", server)
    try:
        assert read_line(proc) == "ready"

        async def busy() -> bool:  # well into its write loop, 8 writes in flight
            return int(await client.scard(index)) >= 60

        await wait_for(busy, timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    records = {k.rsplit(":", 1)[1] for k in await all_keys(client, f"app:session:{{{tag}}}:*")} - {
        "user"
    }
    members = {m.decode().split(".", 1)[1] for m in await client.smembers(index)}
    assert len(records) >= 5
    # create is one script: a killed client leaves both writes or neither.
    assert records == members
    store = SessionStore(client, secret=SECRET)
    assert len(await store.list_for_user("crash")) == len(records)


async def test_login_killed_between_the_two_cluster_steps(
    cluster_client: Client, redis_cluster: EmbeddedCluster
) -> None:
    proc = spawn("between", redis_cluster)
    try:
        anon_id = read_line(proc)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    store = SessionStore(cluster_client, secret=SECRET)
    assert key_slot(f"{{{anon_id.split('.')[0]}}}".encode()) != key_slot(
        f"{{{keyed_tag(SECRET, 'crash')}}}".encode()
    )
    # The pre-login id is dead, and no session exists outside the index.
    assert await store.get(anon_id) is None
    assert await store.list_for_user("crash") == []
    tag = keyed_tag(SECRET, "crash")
    assert await all_keys(cluster_client, f"app:session:{{{tag}}}:*") == set()


async def test_updates_from_several_processes_all_survive(
    client: Client, request: pytest.FixtureRequest
) -> None:
    name = "redis_cluster" if isinstance(client, RedisCluster) else "redis_server"
    server = request.getfixturevalue(name)
    store = SessionStore(client, secret=SECRET)
    session = await store.create("42", {"start": True})
    procs = [spawn("update", server, session.id, f"p{n}") for n in range(3)]
    try:
        for proc in procs:
            assert read_line(proc) == "ready"
        for proc in procs:  # start them together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert read_line(proc) == "done"
            assert proc.wait(timeout=30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout):
                if stream:
                    stream.close()
    final = await store.get(session.id)
    assert final is not None
    expected = {"start": True} | {f"p{n}-{i}": i for n in range(3) for i in range(30)}
    assert final.data == expected
