"""Enrollments.

Who may do what:

- Any signed-in user may enroll in a published course (enrolling twice is harmless). A draft is invisible
  (404) to everyone but its owner and admins, and not open for enrollment even to them (409). Leaving
  drops the enrollment but keeps the progress (it resumes on return) and any certificate earned.
- A course priced in coins is bought (``POST /courses/{id}/buy``, leaderboards/wallet.py) rather than
  joined. A purchase is the wallet entry :func:`purchase_ref` names, made at most once per learner and
  course: one who paid, left and comes back is enrolled again without paying again.
- Progress and certificates belong to :mod:`core_api.progress`; recording progress needs an enrollment.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from core_api.context import Core, Page, PageQuery, audit, core_of, decode_cursor, new_id, page_of
from core_api.courses import owned_course, visible_course
from core_api.db import Connection, Record
from core_api.errors import conflict, not_found
from core_api.http import Api, Call, Principal, Reply

api = Api()
TAG_ENROLL = "enrollments"


# --- schemas -------------------------------------------------------------------------------------


class EnrollmentOut(BaseModel):
    id: uuid.UUID
    course_id: uuid.UUID
    course_title: str
    user_id: uuid.UUID
    display_name: str = Field(description="The learner's display name.")
    enrolled_at: datetime
    completed_at: datetime | None = Field(description="When the learner completed every lecture.")
    completed_lectures: int
    total_lectures: int
    percent: float = Field(description="Share of the course's lectures completed, 0-100.")


# --- pure rules ----------------------------------------------------------------------------------


def percent(done: int, total: int) -> float:
    """Completion as a percentage rounded to two decimals; a course without lectures is at 0."""
    return round(100.0 * done / total, 2) if total else 0.0


def is_staff(course: Record, user: Principal) -> bool:
    """The course owner and admins manage a course's learners and their work."""
    return bool(course["owner_id"] == user.id or user.is_admin)


def purchase_ref(course_id: uuid.UUID, user_id: uuid.UUID) -> str:
    """The wallet ledger's ``ref`` of a learner's purchase of a course (unique: one purchase, ever)."""
    return f"enroll:{course_id}:{user_id}"


# --- enrollments ---------------------------------------------------------------------------------

_ENROLLMENT_SELECT = """SELECT e.id, e.course_id, c.title AS course_title, e.user_id, u.display_name,
        e.created_at AS enrolled_at, e.completed_at,
        (SELECT count(*) FROM lectures l WHERE l.course_id = e.course_id) AS total_lectures,
        (SELECT count(*) FROM lecture_progress p JOIN lectures l ON l.id = p.lecture_id
          WHERE p.user_id = e.user_id AND p.course_id = e.course_id AND p.completed) AS completed_lectures
    FROM enrollments e JOIN courses c ON c.id = e.course_id JOIN users u ON u.id = e.user_id"""


def enrollment_out(r: Record) -> EnrollmentOut:
    return EnrollmentOut(**dict(r), percent=percent(r["completed_lectures"], r["total_lectures"]))


async def enrollment_of(
    conn: Connection, user_id: uuid.UUID, course_id: uuid.UUID, *, lock: bool = False
) -> Record | None:
    row: Record | None = await conn.fetchrow(
        "SELECT id, completed_at FROM enrollments WHERE user_id = $1 AND course_id = $2"
        + (" FOR UPDATE" if lock else ""),
        user_id,
        course_id,
    )
    return row


async def has_paid(conn: Connection, user_id: uuid.UUID, course_id: uuid.UUID) -> bool:
    """Whether the user bought this course at some time (they may have left it since)."""
    return bool(await conn.fetchval("SELECT true FROM wallet_entries WHERE ref = $1", purchase_ref(course_id, user_id)))


async def add_enrollment(conn: Connection, user_id: uuid.UUID, course_id: uuid.UUID) -> bool:
    """Enroll the user (no checks); False if they already were. Someone returning to a course they
    finished keeps their completion."""
    created = await conn.fetchval(
        """INSERT INTO enrollments (id, user_id, course_id, completed_at)
           VALUES ($1, $2, $3, (SELECT issued_at FROM certificates WHERE user_id = $2 AND course_id = $3))
           ON CONFLICT (user_id, course_id) DO NOTHING RETURNING id""",
        new_id(),
        user_id,
        course_id,
    )
    return created is not None


async def enroll(core: Core, user: Principal, course_id: uuid.UUID) -> tuple[EnrollmentOut, bool]:
    """Enroll the user; returns the enrollment and whether it is new."""
    async with core.transaction() as tx:
        course = await visible_course(tx.conn, user, course_id)
        if course["status"] != "published":
            raise conflict("this course is a draft; it opens for enrollment once published")
        # A course priced in coins (leaderboards/wallet.py) is bought, not joined for free; staff, those
        # already enrolled and those who paid for it before (and left) pass.
        priced = await tx.conn.fetchval(
            "SELECT coins FROM course_prices p WHERE p.course_id = $1 AND NOT EXISTS"
            " (SELECT 1 FROM enrollments e WHERE e.course_id = $1 AND e.user_id = $2)",
            course_id,
            user.id,
        )
        if priced is not None and not is_staff(course, user) and not await has_paid(tx.conn, user.id, course_id):
            raise conflict(f"this course costs {priced} coins: POST /courses/{{id}}/buy", price=priced)
        created = await add_enrollment(tx.conn, user.id, course_id)
        if created:
            await audit(tx, user.id, "course.enrolled", "course", course_id)
        row = await tx.conn.fetchrow(
            f"{_ENROLLMENT_SELECT} WHERE e.user_id = $1 AND e.course_id = $2", user.id, course_id
        )
    assert row is not None
    return enrollment_out(row), created


async def leave(core: Core, user: Principal, course_id: uuid.UUID) -> None:
    async with core.transaction() as tx:
        await visible_course(tx.conn, user, course_id)
        gone = await tx.conn.fetchval(
            "DELETE FROM enrollments WHERE user_id = $1 AND course_id = $2 RETURNING id", user.id, course_id
        )
        if gone is not None:
            await audit(tx, user.id, "course.left", "course", course_id)
    if gone is None:
        raise not_found("enrollment")


async def list_enrollments(
    core: Core, query: PageQuery, *, user_id: uuid.UUID | None = None, course_id: uuid.UUID | None = None
) -> Page[EnrollmentOut]:
    """One user's or one course's enrollments, oldest first."""
    at, ident = decode_cursor(query.cursor)
    rows = await core.pool.fetch(
        f"""{_ENROLLMENT_SELECT}
            WHERE ($1::uuid IS NULL OR e.user_id = $1) AND ($2::uuid IS NULL OR e.course_id = $2)
              AND ($3::timestamptz IS NULL OR (e.created_at, e.id) > ($3, $4))
            ORDER BY e.created_at, e.id LIMIT $5""",
        user_id,
        course_id,
        at,
        ident,
        query.limit + 1,
    )
    return page_of(rows, query.limit, enrollment_out, time_key="enrolled_at")


async def course_enrollments(
    core: Core, user: Principal, course_id: uuid.UUID, query: PageQuery
) -> Page[EnrollmentOut]:
    async with core.pool.acquire() as conn:
        await owned_course(conn, user, course_id)
    return await list_enrollments(core, query, course_id=course_id)


# --- handlers ------------------------------------------------------------------------------------


@api.route(
    "POST",
    "/courses/{course_id}/enroll",
    summary="Enroll in a published course (idempotent)",
    description="A course priced in coins answers 409 `conflict` with `details.price`: buy it with "
    "`POST /courses/{course_id}/buy`. Its owner and admins, and anyone who bought it before (and left it since), "
    "enroll here without paying.",
    tag=TAG_ENROLL,
    response=EnrollmentOut,
    status=201,
    errors=[409],
    extra_statuses={200: "Already enrolled"},
)
async def post_enroll(call: Call) -> Reply:
    enrollment, created = await enroll(core_of(call), call.me, call.params["course_id"])
    return Reply(enrollment, 201 if created else 200)


@api.route(
    "DELETE",
    "/courses/{course_id}/enroll",
    summary="Leave a course (progress and certificates are kept)",
    description="Progress, certificates and a purchase outlive the enrollment: one who paid for a priced course, "
    "left and comes back is enrolled again (`POST .../enroll` or `.../buy`) without paying again.",
    tag=TAG_ENROLL,
    status=204,
)
async def delete_enroll(call: Call) -> Reply:
    await leave(core_of(call), call.me, call.params["course_id"])
    return Reply(None, 204)


@api.route(
    "GET",
    "/me/enrollments",
    summary="The caller's enrollments with progress",
    tag=TAG_ENROLL,
    query=PageQuery,
    response=Page[EnrollmentOut],
)
async def get_my_enrollments(call: Call) -> Page[EnrollmentOut]:
    return await list_enrollments(core_of(call), call.query, user_id=call.me.id)


@api.route(
    "GET",
    "/courses/{course_id}/enrollments",
    summary="A course's learners with progress (owner, admin)",
    tag=TAG_ENROLL,
    query=PageQuery,
    response=Page[EnrollmentOut],
    errors=[403],
)
async def get_course_enrollments(call: Call) -> Page[EnrollmentOut]:
    return await course_enrollments(core_of(call), call.me, call.params["course_id"], call.query)
