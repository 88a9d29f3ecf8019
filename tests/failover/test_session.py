"""Session calls fail closed within the client's timeouts while the primary
moves, never hang, and every session replicated before the move (and every
one written after it) is readable after. With ``replicas=1`` no write that
returned is lost, whatever the trigger."""

from __future__ import annotations

import time

import pytest

from redkit import ConnectionUnavailable, NotReplicated, Session, SessionStore

from ._recovery import BOUND, Call, Workload, close_all, report, until_async
from .conftest import Rig

pytestmark = pytest.mark.failover

_TIMEOUT = 1.0  # the client's connect and read timeouts
_RETRIES = 1
# Each attempt may spend a connect and a read timeout; 0.5 s for the rest.
_CALL_BOUND = (1 + _RETRIES) * 2 * _TIMEOUT + 0.5
_REPLICA_TIMEOUT = 0.3


@pytest.mark.parametrize("replicas", [0, 1], ids=["primary-ack", "replica-ack"])
async def test_sessions(rig: Rig, replicas: int) -> None:
    client = await rig.connect(
        read_timeout=_TIMEOUT, connect_timeout=_TIMEOUT, max_retries=_RETRIES
    )
    store = SessionStore(
        client,
        secret="failover-test-secret-0123456789",
        prefix="fo",
        replicas=replicas,
        replica_timeout=_REPLICA_TIMEOUT,
    )
    try:
        # The replica revived after the last test may still be syncing.
        await rig.replicated(client, "{ada}")
        before = [await store.create("ada", {"n": n}) for n in range(5)]
        # One user's sessions share the slot of the tag that starts their ids.
        slot_key = "{" + before[0].id.partition(".")[0] + "}"
        await rig.replicated(client, slot_key)

        async def use(n: int) -> Session | None:
            if n % 2:
                return await store.create("ada", {"during": n})
            return await store.get(before[0].id)

        async with Workload(use) as calls:
            promotion = await rig.trigger(slot_key)
            first = await calls.served(promotion, lambda c: c.ok and c.value is not None)
        durations = [c.seconds for c in calls.calls]
        created = [
            c for c in calls.calls if c.ok and c.value is not None and "during" in c.value.data
        ]
        lost = [c for c in created if await store.get(c.value.id) is None]
        kept = [await store.get(session.id) for session in before]
        # With replicas=1 a write is refused until the new primary has a
        # replica again (after a graceful failover, the deposed primary once
        # Sentinel turns it into one; after a kill, none in this test).
        writes_back = None
        if not replicas:
            assert await store.update(before[0].id, {"after": True}) is not None
        elif rig.kind == "failover":
            await until_async(
                lambda: store.update(before[0].id, {"after": True}), "an acknowledged update"
            )
            writes_back = f"{time.monotonic() - promotion.promoted:.3f}s"
        recovery = report(
            "sessions" if not replicas else "sessions+W",
            promotion,
            first.ended,
            refused=len(calls.errors()),
            slowest_call=f"{max(durations):.3f}s",
            lost_acked_writes=len(lost),
            not_replicated=sum(isinstance(e, NotReplicated) for e in calls.errors()),
            writes_back=writes_back,
        )

        assert all(isinstance(e, ConnectionUnavailable) for e in calls.errors()), calls.errors()
        bound = _CALL_BOUND + (_REPLICA_TIMEOUT + 0.2 if replicas else 0)
        assert max(durations) <= bound, "a session call hung past the client's timeouts"
        assert kept == before
        if replicas:
            assert lost == [], "a write acknowledged by a replica was lost"

        def after_promotion(call: Call) -> bool:
            return call.started >= promotion.promoted

        assert not [c for c in lost if after_promotion(c)], "a write after the promotion was lost"
        if rig.cluster and rig.kind == "failover":
            assert lost == []
        assert recovery <= BOUND
    finally:
        await close_all(client)
