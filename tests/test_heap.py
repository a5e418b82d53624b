"""Settling the heap (core_api/heap.py): what a node builds to keep (the app, a contest's standings) leaves the
collector's generations, so full collections no longer walk it; cyclic garbage made of frozen objects is
still freed by the periodic full round; and a stopped app leaves nothing frozen."""

from __future__ import annotations

import asyncio
import gc
import uuid
import weakref
from pathlib import Path
from typing import Any

import pytest

from core_api.heap import HEAP, Heap
from leaderboards.handlers import CONTESTS
from leaderboards.tally import Tally
from realtime.app import METRICS
from tests.contest_helpers import A_OK, Clock, api_with, at, community_with, contest_body, ok


class Node:
    """An object that can sit in a reference cycle (plain objects are tracked by the collector)."""

    def __init__(self) -> None:
        self.other: Node | None = None


def tracked(obj: object) -> bool:
    """Whether a full collection would walk ``obj`` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


@pytest.fixture
def heap() -> Any:
    yield
    gc.unfreeze()  # whatever a failed test left


async def test_a_settle_keeps_what_lives_out_of_collections_and_garbage_still_goes(heap: None) -> None:
    h = Heap()
    kept = [Node() for _ in range(1000)]
    gone = Node()
    gone.other = Node()
    gone.other.other = gone  # a cycle nothing refers to once dropped
    gone_ref = weakref.ref(gone)
    del gone
    h.start(min_interval_s=60, full_every_s=0)
    try:
        assert gone_ref() is None  # the settle collected before it froze
        assert not tracked(kept[0]) and gc.get_freeze_count() >= 1000
        assert h.stats.settles == 1
        # Frozen objects still go with their last reference (reference counting); a cycle among them waits
        # for the full round.
        plain = weakref.ref(kept.pop())
        assert plain() is None
        a, b = kept[0], kept[1]
        a.other, b.other = b, a
        cyclic = weakref.ref(a)
        del kept, a, b
        gc.collect()
        assert cyclic() is not None  # frozen: no collection looks at it
        h.full_round()
        assert cyclic() is None
        assert h.stats.full_rounds == 1
    finally:
        await h.stop()
    assert gc.get_freeze_count() == 0


async def test_asks_are_deferred_merged_and_spaced(heap: None) -> None:
    now = [100.0]
    h = Heap(clock=lambda: now[0])
    h.request()  # not enabled: nothing
    assert h._pending is None
    h.start(min_interval_s=60, full_every_s=0, defer_s=0.01)
    loop = asyncio.get_running_loop()
    try:
        assert h.stats.settles == 1
        h.request()
        first = h._pending
        h.request()  # one settle for both
        assert first is not None and h._pending is first
        assert first.when() - loop.time() > 59  # 60 s after the last settle, which was just now
        first.cancel()
        h._pending = None
        now[0] += 61
        h.request()  # the interval has passed: only the short deferral
        assert h._pending is not None and h._pending.when() - loop.time() <= 0.011  # (uvloop: ms clock)
        h._pending.cancel()
        h._settle_pending()  # what the timer does when it is due
        assert h.stats.settles == 2 and h._pending is None
    finally:
        await h.stop()


async def test_a_node_settles_after_start_up_and_after_building_a_contests_standings(
    aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None, heap: None
) -> None:
    api = await api_with(aiohttp_client, database_url, tmp_path, gc_freeze=True, gc_settle_min_interval_s=0)
    registry = api.app[METRICS].registry
    assert HEAP.enabled and HEAP.stats.settles >= 1
    assert registry.get_sample_value("studyhall_gc_frozen_objects") == gc.get_freeze_count() > 0
    people = [await api.user(name=n) for n in ("ann", "ben")]
    owner = await api.user("instructor", name="org")
    x = await community_with(api, owner, "X", people)
    contest = await ok(api, "POST", "/contests", owner, json=contest_body([x], organizer=x))
    problem = contest["problems"][0]["id"]
    contests = api.app[CONTESTS]
    contests.clock = clock = Clock()
    clock.now = at(10)
    before = HEAP.stats.settles
    await ok(api, "POST", f"/contests/{contest['id']}/problems/{problem}/submissions", people[0],
             json={"language": "python", "source": A_OK, "community_id": x})  # fmt: skip
    await contests.wait_judged()
    await contests.live.idle()
    assert contests.standings_live.builds >= 1
    for _ in range(100):  # the settle runs shortly after the push that built the standings
        if HEAP.stats.settles > before:
            break
        await asyncio.sleep(0.02)
    assert HEAP.stats.settles > before
    state = contests.standings_live._states[uuid.UUID(contest["id"])]
    assert all(isinstance(t, Tally) and not tracked(t) for t in state.tallies.values())
    # Every collection is timed for operators.
    gc.collect(0)
    assert (registry.get_sample_value("studyhall_gc_pause_seconds_count", {"generation": "0"}) or 0) >= 1
    await api.http.close()
    assert not HEAP.enabled and gc.get_freeze_count() == 0
