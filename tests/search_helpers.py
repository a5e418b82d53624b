"""Worlds to search: users, rooms, memberships, messages, courses and lectures written straight to Postgres
(the search columns are Postgres's own generated columns, so how a row got there does not matter)."""

from __future__ import annotations

import uuid
from typing import Any

from core_api.db import Connection


async def add_user(conn: Connection, name: str, role: str = "student", email: str | None = None) -> uuid.UUID:
    uid = uuid.uuid4()
    email = email or f"u-{uid.hex[:12]}@example.com"
    await conn.execute(
        "INSERT INTO users (id, email, display_name, password_hash, role) VALUES ($1, $2, $3, 'x', $4)",
        uid,
        email,
        name,
        role,
    )
    return uid


async def add_room(conn: Connection, creator: uuid.UUID, visibility: str = "private", name: str = "room") -> uuid.UUID:
    rid = uuid.uuid4()
    await conn.execute(
        "INSERT INTO rooms (id, name, kind, visibility, created_by) VALUES ($1, $2, 'study', $3, $4)",
        rid,
        name,
        visibility,
        creator,
    )
    return rid


async def add_member(conn: Connection, room: uuid.UUID, user: uuid.UUID, *, banned: bool = False) -> None:
    await conn.execute(
        "INSERT INTO room_members (room_id, user_id, role, banned_at) VALUES ($1, $2, 'member', "
        "CASE WHEN $3 THEN now() END)",
        room,
        user,
        banned,
    )


async def add_message(
    conn: Connection, room: uuid.UUID, author: uuid.UUID, body: str, *, deleted: bool = False
) -> uuid.UUID:
    mid = uuid.uuid4()
    await conn.execute(
        """WITH s AS (UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $2 RETURNING last_seq)
           INSERT INTO chat_messages (id, room_id, seq, author_id, client_msg_id, body, deleted_at)
           SELECT $1, $2, s.last_seq, $3, $6, $4, CASE WHEN $5 THEN now() END FROM s""",
        mid,
        room,
        author,
        body,
        deleted,
        mid.hex,
    )
    return mid


async def add_course(
    conn: Connection, owner: uuid.UUID, title: str, description: str = "", *, published: bool = True
) -> uuid.UUID:
    cid = uuid.uuid4()
    await conn.execute(
        "INSERT INTO courses (id, owner_id, title, description, status, published_at)"
        " VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END)",
        cid,
        owner,
        title,
        description,
        "published" if published else "draft",
        published,
    )
    return cid


async def add_lecture(conn: Connection, course: uuid.UUID, title: str, position: int = 0) -> uuid.UUID:
    lid = uuid.uuid4()
    await conn.execute(
        "INSERT INTO lectures (id, course_id, position, title, media_kind, media_url, duration_s)"
        " VALUES ($1, $2, $3, $4, 'video', 'https://example.com/v.mp4', 60)",
        lid,
        course,
        position,
        title,
    )
    return lid


async def add_community(conn: Connection, creator: uuid.UUID, visibility: str = "public") -> uuid.UUID:
    cid = uuid.uuid4()
    await conn.execute(
        "INSERT INTO communities (id, name, visibility, created_by) VALUES ($1, $2, $3, $4)",
        cid,
        f"community {cid.hex}",
        visibility,
        creator,
    )
    await conn.execute(
        "INSERT INTO community_members (community_id, user_id, role) VALUES ($1, $2, 'owner')", cid, creator
    )
    return cid


async def join_community(conn: Connection, community: uuid.UUID, user: uuid.UUID) -> None:
    await conn.execute(
        "INSERT INTO community_members (community_id, user_id, role) VALUES ($1, $2, 'member') ON CONFLICT DO NOTHING",
        community,
        user,
    )


async def enroll(conn: Connection, course: uuid.UUID, user: uuid.UUID) -> None:
    await conn.execute(
        "INSERT INTO enrollments (id, user_id, course_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        uuid.uuid4(),
        user,
        course,
    )


async def set_course_state(conn: Connection, course: uuid.UUID, status: str, *, deleted: bool = False) -> None:
    """Put a course in ``status`` (draft, published, unpublished or archived), soft-deleted or not."""
    await conn.execute(
        "UPDATE courses SET status = $2, archived_from = CASE WHEN $2 = 'archived' THEN 'published' END,"
        " published_at = coalesce(published_at, now()), deleted_at = CASE WHEN $3 THEN now() END WHERE id = $1",
        course,
        status,
        deleted,
    )


async def add_topic(
    conn: Connection,
    author: uuid.UUID,
    title: str,
    body: str,
    *,
    community: uuid.UUID | None = None,
    course: uuid.UUID | None = None,
    deleted: bool = False,
) -> tuple[uuid.UUID, uuid.UUID]:
    """A topic and its opening post (deleted or not): their ids."""
    tid, pid = uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO forum_topics (id, community_id, course_id, author_id, title) VALUES ($1, $2, $3, $4, $5)",
        tid,
        community,
        course,
        author,
        title,
    )
    await conn.execute(
        "INSERT INTO forum_posts (id, topic_id, author_id, depth, body, deleted_at)"
        " VALUES ($1, $2, $3, 0, $4, CASE WHEN $5 THEN now() END)",
        pid,
        tid,
        author,
        body,
        deleted,
    )
    return tid, pid


async def add_reply(
    conn: Connection, topic: uuid.UUID, parent: uuid.UUID, author: uuid.UUID, body: str, *, deleted: bool = False
) -> uuid.UUID:
    pid = uuid.uuid4()
    await conn.execute(
        "INSERT INTO forum_posts (id, topic_id, parent_id, author_id, depth, body, deleted_at)"
        " SELECT $1, $2, $3, $4, p.depth + 1, $5, CASE WHEN $6 THEN now() END FROM forum_posts p WHERE p.id = $3",
        pid,
        topic,
        parent,
        author,
        body,
        deleted,
    )
    return pid


def ids(group: dict[str, Any] | None) -> list[str]:
    assert group is not None
    return [item["id"] for item in group["items"]]


def marked(hit: dict[str, Any]) -> list[str]:
    """The matched pieces of a hit's snippet."""
    return [s["text"] for s in hit["snippet"] if s["match"]]
