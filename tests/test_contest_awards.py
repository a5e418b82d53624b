"""Group wars' prizes as winners see them (issue 13): a member who scored for two communities is paid for
each placement and told exactly what the ledger holds; finalising pays at once, once, without the cycle."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from core_api.context import CORE
from leaderboards.cycle import CYCLE
from leaderboards.handlers import CONTESTS
from tests.conftest import Actor, ApiClient
from tests.contest_helpers import A_OK, B_OK, Clock, api_with, at, community_with, contest_body, ok


async def awards_of(api: ApiClient, who: Actor) -> list[tuple[int, int, str]]:
    items = (await ok(api, "GET", "/me/notifications?limit=200", who))["items"]
    return sorted((n["payload"]["rank"], n["payload"]["coins"], n["payload"].get("community_id"))
                  for n in items if n["kind"] == "contest_award")  # fmt: skip


async def credits_of(api: ApiClient, who: Actor, contest_id: str) -> list[int]:
    entries = (await ok(api, "GET", "/me/wallet", who))["entries"]
    return sorted(e["amount"] for e in entries if e["source"] and e["source"]["contest_id"] == contest_id)


async def solve(api: ApiClient, contest: dict[str, Any], who: Actor, label: str, source: str,
                community: str | None = None) -> None:  # fmt: skip
    problem = next(p for p in contest["problems"] if p["label"] == label)
    path = f"/contests/{contest['id']}/problems/{problem['id']}/submissions?wait=true"
    body: dict[str, Any] = {"language": "python", "source": source}
    if community is not None:
        body["community_id"] = community
    status, sub = await api.call("POST", path, who, json=body)
    assert (status, sub["verdict"]) == (200, "accepted"), sub


async def test_a_member_placed_for_two_communities_is_paid_and_told_for_each(
    api: ApiClient, sandbox_machine: None
) -> None:
    admin, owner = await api.user("admin"), await api.user("instructor", name="organizer")
    mia, lark, owl = [await api.user(name=n) for n in ("mia", "lark", "owl")]
    larks = await community_with(api, owner, "Larks", [mia, lark])
    owls = await community_with(api, owner, "Owls", [mia, owl])
    contest = await ok(api, "POST", "/contests", admin, json=contest_body([larks, owls], prizes=[7, 3]))
    await ok(api, "PUT", f"/contests/{contest['id']}/prize-budget", admin, json={"coins": 100})
    clock = Clock()
    api.app[CONTESTS].clock = clock
    # Mia solves A for the Larks and B for the Owls; Lark solves both for the Larks; Owl solves nothing.
    for minute, who, label, source, community in (
        (10, mia, "A", A_OK, larks),
        (20, mia, "B", B_OK, owls),
        (30, lark, "A", A_OK, None),
        (40, lark, "B", B_OK, None),
    ):
        clock.now = at(minute)
        await solve(api, contest, who, label, source, community)
    clock.now = at(301)
    await ok(api, "POST", f"/contests/{contest['id']}/finalise", admin)
    await api.app[CYCLE].tick(at(301))  # whoever pays (finalising does), the cycle's pass comes after
    assert (await ok(api, "GET", f"/contests/{contest['id']}", admin))["payout"]["state"] == "paid"
    ranks = {c["community_id"]: c["rank"] for c in (await ok(api, "GET", f"/contests/{contest['id']}/standings",
                                                                 mia))["communities"]}  # fmt: skip
    assert ranks == {larks: 1, owls: 2}
    # Mia is paid for both placements (7 for the Larks, 3 for the Owls), and told exactly that.
    assert await awards_of(api, mia) == [(1, 7, larks), (2, 3, owls)]
    assert await credits_of(api, mia, contest["id"]) == [3, 7]
    assert (await ok(api, "GET", "/me/wallet", mia))["balance"] == 10
    assert await awards_of(api, lark) == [(1, 7, larks)] and await credits_of(api, lark, contest["id"]) == [7]
    assert await awards_of(api, owl) == [] and await credits_of(api, owl, contest["id"]) == []
    # The budget paid exactly what the ledger credited.
    budget = await ok(api, "GET", f"/contests/{contest['id']}/prize-budget", admin)
    assert budget["balance"] == 100 - 17
    assert [e["amount"] for e in budget["entries"] if e["kind"] == "award"] == [-17]
    # Paying again changes nothing: no credit, no notification.
    assert await api.app[CYCLE].award(uuid.UUID(contest["id"])) == 0
    await api.app[CYCLE].tick(at(400))
    assert await awards_of(api, mia) == [(1, 7, larks), (2, 3, owls)]
    assert (await ok(api, "GET", "/me/wallet", mia))["balance"] == 10


async def test_finalising_pays_at_once_and_once_without_the_cycle(
    aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None
) -> None:
    api = await api_with(aiohttp_client, database_url, tmp_path, contest_cycle_s=0)
    admin, winner = await api.user("admin"), await api.user(name="winner")
    owner = await api.user("instructor", name="organizer")
    community = await community_with(api, owner, "Solo", [winner])
    contest = await ok(api, "POST", "/contests", admin, json=contest_body([community], prizes=[50]))
    await ok(api, "PUT", f"/contests/{contest['id']}/prize-budget", admin, json={"coins": 500})
    clock = Clock()
    api.app[CONTESTS].clock = clock
    clock.now = at(10)
    await solve(api, contest, winner, "A", A_OK)
    clock.now = at(301)
    # Three managers' calls at once: each answers 200, and the prize is paid once, before the answers.
    answers = await asyncio.gather(*(api.call("POST", f"/contests/{contest['id']}/finalise", admin) for _ in range(3)))
    assert [s for s, _ in answers] == [200, 200, 200], answers
    assert {a["payout"]["state"] for _, a in answers} == {"paid"}
    mine = await ok(api, "GET", "/me/wallet", winner)
    assert mine["balance"] == 50 and [e["amount"] for e in mine["entries"]] == [50]
    assert await awards_of(api, winner) == [(1, 50, community)]
    # The cycle finds nothing left to pay.
    assert (await api.app[CYCLE].tick(at(400)))["paid"] == 0
    assert (await ok(api, "GET", "/me/wallet", winner))["balance"] == 50
    budget = await ok(api, "GET", f"/contests/{contest['id']}/prize-budget", admin)
    assert budget["balance"] == 450
    actions = await api.app[CORE].pool.fetch(
        "SELECT action FROM audit_log WHERE target_id = $1 ORDER BY created_at", contest["id"]
    )
    assert [r["action"] for r in actions] == ["contest.create", "contest.finalise", "contest.award"]
