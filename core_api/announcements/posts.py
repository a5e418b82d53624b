"""Course announcements: the course's owner (or an admin) posts; its learners are told (in the app, and by
email if they keep that on); everyone taking part reads them, newest first.

Limits: a title of 1–200 characters and a body of 1–10,000; at most ``STUDYHALL_ANNOUNCEMENTS_PER_HOUR`` per
course (429), since each one reaches every learner of the course.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from core_api.announcements.fanout import notify_learners
from core_api.assignments import require_participant
from core_api.context import Core, Page, PageQuery, audit, core_of, decode_cursor, new_id, page_of
from core_api.courses import owned_course, visible_course
from core_api.db import Record
from core_api.errors import AppError, ErrorCode, refuse_past_limit
from core_api.http import Api, Call, Input, Principal, Reply

api = Api()
TAG = "courses"


class AnnouncementIn(Input):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=10_000)


class AnnouncementOut(BaseModel):
    id: uuid.UUID
    course_id: uuid.UUID
    author_id: uuid.UUID | None
    author_name: str | None
    title: str
    body: str
    created_at: datetime


_SELECT = """SELECT a.id, a.course_id, a.author_id, u.display_name AS author_name, a.title, a.body, a.created_at
    FROM announcements a LEFT JOIN users u ON u.id = a.author_id"""


def announcement_out(r: Record) -> AnnouncementOut:
    return AnnouncementOut(**dict(r))


async def post(core: Core, user: Principal, course_id: uuid.UUID, body: AnnouncementIn) -> Record:
    title, text = body.title.strip(), body.body.strip()
    if not title or not text:
        raise AppError(ErrorCode.INVALID_INPUT, "an announcement needs a title and a text")
    async with core.transaction() as tx:
        course = await owned_course(tx.conn, user, course_id, lock=True)  # one post of a course at a time
        recent = await tx.conn.fetch(
            "SELECT created_at FROM announcements WHERE course_id = $1 AND created_at > now() - interval '1 hour'"
            " ORDER BY created_at",
            course_id,
        )
        limit = core.settings.announcements_per_hour
        refuse_past_limit(
            [r["created_at"] for r in recent], limit, timedelta(hours=1),
            f"a course may post {limit} announcements an hour; try again later",
        )  # fmt: skip
        announcement_id = new_id()
        await tx.conn.execute(
            "INSERT INTO announcements (id, course_id, author_id, title, body) VALUES ($1, $2, $3, $4, $5)",
            announcement_id,
            course_id,
            user.id,
            title,
            text,
        )
        payload = {
            "course_id": str(course_id), "course_title": course["title"],
            "announcement_id": str(announcement_id), "title": title,
        }  # fmt: skip
        link = f"{core.settings.base_url}/courses/{course_id}"
        mail = (f"{course['title']}: {title}", f"{text}\n\n— {user.display_name}, in {course['title']}\n{link}\n")
        await notify_learners(tx, course_id, "announcement", payload, mail)
        await audit(tx, user.id, "course.announcement", "course", course_id, announcement_id=str(announcement_id))
        row = await tx.conn.fetchrow(f"{_SELECT} WHERE a.id = $1", announcement_id)
    assert row is not None
    return row


async def listing(core: Core, user: Principal, course_id: uuid.UUID, query: PageQuery) -> Page[AnnouncementOut]:
    at, ident = decode_cursor(query.cursor)
    async with core.pool.acquire() as conn:
        course = await visible_course(conn, user, course_id)
        await require_participant(conn, user, course)
        rows = await conn.fetch(
            f"""{_SELECT} WHERE a.course_id = $1 AND ($2::timestamptz IS NULL OR (a.created_at, a.id) < ($2, $3))
                ORDER BY a.created_at DESC, a.id DESC LIMIT $4""",
            course_id,
            at,
            ident,
            query.limit + 1,
        )
    return page_of(rows, query.limit, announcement_out)


@api.route(
    "POST",
    "/courses/{course_id}/announcements",
    summary="Post an announcement to the course's learners (its owner or an admin)",
    description="Every enrolled learner is notified (`announcement`) unless they turned that off, and emailed if "
    "they keep email on for it. At most `STUDYHALL_ANNOUNCEMENTS_PER_HOUR` per course (429). Audited.",
    tag=TAG,
    body=AnnouncementIn,
    response=AnnouncementOut,
    status=201,
    errors=[403, 429],
)
async def post_announcement(call: Call) -> Reply:
    return Reply(announcement_out(await post(core_of(call), call.me, call.params["course_id"], call.body)), 201)


@api.route(
    "GET",
    "/courses/{course_id}/announcements",
    summary="The course's announcements, newest first (its learners and staff)",
    tag=TAG,
    query=PageQuery,
    response=Page[AnnouncementOut],
    errors=[403],
)
async def get_announcements(call: Call) -> Page[AnnouncementOut]:
    return await listing(core_of(call), call.me, call.params["course_id"], call.query)
