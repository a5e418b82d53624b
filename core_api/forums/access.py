"""Who may read, post in and moderate a board: the one place these rules live.

- A **community board** is read by whoever may see the community (everyone signed in for a public one, its
  members for a private one: others get ``not_found``, as for the community); its **members** post;
  its **owner and admins** (and platform admins) moderate.
- A **course board** is read and written by the learners **enrolled** in the course, its **owner** and
  platform admins (others who may see the course get ``forbidden``: "enroll first"; a draft of someone
  else's is ``not_found``); the owner and platform admins moderate.
- Moderating is pinning, locking, accepting any reply as the answer and deleting others' posts. The topic's
  author may accept an answer too. A locked topic takes no replies, votes or edits (moderators still
  moderate it).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from core_api.communities import ADMIN, acting_rank, visible_community
from core_api.courses import visible_course
from core_api.db import Connection, Record
from core_api.errors import AppError, ErrorCode, forbidden, not_found
from core_api.http import Principal


@dataclass(frozen=True)
class Board:
    """A community's or a course's board as the caller may use it."""

    community_id: uuid.UUID | None
    course_id: uuid.UUID | None
    can_post: bool
    can_moderate: bool


async def community_board(conn: Connection, user: Principal, community_id: uuid.UUID) -> Board:
    community = await visible_community(conn, user, community_id)
    rank = acting_rank(user, community["my_role"])
    member = community["my_role"] is not None or user.is_admin
    return Board(community_id=community_id, course_id=None, can_post=member, can_moderate=rank >= ADMIN)


async def course_board(conn: Connection, user: Principal, course_id: uuid.UUID) -> Board:
    course = await visible_course(conn, user, course_id)
    staff = user.is_admin or course["owner_id"] == user.id
    if not staff:
        enrolled = await conn.fetchval(
            "SELECT 1 FROM enrollments WHERE course_id = $1 AND user_id = $2", course_id, user.id
        )
        if not enrolled:
            raise forbidden("enroll in the course to read and write its forum")
    return Board(community_id=None, course_id=course_id, can_post=True, can_moderate=staff)


async def board_of(conn: Connection, user: Principal, topic: Record) -> Board:
    if topic["community_id"] is not None:
        return await community_board(conn, user, topic["community_id"])
    return await course_board(conn, user, topic["course_id"])


async def load_topic(conn: Connection, topic_id: uuid.UUID, *, lock: bool = False) -> Record:
    row: Record | None = await conn.fetchrow(
        "SELECT id, community_id, course_id, author_id, title, locked_at, pinned_at, accepted_post_id"
        " FROM forum_topics WHERE id = $1" + (" FOR UPDATE" if lock else ""),
        topic_id,
    )
    if row is None:
        raise not_found("topic")
    return row


async def readable_topic(
    conn: Connection, user: Principal, topic_id: uuid.UUID, *, lock: bool = False
) -> tuple[Record, Board]:
    """The topic and its board, if the caller may read it (a topic of a board one may not see is not found)."""
    topic = await load_topic(conn, topic_id, lock=lock)
    try:
        board = await board_of(conn, user, topic)
    except AppError as error:  # the board's not_found would name the community or course: say "topic"
        if error.code == ErrorCode.NOT_FOUND:
            raise not_found("topic") from None
        raise
    return topic, board


def require_poster(board: Board) -> None:
    if not board.can_post:
        raise forbidden("only members of the community may post in its forum")


def require_moderator(board: Board) -> None:
    if not board.can_moderate:
        raise forbidden("only the board's moderators may do this")


async def readers_mentioned(conn: Connection, board: Board, keys: list[str], exclude: uuid.UUID) -> list[uuid.UUID]:
    """Users a mention in this board may notify: its members (community) or learners and owner (course),
    whose display name matches a mention key, not ``exclude``."""
    if not keys:
        return []
    name = "lower(regexp_replace(u.display_name, '\\s', '', 'g'))"
    scope: uuid.UUID | None
    if board.community_id is not None:
        sql = (
            f"SELECT u.id FROM community_members m JOIN users u ON u.id = m.user_id"
            f" WHERE m.community_id = $1 AND u.id <> $3 AND {name} = ANY($2::text[]) ORDER BY u.id"
        )
        scope = board.community_id
    else:
        sql = (
            f"SELECT u.id FROM users u WHERE u.id <> $3 AND {name} = ANY($2::text[]) AND ("
            f" EXISTS (SELECT 1 FROM enrollments e WHERE e.course_id = $1 AND e.user_id = u.id)"
            f" OR EXISTS (SELECT 1 FROM courses c WHERE c.id = $1 AND c.owner_id = u.id)) ORDER BY u.id"
        )
        scope = board.course_id
    return [r["id"] for r in await conn.fetch(sql, scope, keys, exclude)]
