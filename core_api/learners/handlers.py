"""HTTP handlers of the learners' progress endpoints."""

from __future__ import annotations

from core_api.context import Page, PageQuery, core_of
from core_api.http import Api, Call
from core_api.learners import service
from core_api.learners.schemas import ContinueList, ContinueQuery, LearnerOut, LearnerProgressOut

api = Api()
TAG = "progress"


@api.route(
    "GET",
    "/courses/{course_id}/learners",
    summary="A course's learners with their progress and last activity (owner, admin)",
    tag=TAG,
    description="Enrolled learners, oldest enrollment first: completed lectures, percent, and when they last "
    "reported progress in the course. 404 for a course the caller cannot see, 403 for one they do not own.",
    query=PageQuery,
    response=Page[LearnerOut],
    errors=[403],
)
async def get_learners(call: Call) -> Page[LearnerOut]:
    return await service.course_learners(core_of(call), call.me, call.params["course_id"], call.query)


@api.route(
    "GET",
    "/courses/{course_id}/learners/{user_id}/progress",
    summary="One learner's progress through every lecture (course owner, admin)",
    tag=TAG,
    description="Per lecture: the resume position, seconds watched, completed, last update. 404 when that user "
    "is not enrolled in the course.",
    response=LearnerProgressOut,
    errors=[403],
)
async def get_learner_progress(call: Call) -> LearnerProgressOut:
    return await service.learner_progress(core_of(call), call.me, call.params["course_id"], call.params["user_id"])


@api.route(
    "GET",
    "/me/continue",
    summary="Continue where you left off: your unfinished courses, latest first",
    tag=TAG,
    description="Courses you are enrolled in and have not completed, by your latest progress in them (courses "
    "not started yet by enrollment time), each with the lecture to resume — the one you last watched if "
    "unfinished, else the next unfinished one — and the position in it. `limit` is capped at "
    "STUDYHALL_CONTINUE_MAX_ITEMS.",
    query=ContinueQuery,
    response=ContinueList,
)
async def get_continue(call: Call) -> ContinueList:
    return await service.continue_learning(core_of(call), call.me, call.query.limit)
