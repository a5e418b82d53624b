"""Enrollments, progress and certificates.

Who may do what:

- Any signed-in user may enroll in a published course (enrolling twice is harmless). A draft is invisible
  (404) to everyone but its owner and admins, and not open for enrollment even to them (409). Leaving
  drops the enrollment but keeps the progress (it resumes on return) and any certificate earned.
- A course priced in coins is bought (``POST /courses/{id}/buy``, leaderboards/wallet.py) rather than
  joined. A purchase is the wallet entry :func:`purchase_ref` names, made at most once per learner and
  course: one who paid, left and comes back is enrolled again without paying again.
- Progress belongs to an enrollment, so recording it needs one (403). The resume point is clamped to the
  lecture; completion is sticky. Completing the last lecture completes the enrollment and issues the
  course certificate in the same transaction as the progress write. A learner's writes in one course are
  serialised by locking their enrollment row, so the final count is never missed by two concurrent
  writes; the unique ``(user_id, course_id)`` of certificates makes a second certificate impossible.
- Certificates carry an unguessable code and are verified publicly by it.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from core_api.context import Core, Page, PageQuery, Tx, core_of, decode_cursor, new_id, notify, page_of
from core_api.courses import owned_course, visible_course, visible_lecture
from core_api.db import Connection, Record
from core_api.errors import conflict, forbidden, not_found
from core_api.http import Api, Call, Input, Principal, Reply

api = Api()
TAG_ENROLL = "enrollments"
TAG_PROGRESS = "progress"
TAG_CERT = "certificates"
_CODE_MAX = 100


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


class ProgressIn(Input):
    position_s: float = Field(
        allow_inf_nan=False, description="Resume point in seconds; clamped to 0 and the lecture duration."
    )
    completed: bool = Field(False, description="Mark the lecture completed; once completed it stays so.")


class LectureProgressOut(BaseModel):
    lecture_id: uuid.UUID
    title: str
    position: int = Field(description="The lecture's order in the course.")
    duration_s: float
    position_s: float = Field(description="Resume point in seconds (0 when never watched).")
    completed: bool
    updated_at: datetime | None = Field(description="Last progress report; null when never watched.")


class CertificateOut(BaseModel):
    id: uuid.UUID
    code: str
    user_id: uuid.UUID
    course_id: uuid.UUID
    course_title: str
    issued_at: datetime
    verification_url: str = Field(description="Public URL anyone can open to verify the certificate.")


class CertificateCheck(BaseModel):
    """What the public learns about a certificate from its code."""

    code: str
    valid: bool = True
    learner_name: str
    course_title: str
    issued_at: datetime
    verification_url: str


class ProgressSummary(BaseModel):
    course_id: uuid.UUID
    completed_lectures: int
    total_lectures: int
    percent: float = Field(description="Share of the course's lectures completed, 0-100.")
    completed_at: datetime | None
    certificate: CertificateOut | None = Field(description="Issued once every lecture is completed.")


class CourseProgressOut(ProgressSummary):
    lectures: list[LectureProgressOut] = Field(description="Every lecture of the course, in order.")


class ProgressUpdateOut(BaseModel):
    lecture: LectureProgressOut
    course: ProgressSummary


# --- pure rules ----------------------------------------------------------------------------------


def percent(done: int, total: int) -> float:
    """Completion as a percentage rounded to two decimals; a course without lectures is at 0."""
    return round(100.0 * done / total, 2) if total else 0.0


def clamp_position(position_s: float, duration_s: float) -> float:
    return min(max(position_s, 0.0), duration_s)


def is_staff(course: Record, user: Principal) -> bool:
    """The course owner and admins manage a course's learners and their work."""
    return bool(course["owner_id"] == user.id or user.is_admin)


def verification_url(base_url: str, code: str) -> str:
    return f"{base_url}/api/v1/certificates/{code}"


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


# --- progress and certificates -------------------------------------------------------------------

_CERT_SELECT = """SELECT k.id, k.code, k.user_id, k.course_id, c.title AS course_title, u.display_name,
        k.issued_at
    FROM certificates k JOIN courses c ON c.id = k.course_id JOIN users u ON u.id = k.user_id"""


def certificate_out(r: Record, base_url: str) -> CertificateOut:
    return CertificateOut(
        id=r["id"],
        code=r["code"],
        user_id=r["user_id"],
        course_id=r["course_id"],
        course_title=r["course_title"],
        issued_at=r["issued_at"],
        verification_url=verification_url(base_url, r["code"]),
    )


async def _certificate_for(
    conn: Connection, user_id: uuid.UUID, course_id: uuid.UUID, base_url: str
) -> CertificateOut | None:
    row = await conn.fetchrow(f"{_CERT_SELECT} WHERE k.user_id = $1 AND k.course_id = $2", user_id, course_id)
    return certificate_out(row, base_url) if row is not None else None


async def _complete_course(tx: Tx, core: Core, user: Principal, course: Record, enrollment_id: uuid.UUID) -> None:
    """Mark the enrollment complete and issue the certificate, once."""
    await tx.conn.execute(
        "UPDATE enrollments SET completed_at = now() WHERE id = $1 AND completed_at IS NULL", enrollment_id
    )
    code = secrets.token_urlsafe(18)
    cert = await tx.conn.fetchrow(
        """INSERT INTO certificates (id, code, user_id, course_id) VALUES ($1, $2, $3, $4)
           ON CONFLICT (user_id, course_id) DO NOTHING RETURNING id, issued_at""",
        new_id(),
        code,
        user.id,
        course["id"],
    )
    if cert is None:
        return  # issued on an earlier completion
    await notify(
        tx,
        user.id,
        "certificate_issued",
        {
            "certificate_id": str(cert["id"]),
            "code": code,
            "course_id": str(course["id"]),
            "course_title": course["title"],
            "verification_url": verification_url(core.settings.base_url, code),
        },
    )


async def record_progress(core: Core, user: Principal, lecture_id: uuid.UUID, body: ProgressIn) -> ProgressUpdateOut:
    async with core.transaction() as tx:
        lecture, course = await visible_lecture(tx.conn, user, lecture_id)
        enrollment = await enrollment_of(tx.conn, user.id, course["id"], lock=True)
        if enrollment is None:
            raise forbidden("enroll in this course before recording progress")
        row = await tx.conn.fetchrow(
            """INSERT INTO lecture_progress (user_id, lecture_id, course_id, position_s, completed)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (user_id, lecture_id) DO UPDATE
                 SET position_s = EXCLUDED.position_s,
                     completed = lecture_progress.completed OR EXCLUDED.completed,
                     updated_at = now()
               RETURNING position_s, completed, updated_at""",
            user.id,
            lecture_id,
            course["id"],
            clamp_position(body.position_s, lecture["duration_s"]),
            body.completed,
        )
        assert row is not None
        counts = await tx.conn.fetchrow(
            """SELECT (SELECT count(*) FROM lectures WHERE course_id = $1) AS total,
                      (SELECT count(*) FROM lecture_progress p JOIN lectures l ON l.id = p.lecture_id
                        WHERE p.course_id = $1 AND p.user_id = $2 AND p.completed) AS done""",
            course["id"],
            user.id,
        )
        assert counts is not None
        completed_at = enrollment["completed_at"]
        if completed_at is None and counts["total"] and counts["done"] >= counts["total"]:
            await _complete_course(tx, core, user, course, enrollment["id"])
            completed_at = await tx.conn.fetchval(
                "SELECT completed_at FROM enrollments WHERE id = $1", enrollment["id"]
            )
        # Progress is written often and certificates are rare: look one up only for a completed course.
        certificate = (
            await _certificate_for(tx.conn, user.id, course["id"], core.settings.base_url)
            if completed_at is not None
            else None
        )
    return ProgressUpdateOut(
        lecture=LectureProgressOut(
            lecture_id=lecture_id,
            title=lecture["title"],
            position=lecture["position"],
            duration_s=lecture["duration_s"],
            **dict(row),
        ),
        course=ProgressSummary(
            course_id=course["id"],
            completed_lectures=counts["done"],
            total_lectures=counts["total"],
            percent=percent(counts["done"], counts["total"]),
            completed_at=completed_at,
            certificate=certificate,
        ),
    )


async def course_progress(core: Core, user: Principal, course_id: uuid.UUID) -> CourseProgressOut:
    async with core.pool.acquire() as conn:
        await visible_course(conn, user, course_id)
        enrollment = await enrollment_of(conn, user.id, course_id)
        if enrollment is None:
            raise forbidden("you are not enrolled in this course")
        rows = await conn.fetch(
            """SELECT l.id AS lecture_id, l.title, l.position, l.duration_s,
                      least(coalesce(p.position_s, 0), l.duration_s) AS position_s,
                      coalesce(p.completed, false) AS completed, p.updated_at
               FROM lectures l LEFT JOIN lecture_progress p ON p.lecture_id = l.id AND p.user_id = $2
               WHERE l.course_id = $1 ORDER BY l.position, l.created_at, l.id""",
            course_id,
            user.id,
        )
        certificate = await _certificate_for(conn, user.id, course_id, core.settings.base_url)
    lectures = [LectureProgressOut(**dict(r)) for r in rows]
    done = sum(1 for lec in lectures if lec.completed)
    return CourseProgressOut(
        course_id=course_id,
        completed_lectures=done,
        total_lectures=len(lectures),
        percent=percent(done, len(lectures)),
        completed_at=enrollment["completed_at"],
        certificate=certificate,
        lectures=lectures,
    )


async def my_certificates(core: Core, user: Principal, query: PageQuery) -> Page[CertificateOut]:
    at, ident = decode_cursor(query.cursor)
    rows = await core.pool.fetch(
        f"""{_CERT_SELECT} WHERE k.user_id = $1 AND ($2::timestamptz IS NULL OR (k.issued_at, k.id) > ($2, $3))
            ORDER BY k.issued_at, k.id LIMIT $4""",
        user.id,
        at,
        ident,
        query.limit + 1,
    )
    base_url = core.settings.base_url
    return page_of(rows, query.limit, lambda r: certificate_out(r, base_url), time_key="issued_at")


async def verify_certificate(core: Core, code: str) -> CertificateCheck:
    if len(code) > _CODE_MAX or "\x00" in code:
        raise not_found("certificate")
    row = await core.pool.fetchrow(f"{_CERT_SELECT} WHERE k.code = $1", code)
    if row is None:
        raise not_found("certificate")
    return CertificateCheck(
        code=code,
        learner_name=row["display_name"],
        course_title=row["course_title"],
        issued_at=row["issued_at"],
        verification_url=verification_url(core.settings.base_url, code),
    )


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


@api.route(
    "PUT",
    "/lectures/{lecture_id}/progress",
    summary="Report the resume point and completion of a lecture (enrolled learners)",
    tag=TAG_PROGRESS,
    body=ProgressIn,
    response=ProgressUpdateOut,
    errors=[403],
)
async def put_progress(call: Call) -> ProgressUpdateOut:
    return await record_progress(core_of(call), call.me, call.params["lecture_id"], call.body)


@api.route(
    "GET",
    "/courses/{course_id}/progress",
    summary="The caller's progress through every lecture of a course (enrolled learners)",
    tag=TAG_PROGRESS,
    response=CourseProgressOut,
    errors=[403],
)
async def get_progress(call: Call) -> CourseProgressOut:
    return await course_progress(core_of(call), call.me, call.params["course_id"])


@api.route(
    "GET",
    "/me/certificates",
    summary="The caller's certificates",
    tag=TAG_CERT,
    query=PageQuery,
    response=Page[CertificateOut],
)
async def get_my_certificates(call: Call) -> Page[CertificateOut]:
    return await my_certificates(core_of(call), call.me, call.query)


@api.route(
    "GET",
    "/certificates/{code}",
    summary="Verify a certificate by its code (public)",
    tag=TAG_CERT,
    response=CertificateCheck,
    auth=False,
)
async def get_certificate(call: Call) -> CertificateCheck:
    return await verify_certificate(core_of(call), call.params["code"])
