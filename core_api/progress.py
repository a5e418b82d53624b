"""Progress and certificates: completion from what the server saw a learner watch.

- Progress belongs to an enrollment, so recording it needs one (403). A reported position must lie within
  the lecture (400 otherwise; a second past its end is taken as the end).
- **Completion comes from evidence** (the rules are in :mod:`core_api.watching`): position reports
  (``PUT /lectures/{id}/progress``) whose positions move forward no faster than
  ``STUDYHALL_PROGRESS_MAX_RATE`` × the server's clock, and watch parties' heartbeats while the room
  plays (:func:`record_watching`, fed by watch_party/progress.py). The watched stretches are merged
  into intervals per learner and lecture (stored as one float array, not a row per report); a lecture
  completes once they cover ``STUDYHALL_PROGRESS_COMPLETE_SHARE`` of it, and a lecture without a
  duration once it has been opened. A client's ``completed: true`` is accepted for compatibility but
  completes nothing. Completion is sticky.
- Across all their lectures a learner is credited at most ``STUDYHALL_PROGRESS_MAX_RATE`` × the wall
  time it took (a watch clock per learner, locked while a write credits anything).
- Completing the last lecture completes the enrollment and issues the course certificate in the same
  transaction as the progress write. A learner's writes in one course are serialised by locking their
  enrollment row, so the final count is never missed by two concurrent writes; the unique
  ``(user_id, course_id)`` of certificates makes a second certificate impossible.
- Certificates carry an unguessable code and are verified publicly by it.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, Field

from core_api import watching
from core_api.context import Core, Page, PageQuery, Tx, core_of, decode_cursor, new_id, notify, page_of
from core_api.courses import visible_course, visible_lecture
from core_api.db import Connection, Record
from core_api.enrollments import enrollment_of, percent
from core_api.errors import forbidden, invalid, not_found
from core_api.http import Api, Call, Input, Principal
from core_api.watching import Interval

api = Api()
TAG_PROGRESS = "progress"
TAG_CERT = "certificates"
_CODE_MAX = 100


# --- schemas -------------------------------------------------------------------------------------


END_SLACK_S = 1.0
"""How far past a lecture's duration a reported position may be (taken as the end); further is refused."""


class ProgressIn(Input):
    position_s: float = Field(
        ge=0,
        allow_inf_nan=False,
        description="Where the player is, in seconds (the resume point): from 0 to the lecture's duration "
        f"(up to {END_SLACK_S:g} s past it is taken as the end, for players whose media runs a little longer than "
        "the lecture says; anything else is refused with invalid_input). "
        "Report it every few seconds while playing: the stretch between two reports counts as watched when the "
        "position moved forward no faster than STUDYHALL_PROGRESS_MAX_RATE times the time between them, by the "
        "server's clock.",
    )
    completed: bool = Field(
        False,
        description="Accepted for older clients and ignored: a lecture completes once the server has seen "
        "STUDYHALL_PROGRESS_COMPLETE_SHARE of it watched (or, without a duration, once it is opened).",
    )


class LectureProgressOut(BaseModel):
    lecture_id: uuid.UUID
    title: str
    position: int = Field(description="The lecture's order in the course.")
    duration_s: float
    position_s: float = Field(description="Resume point in seconds (0 when never watched).")
    watched_s: float = Field(
        0.0, description="Seconds of the lecture the server has seen you watch (each part counted once)."
    )
    completed: bool = Field(
        description="Watched for at least STUDYHALL_PROGRESS_COMPLETE_SHARE of its duration (a lecture without "
        "a duration: opened); once completed it stays so."
    )
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


def clamp_position(position_s: float, duration_s: float) -> float:
    return min(max(position_s, 0.0), duration_s)


def verification_url(base_url: str, code: str) -> str:
    return f"{base_url}/api/v1/certificates/{code}"


# --- certificates --------------------------------------------------------------------------------

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


# --- progress ------------------------------------------------------------------------------------


async def _charge_watch_clock(
    conn: Connection, user_id: uuid.UUID, started_at: float, now: float, gained: float, max_rate: float
) -> bool:
    """Account ``gained`` seconds of newly watched media to the learner's watch clock (locked for the rest
    of the transaction); False, changing nothing, if they cannot have watched that much by ``now``."""
    clock = await conn.fetchval(
        "INSERT INTO watch_clocks (user_id) VALUES ($1)"
        " ON CONFLICT (user_id) DO UPDATE SET user_id = excluded.user_id RETURNING credited_until",
        user_id,
    )
    end = watching.charge(float(clock), started_at, now, gained, max_rate)
    if end is None:
        return False
    await conn.execute("UPDATE watch_clocks SET credited_until = $2 WHERE user_id = $1", user_id, end)
    return True


async def _save_progress(
    core: Core,
    user: Principal,
    lecture_id: uuid.UUID,
    position_s: float,
    seen: Sequence[Interval] | None,
    seen_over_s: float = 0.0,
) -> ProgressUpdateOut:
    """Store a position and the evidence it brings, complete the lecture (and the course) if it is enough.

    ``seen`` None: a position report, whose evidence is the stretch since the learner's previous report.
    Otherwise the stretches a watch party saw them play over the last ``seen_over_s`` seconds.
    """
    settings = core.settings
    max_rate = settings.progress_max_rate
    async with core.transaction() as tx:
        lecture, course = await visible_lecture(tx.conn, user, lecture_id)
        enrollment = await enrollment_of(tx.conn, user.id, course["id"], lock=True)
        if enrollment is None:
            raise forbidden("enroll in this course before recording progress")
        # The database's clock: one clock for every node, and the one `updated_at` was written with.
        found = await tx.conn.fetchrow(
            "SELECT extract(epoch FROM now())::float8 AS now, p.position_s, p.updated_at, p.watched, p.completed"
            " FROM (SELECT 1) AS one LEFT JOIN lecture_progress p ON p.user_id = $1 AND p.lecture_id = $2",
            user.id,
            lecture_id,
        )
        assert found is not None
        now = float(found["now"])
        before = found if found["updated_at"] is not None else None
        duration = float(lecture["duration_s"])
        if seen is None and position_s > duration + END_SLACK_S:
            raise invalid(
                f"position_s must be between 0 and the lecture's duration ({duration:g} s); got {position_s:g}",
                field="position_s",
            )
        position = clamp_position(position_s, duration)
        intervals = watching.unflatten(before["watched"] if before else None)
        if seen is None:
            previous_at = before["updated_at"].timestamp() if before else None
            stretch = watching.report_stretch(
                before["position_s"] if before else None, previous_at, position, now, max_rate
            )
            stretches, started_at = ([stretch], previous_at or now) if stretch else ([], now)
        else:
            stretches, started_at = list(seen), now - max(0.0, seen_over_s)
        clamped = [c for c in (watching.clamp(s, duration) for s in stretches) if c is not None]
        merged = watching.add(intervals, clamped, max_intervals=settings.progress_max_intervals)
        gained = watching.covered(merged) - watching.covered(intervals)
        if gained > 0 and not await _charge_watch_clock(tx.conn, user.id, started_at, now, gained, max_rate):
            merged = intervals  # more than one person can watch in the time: not credited
        watched_s = min(duration, watching.covered(merged))
        completed = bool(before and before["completed"]) or watching.is_complete(
            watched_s, duration, settings.progress_complete_share
        )
        row = await tx.conn.fetchrow(
            """INSERT INTO lecture_progress (user_id, lecture_id, course_id, position_s, completed, watched, watched_s,
                                             updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8))
               ON CONFLICT (user_id, lecture_id) DO UPDATE
                 SET position_s = EXCLUDED.position_s, completed = EXCLUDED.completed,
                     watched = EXCLUDED.watched, watched_s = EXCLUDED.watched_s, updated_at = EXCLUDED.updated_at
               RETURNING position_s, watched_s, completed, updated_at""",
            user.id,
            lecture_id,
            course["id"],
            position,
            completed,
            watching.flatten(merged),
            watched_s,
            now,
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


async def record_progress(core: Core, user: Principal, lecture_id: uuid.UUID, body: ProgressIn) -> ProgressUpdateOut:
    """A position report (``PUT /lectures/{id}/progress``); ``body.completed`` is not evidence of anything."""
    return await _save_progress(core, user, lecture_id, body.position_s, None)


async def record_watching(
    core: Core,
    user: Principal,
    lecture_id: uuid.UUID,
    position_s: float,
    seen: Sequence[Interval],
    seen_over_s: float,
) -> ProgressUpdateOut:
    """What a watch party saw: the viewer's resume point, and the stretches of the lecture they were seen
    playing in step with the room over the last ``seen_over_s`` seconds (watch_party/progress.py)."""
    return await _save_progress(core, user, lecture_id, position_s, seen, seen_over_s)


async def course_progress(core: Core, user: Principal, course_id: uuid.UUID) -> CourseProgressOut:
    async with core.pool.acquire() as conn:
        await visible_course(conn, user, course_id)
        enrollment = await enrollment_of(conn, user.id, course_id)
        if enrollment is None:
            raise forbidden("you are not enrolled in this course")
        rows = await conn.fetch(
            """SELECT l.id AS lecture_id, l.title, l.position, l.duration_s,
                      least(coalesce(p.position_s, 0), l.duration_s) AS position_s,
                      least(coalesce(p.watched_s, 0), l.duration_s) AS watched_s,
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
    "PUT",
    "/lectures/{lecture_id}/progress",
    summary="Report where your player is in a lecture (enrolled learners)",
    tag=TAG_PROGRESS,
    description="Sets the resume point. Completion comes only from what the server saw: consecutive reports "
    "whose position moved forward no faster than `STUDYHALL_PROGRESS_MAX_RATE` times the time between them (by the "
    "server's clock) count the stretch between them as watched, and a lecture completes once such stretches (and "
    "watch parties' heartbeats) cover `STUDYHALL_PROGRESS_COMPLETE_SHARE` of its duration. A lecture without a "
    "duration completes once opened. `completed: true` is accepted but completes nothing. Across all lectures a "
    "learner is credited at most `STUDYHALL_PROGRESS_MAX_RATE` times the wall-clock time.",
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
