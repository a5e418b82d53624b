"""The SQL of the dashboards. Every query reads the rollup tables of migration 0034 (a handful of rows per
course, lecture, item or day), never the raw progress, enrollment or score rows."""

from __future__ import annotations

import uuid
from datetime import date

from core_api.db import Connection, Record


async def today(conn: Connection) -> date:
    """Today by the database's clock, in UTC (the day the rollups count a write on)."""
    value: date = await conn.fetchval("SELECT analytics_day(now())")
    return value


# A course's whole dashboard in one round trip: each part a json array (decoded by the pool's codec), read from the
# rollups by their course index. $1 the course, $2 the window in days.
_COURSE_DASHBOARD = """
WITH span AS (SELECT analytics_day(now()) AS until, analytics_day(now()) - ($2::int - 1) AS since)
SELECT span.until, span.since,
  (SELECT json_build_array(enrolled, completed) FROM analytics_course_totals WHERE course_id = $1) AS all_time,
  (SELECT coalesce(json_agg(json_build_array(day, enrollments, completions, active_learners)), '[]')
     FROM analytics_course_days WHERE course_id = $1 AND day >= span.since) AS days,
  (SELECT coalesce(json_agg(json_build_array(week, active_learners)), '[]')
     FROM analytics_course_weeks WHERE course_id = $1 AND week >= analytics_week(span.since)) AS weeks,
  (SELECT coalesce(json_agg(json_build_array(l.id, l.title, l.position, l.duration_s, coalesce(s.viewers, 0),
                                             coalesce(s.completions, 0), coalesce(s.watched_s, 0), r.learners)
                            ORDER BY l.position, l.created_at, l.id), '[]')
     FROM lectures l
     LEFT JOIN (SELECT lecture_id, sum(viewers) AS viewers, sum(completions) AS completions, sum(watched_s) AS watched_s
                FROM analytics_lecture_stats WHERE course_id = $1 GROUP BY lecture_id) s ON s.lecture_id = l.id
     LEFT JOIN analytics_lecture_reach r ON r.lecture_id = l.id
     WHERE l.course_id = $1) AS lectures,
  (SELECT coalesce(json_agg(json_build_array(i.kind, i.id, i.title, i.max_points, b.counts, b.total)
                            ORDER BY i.created_at, i.id), '[]')
     FROM (SELECT 'assignment' AS kind, id, title, max_points, created_at FROM assignments WHERE course_id = $1
           UNION ALL
           SELECT 'quiz', id, title, max_points, created_at FROM quizzes WHERE course_id = $1) i
     LEFT JOIN (SELECT item_id, json_object_agg(bucket, learners) AS counts, sum(score_sum) AS total
                FROM analytics_score_buckets WHERE course_id = $1 AND learners > 0 GROUP BY item_id) b
            ON b.item_id = i.id) AS scores
FROM span"""


async def course_dashboard(conn: Connection, course_id: uuid.UUID, days: int) -> Record:
    """Everything a course dashboard shows, from the rollups (see ``_COURSE_DASHBOARD``)."""
    row = await conn.fetchrow(_COURSE_DASHBOARD, course_id, days)
    assert row is not None
    return row


# --- the platform --------------------------------------------------------------------------------------------


async def platform_days(conn: Connection) -> list[Record]:
    return list(await conn.fetch("SELECT day, enrollments, completions, active_learners FROM analytics_platform_days"))


async def platform_weeks(conn: Connection, since: date) -> list[Record]:
    return list(await conn.fetch("SELECT week, active_learners FROM analytics_platform_weeks WHERE week >= $1", since))


async def platform_counts(conn: Connection) -> Record:
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM users) AS users,
                  (SELECT count(*) FROM courses WHERE deleted_at IS NULL) AS courses,
                  (SELECT count(*) FROM courses WHERE deleted_at IS NULL AND status = 'published') AS published"""
    )
    assert row is not None
    return row


async def top_courses(conn: Connection, since: date, week: date, limit: int) -> list[Record]:
    """The courses with the most enrollments since ``since`` (analytics_course_days_day answers the range)."""
    return list(
        await conn.fetch(
            """SELECT d.course_id, c.title, d.enrollments, coalesce(w.active_learners, 0) AS active_this_week
               FROM (SELECT course_id, sum(enrollments)::int AS enrollments FROM analytics_course_days
                     WHERE day >= $1 GROUP BY course_id HAVING sum(enrollments) > 0
                     ORDER BY 2 DESC, 1 LIMIT $3) d
               JOIN courses c ON c.id = d.course_id
               LEFT JOIN analytics_course_weeks w ON w.course_id = d.course_id AND w.week = $2
               ORDER BY d.enrollments DESC, d.course_id""",
            since,
            week,
            limit,
        )
    )


# --- communities ---------------------------------------------------------------------------------------------


async def community_contests(conn: Connection, community_id: uuid.UUID, limit: int) -> list[Record]:
    return list(
        await conn.fetch(
            """SELECT k.id, k.title, k.starts_at, k.ends_at,
                      coalesce(s.participants, 0) AS participants, coalesce(s.submissions, 0) AS submissions,
                      coalesce(s.accepted, 0) AS accepted, r.score, r.rank
               FROM contest_communities cc JOIN contests k ON k.id = cc.contest_id
               LEFT JOIN analytics_contest_stats s ON s.contest_id = k.id AND s.community_id = cc.community_id
               LEFT JOIN contest_results r ON r.contest_id = k.id AND r.community_id = cc.community_id
               WHERE cc.community_id = $1
               ORDER BY k.starts_at DESC, k.id LIMIT $2""",
            community_id,
            limit,
        )
    )
