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


def ids(group: dict[str, Any] | None) -> list[str]:
    assert group is not None
    return [item["id"] for item in group["items"]]


def marked(hit: dict[str, Any]) -> list[str]:
    """The matched pieces of a hit's snippet."""
    return [s["text"] for s in hit["snippet"] if s["match"]]
