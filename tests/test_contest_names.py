"""Boards and standings show names (issue 13), only those the viewer may see: people's display names, and
the names of communities that accepted to take part (a private one that never accepted stays unnamed)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from core_api.context import CORE
from leaderboards.handlers import CONTESTS
from tests.conftest import Actor, ApiClient
from tests.contest_helpers import Clock, at, contest_body, ok

TRIVIAL = {"title": "Three", "tests": [{"stdin": "", "expected_output": "3"}], "cpu_ms": 1000}


async def solved(api: ApiClient, contest: dict[str, Any], who: Actor, community: str, minute: int) -> None:
    """An accepted submission, stored as the judge would leave it (names are what this test is about)."""
    await api.app[CORE].pool.execute(
        "INSERT INTO contest_submissions (id, contest_id, problem_id, user_id, community_id, language, source,"
        " submitted_at, verdict, passed, total, judged_at) VALUES ($1, $2, $3, $4, $5, 'python', 'print(3)', $6,"
        " 'accepted', 1, 1, now())",
        uuid.uuid4(), uuid.UUID(contest["id"]), uuid.UUID(contest["problems"][0]["id"]), uuid.UUID(who.id),
        uuid.UUID(community), at(minute),
    )  # fmt: skip


async def test_standings_and_boards_name_people_and_the_communities_that_accepted(api: ApiClient) -> None:
    organizer, keeper, member, passer, shy_owner = [
        await api.user(name=n) for n in ("organizer", "keeper", "member", "passer", "shy")
    ]
    home = await ok(api, "POST", "/communities", organizer, json={"name": f"Home {uuid.uuid4().hex[:8]}"})
    await ok(api, "POST", f"/communities/{home['id']}/members", organizer, json={"user_id": member.id})
    secret_name, shy_name = f"Secret {uuid.uuid4().hex[:8]}", f"Shy {uuid.uuid4().hex[:8]}"
    secret = await ok(api, "POST", "/communities", keeper, json={"name": secret_name, "visibility": "private"})
    shy = await ok(api, "POST", "/communities", shy_owner, json={"name": shy_name, "visibility": "private"})
    await ok(api, "POST", f"/communities/{secret['id']}/members", keeper, json={"user_id": member.id})
    clock = Clock()
    clock.now = at(-10)
    api.app[CONTESTS].clock = clock
    body = contest_body([home["id"], secret["id"], shy["id"]], organizer=home["id"], problems=[TRIVIAL])
    contest = await ok(api, "POST", "/contests", organizer, json=body)
    await ok(api, "POST", f"/contests/{contest['id']}/communities/{secret['id']}/answer", keeper, json={"accept": True})
    # Each row names the community it scores for (the member belongs to both, and scores for Home).
    await solved(api, contest, member, home["id"], 5)
    await solved(api, contest, organizer, home["id"], 7)
    await solved(api, contest, keeper, secret["id"], 9)
    clock.now = at(20)
    await api.app[CONTESTS].refresh(uuid.UUID(contest["id"]))
    standings = await ok(api, "GET", f"/contests/{contest['id']}/standings", passer)
    names = {(p["display_name"], p["community_name"]) for p in standings["people"]}
    assert {("member", home["name"]), ("organizer", home["name"]), ("keeper", secret_name)} <= names
    assert {c["name"] for c in standings["communities"]} == {home["name"], secret_name}
    snapshot = await api.app[CONTESTS].snapshot(await api.app[CONTESTS].contest(uuid.UUID(contest["id"])), "public")
    assert {p["community_name"] for p in snapshot["people"]} == {home["name"], secret_name}  # live pushes alike
    board = await ok(api, "GET", f"/contests/{contest['id']}/board?kind=communities", passer)
    assert {e["name"] for e in board["items"]} == {home["name"], secret_name}
    people = await ok(api, "GET", f"/contests/{contest['id']}/board", passer)
    assert {e["name"] for e in people["items"]} == {"member", "organizer", "keeper"}
    # The all-time board after finalising names the communities that took part, to anyone.
    clock.now = at(301)
    await ok(api, "POST", f"/contests/{contest['id']}/finalise", organizer)
    alltime = await ok(api, "GET", "/leaderboards/communities?limit=200", passer)
    shown = {e["id"]: e["name"] for e in alltime["items"]}
    assert (shown[home["id"]], shown[secret["id"]]) == (home["name"], secret_name)
    # The private community that never answered is named nowhere.
    base = f"/contests/{contest['id']}"
    for path in (base, f"{base}/standings", f"{base}/board?kind=communities", "/leaderboards/communities?limit=200"):
        assert shy_name not in json.dumps(await ok(api, "GET", path, passer)), path
