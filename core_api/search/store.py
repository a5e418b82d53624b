"""The SQL of each kind of search. Each query carries the kind's visibility rule itself, so no hit the
caller may not see ever leaves Postgres:

- courses: published ones, and drafts to their owner and admins (core_api/courses.py ``can_view``);
- lectures: of those courses;
- messages: of rooms the caller is a member of and not banned from (rooms/access.py); never deleted ones;
- posts: forum posts (and, through their opening post, topic titles) of boards the caller may read, exactly as
  core_api/forums/access.py reads them: a public community's for everyone signed in, a private one's for its
  members, a course's for the learners enrolled in it (unless it is a draft or deleted) and its owner (unless
  deleted); platform admins read every board; never deleted posts;
- users: every user, but only admins search them (the service checks).

Parameters shared by every query: ``$1`` the words, ``$2`` the prefix length, ``$3`` the caller's id, ``$4``
whether the caller is an admin, ``$5`` how many rows, ``$6``/``$7`` the cursor's rank and id (or NULL), ``$8``
the rooms whose messages the caller may search (:func:`member_rooms`, read in the same snapshot).
The best hits are chosen first; only they get a snippet (ts_headline reads the whole text: it is the
costly part).

The tsquery is written out in each condition (``search_query($1, $2)``, an immutable function of the
parameters) rather than read from the CTE: planned for the actual words (the service asks for custom plans),
Postgres folds it into a constant and can use the GIN index with its statistics: for messages it intersects
the GIN matches with the member rooms' messages (``room_id = ANY($8)``, a BitmapAnd) instead of ranking
every match in the table.
"""

from __future__ import annotations

import json
import uuid

from core_api.db import Connection, Record
from core_api.search.core import START, STOP
from core_api.search.schemas import Kind

_QUERY = (
    "WITH q AS (SELECT search_query($1::text[], $2::int) AS q, $3::uuid AS me, $4::boolean AS admin,"
    " $8::uuid[] AS rooms)"
)
_TSQUERY = "search_query($1::text[], $2::int)"
# The characters ts_headline marks matches with are taken out of the text first.
_CLEAN = f"E'\\u{ord(START):04X}\\u{ord(STOP):04X}'"
_MARKS = f'StartSel="{START}", StopSel="{STOP}"'
_FRAGMENTS = f"'{_MARKS}, MaxWords=24, MinWords=8, MaxFragments=2, FragmentDelimiter=\" … \"'"
# Chat messages are short: one stretch around the best match, the whole message when it is short enough.
_SHORT = f"'{_MARKS}, MaxWords=30, MinWords=12'"
_WHOLE = f"'{_MARKS}, HighlightAll=true'"
_AFTER = "($6::real IS NULL OR (r.rank, {id}) < ($6::real, $7::uuid))"


def _messages(match: str) -> str:
    # The best hits are chosen from the id, room and vector alone (all in chat_messages_room_search, so reading
    # room by room need not visit the table); the rest of the message is read for those only.
    return f"""{_QUERY},
        hits AS (
            SELECT m.id, r.rank
            FROM chat_messages m CROSS JOIN LATERAL (SELECT ts_rank_cd(m.search, {_TSQUERY}) AS rank) r
            WHERE m.room_id = ANY($8::uuid[]) AND m.deleted_at IS NULL AND {match}
              AND {_AFTER.format(id="m.id")}
            ORDER BY r.rank DESC, m.id DESC LIMIT $5)
        SELECT h.id, m.room_id, ro.name AS room_name, m.seq, m.author_id, u.display_name AS author_name,
               m.created_at, h.rank,
               ts_headline('english', translate(m.body, {_CLEAN}, ''), q.q, {_SHORT}) AS snippet
        FROM hits h JOIN chat_messages m ON m.id = h.id JOIN rooms ro ON ro.id = m.room_id
             JOIN users u ON u.id = m.author_id CROSS JOIN q
        ORDER BY h.rank DESC, h.id DESC"""


# Messages, read room by room: the same query, but the match written as the function behind ``@@``, which no
# GIN index serves, so Postgres reads the member rooms' vectors (chat_messages_room_search) and tests each one.
MESSAGES_BY_ROOM = _messages(f"ts_match_vq(m.search, {_TSQUERY})")


# The boards the caller may read (core_api/forums/access.py ``readable_topic``), gathered once per search:
# community boards through ``visible_community`` (public, or a member), course boards through
# ``visible_course`` (not deleted; the owner, or enrolled in a published, unpublished or archived course: a
# draft is its owner's alone) and then ``course_board`` (enrolled or owner). Platform admins read every board
# (``q.admin`` in the topic's test below).
_BOARDS = """
    communities_read AS MATERIALIZED (
        SELECT co.id FROM communities co WHERE co.visibility = 'public'
        UNION
        SELECT cm.community_id FROM community_members cm CROSS JOIN q WHERE cm.user_id = q.me),
    courses_read AS MATERIALIZED (
        SELECT c.id FROM courses c CROSS JOIN q WHERE c.owner_id = q.me AND c.deleted_at IS NULL
        UNION
        SELECT c.id FROM enrollments e JOIN courses c ON c.id = e.course_id CROSS JOIN q
        WHERE e.user_id = q.me AND c.deleted_at IS NULL AND c.status IN ('published', 'unpublished', 'archived'))"""
# Whether the caller may read topic ``t``'s board.
READABLE_TOPIC = """(q.admin OR t.community_id IN (SELECT id FROM communities_read)
    OR t.course_id IN (SELECT id FROM courses_read))"""

# Posts: those whose body matches, and the opening posts of topics whose title matches (every word must match
# within the title or within the body); the opening post ranks by its title and body together. The matches are
# gathered first (MATERIALIZED: through the GIN indexes), and only they are ranked and checked against the
# board's rule; inlined, Postgres would rank every post of the table before joining (80 ms over 50,000 posts).
_POSTS = f"""{_QUERY},{_BOARDS},
    matched AS MATERIALIZED (
        SELECT p.id, p.topic_id, p.depth, p.search FROM forum_posts p
        WHERE p.search @@ {_TSQUERY} AND p.deleted_at IS NULL
        UNION ALL
        SELECT p.id, p.topic_id, p.depth, p.search
        FROM forum_topics t JOIN forum_posts p ON p.topic_id = t.id AND p.depth = 0
        WHERE t.search @@ {_TSQUERY} AND p.deleted_at IS NULL AND NOT (p.search @@ {_TSQUERY})),
    hits AS (
        SELECT m.id, r.rank
        FROM matched m JOIN forum_topics t ON t.id = m.topic_id CROSS JOIN q
             CROSS JOIN LATERAL (SELECT ts_rank_cd(
                 CASE WHEN m.depth = 0 THEN t.search || m.search ELSE m.search END, {_TSQUERY}) AS rank) r
        WHERE {READABLE_TOPIC} AND {_AFTER.format(id="m.id")}
        ORDER BY r.rank DESC, m.id DESC LIMIT $5)
    SELECT h.id, p.topic_id, t.title AS topic_title, t.community_id, t.course_id, p.depth, p.author_id,
           u.display_name AS author_name, p.created_at, h.rank,
           ts_headline('english', translate(p.body, {_CLEAN}, ''), q.q, {_FRAGMENTS}) AS snippet,
           ts_headline('english', translate(t.title, {_CLEAN}, ''), q.q, {_WHOLE}) AS title_snippet
    FROM hits h JOIN forum_posts p ON p.id = h.id JOIN forum_topics t ON t.id = p.topic_id
         JOIN users u ON u.id = p.author_id CROSS JOIN q
    ORDER BY h.rank DESC, h.id DESC"""


SQL: dict[Kind, str] = {
    "courses": f"""{_QUERY},
        hits AS (
            SELECT c.id, c.owner_id, c.title, c.description, c.status, r.rank
            FROM courses c CROSS JOIN q CROSS JOIN LATERAL (SELECT ts_rank_cd(c.search, {_TSQUERY}) AS rank) r
            WHERE c.search @@ {_TSQUERY} AND (c.status = 'published' OR c.owner_id = q.me OR q.admin)
              AND {_AFTER.format(id="c.id")}
            ORDER BY r.rank DESC, c.id DESC LIMIT $5)
        SELECT h.id, h.owner_id, h.title, h.status, h.rank,
               ts_headline('english', translate(coalesce(nullif(h.description, ''), h.title), {_CLEAN}, ''), q.q,
                           {_FRAGMENTS}) AS snippet
        FROM hits h CROSS JOIN q ORDER BY h.rank DESC, h.id DESC""",
    "lectures": f"""{_QUERY},
        hits AS (
            SELECT l.id, l.course_id, c.title AS course_title, l.position, l.title, r.rank
            FROM lectures l JOIN courses c ON c.id = l.course_id
                 CROSS JOIN q CROSS JOIN LATERAL (SELECT ts_rank_cd(l.search, {_TSQUERY}) AS rank) r
            WHERE l.search @@ {_TSQUERY} AND (c.status = 'published' OR c.owner_id = q.me OR q.admin)
              AND {_AFTER.format(id="l.id")}
            ORDER BY r.rank DESC, l.id DESC LIMIT $5)
        SELECT h.id, h.course_id, h.course_title, h.position, h.title, h.rank,
               ts_headline('english', translate(h.title, {_CLEAN}, ''), q.q, {_WHOLE}) AS snippet
        FROM hits h CROSS JOIN q ORDER BY h.rank DESC, h.id DESC""",
    "messages": _messages(f"m.search @@ {_TSQUERY}"),
    "posts": _POSTS,
    "users": f"""{_QUERY},
        hits AS (
            SELECT u.id, u.display_name, u.email, u.role, r.rank
            FROM users u CROSS JOIN q CROSS JOIN LATERAL (SELECT ts_rank_cd(u.search, {_TSQUERY}) AS rank) r
            WHERE q.admin AND u.search @@ {_TSQUERY} AND {_AFTER.format(id="u.id")}
            ORDER BY r.rank DESC, u.id DESC LIMIT $5)
        SELECT h.id, h.display_name, h.email, h.role, h.rank,
               ts_headline('simple', translate(h.display_name || ' ' || h.email, {_CLEAN}, ''), q.q, {_WHOLE})
                   AS snippet
        FROM hits h CROSS JOIN q ORDER BY h.rank DESC, h.id DESC""",
}


async def member_rooms(conn: Connection, user_id: uuid.UUID) -> tuple[list[uuid.UUID], int]:
    """The rooms whose messages the user may search (those they are a member of and not banned from), and how
    many messages they hold at most (their ``last_seq``, deleted ones included)."""
    row = await conn.fetchrow(
        "SELECT coalesce(array_agg(r.id), '{}') AS rooms, coalesce(sum(r.last_seq), 0) AS messages"
        " FROM room_members rm JOIN rooms r ON r.id = rm.room_id WHERE rm.user_id = $1 AND rm.banned_at IS NULL",
        user_id,
    )
    assert row is not None
    return list(row["rooms"]), int(row["messages"])


async def estimated_matches(conn: Connection, words: list[str], min_prefix: int) -> float:
    """How many messages (of every room) the words match, as Postgres's planner estimates it from the search
    column's statistics (a plan, not a count: well under a millisecond)."""
    plan = await conn.fetchval(
        f"EXPLAIN (FORMAT JSON) SELECT 1 FROM chat_messages m WHERE m.search @@ {_TSQUERY} AND m.deleted_at IS NULL",
        words,
        min_prefix,
    )
    if isinstance(plan, str):  # a connection without the pool's json codec (core_api/db.py) answers text
        plan = json.loads(plan)
    return float(plan[0]["Plan"]["Plan Rows"])


async def search(
    conn: Connection,
    kind: Kind,
    words: list[str],
    min_prefix: int,
    user_id: uuid.UUID,
    admin: bool,
    rows: int,
    after: tuple[float, uuid.UUID] | None,
    rooms: list[uuid.UUID],
    *,
    by_room: bool = False,
) -> list[Record]:
    """Up to ``rows`` hits of ``kind`` for the caller, best first, after the cursor position ``after``;
    messages of ``rooms`` only, read room by room when ``by_room`` (:func:`core.read_messages_by_room`)."""
    rank, ident = after if after is not None else (None, None)
    sql = MESSAGES_BY_ROOM if kind == "messages" and by_room else SQL[kind]
    found: list[Record] = await conn.fetch(sql, words, min_prefix, user_id, admin, rows, rank, ident, rooms)
    return found
