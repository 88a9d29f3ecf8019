"""Locks across a primary move: acquires fail closed during it, a lease held
across it stays valid or is signalled lost before anyone else gets the lock,
and fencing tokens handed out after it never repeat a replicated one."""

from __future__ import annotations

import pytest

from redkit import ConnectionUnavailable, DistributedLock, Lease, LockNotAcquired

from ._recovery import BOUND, Workload, close_all, report, until
from .conftest import Rig

pytestmark = pytest.mark.failover

_TTL = 4.0


async def test_lock(rig: Rig) -> None:
    client_a, client_b = await rig.connect(), await rig.connect()
    holder, rival = DistributedLock(client_a, prefix="fo"), DistributedLock(client_b, prefix="fo")
    (name,) = rig.keys_near("job", "job")
    taken: list[tuple[Lease, bool]] = []  # the rival's lease, and whether A still held
    try:
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
            first = await attempts.served(promotion)
            survived = not lease.lost.is_set()
            if survived:
                await lease.extend()  # still the holder on the new primary
                assert await client_a.get(holder.key(name)) == lease.token.encode()
                assert await lease.release()
            await until(lambda: taken, "the rival taking the lock after the holder let go")
        report(
            "lock",
            promotion,
            first.ended,
            lease_survived=survived,
            refused=sum(isinstance(e, ConnectionUnavailable) for e in attempts.errors()),
            tokens=f"{lease.fencing_token}->{taken[0][0].fencing_token}",
        )

        assert all(isinstance(e, ConnectionUnavailable) for e in attempts.errors())
        won, while_held = taken[0]
        assert not while_held, "the rival got the lock while the holder still believed it held it"
        # The holder's acquire (and its fencing INCR) was replicated first.
        assert won.fencing_token > lease.fencing_token
        await won.release()
        assert first.ended - promotion.promoted <= BOUND
    finally:
        await close_all(holder, rival, client_a, client_b)
