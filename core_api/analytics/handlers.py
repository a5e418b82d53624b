"""REST of the analytics dashboards."""

from __future__ import annotations

from core_api.analytics import service
from core_api.analytics.schemas import AnalyticsQuery, CommunityAnalytics, CourseAnalytics, PlatformAnalytics
from core_api.context import core_of
from core_api.http import Api, Call

api = Api()
TAG = "analytics"
_ROLLUPS = (
    "Read from rollup tables that every enrollment, progress report, watch-party heartbeat and grade updates in "
    "its own transaction (docs/analytics.md), so the numbers are current. Days and weeks are UTC (weeks start on "
    "Monday). `days` (1 to STUDYHALL_ANALYTICS_MAX_DAYS, default 30) sets how many days the series cover, ending "
    "today; anything else is refused with 400."
)


@api.route(
    "GET",
    "/courses/{course_id}/analytics",
    summary="A course's analytics dashboard (course owner, admin)",
    tag=TAG,
    description="Enrollments per day (and the running total), active learners per day and week, and per "
    "lecture in course order: learners who opened and completed it (the completion funnel), seconds watched, and "
    "where learners stopped (the furthest point each reached, in twentieths of the lecture: `reach`, `retention`, "
    "`drop_off_bucket`). Score distributions of every assignment and quiz as the gradebook counts them (a quiz's "
    "best attempt, an assignment's latest grade), in tenths of the maximum. " + _ROLLUPS + " 404 for a course the "
    "caller cannot see, 403 for one they do not own.",
    query=AnalyticsQuery,
    response=CourseAnalytics,
    errors=[400, 403],
)
async def get_course_analytics(call: Call) -> CourseAnalytics:
    return await service.course_analytics(core_of(call), call.me, call.params["course_id"], call.query.days)


@api.route(
    "GET",
    "/admin/analytics",
    summary="The platform's analytics dashboard (admins)",
    tag=TAG,
    description="Users and courses, enrollments and completions per day, distinct active learners per day and "
    "week across all courses, and the courses with the most enrollments in the window. " + _ROLLUPS,
    query=AnalyticsQuery,
    response=PlatformAnalytics,
    errors=[400, 403],
)
async def get_platform_analytics(call: Call) -> PlatformAnalytics:
    return await service.platform_analytics(core_of(call), call.me, call.query.days)


@api.route(
    "GET",
    "/communities/{community_id}/analytics",
    summary="A community's contest participation (community admins and owner, platform admins)",
    tag=TAG,
    description="Every contest the community took part in, latest first: members who submitted for it, "
    "submissions, accepted ones, the share of today's members who took part, and the final score and rank once "
    "the contest is finalised. Kept by a trigger on contest submissions (docs/analytics.md). 404 for a private "
    "community the caller is not in, 403 for a member who is not an admin.",
    response=CommunityAnalytics,
    errors=[403],
)
async def get_community_analytics(call: Call) -> CommunityAnalytics:
    return await service.community_analytics(core_of(call), call.me, call.params["community_id"])
