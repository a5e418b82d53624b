"""Standings per (person, community): a submission scores for the community it names, in the standings,
the boards, ``/board/me`` and the all-time ranking (issue 13). Judged by the real sandbox, read over REST."""

from __future__ import annotations

from typing import Any

from leaderboards.handlers import CONTESTS
from tests.conftest import Actor, ApiClient
from tests.contest_helpers import A_OK, B_OK, Clock, at, community_with, contest_body, ok


async def submit_for(
    api: ApiClient, contest: dict[str, Any], who: Actor, label: str, source: str, community_id: str
) -> dict[str, Any]:
    problem = next(p for p in contest["problems"] if p["label"] == label)
    path = f"/contests/{contest['id']}/problems/{problem['id']}/submissions?wait=true"
    body = {"language": "python", "source": source, "community_id": community_id}
    status, sub = await api.call("POST", path, who, json=body)
    assert status == 200 and sub["verdict"] == "accepted", sub
    assert sub["community_id"] == community_id
    return dict(sub)


async def test_a_submission_scores_for_the_community_it_names(api: ApiClient, sandbox_machine: None) -> None:
    mia, lou, owner = await api.user(name="mia"), await api.user(name="lou"), await api.user("instructor", name="org")
    larks = await community_with(api, owner, "Larks", [mia, lou])
    owls = await community_with(api, owner, "Owls", [mia])
    contest = await ok(api, "POST", "/contests", owner, json=contest_body([larks, owls], organizer=larks))
    cid = contest["id"]
    clock = Clock()
    api.app[CONTESTS].clock = clock
    clock.now = at(10)
    await submit_for(api, contest, mia, "A", A_OK, larks)
    clock.now = at(20)
    await submit_for(api, contest, mia, "B", B_OK, owls)  # Mia joined Larks first: Owls must be named
    clock.now = at(30)
    await submit_for(api, contest, lou, "A", A_OK, larks)

    standings = await ok(api, "GET", f"/contests/{cid}/standings", lou)
    groups = {c["community_id"]: (c["rank"], c["solved"], c["penalty"]) for c in standings["communities"]}
    assert groups == {larks: (1, 2, 40), owls: (2, 1, 20)}  # A by Mia (10) and Lou (30); B by Mia (20)
    # One row per (person, community), each scored from the submissions naming that community.
    rows = [(p["display_name"], p["community_id"], p["rank"], p["solved"], p["penalty"]) for p in standings["people"]]
    assert rows == [("mia", larks, 1, 1, 10), ("mia", owls, 2, 1, 20), ("lou", larks, 3, 1, 30)]
    mia_owls = standings["people"][1]["problems"]
    assert [(c["solved"], c["first_to_solve"]) for c in mia_owls] == [(True, True)]  # only B, first solved

    await api.app[CONTESTS].wait_judged()
    board = await ok(api, "GET", f"/contests/{cid}/board?kind=users&limit=10", lou)
    assert [(e["name"], e["community_id"], e["rank"], e["score"], e["penalty"]) for e in board["items"]] == [
        ("mia", larks, 1, 1, 10), ("mia", owls, 2, 1, 20), ("lou", larks, 3, 1, 30),
    ]  # fmt: skip
    groups_board = await ok(api, "GET", f"/contests/{cid}/board?kind=communities&limit=10", lou)
    assert [(e["id"], e["score"], e["penalty"]) for e in groups_board["items"]] == [(larks, 2, 40), (owls, 1, 20)]
    me = await ok(api, "GET", f"/contests/{cid}/board/me", mia)
    assert (me["me"]["rank"], me["me"]["community_id"], me["community"]["id"]) == (1, larks, larks)
    assert [(r["community_id"], r["rank"]) for r in me["rows"]] == [(larks, 1), (owls, 2)]

    clock.now = at(301)
    await ok(api, "POST", f"/contests/{cid}/finalise", owner)
    alltime = await ok(api, "GET", "/leaderboards/communities?limit=100", lou)
    ours = {e["id"]: (e["score"], e["penalty"]) for e in alltime["items"] if e["id"] in (larks, owls)}
    assert ours == {larks: (2, 40), owls: (1, 20)}
