"""Locks across a primary move: acquires fail closed during it, a lease held
across it stays valid or is signalled lost before anyone else gets the lock,
and fencing tokens handed out after it never repeat a replicated one. With
``replicas=1`` a lock is only handed out (and renewed) once a replica holds
it, so while the new primary has no replica nobody gets it."""

from __future__ import annotations

import pytest

from redkit import ConnectionUnavailable, DistributedLock, Lease, LockNotAcquired, NotReplicated

from ._recovery import BOUND, Workload, close_all, report, until, until_async
from .conftest import Rig

pytestmark = pytest.mark.failover

_TTL = 4.0


_REPLICA_TIMEOUT = 0.3


@pytest.mark.parametrize("replicas", [0, 1], ids=["primary-ack", "replica-ack"])
async def test_lock(rig: Rig, replicas: int) -> None:
    client_a, client_b = await rig.connect(), await rig.connect()
    holder, rival = (
        DistributedLock(client, prefix="fo", replicas=replicas, replica_timeout=_REPLICA_TIMEOUT)
        for client in (client_a, client_b)
    )
    (name,) = rig.keys_near("job", "job")
    taken: list[tuple[Lease, bool]] = []  # the rival's lease, and whether A still held
    # With replicas=1 after a kill the new primary has no replica in this test.
    no_replica_after = bool(replicas) and rig.kind == "kill"
    try:
        # The replica revived after the last test may still be syncing.
        await rig.replicated(client_a, name)
        lease = await holder.acquire(name, ttl=_TTL, timeout=1)
        await rig.replicated(client_a, name)

        async def contend(n: int) -> str:
            if taken:
                return "done"
            try:
                won = await rival.lock(name, ttl=_TTL)
            except LockNotAcquired:
                return "held"
            # The holder must know its lease is gone before anyone else has it.
            taken.append((won, not lease.lost.is_set() and not lease.released))
            return "taken"

        async with Workload(contend) as attempts:
            promotion = await rig.trigger(name)
            # Without a replica the new primary's right answer to a free
            # lock is NotReplicated (taken, given back): that is serving.
            first = await attempts.served(
                promotion, lambda c: c.ok or isinstance(c.error, NotReplicated)
            )

            async def settled() -> bool:
                # Still the holder on the new primary: an extension works,
                # once acknowledged when replicas=1 (NotReplicated, raised
                # until the new primary has a replica, counts as not yet);
                # or the lease is signalled lost.
                if not lease.lost.is_set():
                    await lease.extend()
                return True

            await until_async(settled, "the lease extended or signalled lost")
            survived = not lease.lost.is_set()
            if survived:
                assert await client_a.get(holder.key(name)) == lease.token.encode()
                assert await lease.release()
            if not no_replica_after:
                await until(lambda: taken, "the rival taking the lock after the holder let go")
        report(
            "lock" if not replicas else "lock+W",
            promotion,
            first.ended,
            lease_survived=survived,
            refused=sum(isinstance(e, ConnectionUnavailable) for e in attempts.errors()),
            not_replicated=sum(isinstance(e, NotReplicated) for e in attempts.errors()),
            tokens=f"{lease.fencing_token}->{taken[0][0].fencing_token if taken else None}",
        )

        assert all(isinstance(e, ConnectionUnavailable) for e in attempts.errors())
        # With replicas=1 and no replica left, every answer from the new
        # primary first waits out the replica timeout (the WAIT shares the
        # pipeline with the script), so the call that serves ends at least
        # that long after it started.
        bound = BOUND + (_REPLICA_TIMEOUT if no_replica_after else 0.0)
        assert first.ended - promotion.promoted <= bound
        if no_replica_after:
            assert not taken, "a lock was handed out that no replica held"
            assert lease.released or lease.lost.is_set()
        else:
            won, while_held = taken[0]
            assert not while_held, "the rival got the lock while its holder still trusted it"
            # The holder's acquire (and its fencing INCR) was replicated first.
            assert won.fencing_token > lease.fencing_token
            await won.release()
    finally:
        await close_all(holder, rival, client_a, client_b)
