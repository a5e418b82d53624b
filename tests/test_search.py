"""GET /search against real Postgres: prefix matching, ranking, snippets, who sees what, paging, abuse limits."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from core_api.context import CORE
from core_api.search.core import START, STOP
from tests.conftest import Actor, ApiClient, make_settings
from tests.search_helpers import (
    add_community,
    add_course,
    add_lecture,
    add_member,
    add_message,
    add_reply,
    add_room,
    add_topic,
    enroll,
    ids,
    join_community,
    marked,
)


def word() -> str:
    """A word no other test writes, so that each test sees its own rows only."""
    return "zq" + uuid.uuid4().hex[:8].translate(str.maketrans("0123456789", "ghijklmnop"))


async def search(api: ApiClient, actor: Actor, q: str, **params: Any) -> dict[str, Any]:
    status, out = await api.call("GET", "/search", actor, params={"q": q, **params})
    assert status == 200, out
    return out  # type: ignore[no-any-return]


async def test_a_prefix_finds_the_longer_word_and_titles_rank_above_descriptions(api: ApiClient) -> None:
    teacher, learner = await api.user("instructor"), await api.user()
    tag = word()
    async with api.app[CORE].pool.acquire() as conn:
        owner = uuid.UUID(teacher.id)
        in_text = await add_course(conn, owner, f"Cooking {tag}", f"We cover algorithms of kitchens, {tag}.")
        in_title = await add_course(conn, owner, f"Algorithms and {tag}", "Sorting and searching.")
        unrelated = await add_course(conn, owner, f"Gardening {tag}", "Plants.")
        lecture = await add_lecture(conn, in_title, "Studies of algorithmic complexity")
    out = await search(api, learner, f"algo {tag}")
    assert ids(out["courses"]) == [str(in_title), str(in_text)]
    assert str(unrelated) not in ids(out["courses"])
    assert out["words"] == ["algo", tag]
    # The snippet (of the description) marks the words matched, including the longer word the prefix found.
    best, second = out["courses"]["items"]
    assert marked(second) == ["algorithms", tag]
    assert "".join(s["text"] for s in best["snippet"]) == "Sorting and searching."
    assert not any(START in s["text"] or STOP in s["text"] for h in (best, second) for s in h["snippet"])
    # English forms: "study" finds "Studies"; the lecture's course title comes along.
    out = await search(api, learner, "study algorithmic", kinds="lectures")
    lectures = out["lectures"]["items"]
    assert str(lecture) in [h["id"] for h in lectures]
    hit = next(h for h in lectures if h["id"] == str(lecture))
    assert hit["course_title"] == f"Algorithms and {tag}"
    assert marked(hit) == ["Studies", "algorithmic"]
    assert out["courses"] is None and out["messages"] is None and out["users"] is None


async def test_short_words_match_whole_words_only(api: ApiClient) -> None:
    teacher, learner = await api.user("instructor"), await api.user()
    tag = word()
    async with api.app[CORE].pool.acquire() as conn:
        course = await add_course(conn, uuid.UUID(teacher.id), f"Go {tag}", "gopher")
    assert ids((await search(api, learner, f"go {tag}"))["courses"]) == [str(course)]
    # "go" has fewer than STUDYHALL_SEARCH_MIN_PREFIX_CHARS (3) letters: it does not find "gopher" alone.
    async with api.app[CORE].pool.acquire() as conn:
        await conn.execute("UPDATE courses SET title = $2 WHERE id = $1", course, f"Rust {tag}")
    assert ids((await search(api, learner, f"go {tag}"))["courses"]) == []
    assert ids((await search(api, learner, f"gop {tag}"))["courses"]) == [str(course)]


async def test_drafts_are_found_by_their_owner_and_admins_only(api: ApiClient) -> None:
    owner, other_teacher, learner, admin = (
        await api.user("instructor"),
        await api.user("instructor"),
        await api.user(),
        await api.user("admin"),
    )
    tag = word()
    async with api.app[CORE].pool.acquire() as conn:
        draft = await add_course(conn, uuid.UUID(owner.id), f"Draft {tag}", published=False)
        lecture = await add_lecture(conn, draft, f"Draft lecture {tag}")
    for who, sees in ((owner, True), (admin, True), (learner, False), (other_teacher, False)):
        out = await search(api, who, tag)
        assert (str(draft) in ids(out["courses"])) is sees, who.role
        assert (str(lecture) in ids(out["lectures"])) is sees, who.role


async def test_messages_of_member_rooms_only_and_never_deleted_ones(api: ApiClient) -> None:
    member, stranger, banned, admin = await api.user(), await api.user(), await api.user(), await api.user("admin")
    tag = word()
    async with api.app[CORE].pool.acquire() as conn:
        m_id, b_id = (uuid.UUID(a.id) for a in (member, banned))
        public = await add_room(conn, m_id, "public", name=f"Public {tag}")
        private = await add_room(conn, m_id, "private", name=f"Private {tag}")
        for room in (public, private):
            await add_member(conn, room, m_id)
            await add_member(conn, room, b_id, banned=True)
        in_public = await add_message(conn, public, m_id, f"graph theory {tag} tonight")
        in_private = await add_message(conn, private, m_id, f"secret graphs {tag}")
        gone = await add_message(conn, private, m_id, f"deleted graph {tag}", deleted=True)
    out = await search(api, member, f"graph {tag}")
    assert sorted(ids(out["messages"])) == sorted([str(in_public), str(in_private)])
    hit = next(h for h in out["messages"]["items"] if h["id"] == str(in_private))
    assert hit["room_name"] == f"Private {tag}" and hit["seq"] == 1 and hit["author_id"] == member.id
    assert marked(hit) == ["graphs", tag]
    # Not a member (even of the public room, even an admin), or banned: nothing.
    for who in (stranger, banned, admin):
        assert ids((await search(api, who, f"graph {tag}"))["messages"]) == []
    assert str(gone) not in ids((await search(api, member, f"deleted {tag}"))["messages"])
    # Deleting a message takes it out of search at once.
    async with api.app[CORE].pool.acquire() as conn:
        await conn.execute("UPDATE chat_messages SET deleted_at = now() WHERE id = $1", in_public)
    assert ids((await search(api, member, f"graph {tag}"))["messages"]) == [str(in_private)]


async def test_users_by_name_or_email_for_admins_only(api: ApiClient) -> None:
    admin, learner = await api.user("admin"), await api.user()
    tag = word()
    target = await api.user(name=f"Ada {tag} Lovelace")
    out = await search(api, admin, f"{tag} lovel")
    assert ids(out["users"]) == [target.id]
    assert out["users"]["items"][0]["email"] == target.email
    assert marked(out["users"]["items"][0]) == [tag, "Lovelace"]
    local = target.email.split("@")[0]
    assert ids((await search(api, admin, target.email, kinds="users"))["users"]) == [target.id]
    assert ids((await search(api, admin, local, kinds="users"))["users"]) == [target.id]
    # A learner's default kinds leave users out; asking for them is refused.
    assert (await search(api, learner, tag))["users"] is None
    status, out = await api.call("GET", "/search", learner, params={"q": tag, "kinds": "users"})
    assert status == 403 and out["error"]["code"] == "forbidden"


async def test_a_kind_pages_through_its_hits_with_its_cursor(api: ApiClient) -> None:
    member = await api.user()
    tag = word()
    async with api.app[CORE].pool.acquire() as conn:
        room = await add_room(conn, uuid.UUID(member.id))
        await add_member(conn, room, uuid.UUID(member.id))
        # Different ranks (the word once, twice, three times) and ties.
        bodies = [f"{tag}", f"{tag} {tag}", f"{tag} {tag} {tag}", f"x {tag}", f"y {tag}"]
        written = {str(await add_message(conn, room, uuid.UUID(member.id), b)) for b in bodies}
    seen: list[str] = []
    params: dict[str, Any] = {"kinds": "messages", "limit": 2}
    ranks: list[float] = []
    while True:
        out = await search(api, member, tag, **params)
        seen += ids(out["messages"])
        ranks += [h["rank"] for h in out["messages"]["items"]]
        if out["messages"]["next_cursor"] is None:
            break
        params["cursor"] = out["messages"]["next_cursor"]
    assert sorted(seen) == sorted(written) and len(seen) == len(set(seen))
    assert ranks == sorted(ranks, reverse=True)
    # A cursor continues its own kind only.
    status, out = await api.call("GET", "/search", member, params={"q": tag, "cursor": params["cursor"]})
    assert status == 400 and "kinds=messages" in out["error"]["message"]


@pytest.mark.parametrize(
    ("q", "extra", "message"),
    [
        ("", {}, "no words"),
        ("!!! ??? ...", {}, "no words"),
        ("x" * 201, {}, "longer than 200"),
        (" ".join(f"w{i}" for i in range(9)), {}, "more than 8 words"),
        ("ok\x00no", {}, "control characters"),
        ("fine", {"kinds": "courses,forum"}, "unknown kind"),
        ("fine", {"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
        ("fine", {"limit": "51"}, "limit is at most 50"),
        ("fine", {"limit": "zero"}, "query is invalid"),
    ],
)
async def test_garbage_is_a_clear_400(api: ApiClient, q: str, extra: dict[str, str], message: str) -> None:
    learner = await api.user()
    status, out = await api.call("GET", "/search", learner, params={"q": q, **extra})
    assert status == 400, out
    assert out["error"]["code"] == "invalid_input" and message in out["error"]["message"]


async def test_query_syntax_is_only_words(api: ApiClient) -> None:
    """Characters that mean something to to_tsquery are ignored, never parsed."""
    teacher, learner = await api.user("instructor"), await api.user()
    tag = word()
    async with api.app[CORE].pool.acquire() as conn:
        course = await add_course(conn, uuid.UUID(teacher.id), f"Lambda {tag}")
    for q in (f"lambda & !{tag}", f"'lambda':* | ({tag}", f"lambda<->{tag}\\", f"lambda:A {tag}:*"):
        assert ids((await search(api, learner, q))["courses"]) == [str(course)], q


async def test_searching_needs_a_signed_in_user(api: ApiClient) -> None:
    status, _ = await api.call("GET", "/search", params={"q": "python"})
    assert status == 401


async def test_searches_per_user_are_rate_limited(aiohttp_client: Any, database_url: str, tmp_path: Path) -> None:
    from realtime.app import create_app

    settings = make_settings(database_url, tmp_path, search_rate_count=3, search_rate_window_s=60)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    greedy, other = await api.user(), await api.user()
    for _ in range(3):
        await search(api, greedy, "python")
    resp = await api.http.get("/api/v1/search", params={"q": "python"}, headers=greedy.headers)
    assert resp.status == 429
    assert (await resp.json())["error"]["code"] == "rate_limited" and int(resp.headers["Retry-After"]) >= 1
    await search(api, other, "python")  # the limit is per user


async def test_a_search_past_its_time_budget_answers_503(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    from realtime.app import create_app

    settings = make_settings(database_url, tmp_path, search_timeout_ms=50)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    learner = await api.user()
    # The statement timeout covers waiting too: a search held up behind a lock stops after 50 ms.
    async with api.app[CORE].pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE courses IN ACCESS EXCLUSIVE MODE")
        status, out = await api.call("GET", "/search", learner, params={"q": "python", "kinds": "courses"})
    assert status == 503 and out["error"]["code"] == "unavailable", out
    await search(api, learner, "python", kinds="courses")  # and the next one runs


def test_messages_are_read_room_by_room_when_that_reads_fewer() -> None:
    from core_api.search.core import BY_ROOM_ALWAYS, read_messages_by_room

    assert read_messages_by_room(BY_ROOM_ALWAYS, None)  # few messages visible: always by room
    assert not read_messages_by_room(10_000, 2_000)  # a rare word: the index
    assert read_messages_by_room(10_000, 200_000)  # a frequent word or short prefix: the caller's rooms
    assert not read_messages_by_room(10_000_000, None)


async def test_a_member_of_busy_rooms_is_searched_through_the_index(api: ApiClient) -> None:
    """Past BY_ROOM_ALWAYS visible messages the service asks the planner how many messages the words match
    (core.read_messages_by_room) and, for a rare word, goes through the GIN index: same answer."""
    from core_api.search.core import BY_ROOM_ALWAYS

    member = await api.user()
    tag = word()
    async with api.app[CORE].pool.acquire() as conn:
        room = await add_room(conn, uuid.UUID(member.id))
        await add_member(conn, room, uuid.UUID(member.id))
        hit = await add_message(conn, room, uuid.UUID(member.id), f"kernel {tag}")
        await add_message(conn, room, uuid.UUID(member.id), f"kernel {tag}", deleted=True)
        # The room counts as holding more messages than are read one by one (last_seq is the upper bound used).
        await conn.execute("UPDATE rooms SET last_seq = $2 WHERE id = $1", room, BY_ROOM_ALWAYS + 1)
    assert ids((await search(api, member, f"kern {tag}"))["messages"]) == [str(hit)]


async def test_the_rate_limit_is_shared_by_every_node_through_redis(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    from realtime.app import create_app
    from tests.nodes import redis_url

    with redis_url() as redis:
        nodes = []
        for n in range(2):
            settings = make_settings(
                database_url, tmp_path / str(n), redis_url=redis, search_rate_count=2, search_rate_window_s=60
            )
            nodes.append(ApiClient(await aiohttp_client(create_app(settings))))
        first, second = nodes
        greedy = await first.user()
        await search(first, greedy, "python")
        await search(second, greedy, "python")
        for node in nodes:
            status, out = await node.call("GET", "/search", greedy, params={"q": "python"})
            assert status == 429 and out["error"]["code"] == "rate_limited"


async def test_forum_posts_are_found_with_their_topic_only_by_readers_of_the_board(api: ApiClient) -> None:
    owner, member, outsider, admin = await api.user(), await api.user(), await api.user(), await api.user("admin")
    teacher, learner = await api.user("instructor"), await api.user()
    tag = word()
    async with api.app[CORE].pool.acquire() as conn:
        public = await add_community(conn, uuid.UUID(owner.id), "public")
        private = await add_community(conn, uuid.UUID(owner.id), "private")
        await join_community(conn, private, uuid.UUID(member.id))
        course = await add_course(conn, uuid.UUID(teacher.id), "A course")
        await enroll(conn, course, uuid.UUID(learner.id))
        open_topic, open_post = await add_topic(
            conn, uuid.UUID(owner.id), f"Sorting {tag}", "How do I sort a list?", community=public
        )
        reply = await add_reply(conn, open_topic, open_post, uuid.UUID(member.id), f"Use sorted() on the {tag} list.")
        gone = await add_reply(conn, open_topic, open_post, uuid.UUID(member.id), f"{tag} oops", deleted=True)
        _, secret = await add_topic(conn, uuid.UUID(owner.id), "Internal", f"Private {tag} plans", community=private)
        _, homework = await add_topic(
            conn, uuid.UUID(learner.id), "Homework", f"Stuck on {tag} exercise", course=course
        )

    out = await search(api, outsider, tag, kinds="posts")
    assert set(ids(out["posts"])) == {str(open_post), str(reply)}
    assert out["courses"] is None and out["messages"] is None
    by_id = {h["id"]: h for h in out["posts"]["items"]}
    # The opening post matched through its topic's title: the title marks the word; the reply through its body.
    opening = by_id[str(open_post)]
    assert opening["topic_id"] == str(open_topic) and opening["topic_title"] == f"Sorting {tag}"
    assert opening["depth"] == 0 and opening["community_id"] == str(public) and opening["course_id"] is None
    assert [s["text"] for s in opening["title_snippet"] if s["match"]] == [tag]
    hit = by_id[str(reply)]
    assert hit["topic_id"] == str(open_topic) and hit["depth"] == 1 and hit["author_id"] == member.id
    assert marked(hit) == [tag]
    assert str(gone) not in by_id  # never a deleted post
    # A private community's posts: its members; a course board's: enrolled learners and the owner; admins: all.
    assert set(ids((await search(api, member, tag, kinds="posts"))["posts"])) == {
        str(open_post),
        str(reply),
        str(secret),
    }
    assert str(homework) in ids((await search(api, learner, tag, kinds="posts"))["posts"])
    assert str(homework) in ids((await search(api, teacher, tag, kinds="posts"))["posts"])
    assert set(ids((await search(api, admin, tag, kinds="posts"))["posts"])) == {
        str(open_post),
        str(reply),
        str(secret),
        str(homework),
    }
    # The default kinds include posts; paging within posts goes by the group's cursor.
    out = await search(api, admin, tag, limit=1)
    assert len(out["posts"]["items"]) == 1 and out["posts"]["next_cursor"]
    seen = ids(out["posts"])
    cursor = out["posts"]["next_cursor"]
    while cursor:
        page = await search(api, admin, tag, kinds="posts", limit=1, cursor=cursor)
        seen += ids(page["posts"])
        cursor = page["posts"]["next_cursor"]
    assert sorted(seen) == sorted({str(open_post), str(reply), str(secret), str(homework)})
