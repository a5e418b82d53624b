"""Queries and answers of the analytics endpoints."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from core_api.http import Query


class AnalyticsQuery(Query):
    days: int = Field(
        30,
        ge=1,
        le=366,
        description="How many days the series cover, ending today (UTC); at most STUDYHALL_ANALYTICS_MAX_DAYS.",
    )


class DayCount(BaseModel):
    day: date
    count: int


class EnrollmentDay(BaseModel):
    day: date
    enrollments: int = Field(description="Enrollments made that day (learners who left since are not counted).")
    completions: int = Field(description="Learners who completed the course that day.")
    total: int = Field(description="Enrolled learners at the end of that day (enrollments so far, minus leavers).")


class WeekCount(BaseModel):
    week: date = Field(description="The week's Monday (UTC).")
    count: int


class Activity(BaseModel):
    daily: list[DayCount] = Field(description="Distinct learners who reported progress each day of the window.")
    weekly: list[WeekCount] = Field(
        description="Distinct learners who reported progress each week touching the window."
    )


class LectureStats(BaseModel):
    lecture_id: uuid.UUID
    title: str
    position: int
    duration_s: float
    viewers: int = Field(description="Learners who opened the lecture (reported progress on it).")
    completions: int = Field(description="Learners who completed it.")
    completion_rate: float = Field(description="completions / the course's enrolled learners (0-1).")
    watched_s: float = Field(description="Seconds watched by all learners together, each part once per learner.")
    average_watched_s: float = Field(description="watched_s / viewers (0 without viewers).")
    reach: list[int] = Field(
        description="Learners whose furthest watched point lies in each twentieth of the lecture (index 0: the "
        "first 5 %); empty for a lecture without a duration."
    )
    retention: list[float] = Field(
        description="Share of those learners who got at least to the start of each twentieth (0-1)."
    )
    drop_off_bucket: int | None = Field(
        description="The twentieth (0-18) where most learners stopped short of the end; null: nobody did."
    )
    drop_off_at_s: float | None = Field(description="Where that twentieth starts, in seconds.")


class ScoreStats(BaseModel):
    item_id: uuid.UUID
    kind: Literal["quiz", "assignment"]
    title: str
    max_points: float
    graded: int = Field(description="Learners with a score (a quiz's best attempt, an assignment's latest grade).")
    mean: float | None = Field(description="Their mean score in points; null when nobody is graded.")
    buckets: list[int] = Field(
        description="Learners per tenth of max_points (index 9 holds 90-100 %), as the gradebook counts scores."
    )


class CourseTotals(BaseModel):
    enrolled: int
    completed: int = Field(description="Enrolled learners who completed the course.")
    active_today: int
    active_this_week: int
    watched_s: float


class CourseAnalytics(BaseModel):
    course_id: uuid.UUID
    title: str
    since: date
    until: date = Field(description="Today (UTC): the series end here.")
    totals: CourseTotals
    enrollments: list[EnrollmentDay]
    active_learners: Activity
    lectures: list[LectureStats] = Field(description="Every lecture in course order: the completion funnel.")
    scores: list[ScoreStats] = Field(description="Assignments and quizzes, oldest first.")


class CourseRank(BaseModel):
    course_id: uuid.UUID
    title: str
    enrollments: int = Field(description="Enrollments made in the window.")
    active_this_week: int


class PlatformTotals(BaseModel):
    users: int
    courses: int = Field(description="Courses not deleted.")
    published_courses: int
    enrollments: int
    completions: int
    active_today: int
    active_this_week: int


class PlatformAnalytics(BaseModel):
    since: date
    until: date
    totals: PlatformTotals
    enrollments: list[EnrollmentDay]
    active_learners: Activity
    top_courses: list[CourseRank] = Field(
        description="Courses with the most enrollments in the window (at most STUDYHALL_ANALYTICS_TOP_COURSES)."
    )


class ContestParticipation(BaseModel):
    contest_id: uuid.UUID
    title: str
    starts_at: datetime
    ends_at: datetime
    participants: int = Field(description="Members who submitted for the community.")
    submissions: int
    accepted: int = Field(description="Submissions judged accepted.")
    participation_rate: float = Field(description="participants / the community's members now (0-1).")
    score: int | None = Field(description="The community's final score; null until the contest is finalised.")
    rank: int | None


class CommunityAnalytics(BaseModel):
    community_id: uuid.UUID
    name: str
    members: int
    contests: list[ContestParticipation] = Field(
        description="Contests the community took part in, latest start first (at most "
        "STUDYHALL_ANALYTICS_MAX_CONTESTS)."
    )
