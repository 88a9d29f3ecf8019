"""A client built before the primary moves serves again without a restart,
on the new primary, with no command run twice and no pool exhaustion."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    ClusterError,
    ConnectionError,
    MaxConnectionsError,
    ReadOnlyError,
    TimeoutError,
    TryAgainError,
)

from ._recovery import BOUND, Call, Workload, report, until
from .conftest import Rig

pytestmark = pytest.mark.failover

# What a command may meet while the primary moves: nothing else is expected.
_MOVING = (ConnectionError, TimeoutError, ClusterError, TryAgainError, ReadOnlyError)


async def test_client(rig: Rig) -> None:
    key = "client:{log}"
    client = await rig.connect()
    try:
        await client.rpush(key, *(f"pre-{n}" for n in range(10)))
        await rig.replicated(client, key)

        async def push(n: int) -> str:
            await client.rpush(key, str(n))
            return str(n)

        async with Workload(push) as pushes:
            promotion = await rig.trigger(key)
            await pushes.served(promotion)
            await until(lambda: sum(c.ok for c in pushes.after(promotion.promoted)) >= 20, "writes")
        assert rig.new is not None
        async with rig.direct(rig.new) as direct:
            stored = [item.decode() for item in await direct.lrange(key, 0, -1)]
    finally:
        await client.aclose()

    def landed(call: Call) -> bool:
        return call.ok and call.value in stored

    first = pushes.first(promotion.promoted, landed)
    acked = [c.value for c in pushes.calls if c.ok]
    lost = [v for v in acked if v not in stored]
    assert first is not None
    recovery = report(
        "client",
        promotion,
        first.ended,
        errors=len(pushes.errors()),
        lost_acked=len(lost),
    )
    assert not [e for e in pushes.errors() if isinstance(e, MaxConnectionsError)]
    assert all(isinstance(e, _MOVING) for e in pushes.errors()), pushes.errors()
    assert len(stored) == len(set(stored)), "a command ran twice"
    assert stored[:10] == [f"pre-{n}" for n in range(10)], "a replicated write was lost"
    # Nothing acknowledged after the promotion went to the deposed primary.
    assert [c.value for c in pushes.after(promotion.promoted) if c.ok and not landed(c)] == []
    if rig.cluster and rig.kind == "failover":
        assert lost == [], "CLUSTER FAILOVER hands over only once the replica caught up"
    assert recovery <= BOUND
