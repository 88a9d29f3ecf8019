"""What a replica-acknowledged write costs: the same operations with
``replicas=0`` (baseline) and ``replicas=1``, on the bench server given one
replica (a second local redis-server) for this run.

Groups ``<op>/<tasks>``: ``SessionStore.create`` (anonymous), ``update``
(one key of one of 64 sessions) and a lock's ``lock()`` + release (one of
64 names, so concurrent tasks do not contend), each at 1 and 64 tasks at
once. With ``replicas=1`` the write's EVALSHA and its ``WAIT 1`` travel as
one pipeline: the round trips per operation stay the same, and the time
added is the replica's acknowledgement (the primary asks for it with
``REPLCONF GETACK`` as soon as a client waits). Every case runs on the
same primary with the replica attached, so the baseline pays the
replication stream too. Run it alone (``python -m bench replicas``): the
replica stays attached to the bench server for the rest of the run.
"""

from __future__ import annotations

import itertools
import time

from bench.harness import Case, Env
from redkit import DistributedLock, SessionStore
from redkit.server import EmbeddedRedis

SECRET = "bench-secret-0123456789abcdef0123"
TASKS = (1, 64)


async def _attach_replica(env: Env) -> None:
    admin = env.raw_client(counted=False)
    await admin.config_set("repl-diskless-sync-delay", 0)
    replica = EmbeddedRedis(extra_args=("--replicaof", env.host, str(env.port))).start()

    async def stop() -> None:
        replica.cleanup()

    env.closers.insert(0, stop)
    deadline = time.monotonic() + 30
    while await admin.execute_command("WAIT", 1, 100) != 1:
        if time.monotonic() > deadline:
            raise RuntimeError("the bench replica did not sync within 30 s")


async def cases(env: Env) -> list[Case]:
    await _attach_replica(env)
    client = await env.redkit_client()
    found: list[Case] = []
    for replicas in (0, 1):
        store = SessionStore(client, secret=SECRET, prefix=f"bench-r{replicas}", replicas=replicas)
        ids = [(await store.create("", {"n": 0})).id for _ in range(64)]
        locks = DistributedLock(client, prefix=f"bench-r{replicas}", replicas=replicas)
        env.closers.append(locks.aclose)
        found += _cases(store, ids, locks, replicas)
    order = {
        name: i
        for i, name in enumerate(f"{op}/{n}" for op in ("create", "update", "lock") for n in TASKS)
    }
    return sorted(found, key=lambda c: order[c.group])


def _cases(
    store: SessionStore, ids: list[str], locks: DistributedLock, replicas: int
) -> list[Case]:
    session_ids = itertools.cycle(ids)
    names = itertools.cycle([f"job-{n}" for n in range(64)])

    async def create() -> None:
        await store.create("", {"n": 1})

    async def update() -> None:
        await store.update(next(session_ids), {"n": 2})

    async def lock_and_release() -> None:
        release = await locks.lock(next(names), ttl=10)
        await release()

    label = f"replicas={replicas}"
    note = "EVALSHA + WAIT 1, one pipeline" if replicas else ""
    return [
        Case(f"{op}/{tasks}", label, fn, baseline=replicas == 0, concurrency=tasks, note=note)
        for op, fn in (("create", create), ("update", update), ("lock", lock_and_release))
        for tasks in TASKS
    ]
