"""Notify a course's learners of something, honouring each one's preferences, in the caller's transaction."""

from __future__ import annotations

import uuid
from typing import Any

from core_api.announcements.preferences import KINDS
from core_api.context import Tx, notify_many


async def notify_users(
    tx: Tx,
    user_ids: list[uuid.UUID],
    kind: str,
    payload: dict[str, Any],
    mail: tuple[str, str] | None = None,
    *,
    preference: str | None = None,
) -> int:
    """One notification per user who wants ``preference`` (default: ``kind``) in the app, in one statement,
    published after commit; and, with ``mail`` (subject, text), an email to those who want it by email. Returns
    how many were notified in the app."""
    pref = preference or kind
    _, in_app_default, email_default = KINDS[pref]
    rows = await tx.conn.fetch(
        """SELECT u.id, u.email, coalesce(p.in_app, $3) AS in_app, coalesce(p.email, $4) AS by_email
             FROM unnest($1::uuid[]) AS t(id) JOIN users u ON u.id = t.id AND u.deleted_at IS NULL
             LEFT JOIN notification_preferences p ON p.user_id = u.id AND p.kind = $2""",
        user_ids,
        pref,
        in_app_default,
        email_default,
    )
    made = await notify_many(tx, [r["id"] for r in rows if r["in_app"]], kind, payload)
    if mail is not None:
        subject, text = mail
        for row in rows:
            if row["by_email"]:
                tx.mail(row["email"], subject, text)
    return made


async def learners_of(tx: Tx, course_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await tx.conn.fetch("SELECT user_id FROM enrollments WHERE course_id = $1", course_id)
    return [r["user_id"] for r in rows]


async def notify_learners(
    tx: Tx, course_id: uuid.UUID, kind: str, payload: dict[str, Any], mail: tuple[str, str] | None = None
) -> int:
    """:func:`notify_users` for everyone enrolled in the course."""
    return await notify_users(tx, await learners_of(tx, course_id), kind, payload, mail)
