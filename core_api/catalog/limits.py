"""The per-owner rate of course lifecycle and prerequisite changes (imports nothing of core_api.courses,
which calls it when publishing)."""

from __future__ import annotations

import math

from core_api.context import Core, Tx
from core_api.errors import AppError, ErrorCode
from core_api.http import Principal

CHANGE_ACTIONS = [
    "course.unpublished",
    "course.archived",
    "course.restored",
    "course.deleted",
    "course.prerequisites",
]
"""The audited changes :func:`check_rate` counts, with ``course.published``."""


async def check_rate(tx: Tx, app: Core, user: Principal) -> None:
    """At most ``STUDYHALL_COURSE_CHANGES_PER_HOUR`` lifecycle and prerequisite changes per owner in any hour,
    counted from the audit log under a per-user lock (so two nodes cannot both pass the last one); admins
    are not limited."""
    if user.is_admin:
        return
    limit = app.settings.course_changes_per_hour
    await tx.conn.execute("SELECT pg_advisory_xact_lock(hashtext('course-changes:' || $1::uuid::text))", user.id)
    row = await tx.conn.fetchrow(
        """SELECT count(*) AS n, extract(epoch FROM min(created_at) + interval '1 hour' - now()) AS wait
           FROM (SELECT created_at FROM audit_log
                 WHERE actor_id = $1 AND action = ANY($2::text[]) AND created_at > now() - interval '1 hour'
                 ORDER BY created_at DESC LIMIT $3) recent""",
        user.id,
        [*CHANGE_ACTIONS, "course.published"],
        limit,
    )
    assert row is not None
    if row["n"] >= limit:
        raise AppError(
            ErrorCode.RATE_LIMITED,
            f"at most {limit} course changes an hour; try again later",
            {"retry_after_s": max(1, math.ceil(float(row["wait"] or 1)))},
        )
