"""Live pushes of standings: the first verdict after a quiet interval goes out at once (leading edge), a
burst gives at most one push per interval per contest and its last push carries every verdict
(leaderboards/live.py, on virtual time so the order and count of pushes are exact); and over a real server,
every push equals the full recompute of the standings it claims to show (leaderboards/standings.py)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import uuid
from typing import Any

import socketio

from core_api.context import CORE
from leaderboards.board import LocalBoard, RedisBoard
from leaderboards.core import board_score
from leaderboards.handlers import CONTESTS
from leaderboards.live import Coalescer, Ready
from realtime.app import METRICS
from tests.chat_helpers import server_url
from tests.conftest import ApiClient
from tests.contest_helpers import A_OK, A_WRONG, B_OK, B_WRONG, Clock, at, community_with, contest_body, ok
from tests.nodes import redis_url


class VirtualTime:
    """A clock and a sleep for the coalescer: time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, delay), next(self._seq), wake))
        await wake

    async def settle(self) -> None:
        for _ in range(20):  # let every task that can run, run (nothing here waits on real I/O)
            await asyncio.sleep(0)

    async def run_until(self, t: float) -> None:
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= t:
            wake_at, _, wake = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake_at)
            wake.set_result(None)
            await self.settle()
        self.now = t
        await self.settle()


class Recorder:
    """A refresh that reads the verdicts so far (as reading Postgres would) and records what it pushed when."""

    def __init__(self, vt: VirtualTime) -> None:
        self.vt = vt
        self.verdicts: dict[uuid.UUID, list[int]] = {}
        self.pushes: list[tuple[uuid.UUID, float, list[int]]] = []

    async def refresh(self, contest_id: uuid.UUID, ready: Ready) -> None:
        seen = list(self.verdicts.get(contest_id, []))
        await ready()
        self.pushes.append((contest_id, self.vt.now, seen))

    def verdict(self, coalescer: Coalescer, contest_id: uuid.UUID, n: int) -> None:
        self.verdicts.setdefault(contest_id, []).append(n)
        coalescer.touch(contest_id)

    def of(self, contest_id: uuid.UUID) -> list[tuple[float, list[int]]]:
        return [(t, seen) for c, t, seen in self.pushes if c == contest_id]


def coalescer_on(vt: VirtualTime) -> tuple[Coalescer, Recorder]:
    recorder = Recorder(vt)
    return Coalescer(recorder.refresh, 0.5, clock=vt.clock, sleep=vt.sleep), recorder


async def test_the_first_verdict_after_a_quiet_interval_is_pushed_at_once() -> None:
    vt = VirtualTime()
    coalescer, rec = coalescer_on(vt)
    contest = uuid.uuid4()
    await vt.run_until(10.0)
    rec.verdict(coalescer, contest, 1)
    await vt.run_until(10.0)  # no time passes: the push is already out
    assert rec.of(contest) == [(10.0, [1])]
    for n, t in ((2, 10.1), (3, 10.2)):  # inside the interval: held back, together
        await vt.run_until(t)
        rec.verdict(coalescer, contest, n)
    await vt.run_until(10.49)
    assert len(rec.of(contest)) == 1
    await vt.run_until(10.5)
    assert rec.of(contest) == [(10.0, [1]), (10.5, [1, 2, 3])]
    await vt.run_until(20.0)  # quiet again: the next verdict goes out at once
    rec.verdict(coalescer, contest, 4)
    await vt.run_until(20.0)
    assert rec.of(contest)[-1] == (20.0, [1, 2, 3, 4]) and len(rec.of(contest)) == 3
    assert coalescer.allowed_at[contest] == 20.0
    await coalescer.close()


async def test_a_burst_is_pushed_at_most_once_per_interval_per_contest_and_nothing_is_lost() -> None:
    vt = VirtualTime()
    coalescer, rec = coalescer_on(vt)
    red, blue = uuid.uuid4(), uuid.uuid4()
    # 200 verdicts a second for 2 s in one contest; in the other one verdict every 0.3 s.
    for n in range(400):
        await vt.run_until(n * 0.005)
        rec.verdict(coalescer, red, n)
        if n % 60 == 0:
            rec.verdict(coalescer, blue, n)
    await vt.run_until(10.0)
    for contest, verdicts in ((red, list(range(400))), (blue, list(range(0, 400, 60)))):
        pushes = rec.of(contest)
        times = [t for t, _ in pushes]
        assert times[0] == 0.0  # leading edge
        assert all(later - earlier >= 0.5 for earlier, later in itertools.pairwise(times))
        assert pushes[-1][1] == verdicts  # the last push carries every verdict
    assert [t for t, _ in rec.of(red)] == [0.0, 0.5, 1.0, 1.5, 2.0]  # 400 verdicts, 5 pushes
    assert [t for t, _ in rec.of(blue)] == [0.0, 0.5, 1.0, 1.5, 2.0]  # verdicts at 0, .3, .6, .9, 1.2, 1.5, 1.8
    await coalescer.close()


async def test_what_the_server_adds_to_a_push_is_timed_from_when_the_interval_allowed_it() -> None:
    vt = VirtualTime()
    added: list[float] = []
    contest = uuid.uuid4()
    coalescer: Coalescer

    async def refresh(contest_id: uuid.UUID, ready: Ready) -> None:
        await ready()
        await vt.sleep(0.03)  # building and handing over the push
        coalescer.pushed(contest_id)

    coalescer = Coalescer(refresh, 0.5, observe=added.append, clock=vt.clock, sleep=vt.sleep)
    await vt.run_until(10.0)
    coalescer.touch(contest)  # leading edge: allowed at once, at 10.0
    await vt.run_until(10.2)
    coalescer.touch(contest)  # inside the interval: allowed at 10.5, whenever the refresh started
    await vt.run_until(11.0)
    assert [round(a, 6) for a in added] == [0.03, 0.03]
    assert coalescer.allowed_at[contest] == 10.5
    await coalescer.close()


# --- boards changed member by member --------------------------------------------------------------------


async def test_board_updates_answer_alike_in_redis_and_in_process() -> None:
    with redis_url() as url:
        redis_board, local = RedisBoard(url), LocalBoard()
        key = f"test:{uuid.uuid4().hex}"
        try:
            for board in (redis_board, local):
                assert await board.update(key, {"x": 1.0}, []) is False  # no board yet: nothing written
                await board.replace(key, {f"m{i:02}": board_score(i % 3, i % 4) for i in range(30)})
                assert await board.update(key, {"m05": board_score(9, 0), "new": board_score(1, 1)}, ["m07", "gone"])
            assert await redis_board.top(key, 40) == await local.top(key, 40)
            for member in ("m05", "new", "m07", "m00", "m29"):
                assert await redis_board.rank(key, member) == await local.rank(key, member)
            assert (await local.top(key, 1))[0].member == "m05" and await local.rank(key, "m07") is None
        finally:
            await redis_board.redis.delete(f"studyhall:board:{key}", f"studyhall:board:{key}:empty")
            await redis_board.close()


# --- over a real server -----------------------------------------------------------------------------------


def cut(standings: dict[str, Any]) -> dict[str, Any]:
    """``GET …/standings`` (the full recompute) as a push shows it: the first 100 rows, and the totals."""
    return {
        **standings,
        "people": standings["people"][:100],
        "communities": standings["communities"][:100],
        "people_total": len(standings["people"]),
        "communities_total": len(standings["communities"]),
    }


async def test_every_push_equals_the_full_recompute(api: ApiClient, sandbox_machine: None) -> None:
    people = [await api.user(name=n) for n in ("ann", "ben", "cat", "dan")]
    owner = await api.user("instructor", name="org")
    x = await community_with(api, owner, "X", people[:3])
    y = await community_with(api, owner, "Y", people[1:])
    contest = await ok(api, "POST", "/contests", owner, json=contest_body([x, y], organizer=x))
    cid = contest["id"]
    clock = Clock()
    contests = api.app[CONTESTS]
    contests.clock = clock
    problems = {p["label"]: p["id"] for p in contest["problems"]}
    pushed: dict[str, list[dict[str, Any]]] = {"public": [], "jury": []}
    emit = contests.transport.emit

    async def capture(event: str, data: Any, *, to: str, skip_sid: str | None = None) -> None:
        if event == "leaderboard:update":
            pushed[data["view"]].append(data)
        await emit(event, data, to=to, skip_sid=skip_sid)

    contests.transport.emit = capture

    async def check(step: str) -> None:
        await contests.wait_judged()
        for view in ("public", "jury"):
            full = await ok(api, "GET", f"/contests/{cid}/standings?view={view}", owner)
            assert pushed[view][-1] == cut(full), (step, view)

    script: list[tuple[int, str, str, str, int]] = [
        (0, "A", A_WRONG, x, 10), (0, "A", A_OK, x, 12), (1, "B", B_OK, y, 15), (1, "A", A_OK, x, 20),
        (2, "B", B_WRONG, y, 30), (3, "A", A_OK, y, 250), (2, "A", A_OK, x, 260),  # the last two in the freeze
    ]  # fmt: skip
    for who, label, source, community, minute in script:
        clock.now = at(minute)
        path = f"/contests/{cid}/problems/{problems[label]}/submissions"
        await ok(api, "POST", path, people[who], json={"language": "python", "source": source,
                                                         "community_id": community})  # fmt: skip
    await check("judged")
    # Each public push is timed once by the server, from the interval allowing it to its hand-over to Socket.IO.
    samples = api.app[METRICS].registry.get_sample_value("studyhall_leaderboard_push_added_seconds_count")
    assert samples == len(pushed["public"]) > 0
    assert contests.standings_live.builds == 2  # built once, again when the freeze started; else change by change
    subs = await ok(api, "GET", f"/contests/{cid}/submissions?everyone=true", owner)
    first_ok = next(s for s in subs["items"] if s["user_id"] == people[0].id and s["verdict"] == "accepted")
    await ok(api, "POST", f"/contests/{cid}/submissions/{first_ok['id']}/disqualify", owner, json={"reason": "copied"})
    await check("disqualified")
    await ok(api, "POST", f"/contests/{cid}/problems/{problems['B']}/rejudge", owner)
    await check("rejudged")
    # An account deleted (its submissions go with it), then another verdict to push.
    await api.app[CORE].pool.execute("DELETE FROM users WHERE id = $1", uuid.UUID(people[3].id))
    clock.now = at(270)
    path = f"/contests/{cid}/problems/{problems['B']}/submissions"
    await ok(api, "POST", path, people[2], json={"language": "python", "source": B_OK, "community_id": x})
    await check("deleted")
    assert all(p["user_id"] != people[3].id for p in pushed["jury"][-1]["people"])
    assert contests.standings_live.builds == 2  # no rebuild: the rejudge and the deletion came as changes
    clock.now = at(301)
    await ok(api, "POST", f"/contests/{cid}/finalise", owner)
    await check("finalised")
    assert contests.standings_live.mismatches == 0


async def test_subscribers_on_two_views_get_pushes_equal_to_the_standings(
    api: ApiClient, sandbox_machine: None
) -> None:
    people = [await api.user(name=n) for n in ("eve", "fay")]
    owner = await api.user("instructor", name="org")
    x = await community_with(api, owner, "X", people)
    contest = await ok(api, "POST", "/contests", owner, json=contest_body([x], organizer=x))
    clock = Clock()
    api.app[CONTESTS].clock = clock
    sio = socketio.AsyncClient(reconnection=False)
    updates: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sio.on("leaderboard:update", updates.put)
    await sio.connect(server_url(api), auth={"token": owner.token}, transports=["websocket"])
    try:
        ack = await sio.call("contest:subscribe", {"contest_id": contest["id"], "view": "jury"}, timeout=10)
        assert ack["ok"] is True
        clock.now = at(5)
        problem = contest["problems"][0]["id"]
        path = f"/contests/{contest['id']}/problems/{problem}/submissions?wait=true"
        await ok(api, "POST", path, people[0], json={"language": "python", "source": A_OK})
        while True:
            update = await asyncio.wait_for(updates.get(), 10)
            if update["people"] and update["people"][0]["solved"] == 1:
                break
        full = await ok(api, "GET", f"/contests/{contest['id']}/standings?view=jury", owner)
        assert update == cut(full)
    finally:
        await sio.disconnect()
