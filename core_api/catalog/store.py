"""SQL of course management (tags, prerequisites, the lifecycle's writes). Imports nothing of
:mod:`core_api.courses`, which calls it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from core_api.db import Connection, Record

PREREQUISITES_LOCK = 0x5C0_0024
"""Advisory lock key taken while prerequisites change, so two concurrent edits cannot close a cycle
between them (each checking the graph without the other's edge)."""


async def replace_tags(conn: Connection, course_id: uuid.UUID, tags: Sequence[str]) -> None:
    await conn.execute(
        "DELETE FROM course_tags WHERE course_id = $1 AND NOT (tag = ANY($2::text[]))", course_id, list(tags)
    )
    await conn.execute(
        "INSERT INTO course_tags (course_id, tag) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
        course_id,
        list(tags),
    )


async def enrolled_count(conn: Connection, course_id: uuid.UUID) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM enrollments WHERE course_id = $1", course_id))


async def set_status(conn: Connection, course_id: uuid.UUID, status: str, archived_from: str | None) -> None:
    await conn.execute(
        """UPDATE courses SET status = $2, archived_from = $3,
               archived_at = CASE WHEN $2 = 'archived' THEN now() ELSE NULL END, updated_at = now()
           WHERE id = $1""",
        course_id,
        status,
        archived_from,
    )


async def mark_deleted(conn: Connection, course_id: uuid.UUID, actor_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE courses SET deleted_at = now(), deleted_by = $2, updated_at = now() WHERE id = $1", course_id, actor_id
    )


async def courses_by_id(conn: Connection, ids: Sequence[uuid.UUID]) -> list[Record]:
    rows: list[Record] = await conn.fetch(
        "SELECT id, title, status, deleted_at FROM courses WHERE id = ANY($1::uuid[])", list(ids)
    )
    return rows


async def reaches(conn: Connection, starts: Sequence[uuid.UUID], target: uuid.UUID) -> bool:
    """Whether ``target`` is among ``starts`` or their prerequisites, at any depth (every edge counts,
    whatever the courses' status: a cycle must not appear when one is published again)."""
    found = await conn.fetchval(
        """WITH RECURSIVE reach (id) AS (
               SELECT unnest($1::uuid[])
               UNION
               SELECT q.requires_id FROM course_prerequisites q JOIN reach ON q.course_id = reach.id
           )
           SELECT EXISTS (SELECT 1 FROM reach WHERE id = $2)""",
        list(starts),
        target,
    )
    return bool(found)


async def replace_prerequisites(conn: Connection, course_id: uuid.UUID, requires: Sequence[uuid.UUID]) -> None:
    await conn.execute("DELETE FROM course_prerequisites WHERE course_id = $1", course_id)
    await conn.execute(
        "INSERT INTO course_prerequisites (course_id, requires_id) SELECT $1, unnest($2::uuid[])",
        course_id,
        list(requires),
    )


async def missing_prerequisites(conn: Connection, user_id: uuid.UUID, course_id: uuid.UUID) -> list[Record]:
    """The prerequisites in force (published, not deleted) of a course the user holds no certificate of."""
    rows: list[Record] = await conn.fetch(
        """SELECT r.id, r.title FROM course_prerequisites q JOIN courses r ON r.id = q.requires_id
           WHERE q.course_id = $1 AND r.status = 'published' AND r.deleted_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM certificates k WHERE k.course_id = r.id AND k.user_id = $2)
           ORDER BY r.title, r.id""",
        course_id,
        user_id,
    )
    return rows
