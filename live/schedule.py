"""The schedule of live sessions: schedule, list, read, cancel, and the "starts soon" reminder.

Rules (the one place they live):

- A session belongs to a room (and optionally a course). Scheduling needs a room one can see, that is not
  archived, and one of: platform admin; room role at least ``STUDYHALL_LIVE_SCHEDULE_ROOM_ROLE`` (default
  ``moderator``); or owning the named course while being a member of the room.
- The host (who goes live) is the caller unless ``host_id`` names someone else, who must qualify the same
  way (an admin, a room member of that role, or the course's instructor).
- Reading a session or a room's list needs only to see the room; a room one may not see is ``not_found``.
- Cancelling: the session's host, whoever scheduled it, a room member of the scheduling role, or an admin;
  only before the session went live (and not twice: ``conflict``).
- Abuse limits: ``STUDYHALL_LIVE_SCHEDULE_RATE_COUNT`` per ``..._WINDOW_S`` per user (``rate_limited``),
  ``STUDYHALL_LIVE_MAX_UPCOMING_PER_ROOM`` sessions not yet over per room (``conflict``), start no more than
  ``STUDYHALL_LIVE_MAX_AHEAD_DAYS`` ahead, length at most ``STUDYHALL_LIVE_MAX_DURATION_MINUTES``.

Notifications go to the room's members (not banned) and the course's enrolled learners, never to the one
who caused them: ``live_session_scheduled`` in the scheduling transaction, ``live_session_cancelled`` on
cancel, and ``live_session_starting`` ``STUDYHALL_LIVE_REMINDER_LEAD_S`` before the start. The reminder is
sent exactly once whichever nodes run :meth:`Schedule.remind_due`: the pass claims due sessions with
``FOR UPDATE SKIP LOCKED`` and marks them ``reminded_at`` in the transaction that stores the reminders.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from core_api.announcements.fanout import notify_users
from core_api.context import Core, Page, Tx, audit, decode_cursor, new_id, notify_many, page_of
from core_api.db import Connection, Record
from core_api.errors import AppError, ErrorCode, conflict, forbidden, invalid, not_found
from core_api.http import Principal
from live.schemas import HostRef, LiveSessionIn, LiveSessionOut, LiveSessionQuery, SessionStatus
from rooms.access import ROOM_RANK, active, require_open, visible_room

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
_COLUMNS = (
    "s.id, s.room_id, s.course_id, s.title, s.starts_at, s.duration_minutes, s.host_id, s.created_by,"
    " s.created_at, s.cancelled_at, s.reminded_at, s.went_live_at, s.ended_at, u.display_name AS host_name"
)
_FROM = "live_sessions s JOIN users u ON u.id = s.host_id"
STARTS_IN_PAST_GRACE = timedelta(minutes=1)
REMIND_BATCH = 50


def utcnow() -> datetime:
    return datetime.now(UTC)


def status_of(row: Record) -> SessionStatus:
    if row["cancelled_at"] is not None:
        return "cancelled"
    if row["ended_at"] is not None:
        return "ended"
    if row["went_live_at"] is not None:
        return "live"
    return "scheduled"


def session_out(row: Record) -> LiveSessionOut:
    return LiveSessionOut(
        id=row["id"], room_id=row["room_id"], course_id=row["course_id"], title=row["title"],
        starts_at=row["starts_at"], duration_minutes=row["duration_minutes"],
        ends_at=row["starts_at"] + timedelta(minutes=row["duration_minutes"]),
        host=HostRef(id=row["host_id"], display_name=row["host_name"]), status=status_of(row),
        created_at=row["created_at"], went_live_at=row["went_live_at"], ended_at=row["ended_at"],
        cancelled_at=row["cancelled_at"],
    )  # fmt: skip


async def load_session(conn: Connection, session_id: uuid.UUID, *, lock: bool = False) -> Record | None:
    sql = f"SELECT {_COLUMNS} FROM {_FROM} WHERE s.id = $1" + (" FOR UPDATE OF s" if lock else "")
    row: Record | None = await conn.fetchrow(sql, session_id)
    return row


async def course_owner(conn: Connection, course_id: uuid.UUID | None) -> uuid.UUID | None:
    if course_id is None:
        return None
    owner: uuid.UUID | None = await conn.fetchval("SELECT owner_id FROM courses WHERE id = $1", course_id)
    return owner


def holds_room_role(member: Record | None, at_least: str) -> bool:
    member = active(member)
    return member is not None and ROOM_RANK[member["role"]] >= ROOM_RANK[at_least]


async def may_host(
    conn: Connection, core: Core, user_id: uuid.UUID, is_admin: bool, room_id: uuid.UUID, course_id: uuid.UUID | None
) -> bool:
    """Whether a user may schedule, host or cancel the room's live sessions (the rule of the module doc)."""
    if is_admin:
        return True
    member = await conn.fetchrow(
        "SELECT role, banned_at FROM room_members WHERE room_id = $1 AND user_id = $2", room_id, user_id
    )
    if holds_room_role(member, core.settings.live_schedule_room_role):
        return True
    return active(member) is not None and course_id is not None and await course_owner(conn, course_id) == user_id


async def recipients(conn: Connection, room_id: uuid.UUID, course_id: uuid.UUID | None) -> list[uuid.UUID]:
    """Who hears about a session: the room's members (not banned) and the course's enrolled learners."""
    rows = await conn.fetch(
        "SELECT user_id FROM room_members WHERE room_id = $1 AND banned_at IS NULL"
        " UNION SELECT user_id FROM enrollments WHERE course_id = $2",
        room_id,
        course_id,
    )
    return [r["user_id"] for r in rows]


def _payload(row: Record) -> dict[str, Any]:
    return {
        "session_id": str(row["id"]), "room_id": str(row["room_id"]),
        "course_id": str(row["course_id"]) if row["course_id"] else None, "title": row["title"],
        "starts_at": row["starts_at"].isoformat(),
        "host": {"id": str(row["host_id"]), "display_name": row["host_name"]},
    }  # fmt: skip


def announce_session(tx: Tx, row: Record) -> None:
    """After commit, ``live:session`` (the session as REST shows it) to everyone in the room's Socket.IO room."""
    data = session_out(row).model_dump(mode="json")
    tx.publish(f"room:{row['room_id']}", {"event": "live:session", "data": data})


class Schedule:
    """The schedule's use cases. ``clock`` gives the current time (tests pass their own)."""

    def __init__(self, core: Core, clock: Clock = utcnow) -> None:
        self.core = core
        self.clock = clock

    async def schedule(self, user: Principal, room_id: uuid.UUID, body: LiveSessionIn) -> LiveSessionOut:
        settings = self.core.settings
        now = self.clock()
        if body.starts_at < now - STARTS_IN_PAST_GRACE:
            raise invalid("starts_at must be in the future")
        if body.starts_at > now + timedelta(days=settings.live_max_ahead_days):
            raise invalid(f"starts_at may be at most {settings.live_max_ahead_days} days ahead")
        if body.duration_minutes > settings.live_max_duration_minutes:
            raise invalid(f"duration_minutes may be at most {settings.live_max_duration_minutes}")
        async with self.core.transaction() as tx:
            conn = tx.conn
            room, _ = await visible_room(conn, user, room_id)
            require_open(room)
            course_id = body.course_id if body.course_id is not None else room["course_id"]
            if body.course_id is not None:
                owner = await course_owner(conn, body.course_id)
                if owner is None:
                    raise not_found("course")
                if owner != user.id and not user.is_admin:
                    raise forbidden("only the course's instructor may schedule a session of that course")
            if not await may_host(conn, self.core, user.id, user.is_admin, room_id, course_id):
                raise forbidden(f"scheduling needs room role {settings.live_schedule_room_role} or higher")
            host_id = body.host_id or user.id
            if host_id != user.id:
                host_role = await conn.fetchval("SELECT role FROM users WHERE id = $1", host_id)
                if host_role is None:
                    raise invalid("host_id names no user")
                if not await may_host(conn, self.core, host_id, host_role == "admin", room_id, course_id):
                    role = settings.live_schedule_room_role
                    raise invalid(f"the host must hold room role {role} or higher, or teach the course")
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))", f"live:{user.id}")
            made, oldest = await conn.fetchrow(
                "SELECT count(*), min(created_at) FROM live_sessions WHERE created_by = $1 AND created_at > $2",
                user.id,
                now - timedelta(seconds=settings.live_schedule_rate_window_s),
            )
            if made >= settings.live_schedule_rate_count:
                wait = max(1, math.ceil((oldest - now).total_seconds() + settings.live_schedule_rate_window_s))
                raise AppError(
                    ErrorCode.RATE_LIMITED,
                    f"you scheduled {made} live sessions in the last {settings.live_schedule_rate_window_s:g} s; "
                    f"try again in {wait} s",
                    {"retry_after_s": wait},
                )
            await conn.execute("SELECT 1 FROM rooms WHERE id = $1 FOR UPDATE", room_id)  # one count at a time
            upcoming = await conn.fetchval(
                "SELECT count(*) FROM live_sessions WHERE room_id = $1 AND cancelled_at IS NULL AND ended_at IS NULL"
                " AND starts_at + make_interval(mins => duration_minutes) > $2",
                room_id,
                now,
            )
            if upcoming >= settings.live_max_upcoming_per_room:
                raise conflict(f"the room already has {upcoming} upcoming live sessions (the limit)")
            session_id = new_id()
            await conn.execute(
                "INSERT INTO live_sessions (id, room_id, course_id, title, starts_at, duration_minutes, host_id,"
                " created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                session_id, room_id, course_id, body.title, body.starts_at, body.duration_minutes, host_id, user.id,
                now,
            )  # fmt: skip
            row = await load_session(conn, session_id)
            assert row is not None
            await audit(tx, user.id, "live_session.schedule", "live_session", session_id, room_id=str(room_id))
            to = [u for u in await recipients(conn, room_id, course_id) if u != user.id]
            await notify_users(tx, to, "live_session_scheduled", _payload(row), preference="live_session")
            announce_session(tx, row)
        return session_out(row)

    async def list_sessions(self, user: Principal, room_id: uuid.UUID, query: LiveSessionQuery) -> Page[LiveSessionOut]:
        at, ident = decode_cursor(query.cursor)
        async with self.core.pool.acquire() as conn:
            await visible_room(conn, user, room_id)
            rows = await conn.fetch(
                f"""SELECT {_COLUMNS} FROM {_FROM}
                    WHERE s.room_id = $1
                      AND ($2::timestamptz IS NULL OR (s.starts_at, s.id) > ($2, $3))
                      AND (NOT $5 OR (s.cancelled_at IS NULL AND s.ended_at IS NULL AND (s.went_live_at IS NOT NULL
                           OR s.starts_at + make_interval(mins => s.duration_minutes) > $6)))
                    ORDER BY s.starts_at, s.id LIMIT $4""",
                room_id, at, ident, query.limit + 1, query.include == "upcoming", self.clock(),
            )  # fmt: skip
        return page_of(rows, query.limit, session_out, time_key="starts_at")

    async def get(self, user: Principal, session_id: uuid.UUID) -> LiveSessionOut:
        async with self.core.pool.acquire() as conn:
            row = await self.visible_session(conn, user, session_id)
        return session_out(row)

    async def visible_session(self, conn: Connection, user: Principal, session_id: uuid.UUID) -> Record:
        """The session if the user may see its room; ``not_found`` otherwise."""
        row = await load_session(conn, session_id)
        if row is None:
            raise not_found("live session")
        try:
            await visible_room(conn, user, row["room_id"])
        except AppError as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                raise not_found("live session") from None
            raise
        return row

    async def may_run(self, conn: Connection, user: Principal, row: Record) -> bool:
        """Whether the user may act as the session's host or moderator (cancel, stop, invite, mute)."""
        if user.id in (row["host_id"], row["created_by"]):
            return True
        return await may_host(conn, self.core, user.id, user.is_admin, row["room_id"], row["course_id"])

    async def cancel(self, user: Principal, session_id: uuid.UUID) -> LiveSessionOut:
        async with self.core.transaction() as tx:
            row = await self.visible_session(tx.conn, user, session_id)
            row = await load_session(tx.conn, session_id, lock=True)
            assert row is not None
            if not await self.may_run(tx.conn, user, row):
                raise forbidden("only the session's host, its scheduler or the room's hosts may cancel it")
            if row["cancelled_at"] is not None:
                raise conflict("the session is already cancelled")
            if row["ended_at"] is not None:
                raise conflict("the session has already ended")
            if row["went_live_at"] is not None:
                raise conflict("the session is live: its host ends it (live:stop)")
            await tx.conn.execute(
                "UPDATE live_sessions SET cancelled_at = $2, cancelled_by = $3 WHERE id = $1",
                session_id, self.clock(), user.id,
            )  # fmt: skip
            await audit(tx, user.id, "live_session.cancel", "live_session", session_id)
            to = [u for u in await recipients(tx.conn, row["room_id"], row["course_id"]) if u != user.id]
            await notify_many(tx, to, "live_session_cancelled", _payload(row))
            row = await load_session(tx.conn, session_id)
            assert row is not None
            announce_session(tx, row)
        return session_out(row)

    async def mark(self, session_id: uuid.UUID, column: str) -> Record:
        """Set ``went_live_at`` or ``ended_at`` (first time only) and return the session."""
        assert column in ("went_live_at", "ended_at")
        async with self.core.pool.acquire() as conn:
            await conn.execute(
                f"UPDATE live_sessions SET {column} = coalesce({column}, $2) WHERE id = $1", session_id, self.clock()
            )
            row = await load_session(conn, session_id)
        assert row is not None
        return row

    async def remind_due(self) -> int:
        """Send the reminders of every session starting within the lead time; returns how many sessions were
        reminded by this call. Safe to run on every node at once: each session is claimed exactly once."""
        lead = timedelta(seconds=self.core.settings.live_reminder_lead_s)
        now = self.clock()
        reminded = 0
        while True:
            async with self.core.transaction() as tx:
                claimed = await tx.conn.fetch(
                    """UPDATE live_sessions SET reminded_at = $1 WHERE id IN (
                           SELECT id FROM live_sessions
                           WHERE reminded_at IS NULL AND cancelled_at IS NULL AND ended_at IS NULL
                             AND starts_at <= $2 AND starts_at + make_interval(mins => duration_minutes) > $1
                           ORDER BY starts_at LIMIT $3 FOR UPDATE SKIP LOCKED)
                       RETURNING id""",
                    now, now + lead, REMIND_BATCH,
                )  # fmt: skip
                for claim in claimed:
                    row = await load_session(tx.conn, claim["id"])
                    assert row is not None
                    to = await recipients(tx.conn, row["room_id"], row["course_id"])
                    await notify_users(tx, to, "live_session_starting", _payload(row), preference="live_session")
            reminded += len(claimed)
            if len(claimed) < REMIND_BATCH:
                return reminded

    async def run(self, interval_s: float) -> None:
        """The reminder loop: a pass every ``interval_s`` seconds until cancelled."""
        while True:
            try:
                await self.remind_due()
            except Exception:
                log.exception("the live-session reminder pass failed; trying again in %.0f s", interval_s)
            await asyncio.sleep(interval_s)
