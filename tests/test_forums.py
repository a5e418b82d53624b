"""Forums against real Postgres through the REST API: who may read, post and moderate a community's or a
course's board, threaded replies, votes (one per user, concurrent ones counted exactly), accepted answers,
pins and locks, mentions and reply notifications, and the abuse cases (sizes, pace, garbage)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from core_api.settings import Settings
from tests.chat_helpers import fetchval
from tests.conftest import Actor, ApiClient, make_settings

MAX_BODY = 500
MAX_DEPTH = 3
RATE = 8
MAX_PINNED = 2


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path,
        forum_max_body=MAX_BODY,
        forum_max_depth=MAX_DEPTH,
        forum_rate_count=RATE,
        forum_max_pinned=MAX_PINNED,
    )


async def ok(api: ApiClient, method: str, path: str, actor: Actor, expect: int = 200, **kw: Any) -> Any:
    status, body = await api.call(method, path, actor, **kw)
    assert status == expect, (method, path, status, body)
    return body


async def status_of(api: ApiClient, method: str, path: str, actor: Actor | None, **kw: Any) -> int:
    status, body = await api.call(method, path, actor, **kw)
    if status >= 400:
        assert body["error"]["code"], body
    return status


async def community(api: ApiClient, owner: Actor, *members: Actor, private: bool = False) -> str:
    body = {"name": f"Forum club {uuid.uuid4().hex[:8]}", "visibility": "private" if private else "public"}
    cid: str = (await ok(api, "POST", "/communities", owner, 201, json=body))["id"]
    for m in members:
        await ok(api, "POST", f"/communities/{cid}/members", owner, 201, json={"user_id": m.id})
    return cid


async def topic(api: ApiClient, board: str, author: Actor, title: str = "How do I?", body: str = "Question") -> Any:
    return await ok(api, "POST", f"{board}/topics", author, 201, json={"title": title, "body": body})


async def reply(api: ApiClient, topic_id: str, author: Actor, body: str, parent: str | None = None) -> Any:
    data: dict[str, Any] = {"body": body} | ({"parent_id": parent} if parent else {})
    return await ok(api, "POST", f"/topics/{topic_id}/posts", author, 201, json=data)


async def audited(api: ApiClient, action: str, target: str) -> int:
    count: int = await fetchval(
        api, "SELECT count(*) FROM audit_log WHERE action = $1 AND target_id = $2", action, target
    )
    return count


async def notes(api: ApiClient, actor: Actor) -> list[tuple[str, str]]:
    page = await ok(api, "GET", "/me/notifications?limit=200", actor)
    return [(n["kind"], n["payload"]["post_id"]) for n in page["items"] if n["kind"].startswith("forum_")]


async def test_community_board_threads_mentions_and_who_reads_and_posts(api: ApiClient) -> None:
    owner = await api.user("instructor")
    ada = await api.user(name=f"Ada {uuid.uuid4().hex[:6]}")
    bo = await api.user(name=f"Bo Chen {uuid.uuid4().hex[:6]}")
    stranger = await api.user(name=f"Bo Chen {uuid.uuid4().hex[:6]}")
    cid = await community(api, owner, ada, bo)
    board = f"/communities/{cid}"
    # Mentions reach the board's members by name, never the author, never a non-member.
    bo_key = bo_name = (await ok(api, "GET", "/me", bo))["display_name"]
    stranger_name = (await ok(api, "GET", "/me", stranger))["display_name"]
    t = await topic(api, board, ada, "Recursion help", f"  hi @[{bo_name}] and @[{stranger_name}]\x07 ")
    assert t["opening"]["body"] == f"hi @[{bo_key}] and @[{stranger_name}]"  # cleaned
    assert (t["title"], t["reply_count"], t["can_post"], t["can_moderate"]) == ("Recursion help", 0, True, False)
    assert ("forum_mention", t["opening"]["id"]) in await notes(api, bo)
    assert await notes(api, stranger) == [] and await notes(api, ada) == []

    # Threads: a reply to the opening post is depth 1, a reply to it depth 2; its author is told.
    r1 = await reply(api, t["id"], bo, "try a base case")
    r2 = await reply(api, t["id"], ada, "which one?", r1["id"])
    assert (r1["depth"], r1["parent_id"], r2["depth"], r2["parent_id"]) == (1, t["opening"]["id"], 2, r1["id"])
    assert ("forum_reply", r1["id"]) in await notes(api, ada)  # Bo answered Ada's opening post
    assert ("forum_reply", r2["id"]) in await notes(api, bo)
    r3 = await reply(api, t["id"], bo, "n == 0", r2["id"])
    assert r3["depth"] == MAX_DEPTH
    assert (
        await status_of(api, "POST", f"/topics/{t['id']}/posts", ada, json={"body": "x", "parent_id": r3["id"]}) == 400
    )
    page = await ok(api, "GET", f"/topics/{t['id']}/posts?limit=2", stranger)  # a public board: anyone reads
    rest = await ok(api, "GET", f"/topics/{t['id']}/posts?limit=2&cursor={page['next_cursor']}", stranger)
    assert [p["id"] for p in page["items"] + rest["items"]] == [r1["id"], r2["id"], r3["id"]]
    assert (await ok(api, "GET", f"/topics/{t['id']}", stranger))["reply_count"] == 3

    # A reader who is not a member may not post, reply or vote.
    listing = await ok(api, "GET", f"{board}/topics", stranger)
    assert [x["id"] for x in listing["items"]] == [t["id"]] and listing["can_post"] is False
    assert await status_of(api, "POST", f"{board}/topics", stranger, json={"title": "t", "body": "b"}) == 403
    assert await status_of(api, "POST", f"/topics/{t['id']}/posts", stranger, json={"body": "me too"}) == 403
    assert await status_of(api, "PUT", f"/posts/{r1['id']}/vote", stranger, json={"value": 1}) == 403
    # A reply naming a post of another topic is not found.
    other = await topic(api, board, bo, "Other")
    assert (
        await status_of(
            api, "POST", f"/topics/{t['id']}/posts", ada, json={"body": "x", "parent_id": other["opening"]["id"]}
        )
        == 404
    )

    # Edits: the author only; deletes: the author or a moderator (audited); a tombstone keeps its place.
    assert await status_of(api, "PATCH", f"/posts/{r1['id']}", ada, json={"body": "hijack"}) == 403
    edited = await ok(api, "PATCH", f"/posts/{r1['id']}", bo, json={"body": "try a base case first"})
    assert edited["body"] == "try a base case first" and edited["edited_at"] is not None
    assert await status_of(api, "DELETE", f"/posts/{r1['id']}", ada) == 403
    gone = await ok(api, "DELETE", f"/posts/{r1['id']}", owner)
    assert (gone["deleted"], gone["body"]) == (True, "")
    assert await audited(api, "forum.delete_post", r1["id"]) == 1
    assert (await ok(api, "GET", f"/topics/{t['id']}", ada))["reply_count"] == 2
    assert (
        await status_of(api, "POST", f"/topics/{t['id']}/posts", ada, json={"body": "x", "parent_id": r1["id"]}) == 409
    )


async def test_private_community_and_course_boards_follow_membership_and_enrollment(api: ApiClient) -> None:
    owner, member, outsider = await api.user("instructor"), await api.user(), await api.user()
    admin = await api.user("admin")
    cid = await community(api, owner, member, private=True)
    t = await topic(api, f"/communities/{cid}", member)
    for path in (f"/communities/{cid}/topics", f"/topics/{t['id']}", f"/topics/{t['id']}/posts"):
        assert await status_of(api, "GET", path, outsider) == 404  # not even its existence
        assert await status_of(api, "GET", path, admin) == 200
    assert await status_of(api, "POST", f"/topics/{t['id']}/posts", outsider, json={"body": "hi"}) == 404
    assert await status_of(api, "PUT", f"/posts/{t['opening']['id']}/vote", outsider, json={"value": 1}) == 404

    course = await ok(api, "POST", "/courses", owner, 201, json={"title": "Forum course"})
    draft = f"/courses/{course['id']}"
    learner = await api.user()
    assert await status_of(api, "GET", f"{draft}/topics", learner) == 404  # a draft is not found
    await ok(api, "POST", f"/courses/{course['id']}/lectures", owner, 201, json={
        "title": "L", "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 60.0})  # fmt: skip
    await ok(api, "POST", f"{draft}/publish", owner)
    assert await status_of(api, "GET", f"{draft}/topics", learner) == 403  # enroll first
    assert await status_of(api, "POST", f"{draft}/topics", learner, json={"title": "t", "body": "b"}) == 403
    owners = await topic(api, draft, owner, "Welcome", "Introduce yourselves")
    assert await status_of(api, "GET", f"/topics/{owners['id']}", learner) == 403
    await ok(api, "POST", f"{draft}/enroll", learner, 201)
    name = f"Kim{uuid.uuid4().hex[:6]}"
    classmate, lookalike = await api.user(name=name), await api.user(name=name)
    await ok(api, "POST", f"{draft}/enroll", classmate, 201)
    mine = await topic(api, draft, learner, "Lecture 1?", f"@{name} and @nobody, question")
    assert mine["can_moderate"] is False
    # A mention reaches the course's people (learners, owner) by name, not a namesake outside it.
    assert await notes(api, classmate) == [("forum_mention", mine["opening"]["id"])]
    assert await notes(api, lookalike) == []
    assert [x["id"] for x in (await ok(api, "GET", f"{draft}/topics", learner))["items"]] == [mine["id"], owners["id"]]
    # The course's owner moderates its board; another instructor may not even read it.
    assert (await ok(api, "PUT", f"/topics/{mine['id']}/pinned", owner, json={"on": True}))["pinned"] is True
    assert await status_of(api, "GET", f"/topics/{mine['id']}", await api.user("instructor")) == 403
    assert await status_of(api, "PUT", f"/topics/{owners['id']}/locked", learner, json={"on": True}) == 403


async def test_votes_are_one_per_user_and_counted_exactly_when_concurrent(api: ApiClient) -> None:
    owner = await api.user("instructor")
    voters = [await api.user() for _ in range(8)]
    cid = await community(api, owner, *voters)
    t = await topic(api, f"/communities/{cid}", voters[0])
    post = t["opening"]["id"]
    vote = f"/posts/{post}/vote"
    assert await status_of(api, "PUT", vote, voters[0], json={"value": 1}) == 403  # not one's own
    v = voters[1]
    assert (await ok(api, "PUT", vote, v, json={"value": 1}))["score"] == 1
    assert (await ok(api, "PUT", vote, v, json={"value": 1}))["score"] == 1  # again: still one vote
    after = await ok(api, "PUT", vote, v, json={"value": -1})
    assert (after["score"], after["my_vote"]) == (-1, -1)
    assert (await ok(api, "PUT", vote, v, json={"value": 0}))["score"] == 0
    # Everyone at once, each twice: the score is the number of voters.
    await asyncio.gather(*(api.call("PUT", vote, u, json={"value": 1}) for u in voters[1:] for _ in range(2)))
    assert (await ok(api, "GET", f"/topics/{t['id']}", owner))["score"] == len(voters) - 1
    votes = await fetchval(api, "SELECT count(*) FROM forum_votes WHERE post_id = $1", uuid.UUID(post))
    assert votes == len(voters) - 1
    for bad in ({"value": 2}, {"value": "1"}, {"value": True}, {}, {"value": 1, "extra": 1}):
        assert await status_of(api, "PUT", vote, v, json=bad) == 400
    assert await status_of(api, "PUT", f"/posts/{uuid.uuid4()}/vote", v, json={"value": 1}) == 404


async def test_accepted_answer_by_the_author_or_a_moderator(api: ApiClient) -> None:
    owner, asker, helper, other = await api.user("instructor"), await api.user(), await api.user(), await api.user()
    cid = await community(api, owner, asker, helper, other)
    t = await topic(api, f"/communities/{cid}", asker)
    answer = await reply(api, t["id"], helper, "use a loop")
    wrong = await reply(api, t["id"], other, "no idea")
    accept = f"/topics/{t['id']}/accepted"
    assert await status_of(api, "PUT", accept, helper, json={"post_id": answer["id"]}) == 403  # not the asker
    done = await ok(api, "PUT", accept, asker, json={"post_id": answer["id"]})
    assert done["accepted_post_id"] == answer["id"]
    replies = (await ok(api, "GET", f"/topics/{t['id']}/posts", other))["items"]
    assert [(p["id"], p["accepted"]) for p in replies] == [(answer["id"], True), (wrong["id"], False)]
    assert await status_of(api, "PUT", accept, asker, json={"post_id": t["opening"]["id"]}) == 400
    foreign = await topic(api, f"/communities/{cid}", other)
    assert await status_of(api, "PUT", accept, asker, json={"post_id": foreign["opening"]["id"]}) == 404
    assert await status_of(api, "PUT", accept, asker, json={}) == 400
    # A moderator may change it (audited); deleting the accepted reply clears it.
    assert (await ok(api, "PUT", accept, owner, json={"post_id": wrong["id"]}))["accepted_post_id"] == wrong["id"]
    assert await audited(api, "forum.accept", t["id"]) == 1
    await ok(api, "DELETE", f"/posts/{wrong['id']}", other)
    assert (await ok(api, "GET", f"/topics/{t['id']}", asker))["accepted_post_id"] is None
    assert await status_of(api, "PUT", accept, asker, json={"post_id": wrong["id"]}) == 409
    assert (await ok(api, "PUT", accept, asker, json={"post_id": None}))["accepted_post_id"] is None


async def test_pins_and_locks_by_moderators(api: ApiClient) -> None:
    owner, mod, member = await api.user("instructor"), await api.user(), await api.user()
    cid = await community(api, owner, mod, member)
    await ok(api, "PUT", f"/communities/{cid}/members/{mod.id}", owner, json={"role": "admin"})
    board = f"/communities/{cid}"
    topics = [await topic(api, board, member, f"T{i}") for i in range(3)]
    first = topics[0]["id"]
    assert await status_of(api, "PUT", f"/topics/{first}/pinned", member, json={"on": True}) == 403
    assert (await ok(api, "PUT", f"/topics/{first}/pinned", mod, json={"on": True}))["pinned"] is True
    listing = await ok(api, "GET", f"{board}/topics", member)
    assert [x["id"] for x in listing["items"]] == [first, topics[2]["id"], topics[1]["id"]]
    await ok(api, "PUT", f"/topics/{topics[1]['id']}/pinned", owner, json={"on": True})
    assert await status_of(api, "PUT", f"/topics/{topics[2]['id']}/pinned", owner, json={"on": True}) == 409
    assert await audited(api, "forum.pin", first) == 1

    t = topics[2]
    r = await reply(api, t["id"], owner, "before the lock")
    assert (await ok(api, "PUT", f"/topics/{t['id']}/locked", mod, json={"on": True}))["locked"] is True
    detail = await ok(api, "GET", f"/topics/{t['id']}", member)
    assert (detail["locked"], detail["can_post"]) == (True, False)
    assert await status_of(api, "POST", f"/topics/{t['id']}/posts", member, json={"body": "late"}) == 409
    assert await status_of(api, "PUT", f"/posts/{r['id']}/vote", member, json={"value": 1}) == 409
    assert await status_of(api, "PATCH", f"/posts/{t['opening']['id']}", member, json={"body": "edit"}) == 409
    assert (await ok(api, "DELETE", f"/posts/{r['id']}", mod))["deleted"] is True  # moderators still moderate
    assert await status_of(api, "PUT", f"/topics/{t['id']}/locked", member, json={"on": False}) == 403
    await ok(api, "PUT", f"/topics/{t['id']}/locked", mod, json={"on": False})
    await reply(api, t["id"], member, "open again")


async def test_garbage_sizes_and_pace(api: ApiClient) -> None:
    owner, member = await api.user("instructor"), await api.user()
    cid = await community(api, owner, member)
    path = f"/communities/{cid}/topics"
    for body in [
        {"title": "", "body": "b"},
        {"title": "   ", "body": "b"},
        {"title": "t", "body": " \x00\x07 "},
        {"title": "t" * 201, "body": "b"},
        {"title": "t", "body": "b" * (MAX_BODY + 1)},
        {"title": "t"},
        {"title": 5, "body": "b"},
        {"title": "t", "body": "b", "community_id": cid},
        ["t", "b"],
    ]:
        assert await status_of(api, "POST", path, member, json=body) == 400, body
    assert await status_of(api, "POST", path, None, json={"title": "t", "body": "b"}) == 401
    nowhere = f"/communities/{uuid.uuid4()}/topics"
    assert await status_of(api, "POST", nowhere, member, json={"title": "t", "body": "b"}) == 404
    assert await status_of(api, "GET", f"/topics/{uuid.uuid4()}", member) == 404
    assert await status_of(api, "GET", "/topics/not-a-uuid", member) in (400, 404)
    t = await topic(api, f"/communities/{cid}", member, "line\nbreak\ttitle", "b" * MAX_BODY)
    assert t["title"] == "line break title"
    # Pace: RATE posts per window per user, topics and replies together; others are not slowed down.
    for i in range(RATE - 1):
        await reply(api, t["id"], member, f"reply {i}")
    status, body = await api.call("POST", f"/topics/{t['id']}/posts", member, json={"body": "one too many"})
    assert status == 429 and body["error"]["details"]["retry_after_s"] >= 1
    assert await status_of(api, "POST", path, member, json={"title": "t", "body": "b"}) == 429
    await reply(api, t["id"], owner, "the owner still posts")
