"""Search never shows what the searcher may not see: a property test over random worlds and queries.

Each example writes a small world to the session's Postgres (users of random roles, public and private rooms
with random memberships and bans, messages some of which are deleted, draft and published courses of random
owners with lectures, all made of a few words) and runs random queries of those words, or their starts, for
every user through the search's own SQL (core_api/search/store.py, where the visibility rules live). Then:

- a message is found only by members of its room who are not banned from it, and never once deleted;
- a draft course (and its lectures) only by its owner and admins;
- users only by admins;
- and every visible row holding every word of the query is found (the rules hide nothing else).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_api.search import core, store
from core_api.search.schemas import KINDS
from core_api.settings import Settings
from tests.search_helpers import add_course, add_lecture, add_member, add_message, add_room, add_user

# English stems of these are the words themselves, and none is a stop word: what "contains the word" means
# below is what Postgres means.
VOCABULARY = ["algorithm", "graph", "python", "matrix", "vector", "kernel", "lambda", "tensor"]
MIN_PREFIX = Settings.model_fields["search_min_prefix_chars"].default
LIMITS = core.Limits(max_query_chars=200, max_words=8, max_limit=1000)

texts = st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=4).map(" ".join)
query_words = st.sampled_from(VOCABULARY).flatmap(
    lambda w: st.sampled_from([w, w[:MIN_PREFIX], w[: MIN_PREFIX + 1], w.upper()])
)


@dataclass
class World:
    roles: list[str]
    rooms: list[tuple[bool, list[tuple[int, bool]]]]  # (private, [(user index, banned)])
    messages: list[tuple[int, int, str, bool]]  # (room index, author index, body, deleted)
    courses: list[tuple[int, bool, str, list[str]]]  # (owner index, published, title, lecture titles)
    queries: list[list[str]]
    ids: dict[str, list[uuid.UUID]] = field(default_factory=dict)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    roles = draw(st.lists(st.sampled_from(["student", "student", "instructor", "admin"]), min_size=2, max_size=5))
    users = st.integers(0, len(roles) - 1)
    rooms = draw(
        st.lists(
            st.tuples(st.booleans(), st.lists(st.tuples(users, st.booleans()), max_size=4, unique_by=lambda m: m[0])),
            min_size=1,
            max_size=4,
        )
    )
    messages = draw(
        st.lists(st.tuples(st.integers(0, len(rooms) - 1), users, texts, st.booleans()), min_size=1, max_size=12)
    )
    courses = draw(st.lists(st.tuples(users, st.booleans(), texts, st.lists(texts, max_size=2)), max_size=5))
    queries = draw(st.lists(st.lists(query_words, min_size=1, max_size=2), min_size=1, max_size=3))
    return World(roles, rooms, messages, courses, queries)


def matches(text: str, words: list[str]) -> bool:
    """Whether Postgres should match ``text``: every query word is a vocabulary word of it, or (long enough)
    the start of one."""
    have = text.split()
    return all(
        any(h == w or (len(w) >= MIN_PREFIX and h.startswith(w)) for h in have) for w in (x.lower() for x in words)
    )


async def check(url: str, world: World) -> None:
    conn = await asyncpg.connect(url)
    try:
        users = [await add_user(conn, f"Searcher {i}", role) for i, role in enumerate(world.roles)]
        rooms = [await add_room(conn, users[0], "private" if private else "public") for private, _ in world.rooms]
        for room, (_, members) in zip(rooms, world.rooms, strict=True):
            for index, banned in members:
                await add_member(conn, room, users[index], banned=banned)
        messages = [
            await add_message(conn, rooms[r], users[a], body, deleted=deleted) for r, a, body, deleted in world.messages
        ]
        courses, lectures = [], []
        for owner, published, title, lecture_titles in world.courses:
            course = await add_course(conn, users[owner], title, published=published)
            courses.append(course)
            lectures += [(course, await add_lecture(conn, course, t, i)) for i, t in enumerate(lecture_titles)]

        for searcher, role in zip(users, world.roles, strict=True):
            admin = role == "admin"
            for raw in world.queries:
                words = core.words_of(" ".join(raw), LIMITS)
                rooms_of_searcher, _ = await store.member_rooms(conn, searcher)
                found = {
                    kind: {
                        r["id"]
                        for r in await store.search(
                            conn, kind, words, MIN_PREFIX, searcher, admin, 10_000, None, rooms_of_searcher
                        )
                    }
                    for kind in KINDS
                }
                # Both ways of reading messages find the same ones.
                by_room = await store.search(
                    conn, "messages", words, MIN_PREFIX, searcher, admin, 10_000, None, rooms_of_searcher, by_room=True
                )
                assert {r["id"] for r in by_room} == found["messages"]
                # Messages: member rooms only, not banned, never deleted; and all of those that match.
                expected = set()
                for mid, (r, _, body, deleted) in zip(messages, world.messages, strict=True):
                    membership = dict(world.rooms[r][1]).get(users.index(searcher))
                    if membership is False and not deleted and matches(body, words):
                        expected.add(mid)
                assert found["messages"] == expected, (role, words)
                # Courses and lectures: published, or drafts to their owner and admins.
                mine = {
                    c for c, (o, published, _, _) in zip(courses, world.courses, strict=True)
                    if published or admin or users[o] == searcher
                }  # fmt: skip
                ours = set(courses)
                expected = {
                    c for c, w in zip(courses, world.courses, strict=True) if c in mine and matches(w[2], words)
                }
                assert found["courses"] & ours == expected, (role, words)
                await _only_published(conn, found["courses"] - ours, searcher, admin)
                expected = {
                    lecture for course, lecture in lectures
                    if course in mine and matches(_title(world, courses, course, lectures, lecture), words)
                }  # fmt: skip
                assert found["lectures"] & {lec for _, lec in lectures} == expected, (role, words)
                # Users: admins only (the service also refuses the kind to others: tests/test_search.py).
                if not admin:
                    assert found["users"] == set()
    finally:
        await conn.close()


def _title(
    world: World,
    courses: list[uuid.UUID],
    course: uuid.UUID,
    lectures: list[tuple[uuid.UUID, uuid.UUID]],
    lecture: uuid.UUID,
) -> str:
    index = courses.index(course)
    of_course = [lec for c, lec in lectures if c == course]
    return world.courses[index][3][of_course.index(lecture)]


async def _only_published(conn: asyncpg.Connection, others: set[uuid.UUID], searcher: uuid.UUID, admin: bool) -> None:
    """Courses of other examples: the searcher (new in this example) owns none, so only published ones."""
    if admin or not others:
        return
    statuses = await conn.fetch("SELECT status, owner_id FROM courses WHERE id = ANY($1::uuid[])", list(others))
    assert all(r["status"] == "published" for r in statuses)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(world=worlds())
def test_search_shows_exactly_what_the_searcher_may_see(database_url: str, world: World) -> None:
    asyncio.run(check(database_url, world))
