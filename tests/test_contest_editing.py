"""Contest managers fix a problem (issue 13): a wrong expected output is corrected, every submission of the
problem is judged again and the standings and live pushes follow; only managers may, within the limits of
creating a problem; rejudges are rate-limited per contest and take one turn in the fair judging gate; a
finalised contest is not rejudged (its results and prizes are settled)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core_api.context import CORE
from leaderboards import store
from leaderboards.handlers import CONTESTS
from tests.contest_helpers import A_OK, A_WRONG, PROBLEMS, api_with, at, community_with, contest_body, ok
from tests.test_contests import setup_war, submit, table

WRONG_TESTS = [{"stdin": "1 2", "expected_output": "4"}]  # 1 + 2 is not 4: every correct answer fails
RIGHT_TESTS = PROBLEMS[0]["tests"]


async def test_a_manager_fixes_the_tests_and_every_submission_is_judged_again(api: Any, sandbox_machine: None) -> None:
    people, contest, clock = await setup_war(api)
    alice, carol, owner = people["alice"], people["carol"], people["owner"]
    cid, a_id = contest["id"], contest["problems"][0]["id"]
    path = f"/contests/{cid}/problems/{a_id}"
    # Before the start the organizer sets tests with a wrong expected output.
    edited = await ok(api, "PATCH", path, owner, json={"tests": WRONG_TESTS})
    assert (edited["rejudged"], edited["problem"]["test_count"]) == (0, 1)
    assert (await submit(api, clock, contest, carol, "A", 20, A_OK, "python"))["verdict"] == "wrong_answer"
    assert (await submit(api, clock, contest, alice, "A", 30, A_WRONG, "python"))["verdict"] == "wrong_answer"
    # Contestants (even of the organizing community) may not edit; nothing changes.
    for who in (alice, carol):
        status, body = await api.call("PATCH", path, who, json={"tests": RIGHT_TESTS})
        assert (status, body["error"]["code"]) == (403, "forbidden")
    pushed: list[dict[str, Any]] = []
    emit = api.app[CONTESTS].transport.emit

    async def recording(event: str, data: Any, *, to: str, skip_sid: str | None = None) -> None:
        if to == f"contest:{cid}":
            pushed.append(data)
        await emit(event, data, to=to, skip_sid=skip_sid)

    api.app[CONTESTS].transport.emit = recording
    clock.now = at(40)
    fixed = await ok(api, "PATCH", path, owner, json={"tests": RIGHT_TESTS, "statement": "Print a + b, fixed."})
    assert fixed["rejudged"] == 2 and fixed["problem"]["statement"] == "Print a + b, fixed."
    await api.app[CONTESTS].wait_judged()
    jury = await ok(api, "GET", f"/contests/{cid}/standings?view=jury", owner)
    assert table(jury) == [("carol", 1, 1, 20), ("alice", 2, 0, 0)]
    assert pushed and table(pushed[-1]) == [("carol", 1, 1, 20), ("alice", 2, 0, 0)]  # the live push followed
    mine = await ok(api, "GET", f"/contests/{cid}/submissions", carol)
    assert [s["verdict"] for s in mine["items"]] == ["accepted"]
    rows = await api.app[CORE].pool.fetch(
        "SELECT action, details FROM audit_log WHERE target_id = $1 ORDER BY created_at", a_id
    )
    # The first edit found nothing to judge again (no submissions yet): no rejudge, none counted.
    assert [r["action"] for r in rows] == ["contest.problem_edit", "contest.problem_edit", "contest.rejudge"]
    assert "1 + 2" not in str([r["details"] for r in rows])  # hidden tests are not copied into the log
    # A verdict judged with the old tests that arrives late is not stored over the new one.
    sub = uuid.UUID(mine["items"][0]["id"])
    assert await store.record_verdict(api.app[CORE].pool, sub, "wrong_answer", 0, 1, rev=0) is None
    assert (await ok(api, "GET", f"/contests/{cid}/submissions", carol))["items"][0]["verdict"] == "accepted"


async def test_edits_keep_the_limits_of_creating_a_problem(api: Any) -> None:
    people, contest, _ = await setup_war(api)
    owner = people["owner"]
    path = f"/contests/{contest['id']}/problems/{contest['problems'][0]['id']}"
    most = api.app[CORE].settings.sandbox_cpu_ms
    bodies: list[dict[str, Any]] = [
        {},
        {"statement": "x" * 20_001},
        {"title": ""},
        {"tests": []},
        {"tests": [{"stdin": "", "expected_output": "1"}] * 51},
        {"cpu_ms": 5},
        {"cpu_ms": most + 1},
        {"memory_kb": api.app[CORE].settings.sandbox_memory_kb + 1024},
        {"points": -1},
        {"tests": "not a list"},
    ]
    for body in bodies:
        status, answer = await api.call("PATCH", path, owner, json=body)
        assert (status, answer["error"]["code"]) == (400, "invalid_input"), (body, answer)
    status, answer = await api.call("PATCH", path, owner, json={"cpu_ms": most + 1})
    assert answer["error"]["message"] == f"cpu_ms may be at most {most} on this server (asked for {most + 1})"
    status, answer = await api.call("PATCH", f"/contests/{contest['id']}/problems/{uuid.uuid4()}", owner,
                                    json={"title": "T"})  # fmt: skip
    assert (status, answer["error"]["code"]) == (404, "not_found")
    unchanged = await ok(api, "GET", f"/contests/{contest['id']}", owner)
    assert unchanged["problems"][0] == contest["problems"][0]


async def test_rejudges_are_rate_limited_per_contest_and_take_one_turn(
    aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None
) -> None:
    api = await api_with(aiohttp_client, database_url, tmp_path, contest_rejudge_rate_count=2)
    people, contest, clock = await setup_war(api)
    owner, cid, a_id = people["owner"], contest["id"], contest["problems"][0]["id"]
    for who, minute in ((people["alice"], 10), (people["bob"], 11), (people["carol"], 12)):
        await submit(api, clock, contest, who, "A", minute, A_OK, "python")
    contests = api.app[CONTESTS]
    turns: list[str] = []
    place = contests._gate.place

    @contextlib.asynccontextmanager
    async def recording(key: str) -> AsyncIterator[None]:
        turns.append(key)
        async with place(key):
            yield

    contests._gate.place = recording
    rejudge = f"/contests/{cid}/problems/{a_id}/rejudge"
    assert (await ok(api, "POST", rejudge, owner))["submissions"] == 3
    await contests.wait_judged()
    assert turns == [f"rejudge:{cid}"] * 3  # one turn for the whole rejudge, whoever wrote the programs
    await ok(api, "PATCH", f"/contests/{cid}/problems/{a_id}", owner, json={"cpu_ms": 1500})  # the second
    await contests.wait_judged()
    status, answer = await api.call("POST", rejudge, owner)
    assert (status, answer["error"]["code"]) == (429, "rate_limited") and answer["error"]["details"]["retry_after_s"]
    # An edit that would need a rejudge is refused whole; one that needs none goes through.
    status, answer = await api.call("PATCH", f"/contests/{cid}/problems/{a_id}", owner, json={"cpu_ms": 1200})
    assert status == 429
    assert (await ok(api, "GET", f"/contests/{cid}", owner))["problems"][0]["cpu_ms"] == 1500
    assert (await ok(api, "PATCH", f"/contests/{cid}/problems/{a_id}", owner, json={"title": "Sum!"}))["rejudged"] == 0
    # Another contest has its own count.
    others, other, other_clock = await setup_war(api)
    await submit(api, other_clock, other, others["alice"], "A", 10, A_OK, "python")
    path = f"/contests/{other['id']}/problems/{other['problems'][0]['id']}/rejudge"
    assert (await ok(api, "POST", path, others["owner"]))["submissions"] == 1
    await contests.wait_judged()


async def test_a_finalised_contest_is_not_rejudged(api: Any, sandbox_machine: None) -> None:
    people, contest, clock = await setup_war(api)
    owner, cid, a_id = people["owner"], contest["id"], contest["problems"][0]["id"]
    await submit(api, clock, contest, people["carol"], "A", 20, A_OK, "python")
    clock.now = at(301)
    await ok(api, "POST", f"/contests/{cid}/finalise", owner)
    before = await ok(api, "GET", f"/contests/{cid}/standings", owner)
    status, answer = await api.call("POST", f"/contests/{cid}/problems/{a_id}/rejudge", owner)
    assert (status, answer["error"]["code"]) == (409, "conflict")
    assert "finalised" in answer["error"]["message"] and "not judged again" in answer["error"]["message"]
    for change in ({"tests": WRONG_TESTS}, {"cpu_ms": 1500}, {"points": 9}):
        status, answer = await api.call("PATCH", f"/contests/{cid}/problems/{a_id}", owner, json=change)
        assert (status, answer["error"]["code"]) == (409, "conflict"), change
    # A typo in the statement may still be fixed; the results stay as recorded.
    fixed = await ok(api, "PATCH", f"/contests/{cid}/problems/{a_id}", owner, json={"statement": "Print a+b."})
    assert fixed["rejudged"] == 0
    assert await ok(api, "GET", f"/contests/{cid}/standings", owner) == before


async def test_a_submission_made_while_the_tests_change_is_judged_with_the_new_ones(
    api: Any, sandbox_machine: None
) -> None:
    people, contest, clock = await setup_war(api)
    owner, cid, a_id = people["owner"], contest["id"], contest["problems"][0]["id"]
    await ok(api, "PATCH", f"/contests/{cid}/problems/{a_id}", owner, json={"tests": WRONG_TESTS})
    clock.now = at(10)
    pool = api.app[CORE].pool
    # An edit is under way, as PATCH makes it: the contest's row locked, the problem's holding the right
    # tests, not yet committed.
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT 1 FROM contests WHERE id = $1 FOR NO KEY UPDATE", uuid.UUID(cid))
        await conn.execute("UPDATE contest_problems SET tests = $2 WHERE id = $1", uuid.UUID(a_id), RIGHT_TESTS)
        path = f"/contests/{cid}/problems/{a_id}/submissions?wait=true"
        sending = asyncio.create_task(
            api.call("POST", path, people["carol"], json={"language": "python", "source": A_OK})
        )
        async with asyncio.timeout(30):
            while not await pool.fetchval(  # the submission waits for the edit
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                " AND query LIKE '%FROM contest_problems WHERE id = $1 FOR SHARE%'"
            ):
                assert not sending.done(), sending.result()  # it did not wait: judged with the old tests
                await asyncio.sleep(0.01)
        await tx.commit()
    status, sub = await sending
    assert (status, sub["verdict"]) == (200, "accepted"), sub  # judged with the tests the edit stored


NAPPER = "import time\ntime.sleep(1)\nprint(3)\n"
TRIVIAL = {"title": "Three", "tests": [{"stdin": "", "expected_output": "3"}], "cpu_ms": 1000}


async def test_a_rejudge_does_not_hold_up_another_contests_judging(
    aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None
) -> None:
    """One sandbox worker; a rejudge of four authors' slow programs, then a submission to another contest:
    it is judged after the first of them, not after all four (the rejudge takes one turn, not four)."""
    api = await api_with(aiohttp_client, database_url, tmp_path, sandbox_workers=1)
    organizer, other = await api.user(name="organizer"), await api.user(name="other")
    authors = [await api.user(name=f"author{i}") for i in range(4)]
    busy = await community_with(api, organizer, "Busy", authors)
    quiet = await community_with(api, other, "Quiet", [])
    now = datetime.now(UTC)
    window = {
        "starts_at": (now - timedelta(minutes=1)).isoformat(),
        "ends_at": (now + timedelta(hours=1)).isoformat(),
        "freeze_at": None,
    }
    rejudged = await ok(
        api, "POST", "/contests", organizer, json={**contest_body([busy], organizer=busy, problems=[TRIVIAL]), **window}
    )
    elsewhere = await ok(
        api, "POST", "/contests", other, json={**contest_body([quiet], organizer=quiet, problems=[TRIVIAL]), **window}
    )
    problem = rejudged["problems"][0]["id"]
    for author in authors:  # already judged once
        await api.app[CORE].pool.execute(
            "INSERT INTO contest_submissions (id, contest_id, problem_id, user_id, community_id, language, source,"
            " submitted_at, verdict, passed, total, judged_at) VALUES ($1, $2, $3, $4, $5, 'python', $6, now(),"
            " 'accepted', 1, 1, now())",
            uuid.uuid4(), uuid.UUID(rejudged["id"]), uuid.UUID(problem), uuid.UUID(author.id), uuid.UUID(busy),
            NAPPER,
        )  # fmt: skip
    assert (await ok(api, "POST", f"/contests/{rejudged['id']}/problems/{problem}/rejudge", organizer))[
        "submissions"
    ] == 4
    path = f"/contests/{elsewhere['id']}/problems/{elsewhere['problems'][0]['id']}/submissions?wait=true"
    status, judged = await api.call("POST", path, other, json={"language": "python", "source": "print(3)\n"})
    assert (status, judged["verdict"]) == (200, "accepted"), judged
    everyone = await ok(api, "GET", f"/contests/{rejudged['id']}/submissions?everyone=true", organizer)
    assert len([s for s in everyone["items"] if s["verdict"] is None]) >= 2, everyone  # judged second, not fifth
    await api.app[CONTESTS].wait_judged()


async def test_new_points_move_the_standings_at_once(api: Any) -> None:
    organizer, solver = await api.user(name="organizer"), await api.user(name="solver")
    community = await community_with(api, organizer, "Points", [solver])
    body = contest_body([community], organizer=community, scoring="points", freeze_at=None)
    contest = await ok(api, "POST", "/contests", organizer, json=body)
    cid, a_id = contest["id"], contest["problems"][0]["id"]
    await api.app[CORE].pool.execute(
        "INSERT INTO contest_submissions (id, contest_id, problem_id, user_id, community_id, language, source,"
        " submitted_at, verdict, passed, total, judged_at) VALUES ($1, $2, $3, $4, $5, 'python', 'x', $6,"
        " 'accepted', 2, 2, now())",
        uuid.uuid4(), uuid.UUID(cid), uuid.UUID(a_id), uuid.UUID(solver.id), uuid.UUID(community), at(5),
    )  # fmt: skip
    api.app[CONTESTS].clock = lambda: at(10)
    before = await ok(api, "GET", f"/contests/{cid}/standings", solver)
    assert [(p["score"], p["community_name"]) for p in before["people"]] == [(3, f"Points {organizer.id[:8]}")]
    edited = await ok(api, "PATCH", f"/contests/{cid}/problems/{a_id}", organizer, json={"points": 7})
    assert (edited["rejudged"], edited["problem"]["points"]) == (0, 7)
    after = await ok(api, "GET", f"/contests/{cid}/standings", solver)
    assert [p["score"] for p in after["people"]] == [7] and [c["score"] for c in after["communities"]] == [7]
