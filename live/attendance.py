"""Attendance of live sessions: who joined, from when to when (table ``live_attendance``, migration 0021).

Recording (called by :class:`live.signalling.LiveNode`):

- a connection's ``live:join`` opens a stretch of presence (:meth:`Attendance.opened`); its ``live:leave``,
  its disconnect, losing the room (banned, removed) closes it (:meth:`Attendance.closed`); the host ending
  the session closes every open one at ``ended_at`` (:meth:`Attendance.close_session`); a node shutting down
  closes the ones it carries.
- past ``STUDYHALL_LIVE_ATTENDANCE_MAX_INTERVALS`` stretches for one user in one session, a join reopens the
  user's latest stretch instead of adding one (the time between counts as present): a client joining and
  leaving in a loop cannot grow the table without bound.

Reading (``GET /live-sessions/{id}/attendance``): the session's runners (host, scheduler, room members of
``STUDYHALL_LIVE_SCHEDULE_ROOM_ROLE`` or higher), the instructor of its course, platform admins. Anyone else
who can see the room gets ``forbidden``; those who cannot, ``not_found``. One item per person, in order of
first arrival, with their stretches; a stretch still open is ``left_at: null`` while the session is live
and ends at ``ended_at`` once it is over (a node that died without closing it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from core_api.context import Core, Page, PageQuery, decode_cursor, encode_cursor, new_id
from core_api.db import Record
from core_api.errors import forbidden, not_found
from core_api.http import Principal
from live.schedule import Schedule, course_owner, load_session, utcnow
from live.schemas import HostRef

Clock = Callable[[], datetime]


class Stretch(BaseModel):
    joined_at: datetime
    left_at: datetime | None = Field(description="Null while still in the session (only while it is live).")


class AttendeeOut(BaseModel):
    user: HostRef
    first_joined_at: datetime
    last_left_at: datetime | None = Field(description="Null while the person is still in the session.")
    present_s: float = Field(description="Seconds present (overlapping stretches, e.g. two tabs, counted once).")
    stretches: list[Stretch] = Field(description="Each join to its leave, oldest first.")


class AttendanceQuery(PageQuery):
    pass


def present_seconds(stretches: list[Stretch], now: datetime) -> float:
    """The length of the union of the stretches (an open one runs to ``now``)."""
    total = 0.0
    end: datetime | None = None
    for s in sorted(stretches, key=lambda s: s.joined_at):
        stop = s.left_at or now
        if end is None or s.joined_at > end:
            total += (stop - s.joined_at).total_seconds()
            end = stop
        elif stop > end:
            total += (stop - end).total_seconds()
            end = stop
    return max(0.0, total)


class Attendance:
    """Records and reports attendance. ``clock`` gives the current time (tests pass their own)."""

    def __init__(self, core: Core, clock: Clock = utcnow) -> None:
        self.core = core
        self.clock = clock

    async def opened(self, session_id: uuid.UUID, user_id: uuid.UUID) -> uuid.UUID:
        """A join: the id of the stretch it opened (or reopened, past the per-user cap)."""
        cap = self.core.settings.live_attendance_max_intervals
        now = self.clock()
        async with self.core.transaction() as tx:
            # One user's joins one at a time, so the count and the insert agree.
            key = f"live-attendance:{session_id}:{user_id}"
            await tx.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))", key)
            count, latest = await tx.conn.fetchrow(
                "SELECT count(*), (array_agg(id ORDER BY joined_at DESC))[1] FROM live_attendance"
                " WHERE session_id = $1 AND user_id = $2",
                session_id, user_id,
            )  # fmt: skip
            if count >= cap and latest is not None:
                await tx.conn.execute("UPDATE live_attendance SET left_at = NULL WHERE id = $1", latest)
                stretch_id: uuid.UUID = latest
                return stretch_id
            stretch_id = new_id()
            await tx.conn.execute(
                "INSERT INTO live_attendance (id, session_id, user_id, joined_at) VALUES ($1, $2, $3, $4)",
                stretch_id, session_id, user_id, now,
            )  # fmt: skip
        return stretch_id

    async def closed(self, stretch_ids: list[uuid.UUID]) -> None:
        """Leaves: the stretches end now (those already closed keep their end)."""
        if not stretch_ids:
            return
        async with self.core.pool.acquire() as conn:
            await conn.execute(
                "UPDATE live_attendance SET left_at = greatest(joined_at, $2) WHERE id = ANY($1) AND left_at IS NULL",
                stretch_ids, self.clock(),
            )  # fmt: skip

    async def close_session(self, session_id: uuid.UUID, at: datetime) -> None:
        """The session ended at ``at``: every stretch still open ends then."""
        async with self.core.pool.acquire() as conn:
            await conn.execute(
                "UPDATE live_attendance SET left_at = greatest(joined_at, $2)"
                " WHERE session_id = $1 AND left_at IS NULL",
                session_id, at,
            )  # fmt: skip

    async def _may_read(self, user: Principal, session_id: uuid.UUID) -> Record:
        schedule = Schedule(self.core, self.clock)
        async with self.core.pool.acquire() as conn:
            row = await load_session(conn, session_id)
            if row is None:
                raise not_found("live session")
            if user.is_admin or await course_owner(conn, row["course_id"]) == user.id:
                return row  # the course's instructor, even outside the room
            row = await schedule.visible_session(conn, user, session_id)
            if not await schedule.may_run(conn, user, row):
                raise forbidden("only the session's host, the room's hosts and the course's instructor see attendance")
        return row

    async def report(self, user: Principal, session_id: uuid.UUID, query: AttendanceQuery) -> Page[AttendeeOut]:
        session = await self._may_read(user, session_id)
        at, ident = decode_cursor(query.cursor)
        ended_at = session["ended_at"]
        async with self.core.pool.acquire() as conn:
            people = await conn.fetch(
                """SELECT a.user_id, u.display_name, min(a.joined_at) AS first_joined_at
                   FROM live_attendance a JOIN users u ON u.id = a.user_id
                   WHERE a.session_id = $1
                   GROUP BY a.user_id, u.display_name
                   HAVING $2::timestamptz IS NULL OR (min(a.joined_at), a.user_id) > ($2, $3)
                   ORDER BY first_joined_at, a.user_id LIMIT $4""",
                session_id, at, ident, query.limit + 1,
            )  # fmt: skip
            more = len(people) > query.limit
            people = people[: query.limit]
            rows = await conn.fetch(
                "SELECT user_id, joined_at, left_at FROM live_attendance WHERE session_id = $1 AND user_id = ANY($2)"
                " ORDER BY joined_at, id",
                session_id, [p["user_id"] for p in people],
            )  # fmt: skip
        by_user: dict[uuid.UUID, list[Stretch]] = {}
        for r in rows:
            left = r["left_at"] if r["left_at"] is not None else ended_at
            by_user.setdefault(r["user_id"], []).append(Stretch(joined_at=r["joined_at"], left_at=left))
        now = self.clock()
        items: list[AttendeeOut] = []
        for p in people:
            stretches = by_user.get(p["user_id"], [])
            open_ = any(s.left_at is None for s in stretches)
            last: Any = None if open_ else max((s.left_at for s in stretches if s.left_at), default=None)
            attendee = AttendeeOut(
                user=HostRef(id=p["user_id"], display_name=p["display_name"]),
                first_joined_at=p["first_joined_at"], last_left_at=last,
                present_s=round(present_seconds(stretches, now), 3), stretches=stretches,
            )  # fmt: skip
            items.append(attendee)
        cursor = encode_cursor(people[-1]["first_joined_at"], people[-1]["user_id"]) if more and people else None
        return Page[AttendeeOut](items=items, next_cursor=cursor)
