"""Analytics (core_api/analytics/, migration 0034): every number of a scripted course's dashboard equals the one
counted by hand here; the platform and community views; who may see them; garbage query strings; the backfill
of data that existed before the migration."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from core_api.context import CORE
from core_api.db import bundled_migrations, migrate
from core_api.http import Principal
from core_api.progress import record_watching
from tests.conftest import Actor, ApiClient, _with_database
from tests.learning_helpers import TEST_MAX_RATE, watch


def lecture_body(title: str, duration_s: float) -> dict[str, Any]:
    return {"title": title, "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": duration_s}


async def ok(api: ApiClient, method: str, path: str, actor: Actor, **kw: Any) -> Any:
    status, body = await api.call(method, path, actor, **kw)
    assert status < 300, (method, path, status, body)
    return body


def at(day: date) -> datetime:
    """Noon (UTC) of ``day``."""
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def week_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


async def principal(api: ApiClient, actor: Actor) -> Principal:
    row = await api.app[CORE].pool.fetchrow("SELECT email, display_name FROM users WHERE id = $1", uuid.UUID(actor.id))
    return Principal(id=uuid.UUID(actor.id), role=actor.role, email=row["email"], display_name=row["display_name"])


async def test_a_scripted_course_has_the_numbers_counted_by_hand(api: ApiClient) -> None:
    pool = api.app[CORE].pool
    owner = await api.user("instructor")
    course = await ok(api, "POST", "/courses", owner, json={"title": "Analysed"})
    cid = course["id"]
    l1 = await ok(api, "POST", f"/courses/{cid}/lectures", owner, json=lecture_body("One", 100.0))
    l2 = await ok(api, "POST", f"/courses/{cid}/lectures", owner, json=lecture_body("Two", 200.0))
    l3 = await ok(api, "POST", f"/courses/{cid}/lectures", owner, json=lecture_body("Three", 50.0))
    await ok(api, "POST", f"/courses/{cid}/publish", owner)
    ada, bob, cyd, dan, eve, fay = [
        await api.user("student", name=n) for n in ("Ada", "Bob", "Cyd", "Dan", "Eve", "Fay")
    ]
    for learner in (ada, bob, cyd, dan):
        await ok(api, "POST", f"/courses/{cid}/enroll", learner)
    status, _ = await api.call("DELETE", f"/courses/{cid}/enroll", dan)
    assert status in (200, 204), status
    today = await pool.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
    # Eve enrolled three days ago and watched half of lecture One that day; Fay enrolled ten days ago and never
    # watched: history written as it was then (the triggers count it on its own days).
    three_ago, ten_ago = today - timedelta(days=3), today - timedelta(days=10)
    for learner, day in ((eve, three_ago), (fay, ten_ago)):
        await pool.execute(
            "INSERT INTO enrollments (id, user_id, course_id, created_at) VALUES ($1, $2, $3, $4)",
            uuid.uuid4(), uuid.UUID(learner.id), uuid.UUID(cid), at(day),
        )  # fmt: skip
    await pool.execute(
        "INSERT INTO lecture_progress (user_id, lecture_id, course_id, position_s, watched, watched_s, updated_at)"
        " VALUES ($1, $2, $3, 50, '{0,50}', 50, $4)",
        uuid.UUID(eve.id), uuid.UUID(l1["id"]), uuid.UUID(cid), at(three_ago),
    )  # fmt: skip

    # Today: Ada watches all of One and half of Two; Bob 30 s of One and, in a watch party, 20 s of Three;
    # Cyd the whole course (and so completes it).
    await watch(api, ada, l1)
    await watch(api, ada, l2, until=100.0)
    await watch(api, bob, l1, until=30.0)
    # Bob's watch clock stands at his last report: the party's 20 s of media take 20 / TEST_MAX_RATE s of real time
    # after it to be credible (on a fast machine the next line could come sooner, and the 20 s would be refused).
    await asyncio.sleep(2 * 20.0 / TEST_MAX_RATE)
    out = await record_watching(api.app[CORE], await principal(api, bob), uuid.UUID(l3["id"]), 20.0, [(0.0, 20.0)], 5.0)
    assert out.lecture.watched_s == 20.0
    for lec in (l1, l2, l3):
        last = await watch(api, cyd, lec)
    assert last["course"]["completed_at"] is not None

    # Scores: an assignment (10 points) graded 7 for Ada; Bob's first submission 3, his later one 9 (the latest
    # counts). A quiz of two true/false questions (2 points): Ada 0 then 1 (the best counts), Cyd 2.
    assignment = await ok(
        api, "POST", f"/courses/{cid}/assignments", owner,
        json={"title": "Essay", "description": "", "due_at": "2099-01-01T00:00:00Z", "max_points": 10.0},
    )  # fmt: skip
    for learner, grade in ((ada, 7.0), (bob, 3.0), (bob, 9.0)):
        sub = await ok(api, "POST", f"/assignments/{assignment['id']}/submissions", learner, json={"body": "x"})
        await ok(api, "PUT", f"/submissions/{sub['id']}/grade", owner, json={"grade": grade})
    questions = [{"kind": "true_false", "prompt": f"Q{i}", "answer": True} for i in range(2)]
    quiz = await ok(
        api, "POST", f"/courses/{cid}/quizzes", owner,
        json={"title": "Check", "questions": questions, "attempts_allowed": 2},
    )  # fmt: skip
    assert quiz["max_points"] == 2.0
    q1, q2 = (q["id"] for q in quiz["questions"])
    for learner, answers in ((ada, {q1: False, q2: False}), (ada, {q1: True, q2: False}), (cyd, {q1: True, q2: True})):
        attempt = await ok(api, "POST", f"/quizzes/{quiz['id']}/attempts", learner)
        await ok(api, "POST", f"/attempts/{attempt['id']}/submit", learner, json={"answers": answers})

    got = await ok(api, "GET", f"/courses/{cid}/analytics?days=14", owner)

    # Enrollments: Fay ten days ago, Eve three days ago, Ada, Bob and Cyd today (Dan came and left).
    assert got["since"] == str(today - timedelta(days=13)) and got["until"] == str(today)
    series = {e["day"]: e for e in got["enrollments"]}
    assert len(series) == 14
    assert {d: e["enrollments"] for d, e in series.items() if e["enrollments"]} == {
        str(ten_ago): 1, str(three_ago): 1, str(today): 3,
    }  # fmt: skip
    assert series[str(ten_ago - timedelta(days=1))]["total"] == 0
    assert series[str(ten_ago)]["total"] == 1 and series[str(three_ago)]["total"] == 2
    assert series[str(today)]["total"] == 5
    assert {d: e["completions"] for d, e in series.items() if e["completions"]} == {str(today): 1}
    # Active learners: Eve three days ago; Ada, Bob and Cyd today.
    daily = {a["day"]: a["count"] for a in got["active_learners"]["daily"]}
    assert {d: n for d, n in daily.items() if n} == {str(three_ago): 1, str(today): 3}
    weekly = {w["week"]: w["count"] for w in got["active_learners"]["weekly"]}
    expected_weeks: dict[str, int] = {}
    for d, n in ((three_ago, 1), (today, 3)):
        expected_weeks[str(week_of(d))] = expected_weeks.get(str(week_of(d)), 0) + n
    assert {w: n for w, n in weekly.items() if n} == expected_weeks
    assert got["totals"] == {
        "enrolled": 5, "completed": 1, "active_today": 3, "active_this_week": expected_weeks[str(week_of(today))],
        "watched_s": 100 + 30 + 100 + 50 + 100 + 200 + 20 + 50,
    }  # fmt: skip

    # The funnel, watch time and drop-off, lecture by lecture.
    one, two, three = got["lectures"]
    assert [lec["title"] for lec in got["lectures"]] == ["One", "Two", "Three"]
    # One: Ada 100 (the end: bucket 19), Bob 30 (bucket 6), Cyd 100 (19), Eve 50 (bucket 10).
    assert (one["viewers"], one["completions"], one["completion_rate"]) == (4, 2, 0.4)
    assert (one["watched_s"], one["average_watched_s"]) == (280.0, 70.0)
    assert one["reach"] == [0] * 6 + [1] + [0] * 3 + [1] + [0] * 8 + [2]
    assert one["retention"] == [1.0] * 7 + [0.75] * 4 + [0.5] * 9
    assert (one["drop_off_bucket"], one["drop_off_at_s"]) == (6, 30.0)  # a tie: the earlier one
    # Two: Ada 100 of 200 (bucket 10), Cyd all of it.
    assert (two["viewers"], two["completions"], two["completion_rate"], two["watched_s"]) == (2, 1, 0.2, 300.0)
    assert two["reach"] == [0] * 10 + [1] + [0] * 8 + [1]
    assert (two["drop_off_bucket"], two["drop_off_at_s"]) == (10, 100.0)
    # Three: Bob 20 of 50 in the watch party (bucket 8), Cyd all of it.
    assert (three["viewers"], three["completions"], three["watched_s"]) == (2, 1, 70.0)
    assert three["reach"] == [0] * 8 + [1] + [0] * 10 + [1]
    assert (three["drop_off_bucket"], three["drop_off_at_s"]) == (8, 20.0)

    # Scores as the gradebook counts them.
    essay, check = got["scores"]
    assert (essay["kind"], essay["title"], essay["graded"], essay["mean"]) == ("assignment", "Essay", 2, 8.0)
    assert essay["buckets"] == [0] * 7 + [1, 0, 1]
    assert (check["kind"], check["graded"], check["mean"], check["max_points"]) == ("quiz", 2, 1.5, 2.0)
    assert check["buckets"] == [0] * 5 + [1, 0, 0, 0, 1]

    # Regrading Ada's essay to 2 moves her to bucket 2; an admin sees the same dashboard.
    sub = await pool.fetchval(
        "SELECT id FROM submissions WHERE user_id = $1 AND assignment_id = $2", uuid.UUID(ada.id),
        uuid.UUID(assignment["id"]),
    )  # fmt: skip
    await ok(api, "PUT", f"/submissions/{sub}/grade", owner, json={"grade": 2.0})
    admin = await api.user("admin")
    again = await ok(api, "GET", f"/courses/{cid}/analytics?days=14", admin)
    assert again["scores"][0]["buckets"] == [0, 0, 1] + [0] * 6 + [1] and again["scores"][0]["mean"] == 5.5

    # The rollups equal the raw rows they summarise.
    raw = await pool.fetch(
        "SELECT lecture_id, count(*) AS viewers, count(*) FILTER (WHERE completed) AS completions,"
        " sum(watched_s) AS watched_s FROM lecture_progress WHERE course_id = $1 GROUP BY lecture_id",
        uuid.UUID(cid),
    )
    by_id = {str(r["lecture_id"]): r for r in raw}
    for lec in got["lectures"]:
        r = by_id[lec["lecture_id"]]
        assert (lec["viewers"], lec["completions"], lec["watched_s"]) == (
            r["viewers"],
            r["completions"],
            r["watched_s"],
        )


async def test_who_may_see_the_dashboards(api: ApiClient) -> None:
    owner, other, learner, admin = (
        await api.user("instructor"), await api.user("instructor"), await api.user(), await api.user("admin"),
    )  # fmt: skip
    course = await ok(api, "POST", "/courses", owner, json={"title": "Private numbers"})
    await ok(api, "POST", f"/courses/{course['id']}/lectures", owner, json=lecture_body("L", 10.0))
    await ok(api, "POST", f"/courses/{course['id']}/publish", owner)
    await ok(api, "POST", f"/courses/{course['id']}/enroll", learner)
    path = f"/courses/{course['id']}/analytics"
    for who, expected in ((learner, 403), (other, 403), (owner, 200), (admin, 200)):
        status, body = await api.call("GET", path, who)
        assert status == expected, (who.role, body)
    status, _ = await api.call("GET", path)
    assert status == 401
    status, _ = await api.call("GET", f"/courses/{uuid.uuid4()}/analytics", owner)
    assert status == 404
    for who, expected in ((learner, 403), (owner, 403), (admin, 200)):
        status, _ = await api.call("GET", "/admin/analytics", who)
        assert status == expected


@pytest.mark.parametrize("query", ["days=abc", "days=0", "days=-3", "days=367", "days=1.5", "days="])
async def test_garbage_query_strings_are_refused_clearly(api: ApiClient, query: str) -> None:
    owner, admin = await api.user("instructor"), await api.user("admin")
    course = await ok(api, "POST", "/courses", owner, json={"title": "Garbage"})
    for who, path in ((owner, f"/courses/{course['id']}/analytics"), (admin, "/admin/analytics")):
        status, body = await api.call("GET", f"{path}?{query}", who)
        assert status == 400, body
        assert body["error"]["code"] == "invalid_input"
        assert "days" in str(body["error"]["details"]) or "days" in body["error"]["message"]
    status, body = await api.call("GET", "/courses/not-a-uuid/analytics", owner)
    assert status in (400, 404), body


async def test_the_platform_view_counts_new_enrollments_and_active_learners(api: ApiClient) -> None:
    admin, owner = await api.user("admin"), await api.user("instructor")
    before = await ok(api, "GET", "/admin/analytics?days=7", admin)
    course = await ok(api, "POST", "/courses", owner, json={"title": "Popular"})
    lecture = await ok(api, "POST", f"/courses/{course['id']}/lectures", owner, json=lecture_body("L", 10.0))
    await ok(api, "POST", f"/courses/{course['id']}/publish", owner)
    learners = [await api.user() for _ in range(3)]
    for learner in learners:
        await ok(api, "POST", f"/courses/{course['id']}/enroll", learner)
    await watch(api, learners[0], lecture)
    await watch(api, learners[1], lecture, until=5.0)
    after = await ok(api, "GET", "/admin/analytics?days=7", admin)
    assert after["totals"]["users"] - before["totals"]["users"] == 3  # the three learners
    assert after["totals"]["enrollments"] - before["totals"]["enrollments"] == 3
    assert after["totals"]["completions"] - before["totals"]["completions"] == 1
    assert after["totals"]["active_today"] - before["totals"]["active_today"] == 2
    assert after["enrollments"][-1]["enrollments"] - before["enrollments"][-1]["enrollments"] == 3
    assert len(after["enrollments"]) == 7 and len(after["active_learners"]["daily"]) == 7
    top = {c["course_id"]: c for c in after["top_courses"]}
    if course["id"] in top:  # the shared session's other tests may hold the top places
        assert (top[course["id"]]["enrollments"], top[course["id"]]["active_this_week"]) == (3, 2)


async def test_community_admins_see_contest_participation(api: ApiClient) -> None:
    owner, helper, member, outsider = (await api.user("instructor"), await api.user(), await api.user(),
                                       await api.user())  # fmt: skip
    community = await ok(api, "POST", "/communities", owner, json={"name": f"Club {uuid.uuid4().hex[:8]}"})
    cid = community["id"]
    for who, role in ((helper, "admin"), (member, "member")):
        await ok(api, "POST", f"/communities/{cid}/members", owner, json={"user_id": who.id})
        if role == "admin":
            await ok(api, "PUT", f"/communities/{cid}/members/{who.id}", owner, json={"role": "admin"})
    now = datetime.now(UTC)
    contest = await ok(
        api, "POST", "/contests", owner,
        json={"title": "War", "organizer_id": cid, "communities": [cid],
              "problems": [{"title": "P", "tests": [{"stdin": "", "expected_output": "1"}]}],
              "starts_at": (now - timedelta(hours=1)).isoformat(), "ends_at": (now + timedelta(hours=1)).isoformat()},
    )  # fmt: skip
    pool = api.app[CORE].pool
    # Stored as the judge stores them (no sandbox needed): member 2 submissions (one accepted), helper 1.
    for who, verdict in ((member, "wrong_answer"), (member, "accepted"), (helper, None)):
        await pool.execute(
            "INSERT INTO contest_submissions (id, contest_id, problem_id, user_id, community_id, language, source,"
            " submitted_at, verdict, judged_at) VALUES ($1, $2, $3, $4, $5, 'python', 'print(1)', now(), $6,"
            " CASE WHEN $6::text IS NULL THEN NULL ELSE now() END)",
            uuid.uuid4(), uuid.UUID(contest["id"]), uuid.UUID(contest["problems"][0]["id"]), uuid.UUID(who.id),
            uuid.UUID(cid), verdict,
        )  # fmt: skip
    # The helper's submission is judged accepted later.
    await pool.execute(
        "UPDATE contest_submissions SET verdict = 'accepted', judged_at = now() WHERE user_id = $1",
        uuid.UUID(helper.id),
    )
    got = await ok(api, "GET", f"/communities/{cid}/analytics", helper)
    assert (got["name"], got["members"]) == (community["name"], 3)
    (row,) = got["contests"]
    assert (row["contest_id"], row["participants"], row["submissions"], row["accepted"]) == (contest["id"], 2, 3, 2)
    assert row["participation_rate"] == round(2 / 3, 4)
    assert (row["score"], row["rank"]) == (None, None)
    for who, expected in ((owner, 200), (member, 403), (outsider, 403), (await api.user("admin"), 200)):
        status, _ = await api.call("GET", f"/communities/{cid}/analytics", who)
        assert status == expected


async def test_data_from_before_the_migration_is_backfilled(server_url: str) -> None:
    """Migrate a fresh database up to 0033, write a course's history the old way, then apply 0034: the rollups
    hold the same numbers the triggers would have counted."""
    name = f"analytics_backfill_{uuid.uuid4().hex[:8]}"
    admin_conn = await asyncpg.connect(server_url)
    await admin_conn.execute(f'CREATE DATABASE "{name}"')
    await admin_conn.close()
    url = _with_database(server_url, name)
    try:
        every = bundled_migrations()
        await migrate(url, [m for m in every if m.version < 34])
        conn = await asyncpg.connect(url)
        try:
            owner, a, b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
            for u in (owner, a, b):
                await conn.execute(
                    "INSERT INTO users (id, email, password_hash, display_name, role)"
                    " VALUES ($1, $2, 'x', 'U', 'student')",
                    u, f"{u}@example.com",
                )  # fmt: skip
            course, lec = uuid.uuid4(), uuid.uuid4()
            await conn.execute("INSERT INTO courses (id, owner_id, title) VALUES ($1, $2, 'Old')", course, owner)
            await conn.execute(
                "INSERT INTO lectures (id, course_id, position, title, media_kind, media_url, duration_s)"
                " VALUES ($1, $2, 0, 'L', 'video', 'x', 100)", lec, course,
            )  # fmt: skip
            d1, d2 = datetime(2026, 1, 5, 9, tzinfo=UTC), datetime(2026, 1, 7, 9, tzinfo=UTC)  # a Monday, Wednesday
            await conn.execute(
                "INSERT INTO enrollments (id, user_id, course_id, created_at, completed_at) VALUES"
                " ($1, $2, $3, $4, $5), ($6, $7, $3, $5, NULL)",
                uuid.uuid4(), a, course, d1, d2, uuid.uuid4(), b,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO lecture_progress (user_id, lecture_id, course_id, position_s, completed, watched,"
                " watched_s, updated_at) VALUES ($1, $3, $4, 100, true, '{0,100}', 100, $5),"
                " ($2, $3, $4, 40, false, '{0,40}', 40, $5)",
                a, b, lec, course, d2,
            )  # fmt: skip
        finally:
            await conn.close()
        await migrate(url, every)
        conn = await asyncpg.connect(url)
        try:
            days = await conn.fetch(
                "SELECT day, enrollments, completions, active_learners FROM analytics_course_days WHERE course_id = $1"
                " ORDER BY day", course,
            )  # fmt: skip
            assert [tuple(r) for r in days] == [(d1.date(), 1, 0, 0), (d2.date(), 1, 1, 2)]
            assert (
                await conn.fetchval("SELECT active_learners FROM analytics_course_weeks WHERE course_id = $1", course)
                == 2
            )
            stats = await conn.fetchrow(
                "SELECT sum(viewers), sum(completions), sum(watched_s) FROM analytics_lecture_stats"
                " WHERE lecture_id = $1",
                lec,
            )  # fmt: skip
            assert tuple(stats) == (2, 1, 140.0)
            reach_q = "SELECT learners FROM analytics_lecture_reach WHERE lecture_id = $1"
            assert await conn.fetchval(reach_q, lec) == [0] * 8 + [1] + [0] * 10 + [1]
            totals = await conn.fetchrow(
                "SELECT enrolled, completed FROM analytics_course_totals WHERE course_id = $1", course
            )
            assert tuple(totals) == (2, 1)
            # ... and the triggers carry on from there: b comes back later and watches to 60.
            await conn.execute(
                "UPDATE lecture_progress SET watched = '{0,60}', watched_s = 60, updated_at = $3"
                " WHERE user_id = $1 AND lecture_id = $2", b, lec, datetime(2026, 1, 8, 9, tzinfo=UTC),
            )  # fmt: skip
            assert await conn.fetchval(reach_q, lec) == [0] * 12 + [1] + [0] * 6 + [1]
            assert (
                await conn.fetchval(
                    "SELECT active_learners FROM analytics_course_days WHERE course_id = $1 AND day = '2026-01-08'",
                    course,
                )
                == 1
            )
            assert (
                await conn.fetchval("SELECT active_learners FROM analytics_course_weeks WHERE course_id = $1", course)
                == 2
            )
            # What the triggers keep equals a rebuild from the raw rows (analytics_rebuild, the backfill), but for the
            # activity history the raw rows no longer hold (b was also active on the 7th).
            snapshot = (
                "SELECT lecture_id, sum(viewers), sum(completions), sum(watched_s) FROM analytics_lecture_stats"
                " GROUP BY 1"
            )
            all_reach = "SELECT lecture_id, learners FROM analytics_lecture_reach ORDER BY 1"
            days_q = "SELECT course_id, day, enrollments, completions FROM analytics_course_days ORDER BY 1, 2"
            totals_q = "SELECT * FROM analytics_course_totals ORDER BY 1"
            queries = (snapshot, all_reach, days_q, totals_q)
            kept = [await conn.fetch(q) for q in queries]
            await conn.execute("SELECT analytics_rebuild()")
            assert [await conn.fetch(q) for q in queries] == kept
        finally:
            await conn.close()
    finally:
        admin_conn = await asyncpg.connect(server_url)
        await admin_conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin_conn.close()
