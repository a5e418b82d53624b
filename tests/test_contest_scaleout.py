"""Group wars on two real ``studyhall serve`` processes sharing Postgres and Redis: a change made through
one node reaches a subscriber connected to the other as ``leaderboard:update``, and both nodes serve the
same board from Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.contest_helpers import PROBLEMS
from tests.nodes import Node, cluster, connect, redis_url, register, rest, set_role, wait_fanout


@pytest.fixture(scope="module")
def nodes(database_url: str) -> Iterator[tuple[Node, Node, str]]:
    with redis_url() as redis, cluster(database_url, redis, ("a", "b")) as (a, b):

        async def warm_up() -> None:
            await asyncio.gather(wait_fanout(a, redis), wait_fanout(b, redis))

        asyncio.run(warm_up())
        yield a, b, database_url


async def test_a_change_through_one_node_is_pushed_to_subscribers_of_the_other(
    nodes: tuple[Node, Node, str],
) -> None:
    a, b, database_url = nodes
    admin, alice, watcher = await register(a.url, "admin"), await register(a.url, "alice"), await register(b.url)
    await set_role(database_url, admin, "admin")
    status, community = await rest(a.url, "POST", "/communities", admin, json={"name": f"W {uuid.uuid4().hex[:8]}"})
    assert status == 201, community
    status, _ = await rest(a.url, "POST", f"/communities/{community['id']}/members", admin, json={"user_id": alice.id})
    assert status == 201
    now = datetime.now(UTC)
    body = {
        "title": "Across nodes", "communities": [community["id"]], "problems": PROBLEMS,
        "starts_at": (now - timedelta(minutes=30)).isoformat(), "ends_at": (now + timedelta(hours=1)).isoformat(),
    }  # fmt: skip
    status, contest = await rest(a.url, "POST", "/contests", admin, json=body)
    assert status == 201, contest
    # Alice's accepted submission, stored as the judge stores one (no sandbox needed for this test).
    submission = uuid.uuid4()
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO contest_submissions (id, contest_id, problem_id, user_id, community_id, language, source,"
            " submitted_at, verdict, passed, total, judged_at) VALUES ($1, $2, $3, $4, $5, 'python', 'x',"
            " now() - interval '10 minutes', 'accepted', 2, 2, now())",
            submission, uuid.UUID(contest["id"]), uuid.UUID(contest["problems"][0]["id"]), uuid.UUID(alice.id),
            uuid.UUID(community["id"]),
        )  # fmt: skip
    finally:
        await conn.close()
    client = await connect(b.url, watcher)
    try:
        ack = await client.ask("contest:subscribe", {"contest_id": contest["id"]})
        assert ack["ok"] is True and [p["display_name"] for p in ack["standings"]["people"]] == ["alice"]
        path = f"/contests/{contest['id']}/submissions/{submission}/disqualify"
        status, out = await rest(a.url, "POST", path, admin, json={"reason": "copied"})
        assert status == 200 and out["disqualified"] is True, out
        update = await client.inbox.wait_for("leaderboard:update", lambda d: d["people"] == [], within=15)
        assert update["contest_id"] == contest["id"] and update["communities"][0]["solved"] == 0
    finally:
        await client.disconnect()
    # Both nodes serve the same board (from Redis); it is rewritten just after the push goes out.
    path = f"/contests/{contest['id']}/board?kind=communities"
    for _ in range(50):
        boards = [await rest(n.url, "GET", path, watcher) for n in (a, b)]
        if boards[0] == boards[1] and boards[0][1]["items"][0]["score"] == 0:
            break
        await asyncio.sleep(0.1)
    assert boards[0] == boards[1] and boards[0][0] == 200
    assert boards[0][1]["items"][0]["score"] == 0
