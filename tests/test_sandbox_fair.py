"""The fair gate (sandbox/fair.py): places go by turns between users, never first come first served, and a
waiter that gives up (cancelled) neither keeps a place nor loses one for anybody else."""

from __future__ import annotations

import asyncio

import pytest

from sandbox.fair import FairGate


async def test_waiters_go_in_by_turns_between_keys_and_in_order_within_one() -> None:
    gate = FairGate(1)
    order: list[str] = []
    names = ("a1", "a2", "a3", "b1", "b2", "c1")
    entered = {name: asyncio.Event() for name in names}
    release = {name: asyncio.Event() for name in names}

    async def job(key: str, name: str) -> None:
        async with gate.place(key):
            order.append(name)
            entered[name].set()
            await release[name].wait()

    tasks = []
    for key, name in (("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"), ("b", "b2"), ("c", "c1")):
        tasks.append(asyncio.create_task(job(key, name)))
        await asyncio.sleep(0)  # each one queues before the next arrives
    for name in ("a1", "b1", "c1", "a2", "b2", "a3"):
        await asyncio.wait_for(entered[name].wait(), 1)
        assert gate.holders == 1
        release[name].set()
    await asyncio.gather(*tasks)
    # a1 was in first; then the others' turn before a's second, whoever queued first.
    assert order == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert (gate.holders, gate.waiting) == (0, 0)


async def test_a_cancelled_waiter_keeps_no_place_and_takes_none() -> None:
    gate = FairGate(1)
    await gate.acquire("a")
    waiting = asyncio.create_task(gate.acquire("b"))
    nxt = asyncio.create_task(gate.acquire("c"))
    await asyncio.sleep(0)
    assert gate.waiting == 2
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    gate.release("a")
    await asyncio.wait_for(nxt, 1)  # c goes in, b's place was not kept
    assert (gate.holders, gate.waiting) == (1, 0)
    # Let in, then cancelled before it could run: the place passes on.
    granted = asyncio.create_task(gate.acquire("d"))
    after = asyncio.create_task(gate.acquire("e"))
    await asyncio.sleep(0)
    gate.release("c")  # d is let in ...
    granted.cancel()  # ... but cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await granted
    await asyncio.wait_for(after, 1)
    assert gate.holders == 1
    gate.release("e")
    assert (gate.holders, gate.waiting) == (0, 0)


def test_a_gate_needs_a_place() -> None:
    with pytest.raises(ValueError, match="at least one place"):
        FairGate(0)
