"""HTTP handlers of course management: parse, call the service, answer (owner or admin; audited)."""

from __future__ import annotations

from core_api.catalog import service
from core_api.catalog.schemas import CourseOut, PrerequisitesIn
from core_api.context import core_of
from core_api.courses import TAG, course_out
from core_api.http import Api, Call, Reply

api = Api()


@api.route(
    "POST",
    "/courses/{course_id}/unpublish",
    summary="Take a published course out of the catalogue (owner, admin)",
    tag=TAG,
    description="It stops taking enrollments and purchases (409 for newcomers); learners already enrolled keep "
    "seeing it, its lectures and their progress. `POST .../publish` puts it back. Idempotent; audited.",
    response=CourseOut,
    errors=[403, 409, 429],
)
async def post_unpublish(call: Call) -> CourseOut:
    return course_out(await service.unpublish(core_of(call), call.me, call.params["course_id"]))


@api.route(
    "POST",
    "/courses/{course_id}/archive",
    summary="Archive a course: read-only, out of the catalogue (owner, admin)",
    tag=TAG,
    description="Works from any status. An archived course takes no enrollments or purchases and refuses changes "
    "to itself, its lectures, price and prerequisites (409); learners enrolled keep viewing it and their "
    "progress. Idempotent; audited.",
    response=CourseOut,
    errors=[403, 429],
)
async def post_archive(call: Call) -> CourseOut:
    return course_out(await service.archive(core_of(call), call.me, call.params["course_id"]))


@api.route(
    "POST",
    "/courses/{course_id}/restore",
    summary="Restore an archived course to the status it had (owner, admin)",
    tag=TAG,
    description="409 when the course is not archived. Audited.",
    response=CourseOut,
    errors=[403, 409, 429],
)
async def post_restore(call: Call) -> CourseOut:
    return course_out(await service.restore(core_of(call), call.me, call.params["course_id"]))


@api.route(
    "DELETE",
    "/courses/{course_id}",
    summary="Delete a course (soft; owner, admin)",
    tag=TAG,
    description="Afterwards only admins see it (`GET /courses?deleted=true`); for everyone else it is 404. Refused "
    "with 409 `conflict` (`details.enrolled`) while learners are enrolled: archive it instead. Audited.",
    status=204,
    errors=[403, 409, 429],
)
async def delete_course(call: Call) -> Reply:
    await service.delete(core_of(call), call.me, call.params["course_id"])
    return Reply(None, 204)


@api.route(
    "PUT",
    "/courses/{course_id}/prerequisites",
    summary="Set the courses a learner must complete before enrolling (owner, admin)",
    tag=TAG,
    description="Replaces the list. 400 for ids that are not published courses, the course itself, or more than "
    "STUDYHALL_COURSE_MAX_PREREQUISITES; 409 when a listed course already requires this one (a cycle), or the "
    "course is archived. Enrolling or buying without holding every prerequisite's certificate answers 409 "
    "(`details.missing`). Audited.",
    body=PrerequisitesIn,
    response=CourseOut,
    errors=[403, 409, 429],
)
async def put_prerequisites(call: Call) -> CourseOut:
    return course_out(
        await service.set_prerequisites(core_of(call), call.me, call.params["course_id"], call.body.course_ids)
    )
