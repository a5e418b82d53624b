"""Use cases: who may see which dashboard, and the dashboards assembled from the rollups."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import date, timedelta

from core_api.analytics import core, store
from core_api.analytics.schemas import (
    Activity,
    CommunityAnalytics,
    ContestParticipation,
    CourseAnalytics,
    CourseRank,
    CourseTotals,
    DayCount,
    EnrollmentDay,
    LectureStats,
    PlatformAnalytics,
    PlatformTotals,
    ScoreStats,
    WeekCount,
)
from core_api.communities import ADMIN, acting_rank, visible_community
from core_api.context import Core
from core_api.courses import owned_course
from core_api.db import Record
from core_api.errors import forbidden, invalid
from core_api.http import Principal


def _window(app: Core, days: int, today: date) -> date:
    if days > app.settings.analytics_max_days:
        raise invalid(f"days must be at most {app.settings.analytics_max_days}; got {days}", field="days")
    return today - timedelta(days=days - 1)


def _series(rows: list[Record], since: date, until: date) -> tuple[list[EnrollmentDay], list[DayCount], int, int]:
    """The day series of enrollments and active learners over the window, and the totals of all time
    (enrolled now, completed)."""
    enrolled = {r["day"]: r["enrollments"] for r in rows}
    completions = {r["day"]: r["completions"] for r in rows}
    active = {r["day"]: r["active_learners"] for r in rows}
    before = sum(n for d, n in enrolled.items() if d < since)
    keys = core.days_between(since, until)
    added = core.fill(keys, enrolled)
    totals = core.cumulative(before, added)
    series = [
        EnrollmentDay(day=d, enrollments=n, completions=c, total=t)
        for d, n, c, t in zip(keys, added, core.fill(keys, completions), totals, strict=True)
    ]
    daily = [DayCount(day=d, count=n) for d, n in zip(keys, core.fill(keys, active), strict=True)]
    return series, daily, sum(enrolled.values()), sum(completions.values())


def _weekly(rows: list[Record], since: date, until: date) -> list[WeekCount]:
    keys = core.weeks_between(since, until)
    values = {r["week"]: r["active_learners"] for r in rows}
    return [WeekCount(week=w, count=n) for w, n in zip(keys, core.fill(keys, values), strict=True)]


def _lecture(r: Record, reach_rows: dict[int, int], enrolled: int) -> LectureStats:
    duration = float(r["duration_s"])
    reach = core.buckets(reach_rows, core.REACH_BUCKETS) if duration > 0 else []
    bucket = core.drop_off(reach) if reach else None
    viewers = int(r["viewers"])
    return LectureStats(
        lecture_id=r["id"],
        title=r["title"],
        position=r["position"],
        duration_s=duration,
        viewers=viewers,
        completions=int(r["completions"]),
        completion_rate=core.share(int(r["completions"]), enrolled),
        watched_s=core.seconds(float(r["watched_s"])),
        average_watched_s=core.seconds(float(r["watched_s"]) / viewers) if viewers else 0.0,
        reach=reach,
        retention=core.retention(reach) if reach else [],
        drop_off_bucket=bucket,
        drop_off_at_s=core.seconds(duration * bucket / core.REACH_BUCKETS) if bucket is not None else None,
    )


def _scores(items: list[Record], rows: list[Record]) -> list[ScoreStats]:
    by_item: dict[uuid.UUID, dict[int, int]] = defaultdict(dict)
    sums: dict[uuid.UUID, float] = defaultdict(float)
    for r in rows:
        by_item[r["item_id"]][r["bucket"]] = r["learners"]
        sums[r["item_id"]] += float(r["score_sum"])
    out = []
    for item in items:
        counts = core.buckets(by_item.get(item["id"], {}), core.SCORE_BUCKETS)
        graded = sum(counts)
        out.append(
            ScoreStats(
                item_id=item["id"],
                kind=item["kind"],
                title=item["title"],
                max_points=item["max_points"],
                graded=graded,
                mean=round(sums[item["id"]] / graded, 2) if graded else None,
                buckets=counts,
            )
        )
    return out


async def course_analytics(app: Core, user: Principal, course_id: uuid.UUID, days: int) -> CourseAnalytics:
    """A course's dashboard, for its owner and admins (403 for anyone else who can see the course)."""
    async with app.pool.acquire() as conn:
        course = await owned_course(conn, user, course_id)
        until = await store.today(conn)
        since = _window(app, days, until)
        day_rows = await store.course_days(conn, course_id)
        week_rows = await store.course_weeks(conn, course_id, core.week_of(since))
        lecture_rows = await store.lectures(conn, course_id)
        reach_rows = await store.reach(conn, course_id)
        items = await store.score_items(conn, course_id)
        bucket_rows = await store.score_buckets(conn, course_id)
    enrollments, daily, enrolled, completed = _series(day_rows, since, until)
    weekly = _weekly(week_rows, since, until)
    reach: dict[uuid.UUID, dict[int, int]] = defaultdict(dict)
    for r in reach_rows:
        reach[r["lecture_id"]][r["bucket"]] = r["learners"]
    lectures = [_lecture(r, reach[r["id"]], enrolled) for r in lecture_rows]
    return CourseAnalytics(
        course_id=course_id,
        title=course["title"],
        since=since,
        until=until,
        totals=CourseTotals(
            enrolled=enrolled,
            completed=completed,
            active_today=daily[-1].count,
            active_this_week=weekly[-1].count,
            watched_s=core.seconds(sum(lec.watched_s for lec in lectures)),
        ),
        enrollments=enrollments,
        active_learners=Activity(daily=daily, weekly=weekly),
        lectures=lectures,
        scores=_scores(items, bucket_rows),
    )


async def platform_analytics(app: Core, user: Principal, days: int) -> PlatformAnalytics:
    """The platform's dashboard (platform admins)."""
    if not user.is_admin:
        raise forbidden("requires role admin")
    async with app.pool.acquire() as conn:
        until = await store.today(conn)
        since = _window(app, days, until)
        day_rows = await store.platform_days(conn)
        week_rows = await store.platform_weeks(conn, core.week_of(since))
        counts = await store.platform_counts(conn)
        top = await store.top_courses(conn, since, core.week_of(until), app.settings.analytics_top_courses)
    enrollments, daily, enrolled, completed = _series(day_rows, since, until)
    weekly = _weekly(week_rows, since, until)
    return PlatformAnalytics(
        since=since,
        until=until,
        totals=PlatformTotals(
            users=counts["users"],
            courses=counts["courses"],
            published_courses=counts["published"],
            enrollments=enrolled,
            completions=completed,
            active_today=daily[-1].count,
            active_this_week=weekly[-1].count,
        ),
        enrollments=enrollments,
        active_learners=Activity(daily=daily, weekly=weekly),
        top_courses=[
            CourseRank(
                course_id=r["course_id"],
                title=r["title"],
                enrollments=r["enrollments"],
                active_this_week=r["active_this_week"],
            )
            for r in top
        ],
    )


async def community_analytics(app: Core, user: Principal, community_id: uuid.UUID) -> CommunityAnalytics:
    """A community's contest participation, for its admins and owner (and platform admins)."""
    async with app.pool.acquire() as conn:
        community = await visible_community(conn, user, community_id)
        if acting_rank(user, community["my_role"]) < ADMIN:
            raise forbidden("requires community role admin or higher")
        rows = await store.community_contests(conn, community_id, app.settings.analytics_max_contests)
    members = int(community["member_count"])
    return CommunityAnalytics(
        community_id=community_id,
        name=community["name"],
        members=members,
        contests=[
            ContestParticipation(
                contest_id=r["id"],
                title=r["title"],
                starts_at=r["starts_at"],
                ends_at=r["ends_at"],
                participants=r["participants"],
                submissions=r["submissions"],
                accepted=r["accepted"],
                participation_rate=core.share(r["participants"], members),
                score=r["score"],
                rank=r["rank"],
            )
            for r in rows
        ],
    )
