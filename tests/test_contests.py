"""Group wars: hand-computed standings from a scripted contest judged by the real sandbox, the freeze,
finalising, 200 simultaneous submissions, the same board from Redis and in-process, live pushes."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import socketio

from leaderboards.board import LocalBoard, RedisBoard
from leaderboards.core import Attempt, Rules, board_score, split_board_score, standings
from leaderboards.handlers import CONTESTS
from tests.chat_helpers import server_url
from tests.conftest import Actor, ApiClient
from tests.contest_helpers import (
    A_OK,
    A_WRONG,
    B_OK,
    B_WRONG,
    C_BROKEN,
    START,
    Clock,
    api_with,
    at,
    community_with,
    contest_body,
    ok,
)
from tests.nodes import redis_url

# --- pure scoring --------------------------------------------------------------------------------


def test_icpc_scoring_by_hand_with_ties_penalties_compile_errors_and_freeze() -> None:
    rules = Rules("icpc", 20, {"A": 1, "B": 1}, freeze_at=at(240), finalised=False)
    seq = iter(range(100))

    def att(user: str, problem: str, minute: int, verdict: str | None) -> Attempt:
        return Attempt(f"{next(seq):03}", problem, user, "X" if user in "ab" else "Y", at(minute), minute, verdict)

    attempts = [
        att("a", "A", 10, "wrong_answer"), att("a", "A", 30, "accepted"), att("a", "B", 40, "compile_error"),
        att("a", "B", 60, "accepted"), att("a", "B", 70, "wrong_answer"),  # after the solve: ignored
        att("b", "A", 20, "accepted"), att("b", "B", 100, "wrong_answer"), att("b", "B", 110, "time_limit_exceeded"),
        att("c", "B", 45, "accepted"), att("c", "A", 65, "accepted"),
        att("d", "A", 250, "accepted"),  # after the freeze
    ]  # fmt: skip
    public = {s.id: s for s in standings(rules, "public", attempts, {})}
    assert [(k, public[k].rank, public[k].solved, public[k].penalty) for k in "acbd"] == [
        ("a", 1, 2, 110),  # A: 30 + 20 for one wrong answer; B: 60, the compile error is free
        ("c", 1, 2, 110),  # same solved and penalty: the same rank
        ("b", 3, 1, 20),  # rejections on the unsolved B cost nothing
        ("d", 4, 0, 0),
    ]
    assert public["d"].cells["A"].pending == 1 and not public["d"].cells["A"].solved
    assert public["b"].cells["A"].first_to_solve and public["c"].cells["B"].first_to_solve
    assert not public["a"].cells["A"].first_to_solve
    jury = {s.id: s for s in standings(rules, "jury", attempts, {})}
    assert (jury["d"].rank, jury["d"].solved, jury["d"].penalty) == (4, 1, 250)
    points = Rules("points", 20, {"A": 3, "B": 5}, freeze_at=None, finalised=False)
    by_points = {s.id: (s.rank, s.score, s.penalty) for s in standings(points, "jury", attempts, {})}
    assert by_points == {"a": (1, 8, 110), "c": (1, 8, 110), "b": (3, 3, 20), "d": (4, 3, 250)}


def test_board_scores_order_like_score_then_penalty_and_come_back() -> None:
    assert board_score(3, 10) > board_score(3, 11) > board_score(2, 0) > board_score(0, 0) > board_score(0, 5)
    for score, penalty in [(0, 0), (0, 7), (3, 0), (3, 999), (12345, 98765)]:
        assert split_board_score(board_score(score, penalty)) == (score, penalty)


async def test_the_board_answers_the_same_from_redis_and_in_process() -> None:
    with redis_url() as url:
        await same_answers(RedisBoard(url), LocalBoard())


async def same_answers(redis_board: RedisBoard, local: LocalBoard) -> None:
    key = f"test:{uuid.uuid4().hex}"
    values = {f"m{i:03}": board_score(i % 4, (i * 7) % 5) for i in range(60)}
    try:
        for board in (redis_board, local):
            await board.replace(key, {"old": 1.0})
            await board.replace(key, values)
        assert await redis_board.top(key, 25) == await local.top(key, 25)
        for member in ["m000", "m003", "m017", "m059", "old", "nobody"]:
            assert await redis_board.rank(key, member) == await local.rank(key, member)
        top = await local.top(key, 60)
        assert top[0].rank == 1 and [e.rank for e in top] == sorted(e.rank for e in top)
        assert len({e.rank for e in top}) < len(top)  # ties share ranks
        for board in (redis_board, local):
            await board.replace(key, {})
            assert await board.exists(key) and await board.top(key, 5) == []
    finally:
        await redis_board.redis.delete(f"studyhall:board:{key}", f"studyhall:board:{key}:empty")
        await redis_board.close()


# --- over REST, judged by the sandbox ------------------------------------------------------------


async def setup_war(api: ApiClient) -> tuple[dict[str, Actor], dict[str, Any], Clock]:
    people = {name: await api.user(name=name) for name in ("alice", "bob", "carol", "dave")}
    owner = await api.user("instructor", name="organizer")
    x = await community_with(api, owner, "X", [people["alice"], people["bob"]])
    y = await community_with(api, owner, "Y", [people["carol"], people["dave"]])
    contest = await ok(api, "POST", "/contests", owner, json=contest_body([x, y], organizer=x))
    clock = Clock()
    api.app[CONTESTS].clock = clock
    people["owner"] = owner
    return people, contest, clock


async def submit(
    api: ApiClient, clock: Clock, contest: dict[str, Any], who: Actor, label: str, minute: int, source: str, lang: str
) -> dict[str, Any]:
    clock.now = at(minute)
    problem = next(p for p in contest["problems"] if p["label"] == label)
    path = f"/contests/{contest['id']}/problems/{problem['id']}/submissions?wait=true"
    status, body = await api.call("POST", path, who, json={"language": lang, "source": source})
    assert status == 200, body
    return dict(body)


def table(standings: dict[str, Any]) -> list[tuple[str, int, int, int]]:
    return [(p["display_name"], p["rank"], p["solved"], p["penalty"]) for p in standings["people"]]


async def test_a_scripted_contest_yields_the_standings_computed_by_hand(api: ApiClient, sandbox_machine: None) -> None:
    people, contest, clock = await setup_war(api)
    alice, bob, carol, dave, owner = (people[n] for n in ("alice", "bob", "carol", "dave", "owner"))
    cid = contest["id"]
    script = [
        (alice, "A", 10, A_WRONG, "python", "wrong_answer"),
        (bob, "A", 20, A_OK, "python", "accepted"),
        (alice, "A", 30, A_OK, "python", "accepted"),
        (alice, "B", 40, C_BROKEN, "c", "compile_error"),
        (carol, "B", 45, B_OK, "python", "accepted"),
        (alice, "B", 60, B_OK, "python", "accepted"),
        (carol, "A", 65, A_OK, "python", "accepted"),
        (bob, "B", 100, B_WRONG, "python", "wrong_answer"),
        (bob, "B", 110, B_WRONG, "python", "wrong_answer"),
        (dave, "A", 250, A_OK, "python", "accepted"),  # during the freeze
    ]
    for who, label, minute, source, lang, verdict in script:
        sub = await submit(api, clock, contest, who, label, minute, source, lang)
        assert (sub["verdict"], sub["minute"]) == (verdict, minute)
    # Outside the window nothing is stored.
    for minute in (-1, 300):
        clock.now = at(minute)
        status, body = await api.call(
            "POST", f"/contests/{cid}/problems/{contest['problems'][0]['id']}/submissions", alice,
            json={"language": "python", "source": A_OK},
        )  # fmt: skip
        assert (status, body["error"]["code"]) == (409, "conflict")
    clock.now = at(270)
    public = await ok(api, "GET", f"/contests/{cid}/standings", alice)
    assert public["frozen"] is True
    assert table(public) == [("alice", 1, 2, 110), ("carol", 1, 2, 110), ("bob", 3, 1, 20), ("dave", 4, 0, 0)]
    dave_a = public["people"][3]["problems"][0]
    assert (dave_a["pending"], dave_a["solved"]) == (1, False)
    assert [(c["rank"], c["solved"], c["penalty"]) for c in public["communities"]] == [(1, 3, 130), (2, 2, 110)]
    status, _ = await api.call("GET", f"/contests/{cid}/standings?view=jury", alice)
    assert status == 403
    jury = await ok(api, "GET", f"/contests/{cid}/standings?view=jury", owner)
    assert table(jury)[3] == ("dave", 4, 1, 250)
    assert [(c["rank"], c["solved"], c["penalty"]) for c in jury["communities"]] == [(1, 3, 130), (2, 3, 360)]
    cells = [(p["display_name"], c) for p in jury["people"] for c in p["problems"]]
    firsts = {(name, c["problem_id"]) for name, c in cells if c["first_to_solve"]}
    assert firsts == {("bob", contest["problems"][0]["id"]), ("carol", contest["problems"][1]["id"])}
    # Dave sees his own verdict; the board serves the public view.
    mine = await ok(api, "GET", f"/contests/{cid}/submissions", dave)
    assert [s["verdict"] for s in mine["items"]] == ["accepted"]
    await api.app[CONTESTS].wait_judged()
    board = await ok(api, "GET", f"/contests/{cid}/board?limit=10", alice)
    assert [(e["rank"], e["score"], e["penalty"]) for e in board["items"]] == [(1, 2, 110), (1, 2, 110), (3, 1, 20),
                                                                              (4, 0, 0)]  # fmt: skip
    me = await ok(api, "GET", f"/contests/{cid}/board/me", bob)
    assert me["me"]["rank"] == 3 and me["community"]["rank"] == 1
    # Finalising (after the end) unfreezes the public board and records the all-time ranking.
    status, body = await api.call("POST", f"/contests/{cid}/finalise", owner)
    assert (status, body["error"]["code"]) == (409, "conflict")
    clock.now = at(301)
    status, _ = await api.call("POST", f"/contests/{cid}/finalise", alice)
    assert status == 403
    done = await ok(api, "POST", f"/contests/{cid}/finalise", owner)
    assert done["state"] == "finalised"
    assert await api.app[CONTESTS].finalise_contest(uuid.UUID(cid), None) is False  # twice: nothing more
    final = await ok(api, "GET", f"/contests/{cid}/standings", alice)
    assert final["frozen"] is False and table(final) == table(jury)
    alltime = await ok(api, "GET", "/leaderboards/communities", alice)
    mine_rows = [e for e in alltime["items"] if e["id"] in {c["community_id"] for c in jury["communities"]}]
    assert [(e["score"], e["penalty"]) for e in mine_rows] == [(3, 130), (3, 360)]


async def test_a_python_syntax_error_is_a_free_compile_error(api: ApiClient, sandbox_machine: None) -> None:
    """As DOMjudge: the submission is compiled (py_compile) first, so a syntax error costs no penalty."""
    people, contest, clock = await setup_war(api)
    alice = people["alice"]
    broken = await submit(api, clock, contest, alice, "A", 10, "print(int(input()) +\n", "python")
    assert broken["verdict"] == "compile_error"
    solved = await submit(api, clock, contest, alice, "A", 30, A_OK, "python")
    assert solved["verdict"] == "accepted"
    standings = await ok(api, "GET", f"/contests/{contest['id']}/standings", alice)
    assert table(standings)[0] == ("alice", 1, 1, 30)  # 30 minutes, no 20 for the syntax error


@pytest.fixture
async def unlimited_api(aiohttp_client: Any, database_url: str, tmp_path: Path) -> ApiClient:
    """Without the per-user limits on submissions (tests/test_contest_abuse.py tests those): four people
    make 200 submissions at once here, to see the board stay consistent under that load."""
    return await api_with(aiohttp_client, database_url, tmp_path, sandbox_per_user=1000, contest_submit_rate_count=1000)


async def test_200_simultaneous_submissions_leave_a_consistent_board(
    unlimited_api: ApiClient, sandbox_machine: None
) -> None:
    api = unlimited_api
    people, contest, clock = await setup_war(api)
    clock.now = at(15)
    contests = api.app[CONTESTS]
    pushed: list[float] = []
    emit = contests.transport.emit

    async def timed_emit(event: str, data: Any, *, to: str, skip_sid: str | None = None) -> None:
        if to == f"contest:{contest['id']}":
            pushed.append(time.monotonic())
        await emit(event, data, to=to, skip_sid=skip_sid)

    contests.transport.emit = timed_emit
    contestants = [people[n] for n in ("alice", "bob", "carol", "dave")]
    a, b = contest["problems"][0]["id"], contest["problems"][1]["id"]
    jobs = []
    for i in range(200):
        who = contestants[i % 4]
        problem, source = (a, A_OK if i % 3 == 0 else A_WRONG) if i % 2 == 0 else (b, B_OK if i % 5 == 0 else B_WRONG)
        path = f"/contests/{contest['id']}/problems/{problem}/submissions"
        jobs.append(api.call("POST", path, who, json={"language": "python", "source": source}))
    answers = await asyncio.gather(*jobs)
    assert all(s in (200, 202) for s, _ in answers), answers  # 200 when judged before the answer left
    await api.app[CONTESTS].wait_judged()
    owner = people["owner"]
    subs = await ok(api, "GET", f"/contests/{contest['id']}/submissions?everyone=true", owner)
    assert len(subs["items"]) == 200 and all(s["verdict"] is not None for s in subs["items"])
    # The board, the standings and the stored verdicts agree.
    jury = await ok(api, "GET", f"/contests/{contest['id']}/standings?view=jury", owner)
    solved: dict[str, set[str]] = {}
    for s in subs["items"]:
        if s["verdict"] == "accepted":
            solved.setdefault(s["user_id"], set()).add(s["problem_id"])
    assert {p["user_id"]: p["solved"] for p in jury["people"] if p["solved"]} == {u: len(p) for u, p in solved.items()}
    board = await ok(api, "GET", f"/contests/{contest['id']}/board?limit=10", owner)
    assert [(e["id"], e["rank"], e["score"], e["penalty"]) for e in board["items"]] == sorted(
        [(p["user_id"], p["rank"], p["score"], p["penalty"]) for p in jury["people"]],
        key=lambda r: (-r[2], r[3], [-ord(ch) for ch in r[0]]),
    )
    # Coalesced: far fewer pushes than verdicts, never two of a contest within 500 ms.
    assert 1 <= len(pushed) < 200
    # (The interval rules when a push may go; handing it to the transport after that takes a few µs more or less.)
    gaps = [later - earlier for earlier, later in itertools.pairwise(pushed)]
    assert all(gap >= 0.499 for gap in gaps), gaps


async def test_subscribers_get_coalesced_leaderboard_updates(api: ApiClient, sandbox_machine: None) -> None:
    people, contest, clock = await setup_war(api)
    clock.now = at(5)
    sio = socketio.AsyncClient(reconnection=False)
    updates: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sio.on("leaderboard:update", updates.put)
    await sio.connect(server_url(api), auth={"token": people["carol"].token}, transports=["websocket"])
    try:
        ack = await sio.call("contest:subscribe", {"contest_id": contest["id"]}, timeout=10)
        assert ack["ok"] is True and ack["standings"]["people"] == []
        denied = await sio.call("contest:subscribe", {"contest_id": contest["id"], "view": "jury"}, timeout=10)
        assert denied["ok"] is False and denied["error"]["code"] == "forbidden"
        await submit(api, clock, contest, people["alice"], "A", 5, A_OK, "python")
        while True:  # the pending attempt may come first, then the accepted one
            update = await asyncio.wait_for(updates.get(), 10)
            if update["people"] and update["people"][0]["solved"] == 1:
                break
        assert update["contest_id"] == contest["id"] and update["people"][0]["display_name"] == "alice"
        assert (await sio.call("contest:unsubscribe", {"contest_id": contest["id"]}, timeout=10))["ok"] is True
    finally:
        await sio.disconnect()


async def test_the_contest_list_shows_the_running_contests_first_and_mine_on_request(api: ApiClient) -> None:
    """A learner opens the list for what is on now: a running contest comes before ones that start later;
    ``mine=true`` keeps those of the caller's communities.
    (Ten years after the other tests' contests, so that the shared database's others do not crowd the page.)"""
    base = START + timedelta(days=3650)
    owner = await api.user("instructor", name="org")
    x = await community_with(api, owner, "X", [])

    def body(title: str, starts: datetime) -> dict[str, Any]:
        b = contest_body([x], organizer=x, title=title)
        b.pop("freeze_at", None)
        return {**b, "starts_at": starts.isoformat(), "ends_at": (starts + timedelta(hours=5)).isoformat()}

    running = await ok(api, "POST", "/contests", owner, json=body("Now", base))
    upcoming = await ok(api, "POST", "/contests", owner, json=body("Later", base + timedelta(days=30)))
    api.app[CONTESTS].clock = clock = Clock()
    clock.now = base + timedelta(minutes=10)
    ids = [c["id"] for c in (await ok(api, "GET", "/contests?limit=200", owner))["items"]]
    assert ids.index(running["id"]) < ids.index(upcoming["id"])
    clock.now = base + timedelta(days=1)  # the first one has ended: the latest start first again
    ids = [c["id"] for c in (await ok(api, "GET", "/contests?limit=200", owner))["items"]]
    assert ids.index(upcoming["id"]) < ids.index(running["id"])
    # "Your contests": those one of the caller's communities takes part in, for its members only.
    stranger = await api.user(name="stranger")
    mine = [c["id"] for c in (await ok(api, "GET", "/contests?mine=true&limit=200", owner))["items"]]
    assert running["id"] in mine and upcoming["id"] in mine
    theirs = [c["id"] for c in (await ok(api, "GET", "/contests?mine=true&limit=200", stranger))["items"]]
    assert running["id"] not in theirs and upcoming["id"] not in theirs
