"""Group wars as an attacker plays them (issue 12): minting coins with one's own contest, breaking
``GET /contests`` with an out-of-range time, starving other contests' judging with a flood of submissions,
learning private communities' names by enlisting them, and problems whose limits the judge refuses.

Each test plays the attack through the REST API of a real app (and the real sandbox where judging is
part of it) and checks what the attacker, and everyone else, then sees.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core_api.context import CORE
from core_api.db import bundled_migrations, migrate
from leaderboards.cycle import CYCLE
from leaderboards.handlers import CONTESTS
from tests.conftest import Actor, ApiClient, _with_database
from tests.contest_helpers import PROBLEMS, Clock, api_with, at, community_with, contest_body, ok

TRIVIAL = {"title": "Three", "tests": [{"stdin": "", "expected_output": "3"}], "cpu_ms": 1000}
PRINT_3 = "print(3)\n"


async def wallet_of(api: ApiClient, who: Actor) -> int:
    return int((await ok(api, "GET", "/me/wallet", who))["balance"])


async def notifications(api: ApiClient, who: Actor, kind: str) -> list[dict[str, Any]]:
    items = (await ok(api, "GET", "/me/notifications?limit=200", who))["items"]
    return [n["payload"] for n in items if n["kind"] == kind]


async def audit_actions(api: ApiClient, target: str) -> list[str]:
    rows = await api.app[CORE].pool.fetch(
        "SELECT action FROM audit_log WHERE target_id = $1 ORDER BY created_at", target
    )
    return [r["action"] for r in rows]


def submission_path(contest: dict[str, Any], wait: bool = True) -> str:
    return f"/contests/{contest['id']}/problems/{contest['problems'][0]['id']}/submissions" + (
        "?wait=true" if wait else ""
    )


# --- item 2: coins come from budgets admins set, for prizes admins approved -------------------------------


async def test_a_student_cannot_mint_coins_with_a_contest_of_their_own(api: ApiClient, sandbox_machine: None) -> None:
    minter = await api.user(name="minter")
    community = await ok(api, "POST", "/communities", minter, json={"name": f"Mint {uuid.uuid4().hex[:8]}"})
    body = contest_body([community["id"]], organizer=community["id"], problems=[TRIVIAL], prizes=[1_000_000])
    body["title"] = "Mint"
    contest = await ok(api, "POST", "/contests", minter, json=body)
    clock = Clock(at(1))
    api.app[CONTESTS].clock = clock
    # The attack: solve the trivial problem, let the cycle finalise and pay.
    status, answer = await api.call("POST", submission_path(contest), minter, json={"language": "python",
                                                                                   "source": PRINT_3})  # fmt: skip
    assert (status, answer["error"]["code"]) == (409, "conflict"), answer
    assert "approval" in answer["error"]["message"]
    clock.now = at(301)
    await api.app[CYCLE].tick(at(301))
    assert await wallet_of(api, minter) == 0
    # The organizer sees why: the prizes waited for an admin, and were never paid.
    seen = await ok(api, "GET", f"/contests/{contest['id']}", minter)
    assert seen["prizes"] == [1_000_000]
    assert seen["approval"]["state"] == "pending" and "approval" in seen["approval"]["message"]
    assert seen["payout"]["state"] == "none" and "never approved" in seen["payout"]["message"]
    # Only platform admins approve, or set budgets.
    status, _ = await api.call("POST", f"/contests/{contest['id']}/approval", minter, json={"approve": True})
    assert status == 403
    status, _ = await api.call("PUT", f"/communities/{community['id']}/prize-budget", minter, json={"coins": 10**6})
    assert status == 403


async def test_approved_prizes_are_paid_from_the_budget_and_never_beyond_it(
    api: ApiClient, sandbox_machine: None
) -> None:
    admin = await api.user("admin")
    organizer, alice, bob = await api.user(name="organizer"), await api.user(name="alice"), await api.user(name="bob")
    x = await community_with(api, organizer, "Prized", [alice, bob])
    wars = []
    for title in ("First prized war", "Second prized war"):
        body = contest_body([x], organizer=x, problems=[TRIVIAL], prizes=[300])
        body["title"] = title
        wars.append(await ok(api, "POST", "/contests", organizer, json=body))
    assert [w["approval"]["state"] for w in wars] == ["pending", "pending"]
    pending = await ok(api, "GET", "/contests?approval=pending&limit=200", admin)
    assert {w["id"] for w in wars} <= {c["id"] for c in pending["items"]}
    for war in wars:
        decided = await ok(api, "POST", f"/contests/{war['id']}/approval", admin, json={"approve": True, "note": "ok"})
        assert (decided["state"], decided["decided_by"]) == ("approved", admin.id)
    told = await notifications(api, organizer, "contest_approval")
    assert sorted(n["contest_id"] for n in told) == sorted(w["id"] for w in wars)
    # Alice wins the first war, Bob the second: each is owed 300 coins, and X's budget holds 500.
    api.app[CONTESTS].clock = Clock(at(10))
    for war, who in zip(wars, (alice, bob), strict=True):
        status, sub = await api.call("POST", submission_path(war), who, json={"language": "python", "source": PRINT_3})
        assert (status, sub["verdict"]) == (200, "accepted"), sub
    budget = await ok(api, "PUT", f"/communities/{x}/prize-budget", admin, json={"coins": 500, "note": "season"})
    assert budget["balance"] == 500 and budget["entries"][0]["actor_id"] == admin.id
    contests, cycle = api.app[CONTESTS], api.app[CYCLE]
    # Both finalised (and so paid) at once from one budget: exactly one fits.
    finalised = await asyncio.gather(*(contests.finalise_contest(uuid.UUID(w["id"]), None) for w in wars))
    assert finalised == [True, True]
    paid = [int((await ok(api, "GET", f"/contests/{w['id']}", organizer))["payout"]["state"] == "paid") for w in wars]
    assert sorted(paid) == [0, 1]
    assert [await cycle.award(uuid.UUID(w["id"])) for w in wars] == [0, 0]  # nothing more to pay yet
    assert sorted([await wallet_of(api, alice), await wallet_of(api, bob)]) == [0, 300]
    assert (await ok(api, "GET", f"/communities/{x}/prize-budget", organizer))["balance"] == 200
    blocked = next(w for w, p in zip(wars, paid, strict=True) if p == 0)
    shown = await ok(api, "GET", f"/contests/{blocked['id']}", organizer)
    assert shown["payout"]["state"] == "blocked" and "300" in shown["payout"]["message"]
    assert [n["contest_id"] for n in await notifications(api, organizer, "contest_award_blocked")] == [blocked["id"]]
    # The blocked war gets a budget of its own, which comes before the community's: paid on the next pass.
    own = await ok(api, "PUT", f"/contests/{blocked['id']}/prize-budget", admin, json={"coins": 300})
    await cycle.tick(at(400))
    assert [await wallet_of(api, alice), await wallet_of(api, bob)] == [300, 300]
    assert (await ok(api, "GET", f"/contests/{blocked['id']}/prize-budget", admin))["balance"] == 0
    assert (await ok(api, "GET", f"/communities/{x}/prize-budget", admin))["balance"] == 200
    winner = alice if blocked is wars[0] else bob
    entry = (await ok(api, "GET", "/me/wallet", winner))["entries"][0]
    assert entry["source"] == {"kind": "prize", "contest_id": blocked["id"], "budget_id": own["id"],
                               "approved_by": admin.id}  # fmt: skip
    assert (await ok(api, "GET", f"/contests/{blocked['id']}", winner))["payout"]["state"] == "paid"
    assert await audit_actions(api, blocked["id"]) == ["contest.create", "contest.approve", "contest.finalise",
                                                       "contest.award"]  # fmt: skip
    # The ledger itself refuses a credit that names no source, and a prize that names no approver.
    pool = api.app[CORE].pool
    for source in ("NULL", "'prize'"):
        with pytest.raises(asyncpg.CheckViolationError):
            await pool.execute(
                f"INSERT INTO wallet_entries (id, user_id, amount, reason, ref, source) VALUES ($1, $2, 5, 'x', $3,"
                f" {source})",
                uuid.uuid4(), uuid.UUID(alice.id), f"forged:{uuid.uuid4()}",
            )  # fmt: skip


# --- item 5: times out of range are refused at the edge -------------------------------------------------


async def test_out_of_range_times_are_refused_and_contests_stay_listable(api: ApiClient) -> None:
    organizer = await api.user()
    community = await ok(api, "POST", "/communities", organizer, json={"name": f"Time {uuid.uuid4().hex[:8]}"})
    good = contest_body([community["id"]], organizer=community["id"])
    bad_times: list[dict[str, Any]] = [
        {"ends_at": "9999-12-31T23:59:59.999999Z", "freeze_at": None},  # asyncpg's `infinity`
        {"starts_at": "0001-01-01T00:00:00Z"},  # `-infinity`
        {"starts_at": "0001-01-01T00:00:00+14:00"},  # before year 1 in UTC
        {"ends_at": "9999-12-31T23:00:00-14:00", "freeze_at": None},  # after year 9999 in UTC
    ]
    for bad in bad_times:
        status, body = await api.call("POST", "/contests", organizer, json={**good, **bad})
        assert (status, body["error"]["code"]) == (400, "invalid_input"), (bad, body)
        assert "between 1970-01-01T00:00:00Z and 9999-01-01T00:00:00Z" in json.dumps(body), body
    status, listed = await api.call("GET", "/contests?limit=200", organizer)
    assert status == 200, listed
    # Every timestamp input shares the rule: an assignment's due time, a page cursor's time.
    teacher = await api.user("instructor")
    course = await ok(api, "POST", "/courses", teacher, json={"title": "Times"})
    status, body = await api.call(
        "POST", f"/courses/{course['id']}/assignments", teacher,
        json={"title": "never due", "due_at": "9999-12-31T23:59:59.999999Z", "max_points": 1.0},
    )  # fmt: skip
    assert (status, body["error"]["code"]) == (400, "invalid_input"), body
    cursor = base64.urlsafe_b64encode(json.dumps(["0001-01-01T00:00:00+14:00", str(uuid.uuid4())]).encode()).decode()
    status, body = await api.call("GET", "/communities", organizer, params={"cursor": cursor.rstrip("=")})
    assert (status, body["error"]["code"]) == (400, "invalid_input"), body
    # And the database refuses what the edge would: a stored `infinity` can no longer break the list.
    with pytest.raises(asyncpg.CheckViolationError):
        await api.app[CORE].pool.execute(
            "INSERT INTO contests (id, title, created_by, starts_at, ends_at) VALUES ($1, 'x', $2, now(), 'infinity')",
            uuid.uuid4(), uuid.UUID(organizer.id),
        )  # fmt: skip


# --- item 6: one user's flood does not hold up anyone else's judging -------------------------------------

SLEEPER = "import time\ntime.sleep(2)\nprint(3)\n"
NAPPER = "import time\ntime.sleep(1)\nprint(3)\n"


@pytest.fixture
async def one_worker_api(aiohttp_client: Any, database_url: str, tmp_path: Path) -> ApiClient:
    """One sandbox worker: whoever's submission goes next is decided by the queue alone."""
    return await api_with(aiohttp_client, database_url, tmp_path, sandbox_workers=1)


async def running_contest(api: ApiClient, organizer: Actor, name: str) -> dict[str, Any]:
    community = await ok(api, "POST", "/communities", organizer, json={"name": f"{name} {uuid.uuid4().hex[:8]}"})
    now = datetime.now(UTC)
    body = {
        "title": name, "organizer_id": community["id"], "communities": [community["id"]], "problems": [TRIVIAL],
        "starts_at": (now - timedelta(minutes=1)).isoformat(), "ends_at": (now + timedelta(hours=1)).isoformat(),
    }  # fmt: skip
    return dict(await ok(api, "POST", "/contests", organizer, json=body))


async def test_a_flood_of_submissions_does_not_starve_another_contest(
    one_worker_api: ApiClient, sandbox_machine: None
) -> None:
    api = one_worker_api
    flooder, other = await api.user(name="flooder"), await api.user(name="other")
    flooded, quiet = await running_contest(api, flooder, "Flooded"), await running_contest(api, other, "Quiet")
    flood = await asyncio.gather(
        *(api.call("POST", submission_path(flooded, wait=False), flooder, json={"language": "python",
                                                                               "source": SLEEPER})
          for _ in range(12))
    )  # fmt: skip
    # The per-user limit (STUDYHALL_SANDBOX_PER_USER = 4) holds for submissions, and with executions.
    statuses = sorted(status for status, _ in flood)
    assert statuses == [202] * 4 + [429] * 8, flood
    assert next(b for s, b in flood if s == 429)["error"]["code"] == "rate_limited"
    status, body = await api.call("POST", "/executions", flooder, json={"language": "python", "source": PRINT_3})
    assert (status, body["error"]["code"]) == (429, "rate_limited"), body
    # Another user's submission to another contest goes next, not after the whole flood.
    status, judged = await api.call("POST", submission_path(quiet), other, json={"language": "python",
                                                                                "source": PRINT_3})  # fmt: skip
    assert (status, judged["verdict"]) == (200, "accepted"), judged
    mine = (await ok(api, "GET", f"/contests/{flooded['id']}/submissions", flooder))["items"]
    waiting = [s for s in mine if s["verdict"] is None]
    assert len(mine) == 4 and len(waiting) >= 2, mine


async def test_judging_goes_by_turns_between_users_not_first_come_first_served(
    aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None
) -> None:
    # The order alone, without the per-user limit: six sleeping submissions queued first, then another's.
    api = await api_with(aiohttp_client, database_url, tmp_path, sandbox_workers=1, sandbox_per_user=100)
    flooder, other = await api.user(name="flooder"), await api.user(name="other")
    flooded, quiet = await running_contest(api, flooder, "Queued"), await running_contest(api, other, "Waiting")
    body = {"language": "python", "source": NAPPER}
    for _ in range(6):
        status, _ = await api.call("POST", submission_path(flooded, wait=False), flooder, json=body)
        assert status == 202
    status, judged = await api.call("POST", submission_path(quiet), other, json={"language": "python",
                                                                                "source": PRINT_3})  # fmt: skip
    assert (status, judged["verdict"]) == (200, "accepted"), judged
    mine = (await ok(api, "GET", f"/contests/{flooded['id']}/submissions", flooder))["items"]
    assert len([s for s in mine if s["verdict"] is None]) >= 4, mine  # judged second, not seventh


async def test_submissions_are_rate_limited_per_user(
    aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None
) -> None:
    api = await api_with(aiohttp_client, database_url, tmp_path, contest_submit_rate_count=3)
    user = await api.user()
    contest = await running_contest(api, user, "Rated")
    for _ in range(3):
        status, sub = await api.call("POST", submission_path(contest), user, json={"language": "python",
                                                                                  "source": PRINT_3})  # fmt: skip
        assert (status, sub["verdict"]) == (200, "accepted"), sub
    status, body = await api.call("POST", submission_path(contest), user, json={"language": "python",
                                                                               "source": PRINT_3})  # fmt: skip
    assert (status, body["error"]["code"]) == (429, "rate_limited"), body
    assert 1 <= body["error"]["details"]["retry_after_s"] <= 60
    assert len((await ok(api, "GET", f"/contests/{contest['id']}/submissions", user))["items"]) == 3


# --- item 14: a community takes part only if its admins accept; private ones stay unseen ------------------


async def test_enlisting_a_community_needs_its_consent_and_reveals_no_private_one(api: ApiClient) -> None:
    organizer, keeper, member, passer = [await api.user(name=n) for n in ("organizer", "keeper", "member", "passer")]
    api.app[CONTESTS].clock = Clock(at(-10))  # before the start: every answer may still change
    own = await ok(api, "POST", "/communities", organizer, json={"name": f"Home {uuid.uuid4().hex[:8]}"})
    secret_name = f"Secret {uuid.uuid4().hex[:8]}"
    secret = await ok(api, "POST", "/communities", keeper, json={"name": secret_name, "visibility": "private"})
    await ok(api, "POST", f"/communities/{secret['id']}/members", keeper, json={"user_id": member.id})
    public = await ok(api, "POST", "/communities", passer, json={"name": f"Open {uuid.uuid4().hex[:8]}"})
    # The attack: enlist a private community one is not in, and compare with an id that names none.
    answers = []
    for other in (secret["id"], str(uuid.uuid4())):
        body = contest_body([own["id"], other], organizer=own["id"], problems=[TRIVIAL])
        status, contest = await api.call("POST", "/contests", organizer, json=body)
        answers.append((status, contest))
    (s1, with_secret), (s2, with_nothing) = answers
    # Naming it as the organizer answers as for no community at all.
    for other in (secret["id"], str(uuid.uuid4())):
        body = contest_body([own["id"]], organizer=other, problems=[TRIVIAL])
        status, refused = await api.call("POST", "/contests", organizer, json=body)
        assert (status, refused["error"]) == (404, {"code": "not_found", "message": "community not found",
                                                    "details": {}}), refused  # fmt: skip
    assert s1 == s2 == 201, answers
    for contest in (with_secret, with_nothing):
        assert [c["id"] for c in contest["communities"]] == [own["id"]]
        assert [(i["community_id"], i["state"]) for i in contest["invitations"]] == [(own["id"], "accepted")]
    for viewer in (organizer, passer):
        status, seen = await api.call("GET", f"/contests/{with_secret['id']}", viewer)
        assert status == 200 and secret_name not in json.dumps(seen)
    # The private community's owner is asked, sees the invitation and accepts; a plain member may not answer.
    asked = await notifications(api, keeper, "contest_invitation")
    assert [(n["contest_id"], n["community_id"]) for n in asked] == [(with_secret["id"], secret["id"])]
    listed = await ok(api, "GET", f"/communities/{secret['id']}/contest-invitations", keeper)
    assert [(i["contest_id"], i["state"]) for i in listed["items"]] == [(with_secret["id"], "invited")]
    answer_path = f"/contests/{with_secret['id']}/communities/{secret['id']}/answer"
    status, body = await api.call("POST", answer_path, organizer, json={"accept": True})
    assert (status, body["error"]["code"]) == (404, "not_found")  # as for any community one cannot see
    status, _ = await api.call("POST", answer_path, member, json={"accept": True})
    assert status == 403
    accepted = await ok(api, "POST", answer_path, keeper, json={"accept": True})
    assert accepted["state"] == "accepted"
    told = await notifications(api, organizer, "contest_invitation_answered")
    assert [(n["community_id"], n["accepted"]) for n in told] == [(secret["id"], True)]
    seen = await ok(api, "GET", f"/contests/{with_secret['id']}", passer)
    assert sorted(c["name"] for c in seen["communities"]) == sorted([own["name"], secret_name])
    # Communities invited and declining stay out; a private one declining stays unseen, even by a notification.
    shy = await ok(api, "POST", "/communities", passer, json={"name": f"Shy {uuid.uuid4().hex[:8]}",
                                                               "visibility": "private"})  # fmt: skip
    body = contest_body([own["id"], public["id"], shy["id"]], organizer=own["id"], problems=[TRIVIAL])
    third = await ok(api, "POST", "/contests", organizer, json=body)
    for declining in (public, shy):
        path = f"/contests/{third['id']}/communities/{declining['id']}/answer"
        assert (await ok(api, "POST", path, passer, json={"accept": False}))["state"] == "declined"
    third = await ok(api, "GET", f"/contests/{third['id']}", organizer)
    assert [c["id"] for c in third["communities"]] == [own["id"]]
    assert {i["community_id"]: i["state"] for i in third["invitations"]} == {own["id"]: "accepted",
                                                                            public["id"]: "declined"}  # fmt: skip
    told = await notifications(api, organizer, "contest_invitation_answered")
    assert sorted((n["community_id"], n["accepted"]) for n in told) == sorted(
        [(secret["id"], True), (public["id"], False)]
    )
    # The board names the communities that accepted, and the people.
    pool = api.app[CORE].pool
    await pool.execute(
        "INSERT INTO contest_submissions (id, contest_id, problem_id, user_id, community_id, language, source,"
        " submitted_at, verdict, passed, total, judged_at) VALUES ($1, $2, $3, $4, $5, 'python', 'x', $6,"
        " 'accepted', 1, 1, now())",
        uuid.uuid4(), uuid.UUID(with_secret["id"]), uuid.UUID(with_secret["problems"][0]["id"]), uuid.UUID(member.id),
        uuid.UUID(secret["id"]), at(5),
    )  # fmt: skip
    api.app[CONTESTS].clock = Clock(at(10))
    await api.app[CONTESTS].refresh(uuid.UUID(with_secret["id"]))
    board = await ok(api, "GET", f"/contests/{with_secret['id']}/board?kind=communities", passer)
    assert [(e["id"], e["name"]) for e in board["items"]] == [(secret["id"], secret_name), (own["id"], own["name"])]
    people = await ok(api, "GET", f"/contests/{with_secret['id']}/board", passer)
    assert [(e["id"], e["name"]) for e in people["items"]] == [(member.id, "member")]
    # Templates alike: the private community takes part in the weekly wars only once it accepts.
    template = await ok(api, "POST", "/contest-templates", organizer, json={
        "title": f"Weekly {uuid.uuid4().hex[:6]}", "organizer_id": own["id"], "communities": [own["id"], secret["id"]],
        "problems": [TRIVIAL],
    })  # fmt: skip
    assert [c["id"] for c in template["communities"]] == [own["id"]]
    path = f"/contest-templates/{template['id']}/communities/{secret['id']}/answer"
    await ok(api, "POST", path, keeper, json={"accept": True})
    listed_templates = (await ok(api, "GET", "/contest-templates", passer))["items"]
    mine = next(t for t in listed_templates if t["id"] == template["id"])
    assert sorted(c["id"] for c in mine["communities"]) == sorted([own["id"], secret["id"]])


# --- item 18 (first half): problem limits the judge would refuse are refused at creation -----------------


async def test_problem_limits_above_the_servers_are_refused_when_the_contest_is_made(api: ApiClient) -> None:
    organizer = await api.user()
    community = await ok(api, "POST", "/communities", organizer, json={"name": f"Limits {uuid.uuid4().hex[:8]}"})
    maximum = api.app[CORE].settings
    for field, value, most in (
        ("cpu_ms", maximum.sandbox_cpu_ms + 1, maximum.sandbox_cpu_ms),
        ("memory_kb", maximum.sandbox_memory_kb + 1024, maximum.sandbox_memory_kb),
    ):
        problems = [PROBLEMS[0], {**TRIVIAL, field: value}]
        contest = contest_body([community["id"]], organizer=community["id"], problems=problems)
        template = {"title": "T", "organizer_id": community["id"], "communities": [community["id"]],
                    "problems": problems}  # fmt: skip
        for path, body in (("/contests", contest), ("/contest-templates", template)):
            status, answer = await api.call("POST", path, organizer, json=body)
            assert (status, answer["error"]["code"]) == (400, "invalid_input"), (path, answer)
            expected = f"problems[1].{field} may be at most {most} on this server (asked for {value})"
            assert answer["error"]["message"] == expected
    # At the maximum it is accepted, and a submission to it is judged rather than refused.
    body = contest_body([community["id"]], organizer=community["id"],
                        problems=[{**TRIVIAL, "cpu_ms": maximum.sandbox_cpu_ms}])  # fmt: skip
    status, _ = await api.call("POST", "/contests", organizer, json=body)
    assert status == 201


# --- what earlier versions stored: brought into line by migration 0010 ------------------------------------


async def test_the_migration_repairs_what_was_stored_before(
    aiohttp_client: Any, server_url: str, tmp_path: Path
) -> None:
    """An `infinity` already stored, unapproved prizes and communities enlisted without consent, as an
    earlier version left them: after the upgrade the contests list again and none of it counts."""
    name = f"studyhall_test_{uuid.uuid4().hex[:10]}"
    admin_conn = await asyncpg.connect(server_url)
    await admin_conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(server_url, name)
    try:
        await migrate(url, [m for m in bundled_migrations() if m.version < 10])
        conn = await asyncpg.connect(url)
        student, keeper, minter, secret, mint = (uuid.uuid4() for _ in range(5))
        forever, template = uuid.uuid4(), uuid.uuid4()
        try:
            for user in (student, keeper):
                await conn.execute(
                    "INSERT INTO users (id, email, display_name, password_hash) VALUES ($1, $2, 'x', 'x')",
                    user, f"{user}@example.com",
                )  # fmt: skip
            await conn.execute(
                "INSERT INTO communities (id, name, created_by, visibility) VALUES ($1, $2, $3, 'private'),"
                " ($4, $5, $6, 'public')",
                secret, f"Secret {secret}", keeper, minter, f"Mint {minter}", student,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO community_members (community_id, user_id, role) VALUES ($1, $2, 'owner'),"
                " ($3, $4, 'owner')",
                secret, keeper, minter, student,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO contests (id, title, organizer_id, created_by, starts_at, ends_at, freeze_at, prizes)"
                " VALUES ($1, 'Forever', $2, $3, '-infinity', 'infinity', 'infinity', '[]'),"
                " ($4, 'Mint', $2, $3, now(), now() + interval '1 hour', NULL, '[1000000]')",
                forever, minter, student, mint,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO contest_communities (contest_id, community_id) VALUES ($1, $2), ($1, $3)",
                mint, minter, secret,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO contest_templates (id, title, organizer_id, created_by, communities, problems, scoring,"
                " penalty_minutes, weekday, start_minute, duration_minutes, freeze_minutes, prizes) VALUES ($1, 'T',"
                " $2, $3, $4, '[]', 'icpc', 20, 5, 600, 120, 30, '[5]')",
                template, minter, student, [minter, secret],
            )  # fmt: skip
        finally:
            await conn.close()
        await migrate(url)
        api = await api_with(aiohttp_client, url, tmp_path)
        viewer = await api.user()
        status, listed = await api.call("GET", "/contests?limit=200", viewer)
        assert status == 200, listed
        by_id = {c["id"]: c for c in listed["items"]}
        assert (by_id[str(forever)]["starts_at"], by_id[str(forever)]["ends_at"]) == (
            "1970-01-01T00:00:00Z", "9999-01-01T00:00:00Z",
        )  # fmt: skip
        assert by_id[str(mint)]["approval"]["state"] == "pending"
        assert [c["id"] for c in by_id[str(mint)]["communities"]] == [str(minter)]
        states = await api.app[CORE].pool.fetch(
            "SELECT community_id, state FROM contest_template_communities WHERE template_id = $1", template
        )
        assert {r["community_id"]: r["state"] for r in states} == {minter: "accepted", secret: "invited"}
        assert (await ok(api, "GET", "/contest-templates", viewer))["items"][0]["approval"]["state"] == "pending"
    finally:
        await admin_conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin_conn.close()
