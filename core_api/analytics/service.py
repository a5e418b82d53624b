"""Use cases: who may see which dashboard, and the dashboards assembled from the rollups."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from core_api.analytics import core, store
from core_api.analytics.schemas import (
    Activity,
    CommunityAnalytics,
    ContestParticipation,
    CourseAnalytics,
    CourseRank,
    DayCount,
    EnrollmentDay,
    PlatformAnalytics,
    PlatformTotals,
    WeekCount,
)
from core_api.communities import ADMIN, acting_rank, visible_community
from core_api.context import Core
from core_api.courses import owned_course
from core_api.db import Record
from core_api.errors import forbidden, invalid
from core_api.http import Principal


def _check_days(app: Core, days: int) -> None:
    if days > app.settings.analytics_max_days:
        raise invalid(f"days must be at most {app.settings.analytics_max_days}; got {days}", field="days")


def _window(app: Core, days: int, today: date) -> date:
    _check_days(app, days)
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


def _lecture(item: list[Any], enrolled: int) -> dict[str, Any]:
    """One lecture's stats from its row of the dashboard query: id, title, position, duration, viewers,
    completions, seconds watched, reach (learners per twentieth, or null)."""
    lecture_id, title, position, duration, viewers, completions, watched, reached = item
    duration = float(duration)
    reach = list(reached or [0] * core.REACH_BUCKETS) if duration > 0 else []
    bucket = core.drop_off(reach) if reach else None
    return {
        "lecture_id": lecture_id,
        "title": title,
        "position": position,
        "duration_s": duration,
        "viewers": viewers,
        "completions": completions,
        "completion_rate": core.share(completions, enrolled),
        "watched_s": core.seconds(float(watched)),
        "average_watched_s": core.seconds(float(watched) / viewers) if viewers else 0.0,
        "reach": reach,
        "retention": core.retention(reach) if reach else [],
        "drop_off_bucket": bucket,
        "drop_off_at_s": core.seconds(duration * bucket / core.REACH_BUCKETS) if bucket is not None else None,
    }


def _score(item: list[Any]) -> dict[str, Any]:
    """One assignment's or quiz's distribution from its row: kind, id, title, max points, bucket -> learners (or
    null), the sum of their scores."""
    kind, item_id, title, max_points, by_bucket, total = item
    counts = core.buckets({int(k): v for k, v in (by_bucket or {}).items()}, core.SCORE_BUCKETS)
    graded = sum(counts)
    return {
        "item_id": item_id,
        "kind": kind,
        "title": title,
        "max_points": max_points,
        "graded": graded,
        "mean": round(float(total) / graded, 2) if graded else None,
        "buckets": counts,
    }


async def course_analytics(app: Core, user: Principal, course_id: uuid.UUID, days: int) -> CourseAnalytics:
    """A course's dashboard, for its owner and admins (403 for anyone else who can see the course): two queries,
    the course with the caller's rights and the dashboard from the rollups."""
    _check_days(app, days)
    async with app.pool.acquire() as conn:
        course = await owned_course(conn, user, course_id)
        row = await store.course_dashboard(conn, course_id, days)
    until, since = row["until"], row["since"]
    keys = core.days_between(since, until)
    by_day = {date.fromisoformat(d): (n, c, a) for d, n, c, a in row["days"]}
    counted = [by_day.get(k, (0, 0, 0)) for k in keys]
    enrolled, completed = (int(n) for n in (row["all_time"] or (0, 0)))
    totals = core.cumulative(enrolled - sum(c[0] for c in counted), [c[0] for c in counted])
    weeks = core.weeks_between(since, until)
    by_week = {date.fromisoformat(w): n for w, n in row["weeks"]}
    weekly = [{"week": w, "count": by_week.get(w, 0)} for w in weeks]
    lectures = [_lecture(item, enrolled) for item in row["lectures"]]
    return CourseAnalytics.model_validate(
        {
            "course_id": course_id,
            "title": course["title"],
            "since": since,
            "until": until,
            "totals": {
                "enrolled": enrolled,
                "completed": completed,
                "active_today": counted[-1][2],
                "active_this_week": weekly[-1]["count"],
                "watched_s": core.seconds(sum(lec["watched_s"] for lec in lectures)),
            },
            "enrollments": [
                {"day": k, "enrollments": c[0], "completions": c[1], "total": t}
                for k, c, t in zip(keys, counted, totals, strict=True)
            ],
            "active_learners": {
                "daily": [{"day": k, "count": c[2]} for k, c in zip(keys, counted, strict=True)],
                "weekly": weekly,
            },
            "lectures": lectures,
            "scores": [_score(item) for item in row["scores"]],
        }
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
