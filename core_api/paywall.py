"""Who may play a priced course's lectures: learners enrolled in it (they bought it), its owner, admins.

Everyone who may see a course sees its lectures' titles and durations; a lecture's media URL goes only to
those entitled to play it. :func:`media_access` answers for one user and course (REST);
:func:`locked_lectures` for many users and lectures at once (a watch party's playlist and its viewers).
Free courses are open to whoever may see them.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass

from core_api.db import Connection, Record
from core_api.http import Principal


@dataclass(frozen=True)
class MediaAccess:
    """Whether a user may play a course's lectures, and if not, why."""

    locked: bool = False
    reason: str | None = None


OPEN = MediaAccess()


def locked_reason(course_id: uuid.UUID, coins: int) -> str:
    return f"this course costs {coins} coins: buy it (POST /api/v1/courses/{course_id}/buy) to play its lectures"


async def media_access(conn: Connection, user: Principal, course: Record) -> MediaAccess:
    """May ``user`` play ``course``'s lectures? Free courses: whoever may see them. Priced ones: learners
    enrolled in them, their owner and admins."""
    if course["owner_id"] == user.id or user.is_admin:
        return OPEN
    row = await conn.fetchrow(
        "SELECT p.coins, EXISTS (SELECT 1 FROM enrollments e WHERE e.course_id = $1 AND e.user_id = $2) AS enrolled"
        " FROM course_prices p WHERE p.course_id = $1",
        course["id"],
        user.id,
    )
    if row is None or row["enrolled"]:
        return OPEN
    return MediaAccess(True, locked_reason(course["id"], row["coins"]))


@dataclass(frozen=True)
class LectureLocks:
    """Which of some lectures are locked, and for whom (see :func:`locked_lectures`)."""

    paywalled: frozenset[uuid.UUID]
    """Locked for somebody: lectures of priced courses, and lectures that no longer exist."""
    by_user: dict[uuid.UUID, frozenset[uuid.UUID]]
    """For each user asked about, the lectures locked for them."""

    def of(self, user_id: uuid.UUID) -> frozenset[uuid.UUID]:
        return self.by_user.get(user_id, self.paywalled)


NO_LOCKS = LectureLocks(frozenset(), {})


async def locked_lectures(
    conn: Connection, lecture_ids: Collection[uuid.UUID], user_ids: Collection[uuid.UUID]
) -> LectureLocks:
    """For each user, which of the lectures they may not play: a priced course's lectures unless they are
    enrolled in it, own it or are an admin. A lecture that no longer exists is locked for everyone (what
    it was is unknown). Costs one query, and two more only when some lecture is paywalled."""
    if not lecture_ids:
        return NO_LOCKS
    rows = await conn.fetch(
        """SELECT want.id, l.course_id, c.owner_id, p.coins
           FROM unnest($1::uuid[]) AS want (id)
           LEFT JOIN lectures l ON l.id = want.id
           LEFT JOIN courses c ON c.id = l.course_id
           LEFT JOIN course_prices p ON p.course_id = l.course_id
           WHERE l.id IS NULL OR p.coins IS NOT NULL""",
        list(set(lecture_ids)),
    )
    if not rows:
        return NO_LOCKS
    paywalled = frozenset(r["id"] for r in rows)
    gone = frozenset(r["id"] for r in rows if r["course_id"] is None)
    priced = [r for r in rows if r["course_id"] is not None]
    users = list(set(user_ids))
    if not users:
        return LectureLocks(paywalled, {})
    admins = {
        r["id"] for r in await conn.fetch("SELECT id FROM users WHERE id = ANY($1::uuid[]) AND role = 'admin'", users)
    }
    enrolled = {
        (r["user_id"], r["course_id"])
        for r in await conn.fetch(
            "SELECT user_id, course_id FROM enrollments"
            " WHERE user_id = ANY($1::uuid[]) AND course_id = ANY($2::uuid[])",
            users,
            list({r["course_id"] for r in priced}),
        )
    }
    by_user = {
        user: gone
        | frozenset(
            r["id"]
            for r in priced
            if user not in admins and user != r["owner_id"] and (user, r["course_id"]) not in enrolled
        )
        for user in users
    }
    return LectureLocks(paywalled, by_user)
