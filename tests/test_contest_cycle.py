"""Group wars around the contest: admin rejudge and disqualify (audited), the weekly cycle opening,
finalising and paying wars exactly once, and coins spent on a course enrollment without going negative."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from core_api.context import CORE
from leaderboards.cycle import CYCLE, next_start
from leaderboards.handlers import CONTESTS
from tests.conftest import Actor, ApiClient
from tests.contest_helpers import A_OK, A_WRONG, PROBLEMS, START, at, community_with, give_coins, ok
from tests.test_contests import setup_war, submit, table

VIDEO = {"title": "L", "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 60.0}


async def audit_actions(api: ApiClient, target: str) -> list[str]:
    rows = await api.app[CORE].pool.fetch(
        "SELECT action FROM audit_log WHERE target_id = $1 ORDER BY created_at", target
    )
    return [r["action"] for r in rows]


async def test_rejudge_and_disqualify_move_the_standings_and_are_audited(api: ApiClient, sandbox_machine: None) -> None:
    people, contest, clock = await setup_war(api)
    alice, carol, owner = people["alice"], people["carol"], people["owner"]
    cid, a_id = contest["id"], contest["problems"][0]["id"]
    await submit(api, clock, contest, alice, "A", 10, A_WRONG, "python")
    good = await submit(api, clock, contest, carol, "A", 20, A_OK, "python")
    before = await ok(api, "GET", f"/contests/{cid}/standings?view=jury", owner)
    assert table(before) == [("carol", 1, 1, 20), ("alice", 2, 0, 0)]
    # The problem's tests were wrong: every answer is "0". After a rejudge alice solved it at minute 10.
    await api.app[CORE].pool.execute(
        "UPDATE contest_problems SET tests = $2 WHERE id = $1", uuid.UUID(a_id),
        [{"stdin": "1 2", "expected_output": "0"}],
    )  # fmt: skip
    status, _ = await api.call("POST", f"/contests/{cid}/problems/{a_id}/rejudge", alice)
    assert status == 403
    answer = await ok(api, "POST", f"/contests/{cid}/problems/{a_id}/rejudge", owner)
    assert answer["submissions"] == 2
    await api.app[CONTESTS].wait_judged()
    after = await ok(api, "GET", f"/contests/{cid}/standings?view=jury", owner)
    assert table(after) == [("alice", 1, 1, 10), ("carol", 2, 0, 0)]
    assert await audit_actions(api, a_id) == ["contest.rejudge"]
    # Disqualifying alice's accepted submission takes it out of every standing.
    subs = await ok(api, "GET", f"/contests/{cid}/submissions", alice)
    path = f"/contests/{cid}/submissions/{subs['items'][0]['id']}/disqualify"
    status, _ = await api.call("POST", path, carol, json={"reason": "copied"})
    assert status == 403
    out = await ok(api, "POST", path, owner, json={"reason": "copied"})
    assert out["disqualified"] is True
    final = await ok(api, "GET", f"/contests/{cid}/standings?view=jury", owner)
    assert [(p["display_name"], p["solved"]) for p in final["people"]] == [("carol", 0)]
    assert await audit_actions(api, subs["items"][0]["id"]) == ["contest.disqualify"]
    assert good["verdict"] == "accepted"


def test_the_next_war_is_the_first_weekly_occurrence_that_has_not_ended() -> None:
    saturday_10 = START  # 2026-01-03 is a Saturday
    assert next_start(5, 600, 120, START - timedelta(days=1)) == saturday_10
    assert next_start(5, 600, 120, at(119)) == saturday_10  # still running
    assert next_start(5, 600, 120, at(120)) == saturday_10 + timedelta(days=7)
    assert next_start(0, 0, 60, START) == START - timedelta(hours=10) + timedelta(days=2)


async def wallet_of(api: ApiClient, who: Actor) -> int:
    return int((await ok(api, "GET", "/me/wallet", who))["balance"])


async def test_the_weekly_cycle_opens_finalises_and_pays_each_war_once(api: ApiClient, sandbox_machine: None) -> None:
    alice, bob, carol = [await api.user(name=n) for n in ("alice", "bob", "carol")]
    owner = await api.user("instructor", name="organizer")
    x = await community_with(api, owner, "X", [alice, bob])
    y = await community_with(api, owner, "Y", [carol])
    body: dict[str, Any] = {
        "title": "Saturday war", "organizer_id": x, "communities": [x, y], "problems": PROBLEMS,
        "weekday": 5, "start_minute": 600, "duration_minutes": 120, "freeze_minutes": 30, "prizes": [100, 40],
    }  # fmt: skip
    status, _ = await api.call("POST", "/contest-templates", alice, json=body)
    assert status == 403
    template = await ok(api, "POST", "/contest-templates", owner, json=body)
    cycle, contests = api.app[CYCLE], api.app[CONTESTS]
    # Its prizes wait for a platform admin: no war opens until one approves them; X's budget pays them.
    assert template["approval"]["state"] == "pending"
    await cycle.tick(START - timedelta(days=1))
    listed = await ok(api, "GET", "/contests?limit=200", owner)
    assert [c for c in listed["items"] if c["title"].startswith("Saturday war")] == []
    admin = await api.user("admin")
    await ok(api, "POST", f"/contest-templates/{template['id']}/approval", admin, json={"approve": True})
    budget = await ok(api, "PUT", f"/communities/{x}/prize-budget", admin, json={"coins": 1000})
    # Other tests' templates may tick too; only this template's wars are looked at.
    assert (await cycle.tick(START - timedelta(days=1)))["opened"] >= 1
    await cycle.tick(START - timedelta(days=1))
    listed = await ok(api, "GET", "/contests?limit=200", owner)
    wars = [c for c in listed["items"] if c["title"].startswith("Saturday war")]
    assert [(w["starts_at"], w["freeze_at"]) for w in wars] == [("2026-01-03T10:00:00Z", "2026-01-03T11:30:00Z")]
    war = await ok(api, "GET", f"/contests/{wars[0]['id']}", owner)
    clock_now = at(30)
    contests.clock = lambda: clock_now
    for who, source in ((alice, A_OK), (carol, A_WRONG)):
        path = f"/contests/{war['id']}/problems/{war['problems'][0]['id']}/submissions?wait=true"
        status, sub = await api.call("POST", path, who, json={"language": "python", "source": source})
        assert status == 200, sub
    done = await cycle.tick(at(121))
    assert done["finalised"] >= 1  # and paid in the same transaction
    again = await cycle.tick(at(121))
    assert again == {"opened": 0, "finalised": 0, "paid": 0}
    assert await contests.finalise_contest(uuid.UUID(war["id"]), None) is False
    assert await cycle.award(uuid.UUID(war["id"])) == 0
    # X ranks first: alice solved, so she gets 100; bob solved nothing; Y's carol solved nothing either.
    assert [await wallet_of(api, who) for who in (alice, bob, carol)] == [100, 0, 0]
    # The credit names its source, and the budget paid exactly that.
    entry = (await ok(api, "GET", "/me/wallet", alice))["entries"][0]
    assert entry["source"] == {"kind": "prize", "contest_id": war["id"], "budget_id": budget["id"],
                               "approved_by": admin.id}  # fmt: skip
    assert (await ok(api, "GET", f"/communities/{x}/prize-budget", owner))["balance"] == 900
    told = (await ok(api, "GET", "/me/notifications", alice))["items"]
    awards = [n for n in told if n["kind"] == "contest_award"]
    assert [(n["payload"]["rank"], n["payload"]["coins"]) for n in awards] == [(1, 100)]  # once, despite two ticks
    nexts = [
        c for c in (await ok(api, "GET", "/contests?limit=200", owner))["items"] if c["title"].startswith("Saturday")
    ]
    assert sorted(c["starts_at"] for c in nexts) == ["2026-01-03T10:00:00Z", "2026-01-10T10:00:00Z"]


async def test_coins_buy_an_enrollment_and_never_go_negative(api: ApiClient) -> None:
    teacher, rich, poor = await api.user("instructor"), await api.user(), await api.user()
    courses = []
    for title in ("Priced", "Also priced"):
        course = await ok(api, "POST", "/courses", teacher, json={"title": title})
        await ok(api, "POST", f"/courses/{course['id']}/lectures", teacher, json=VIDEO)
        await ok(api, "POST", f"/courses/{course['id']}/publish", teacher)
        status, _ = await api.call("PUT", f"/courses/{course['id']}/price", rich, json={"coins": 60})
        assert status == 403
        await ok(api, "PUT", f"/courses/{course['id']}/price", teacher, json={"coins": 60})
        courses.append(course["id"])
    pool = api.app[CORE].pool
    await give_coins(pool, rich, 100)
    status, body = await api.call("POST", f"/courses/{courses[0]}/enroll", rich)
    assert (status, body["error"]["code"]) == (409, "conflict")
    # Two purchases at once with coins for one: exactly one goes through.
    results = await asyncio.gather(*(api.call("POST", f"/courses/{c}/buy", rich) for c in courses))
    assert sorted(s for s, _ in results) == [201, 409]
    assert await wallet_of(api, rich) == 40
    mine = await ok(api, "GET", "/me/enrollments", rich)
    assert len(mine["items"]) == 1
    status, body = await api.call("POST", f"/courses/{courses[1]}/buy", poor)
    assert (status, body["error"]["code"]) == (409, "conflict") and await wallet_of(api, poor) == 0
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("UPDATE wallet_entries SET amount = 1000 WHERE user_id = $1", uuid.UUID(rich.id))
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("DELETE FROM wallet_entries WHERE user_id = $1", uuid.UUID(rich.id))
    entries = (await ok(api, "GET", "/me/wallet", rich))["entries"]
    assert [e["amount"] for e in entries] == [-60, 100]


async def test_a_submission_left_unjudged_by_a_stopped_node_is_judged_by_the_cycle(
    api: ApiClient, sandbox_machine: None
) -> None:
    people, contest, clock = await setup_war(api)
    alice = people["alice"]
    orphan = uuid.uuid4()
    pool = api.app[CORE].pool
    community = await pool.fetchval(
        "SELECT community_id FROM community_members WHERE user_id = $1", uuid.UUID(alice.id)
    )
    await pool.execute(
        "INSERT INTO contest_submissions (id, contest_id, problem_id, user_id, community_id, language, source,"
        " submitted_at) VALUES ($1, $2, $3, $4, $5, 'python', $6, $7)",
        orphan, uuid.UUID(contest["id"]), uuid.UUID(contest["problems"][0]["id"]), uuid.UUID(alice.id), community,
        A_OK, at(10),
    )  # fmt: skip
    await api.app[CYCLE].tick(at(12))  # not stale yet: another node may still be judging it
    assert await pool.fetchval("SELECT verdict FROM contest_submissions WHERE id = $1", orphan) is None
    await api.app[CYCLE].tick(at(16))
    await api.app[CONTESTS].wait_judged()
    assert await pool.fetchval("SELECT verdict FROM contest_submissions WHERE id = $1", orphan) == "accepted"
    clock.now = at(20)
    standings = await ok(api, "GET", f"/contests/{contest['id']}/standings", alice)
    assert table(standings)[0] == ("alice", 1, 1, 10)
