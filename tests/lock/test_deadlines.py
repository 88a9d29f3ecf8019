"""The lease deadline heap: callbacks run in deadline order, never early,
cancelled ones never; the heap sheds cancelled entries; one loop timer."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from redkit.lock._deadlines import Deadlines


async def test_callbacks_run_in_deadline_order_and_not_before_their_time() -> None:
    deadlines = Deadlines()
    ran: list[tuple[str, float, float]] = []
    done = asyncio.Event()
    start = time.monotonic()

    def note(name: str, when: float) -> None:
        ran.append((name, when, time.monotonic()))
        if len(ran) == 3:
            done.set()

    # Added latest first: each addition moves the loop timer earlier.
    for name, offset in (("c", 0.06), ("b", 0.04), ("a", 0.02)):
        when = start + offset
        deadlines.add(when, lambda n=name, w=when: note(n, w))
    assert len(deadlines) == 3
    await asyncio.wait_for(done.wait(), 5)
    assert [name for name, _, _ in ran] == ["a", "b", "c"]
    assert all(at >= when for _, when, at in ran)
    assert len(deadlines) == 0


async def test_cancelled_deadlines_never_run() -> None:
    deadlines = Deadlines()
    ran: list[str] = []
    last = asyncio.Event()
    now = time.monotonic()
    first = deadlines.add(now + 0.01, lambda: ran.append("cancelled"))
    deadlines.add(now + 0.02, lambda: ran.append("kept"))
    deadlines.add(now + 0.03, last.set)
    deadlines.cancel(first)
    deadlines.cancel(first)  # a second cancel changes nothing
    assert len(deadlines) == 2
    await asyncio.wait_for(last.wait(), 5)
    assert ran == ["kept"]


async def test_many_cancellations_do_not_pile_up() -> None:
    deadlines = Deadlines()
    far = time.monotonic() + 3600
    for _ in range(10_000):
        deadlines.cancel(deadlines.add(far, lambda: None))
    assert len(deadlines) == 0
    # Rebuilt whenever more than half is dead: the heap stays small.
    assert len(deadlines._heap) <= 200


async def test_a_failing_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deadlines = Deadlines()
    done = asyncio.Event()
    now = time.monotonic()

    def fail() -> None:
        raise RuntimeError("boom")

    deadlines.add(now, fail)
    deadlines.add(now, done.set)
    with caplog.at_level(logging.ERROR, logger="redkit.lock"):
        await asyncio.wait_for(done.wait(), 5)
    assert any("deadline callback failed" in r.getMessage() for r in caplog.records)


async def test_a_callback_may_add_and_cancel_deadlines() -> None:
    deadlines = Deadlines()
    done = asyncio.Event()
    now = time.monotonic()
    doomed = [deadlines.add(now + 3600, lambda: None) for _ in range(100)]

    def first() -> None:
        for entry in doomed:  # enough to rebuild the heap mid-run
            deadlines.cancel(entry)
        deadlines.add(time.monotonic() + 0.01, done.set)

    deadlines.add(now, first)
    await asyncio.wait_for(done.wait(), 5)
    assert len(deadlines) == 0


def test_a_new_event_loop_starts_afresh() -> None:
    deadlines = Deadlines()
    ran: list[str] = []

    async def leave_one_pending() -> None:
        deadlines.add(time.monotonic() + 3600, lambda: ran.append("old loop"))

    async def add_on_a_new_loop() -> None:
        done = asyncio.Event()
        deadlines.add(time.monotonic() + 0.01, done.set)
        await asyncio.wait_for(done.wait(), 5)

    asyncio.run(leave_one_pending())
    asyncio.run(add_on_a_new_loop())
    assert ran == []
    assert len(deadlines) == 0
