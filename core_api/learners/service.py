"""Use cases: a course's learners and one learner's lectures (course owner, admins); a learner's courses
to continue."""

from __future__ import annotations

import uuid
from collections import defaultdict

from core_api.context import Core, Page, PageQuery, decode_cursor, page_of
from core_api.courses import owned_course
from core_api.db import Record
from core_api.enrollments import percent
from core_api.errors import not_found
from core_api.http import Principal
from core_api.learners.core import LectureState, resume_point
from core_api.learners.schemas import ContinueItem, ContinueList, LearnerOut, LearnerProgressOut
from core_api.progress import LectureProgressOut

# Counts and last activity per enrollment; `lecture_progress_activity` (user_id, course_id, updated_at)
# answers the last activity from the index.
_LEARNER_SELECT = """SELECT e.id, e.user_id, u.display_name, e.created_at AS enrolled_at, e.completed_at,
        (SELECT count(*) FROM lectures l WHERE l.course_id = e.course_id) AS total_lectures,
        (SELECT count(*) FROM lecture_progress p JOIN lectures l ON l.id = p.lecture_id
          WHERE p.user_id = e.user_id AND p.course_id = e.course_id AND p.completed) AS completed_lectures,
        (SELECT max(p.updated_at) FROM lecture_progress p
          WHERE p.user_id = e.user_id AND p.course_id = e.course_id) AS last_activity_at
    FROM enrollments e JOIN users u ON u.id = e.user_id"""


def learner_out(r: Record) -> LearnerOut:
    return LearnerOut(**dict(r), percent=percent(r["completed_lectures"], r["total_lectures"]))


async def course_learners(app: Core, user: Principal, course_id: uuid.UUID, query: PageQuery) -> Page[LearnerOut]:
    """The course's enrolled learners, oldest enrollment first, with their progress and last activity."""
    at, ident = decode_cursor(query.cursor)
    async with app.pool.acquire() as conn:
        await owned_course(conn, user, course_id)
        rows = await conn.fetch(
            f"""{_LEARNER_SELECT}
                WHERE e.course_id = $1 AND ($2::timestamptz IS NULL OR (e.created_at, e.id) > ($2, $3))
                ORDER BY e.created_at, e.id LIMIT $4""",
            course_id,
            at,
            ident,
            query.limit + 1,
        )
    return page_of(rows, query.limit, learner_out, time_key="enrolled_at")


async def learner_progress(
    app: Core, user: Principal, course_id: uuid.UUID, learner_id: uuid.UUID
) -> LearnerProgressOut:
    """One enrolled learner's progress through every lecture (404 for anyone not enrolled in the course)."""
    async with app.pool.acquire() as conn:
        await owned_course(conn, user, course_id)
        learner = await conn.fetchrow(
            f"{_LEARNER_SELECT} WHERE e.course_id = $1 AND e.user_id = $2", course_id, learner_id
        )
        if learner is None:
            raise not_found("learner")
        rows = await conn.fetch(
            """SELECT l.id AS lecture_id, l.title, l.position, l.duration_s,
                      least(coalesce(p.position_s, 0), l.duration_s) AS position_s,
                      least(coalesce(p.watched_s, 0), l.duration_s) AS watched_s,
                      coalesce(p.completed, false) AS completed, p.updated_at
               FROM lectures l LEFT JOIN lecture_progress p ON p.lecture_id = l.id AND p.user_id = $2
               WHERE l.course_id = $1 ORDER BY l.position, l.created_at, l.id""",
            course_id,
            learner_id,
        )
    summary = learner_out(learner)
    return LearnerProgressOut(
        **summary.model_dump(), course_id=course_id, lectures=[LectureProgressOut(**dict(r)) for r in rows]
    )


async def continue_learning(app: Core, user: Principal, limit: int) -> ContinueList:
    """The caller's enrolled, unfinished courses, latest activity first (never-started ones by enrollment
    time), each with the lecture to resume and where in it."""
    limit = min(limit, app.settings.continue_max_items)
    async with app.pool.acquire() as conn:
        courses = await conn.fetch(
            """SELECT e.course_id, c.title AS course_title, last.at AS last_activity_at
               FROM enrollments e JOIN courses c ON c.id = e.course_id
               LEFT JOIN LATERAL (SELECT max(p.updated_at) AS at FROM lecture_progress p
                                  WHERE p.user_id = e.user_id AND p.course_id = e.course_id) last ON true
               WHERE e.user_id = $1 AND e.completed_at IS NULL AND c.deleted_at IS NULL
                 AND EXISTS (SELECT 1 FROM lectures l WHERE l.course_id = e.course_id)
               ORDER BY coalesce(last.at, e.created_at) DESC, e.course_id
               LIMIT $2""",
            user.id,
            limit,
        )
        lectures = await conn.fetch(
            """SELECT l.course_id, l.id AS lecture_id, l.title, l.position, l.duration_s,
                      least(coalesce(p.position_s, 0), l.duration_s) AS position_s,
                      coalesce(p.completed, false) AS completed, p.updated_at
               FROM lectures l LEFT JOIN lecture_progress p ON p.lecture_id = l.id AND p.user_id = $1
               WHERE l.course_id = ANY($2::uuid[])""",
            user.id,
            [r["course_id"] for r in courses],
        )
    by_course: dict[uuid.UUID, list[LectureState]] = defaultdict(list)
    for r in lectures:
        by_course[r["course_id"]].append(
            LectureState(
                lecture_id=r["lecture_id"],
                title=r["title"],
                position=r["position"],
                duration_s=r["duration_s"],
                position_s=r["position_s"],
                completed=r["completed"],
                updated_at=r["updated_at"],
            )
        )
    items = []
    for c in courses:
        states = by_course[c["course_id"]]
        resume = resume_point(states)
        if resume is None:
            continue  # every lecture done (the course completes with the next report)
        done = sum(1 for s in states if s.completed)
        items.append(
            ContinueItem(
                course_id=c["course_id"],
                course_title=c["course_title"],
                lecture_id=resume.lecture_id,
                lecture_title=resume.title,
                lecture_position=resume.position,
                position_s=resume.position_s,
                duration_s=resume.duration_s,
                completed_lectures=done,
                total_lectures=len(states),
                percent=percent(done, len(states)),
                last_activity_at=c["last_activity_at"],
            )
        )
    return ContinueList(items=items)
