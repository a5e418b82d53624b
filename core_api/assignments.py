"""Assignments and submissions.

Assignments are written by the course owner (or an admin) and read by them and enrolled learners.
Learners may submit as often as they like, each a new row flagged ``late`` by the database clock; they
see only their own submissions, the course owner and admins see and grade all of them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from core_api.announcements.fanout import notify_learners
from core_api.context import Core, Page, PageQuery, audit, core_of, decode_cursor, new_id, notify, page_of
from core_api.courses import owned_course, visible_course
from core_api.db import Connection, Record
from core_api.enrollments import enrollment_of, is_staff
from core_api.errors import AppError, conflict, forbidden, invalid, not_found
from core_api.http import Api, Call, Input, Principal
from core_api.rbac import require_owner_or_admin
from core_api.timestamps import Timestamp

api = Api()
TAG_ASSIGN = "assignments"
MAX_POINTS = 1_000_000.0


# --- schemas -------------------------------------------------------------------------------------


class AssignmentIn(Input):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=20_000)
    due_at: Timestamp = Field(description="ISO-8601 with a timezone; later submissions are flagged late.")
    max_points: float = Field(gt=0, le=MAX_POINTS, allow_inf_nan=False)


class AssignmentPatch(Input):
    title: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=20_000)
    due_at: Timestamp | None = Field(None, description="Changing it does not re-flag earlier submissions.")
    max_points: float | None = Field(None, gt=0, le=MAX_POINTS, allow_inf_nan=False)


class AssignmentOut(BaseModel):
    id: uuid.UUID
    course_id: uuid.UUID
    title: str
    description: str
    due_at: datetime
    max_points: float
    created_at: datetime


class SubmissionIn(Input):
    body: str = Field(min_length=1, max_length=100_000)


class GradeIn(Input):
    grade: float = Field(allow_inf_nan=False, description="From 0 to the assignment's max_points.")
    feedback: str | None = Field(None, max_length=20_000, description="Replaces any earlier feedback.")


class SubmissionFileOut(BaseModel):
    id: uuid.UUID
    name: str
    content_type: str
    size: int
    created_at: datetime
    url: str = Field(description="`GET` it with your Bearer token: the file (its author and the course's staff).")


class SubmissionOut(BaseModel):
    id: uuid.UUID
    assignment_id: uuid.UUID
    user_id: uuid.UUID
    author_name: str
    body: str
    late: bool = Field(description="Submitted after the assignment's due time.")
    submitted_at: datetime
    grade: float | None
    max_points: float
    feedback: str | None
    graded_at: datetime | None
    graded_by: uuid.UUID | None
    files: list[SubmissionFileOut] = Field(
        default_factory=list,
        description="Files attached (`POST /submissions/{id}/files?name=`, raw bytes; see docs/api.md).",
    )


# --- assignments ---------------------------------------------------------------------------------

_ASSIGNMENT_COLUMNS = "id, course_id, title, description, due_at, max_points, created_at"
RowLock = Literal["", "FOR SHARE", "FOR UPDATE"]


def assignment_out(r: Record) -> AssignmentOut:
    return AssignmentOut(**dict(r))


async def visible_assignment(
    conn: Connection, user: Principal, assignment_id: uuid.UUID, *, lock: RowLock = ""
) -> tuple[Record, Record]:
    """An assignment and its course, if the user may see the course."""
    row = await conn.fetchrow(f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments WHERE id = $1 {lock}", assignment_id)
    if row is None:
        raise not_found("assignment")
    try:
        course = await visible_course(conn, user, row["course_id"])
    except AppError:
        raise not_found("assignment") from None
    return row, course


async def require_participant(conn: Connection, user: Principal, course: Record) -> None:
    """Course staff and enrolled learners take part in a course's assignments."""
    if not is_staff(course, user) and await enrollment_of(conn, user.id, course["id"]) is None:
        raise forbidden("only the course's owner, admins and enrolled learners may see its assignments")


async def create_assignment(core: Core, user: Principal, course_id: uuid.UUID, body: AssignmentIn) -> Record:
    async with core.transaction() as tx:
        course = await owned_course(tx.conn, user, course_id)
        row = await tx.conn.fetchrow(
            f"""INSERT INTO assignments (id, course_id, title, description, due_at, max_points)
                VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_ASSIGNMENT_COLUMNS}""",
            new_id(),
            course_id,
            body.title,
            body.description,
            body.due_at,
            body.max_points,
        )
        assert row is not None
        payload = {"course_id": str(course_id), "course_title": course["title"], "assignment_id": str(row["id"]),
                   "title": body.title, "due_at": body.due_at.isoformat()}  # fmt: skip
        await notify_learners(tx, course_id, "new_assignment", payload)
    return row


async def list_assignments(core: Core, user: Principal, course_id: uuid.UUID, query: PageQuery) -> Page[AssignmentOut]:
    at, ident = decode_cursor(query.cursor)
    async with core.pool.acquire() as conn:
        course = await visible_course(conn, user, course_id)
        await require_participant(conn, user, course)
        rows = await conn.fetch(
            f"""SELECT {_ASSIGNMENT_COLUMNS} FROM assignments
                WHERE course_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
                ORDER BY created_at, id LIMIT $4""",
            course_id,
            at,
            ident,
            query.limit + 1,
        )
    return page_of(rows, query.limit, assignment_out)


async def get_assignment(core: Core, user: Principal, assignment_id: uuid.UUID) -> Record:
    async with core.pool.acquire() as conn:
        row, course = await visible_assignment(conn, user, assignment_id)
        await require_participant(conn, user, course)
    return row


async def update_assignment(core: Core, user: Principal, assignment_id: uuid.UUID, body: AssignmentPatch) -> Record:
    async with core.transaction() as tx:
        _, course = await visible_assignment(tx.conn, user, assignment_id, lock="FOR UPDATE")
        require_owner_or_admin(user, course["owner_id"], "course")
        if body.max_points is not None:
            highest = await tx.conn.fetchval(
                "SELECT max(grade) FROM submissions WHERE assignment_id = $1", assignment_id
            )
            if highest is not None and highest > body.max_points:
                raise conflict("max_points cannot go below a grade already given", highest_grade=highest)
        row = await tx.conn.fetchrow(
            f"""UPDATE assignments SET title = coalesce($2, title), description = coalesce($3, description),
                    due_at = coalesce($4, due_at), max_points = coalesce($5, max_points)
                WHERE id = $1 RETURNING {_ASSIGNMENT_COLUMNS}""",
            assignment_id,
            body.title,
            body.description,
            body.due_at,
            body.max_points,
        )
        assert row is not None
        if body.due_at is not None:  # a new deadline gets its own reminders
            await tx.conn.execute(
                "DELETE FROM reminder_claims WHERE item_kind = 'assignment' AND item_id = $1", assignment_id
            )
    return row


# --- submissions ---------------------------------------------------------------------------------

_SUBMISSION_SELECT = """SELECT s.id, s.assignment_id, s.user_id, u.display_name AS author_name, s.body, s.late,
        s.submitted_at, s.grade, a.max_points, s.feedback, s.graded_at, s.graded_by,
        coalesce((SELECT jsonb_agg(jsonb_build_object('id', f.id, 'name', f.filename, 'content_type', f.content_type,
                                                      'size', f.size, 'created_at', f.created_at,
                                                      'url', '/api/v1/submission-files/' || f.id)
                                   ORDER BY f.created_at, f.id)
                    FROM submission_files f WHERE f.submission_id = s.id), '[]'::jsonb) AS files
    FROM submissions s JOIN assignments a ON a.id = s.assignment_id JOIN users u ON u.id = s.user_id"""


def submission_out(r: Record) -> SubmissionOut:
    return SubmissionOut(**dict(r))


async def _submission(conn: Connection, submission_id: uuid.UUID) -> Record:
    row = await conn.fetchrow(f"{_SUBMISSION_SELECT} WHERE s.id = $1", submission_id)
    if row is None:
        raise not_found("submission")
    return row


async def visible_submission(
    conn: Connection, user: Principal, submission_id: uuid.UUID, *, lock: bool = False
) -> tuple[Record, Record, Record]:
    """A submission with its assignment and course, if the user may see the course."""
    sub = await conn.fetchrow(
        "SELECT id, assignment_id, user_id, grade FROM submissions WHERE id = $1" + (" FOR UPDATE" if lock else ""),
        submission_id,
    )
    if sub is None:
        raise not_found("submission")
    try:
        assignment, course = await visible_assignment(
            conn, user, sub["assignment_id"], lock="FOR SHARE" if lock else ""
        )
    except AppError:
        raise not_found("submission") from None
    return sub, assignment, course


async def submit(core: Core, user: Principal, assignment_id: uuid.UUID, body: SubmissionIn) -> Record:
    async with core.transaction() as tx:
        assignment, course = await visible_assignment(tx.conn, user, assignment_id)
        if await enrollment_of(tx.conn, user.id, course["id"]) is None:
            raise forbidden("enroll in this course to submit work")
        submission_id = new_id()
        await tx.conn.execute(
            """INSERT INTO submissions (id, assignment_id, user_id, body, late)
               VALUES ($1, $2, $3, $4, now() > $5)""",
            submission_id,
            assignment_id,
            user.id,
            body.body,
            assignment["due_at"],
        )
        return await _submission(tx.conn, submission_id)


async def list_submissions(
    core: Core, user: Principal, assignment_id: uuid.UUID, query: PageQuery
) -> Page[SubmissionOut]:
    """Every submission for course staff; a learner's own otherwise. Oldest first."""
    at, ident = decode_cursor(query.cursor)
    async with core.pool.acquire() as conn:
        _, course = await visible_assignment(conn, user, assignment_id)
        await require_participant(conn, user, course)
        rows = await conn.fetch(
            f"""{_SUBMISSION_SELECT}
                WHERE s.assignment_id = $1 AND ($2 OR s.user_id = $3)
                  AND ($4::timestamptz IS NULL OR (s.submitted_at, s.id) > ($4, $5))
                ORDER BY s.submitted_at, s.id LIMIT $6""",
            assignment_id,
            is_staff(course, user),
            user.id,
            at,
            ident,
            query.limit + 1,
        )
    return page_of(rows, query.limit, submission_out, time_key="submitted_at")


async def get_submission(core: Core, user: Principal, submission_id: uuid.UUID) -> Record:
    async with core.pool.acquire() as conn:
        sub, _, course = await visible_submission(conn, user, submission_id)
        if sub["user_id"] != user.id and not is_staff(course, user):
            raise forbidden("only the submission's author, the course owner or an admin may read it")
        return await _submission(conn, submission_id)


async def grade_submission(core: Core, user: Principal, submission_id: uuid.UUID, body: GradeIn) -> Record:
    async with core.transaction() as tx:
        sub, assignment, course = await visible_submission(tx.conn, user, submission_id, lock=True)
        require_owner_or_admin(user, course["owner_id"], "course")
        max_points = assignment["max_points"]
        if not 0 <= body.grade <= max_points:
            raise invalid(f"grade must be between 0 and {max_points:g}", grade=body.grade, max_points=max_points)
        await tx.conn.execute(
            "UPDATE submissions SET grade = $2, feedback = $3, graded_at = now(), graded_by = $4 WHERE id = $1",
            submission_id,
            body.grade,
            body.feedback,
            user.id,
        )
        await audit(
            tx,
            user.id,
            "submission.graded",
            "submission",
            submission_id,
            assignment_id=str(assignment["id"]),
            learner_id=str(sub["user_id"]),
            grade=body.grade,
            previous_grade=sub["grade"],
        )
        await notify(
            tx,
            sub["user_id"],
            "submission_graded",
            {
                "submission_id": str(submission_id),
                "assignment_id": str(assignment["id"]),
                "assignment_title": assignment["title"],
                "course_id": str(course["id"]),
                "grade": body.grade,
                "max_points": max_points,
            },
        )
        return await _submission(tx.conn, submission_id)


# --- handlers ------------------------------------------------------------------------------------


@api.route(
    "POST",
    "/courses/{course_id}/assignments",
    summary="Set an assignment (course owner, admin)",
    tag=TAG_ASSIGN,
    body=AssignmentIn,
    response=AssignmentOut,
    status=201,
    errors=[403],
)
async def post_assignment(call: Call) -> AssignmentOut:
    return assignment_out(await create_assignment(core_of(call), call.me, call.params["course_id"], call.body))


@api.route(
    "GET",
    "/courses/{course_id}/assignments",
    summary="A course's assignments (course owner, admin, enrolled learners)",
    tag=TAG_ASSIGN,
    query=PageQuery,
    response=Page[AssignmentOut],
    errors=[403],
)
async def get_assignments(call: Call) -> Page[AssignmentOut]:
    return await list_assignments(core_of(call), call.me, call.params["course_id"], call.query)


@api.route(
    "GET",
    "/assignments/{assignment_id}",
    summary="One assignment (course owner, admin, enrolled learners)",
    tag=TAG_ASSIGN,
    response=AssignmentOut,
    errors=[403],
)
async def get_assignment_view(call: Call) -> AssignmentOut:
    return assignment_out(await get_assignment(core_of(call), call.me, call.params["assignment_id"]))


@api.route(
    "PATCH",
    "/assignments/{assignment_id}",
    summary="Edit an assignment (course owner, admin)",
    tag=TAG_ASSIGN,
    body=AssignmentPatch,
    response=AssignmentOut,
    errors=[403, 409],
)
async def patch_assignment(call: Call) -> AssignmentOut:
    if not call.body.model_fields_set:
        raise invalid("nothing to change")
    row = await update_assignment(core_of(call), call.me, call.params["assignment_id"], call.body)
    return assignment_out(row)


@api.route(
    "POST",
    "/assignments/{assignment_id}/submissions",
    summary="Hand in work (enrolled learners; each call is a new submission)",
    tag=TAG_ASSIGN,
    body=SubmissionIn,
    response=SubmissionOut,
    status=201,
    errors=[403],
)
async def post_submission(call: Call) -> SubmissionOut:
    return submission_out(await submit(core_of(call), call.me, call.params["assignment_id"], call.body))


@api.route(
    "GET",
    "/assignments/{assignment_id}/submissions",
    summary="Submissions: all for the course owner and admins, a learner's own otherwise",
    tag=TAG_ASSIGN,
    query=PageQuery,
    response=Page[SubmissionOut],
    errors=[403],
)
async def get_submissions(call: Call) -> Page[SubmissionOut]:
    return await list_submissions(core_of(call), call.me, call.params["assignment_id"], call.query)


@api.route(
    "GET",
    "/submissions/{submission_id}",
    summary="One submission (its author, the course owner, admin)",
    tag=TAG_ASSIGN,
    response=SubmissionOut,
    errors=[403],
)
async def get_submission_view(call: Call) -> SubmissionOut:
    return submission_out(await get_submission(core_of(call), call.me, call.params["submission_id"]))


@api.route(
    "PUT",
    "/submissions/{submission_id}/grade",
    summary="Grade a submission (course owner, admin); the learner is notified",
    tag=TAG_ASSIGN,
    body=GradeIn,
    response=SubmissionOut,
    errors=[403],
)
async def put_grade(call: Call) -> SubmissionOut:
    return submission_out(await grade_submission(core_of(call), call.me, call.params["submission_id"], call.body))
