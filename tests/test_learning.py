"""Learning: enrollments, progress and certificates, assignments, submissions and grading."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from core_api.context import CORE
from tests.conftest import Actor, ApiClient
from tests.learning_helpers import report, watch


async def make_course(
    api: ApiClient, owner: Actor, durations: tuple[float, ...] = (100.0, 200.0), *, publish: bool = True
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    status, course = await api.call("POST", "/courses", owner, json={"title": "Graph theory"})
    assert status == 201, course
    lectures = []
    for i, duration in enumerate(durations):
        status, lecture = await api.call(
            "POST",
            f"/courses/{course['id']}/lectures",
            owner,
            json={
                "title": f"Part {i}",
                "media_kind": "video",
                "media_url": f"https://cdn.example.com/{i}.mp4",
                "duration_s": duration,
            },
        )
        assert status == 201, lecture
        lectures.append(lecture)
    if publish:
        status, course = await api.call("POST", f"/courses/{course['id']}/publish", owner)
        assert status == 200, course
    return course, lectures


async def enrolled(api: ApiClient, course: dict[str, Any], role: str = "student") -> Actor:
    learner = await api.user(role)
    status, body = await api.call("POST", f"/courses/{course['id']}/enroll", learner)
    assert status == 201, body
    return learner


async def put_progress(
    api: ApiClient, actor: Actor, lecture: dict[str, Any], position_s: Any, completed: bool = False
) -> tuple[int, Any]:
    return await api.call(
        "PUT",
        f"/lectures/{lecture['id']}/progress",
        actor,
        json={"position_s": position_s, "completed": completed},
    )


async def notifications(api: ApiClient, actor: Actor, kind: str) -> list[Any]:
    rows = await api.app[CORE].pool.fetch(
        "SELECT payload FROM notifications WHERE user_id = $1::uuid AND kind = $2", actor.id, kind
    )
    return [r["payload"] for r in rows]


def iso(at: datetime) -> str:
    return at.isoformat()


# --- enrollments ---------------------------------------------------------------------------------


async def test_enrolling_twice_returns_the_same_enrollment(api: ApiClient) -> None:
    owner = await api.user("instructor")
    course, _ = await make_course(api, owner)
    learner = await api.user()
    status, first = await api.call("POST", f"/courses/{course['id']}/enroll", learner)
    assert status == 201, first
    assert first["course_title"] == "Graph theory" and first["percent"] == 0.0
    assert first["total_lectures"] == 2 and first["completed_at"] is None
    status, again = await api.call("POST", f"/courses/{course['id']}/enroll", learner)
    assert status == 200 and again["id"] == first["id"]

    status, mine = await api.call("GET", "/me/enrollments", learner)
    assert status == 200
    assert [e["id"] for e in mine["items"]] == [first["id"]]
    assert mine["items"][0]["course_title"] == "Graph theory"


async def test_course_roster_is_for_its_owner_and_admins(api: ApiClient) -> None:
    owner = await api.user("instructor")
    course, _ = await make_course(api, owner)
    learner = await enrolled(api, course)
    status, roster = await api.call("GET", f"/courses/{course['id']}/enrollments", owner)
    assert status == 200 and [e["user_id"] for e in roster["items"]] == [learner.id]
    status, roster = await api.call("GET", f"/courses/{course['id']}/enrollments", await api.user("admin"))
    assert status == 200 and len(roster["items"]) == 1
    for outsider in (learner, await api.user("instructor")):
        status, body = await api.call("GET", f"/courses/{course['id']}/enrollments", outsider)
        assert status == 403 and body["error"]["code"] == "forbidden"


async def test_enrollment_lists_page_with_cursors(api: ApiClient) -> None:
    owner = await api.user("instructor")
    learner = await api.user()
    courses = [(await make_course(api, owner))[0] for _ in range(3)]
    for course in courses:
        status, _ = await api.call("POST", f"/courses/{course['id']}/enroll", learner)
        assert status == 201
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        status, page = await api.call("GET", "/me/enrollments", learner, params=params)
        assert status == 200
        seen += [e["course_id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [c["id"] for c in courses]
    status, body = await api.call("GET", "/me/enrollments", learner, params={"cursor": "garbage!"})
    assert status == 400 and body["error"]["code"] == "invalid_input"


async def test_draft_course_is_invisible_to_learners(api: ApiClient) -> None:
    owner = await api.user("instructor")
    course, lectures = await make_course(api, owner, publish=False)
    learner = await api.user()
    for method, path in [
        ("POST", f"/courses/{course['id']}/enroll"),
        ("DELETE", f"/courses/{course['id']}/enroll"),
        ("GET", f"/courses/{course['id']}/progress"),
        ("GET", f"/courses/{course['id']}/assignments"),
        ("GET", f"/courses/{course['id']}/enrollments"),
    ]:
        status, body = await api.call(method, path, learner)
        assert status == 404, (method, path, body)
        assert body["error"]["code"] == "not_found"
    status, _ = await put_progress(api, learner, lectures[0], 10)
    assert status == 404
    # The owner sees the draft but cannot enroll in it before publishing.
    status, body = await api.call("POST", f"/courses/{course['id']}/enroll", owner)
    assert status == 409 and body["error"]["code"] == "conflict"


async def test_leaving_keeps_progress_for_a_return(api: ApiClient) -> None:
    owner = await api.user("instructor")
    course, lectures = await make_course(api, owner)
    learner = await enrolled(api, course)
    status, _ = await put_progress(api, learner, lectures[0], 42)
    assert status == 200
    status, _ = await api.call("DELETE", f"/courses/{course['id']}/enroll", learner)
    assert status == 204
    status, body = await api.call("DELETE", f"/courses/{course['id']}/enroll", learner)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, mine = await api.call("GET", "/me/enrollments", learner)
    assert mine["items"] == []
    status, body = await put_progress(api, learner, lectures[0], 50)
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, _ = await api.call("POST", f"/courses/{course['id']}/enroll", learner)
    assert status == 201
    status, progress = await api.call("GET", f"/courses/{course['id']}/progress", learner)
    assert progress["lectures"][0]["position_s"] == 42


# --- progress ------------------------------------------------------------------------------------


async def test_progress_needs_an_enrollment(api: ApiClient) -> None:
    owner = await api.user("instructor")
    course, lectures = await make_course(api, owner)
    stranger = await api.user()
    status, body = await put_progress(api, stranger, lectures[0], 10)
    assert status == 403 and "enroll" in body["error"]["message"]
    status, body = await api.call("GET", f"/courses/{course['id']}/progress", stranger)
    assert status == 403


async def test_progress_resumes_refuses_positions_outside_the_lecture_and_completion_sticks(api: ApiClient) -> None:
    owner = await api.user("instructor")
    course, lectures = await make_course(api, owner, (100.0, 200.0, 300.0))
    learner = await enrolled(api, course)

    status, out = await put_progress(api, learner, lectures[0], 30.5)
    assert status == 200, out
    assert out["lecture"]["position_s"] == 30.5 and out["lecture"]["completed"] is False
    assert out["course"]["percent"] == 0.0

    # Positions outside the lecture are refused with a clear error, and change nothing.
    for wrong in (9999, -5, 101.5):
        status, out = await put_progress(api, learner, lectures[0], wrong)
        assert status == 400 and out["error"]["code"] == "invalid_input", out
        assert "position_s" in str(out["error"]), out  # the message (or the field list) names it
    status, out = await put_progress(api, learner, lectures[0], 100.4)  # a player's end, a little past the duration
    assert status == 200 and out["lecture"]["position_s"] == 100.0
    status, out = await put_progress(api, learner, lectures[0], 0)
    assert out["lecture"]["position_s"] == 0.0

    out = await watch(api, learner, lectures[0])  # reports that really take their time
    assert out["lecture"]["completed"] is True and out["lecture"]["watched_s"] == 100.0
    assert out["course"]["completed_lectures"] == 1 and out["course"]["total_lectures"] == 3
    assert out["course"]["percent"] == 33.33
    # Rewatching from the start does not undo completion.
    status, out = await put_progress(api, learner, lectures[0], 12, completed=False)
    assert out["lecture"]["completed"] is True and out["lecture"]["position_s"] == 12

    status, progress = await api.call("GET", f"/courses/{course['id']}/progress", learner)
    assert status == 200
    assert [lec["lecture_id"] for lec in progress["lectures"]] == [lec["id"] for lec in lectures]
    first, untouched, _ = progress["lectures"]
    assert first["position_s"] == 12 and first["completed"] is True and first["watched_s"] == 100.0
    assert untouched["position_s"] == 0 and untouched["completed"] is False and untouched["updated_at"] is None
    assert untouched["watched_s"] == 0
    assert progress["completed_lectures"] == 1 and progress["percent"] == 33.33
    assert progress["certificate"] is None

    status, mine = await api.call("GET", "/me/enrollments", learner)
    assert mine["items"][0]["percent"] == 33.33


async def test_bad_progress_input_is_a_clear_4xx(api: ApiClient) -> None:
    owner = await api.user("instructor")
    course, lectures = await make_course(api, owner)
    learner = await enrolled(api, course)
    path = f"/lectures/{lectures[0]['id']}/progress"
    for raw in ['{"position_s": "ten"}', "{}", '{"position_s": NaN}', '{"position_s": 1, "completed": "yes"}']:
        status, body = await api.call("PUT", path, learner, data=raw, headers={"Content-Type": "application/json"})
        assert status == 400, raw
        assert body["error"]["code"] == "invalid_input"
    status, _ = await api.call("PUT", "/lectures/not-a-uuid/progress", learner, json={"position_s": 1})
    assert status == 404
    status, _ = await api.call(
        "PUT", "/lectures/00000000-0000-0000-0000-000000000000/progress", learner, json={"position_s": 1}
    )
    assert status == 404


# --- certificates --------------------------------------------------------------------------------


async def test_completing_the_course_issues_one_verifiable_certificate(api: ApiClient) -> None:
    owner = await api.user("instructor")
    course, lectures = await make_course(api, owner)
    learner = await enrolled(api, course)

    out = await watch(api, learner, lectures[0])
    assert out["course"]["certificate"] is None and out["course"]["completed_at"] is None
    out = await watch(api, learner, lectures[1])
    assert out["course"]["percent"] == 100.0 and out["course"]["completed_at"] is not None
    cert = out["course"]["certificate"]
    assert cert is not None and cert["course_title"] == "Graph theory"
    assert len(cert["code"]) >= 20
    assert cert["verification_url"].endswith(f"/api/v1/certificates/{cert['code']}")

    # Completing again (or rewatching) does not issue another.
    status, out = await put_progress(api, learner, lectures[1], 10, completed=True)
    assert out["course"]["certificate"]["code"] == cert["code"]
    status, mine = await api.call("GET", "/me/certificates", learner)
    assert status == 200 and [c["code"] for c in mine["items"]] == [cert["code"]]
    assert len(await notifications(api, learner, "certificate_issued")) == 1
    [payload] = await notifications(api, learner, "certificate_issued")
    assert payload["code"] == cert["code"]

    status, enrollment = await api.call("GET", "/me/enrollments", learner)
    assert enrollment["items"][0]["completed_at"] is not None and enrollment["items"][0]["percent"] == 100.0

    # Anyone, signed in or not, can verify it by its code.
    status, check = await api.call("GET", f"/certificates/{cert['code']}")
    assert status == 200, check
    assert check["valid"] is True and check["course_title"] == "Graph theory"
    assert check["learner_name"].startswith("student")
    assert check["issued_at"] == cert["issued_at"]
    for unknown in ("not-a-real-code", "%00abc", "x" * 500):
        status, body = await api.call("GET", f"/certificates/{unknown}")
        assert status == 404, unknown
        assert body["error"]["code"] == "not_found"


async def test_concurrent_completion_issues_the_certificate_once(api: ApiClient) -> None:
    owner = await api.user("instructor")
    course, lectures = await make_course(api, owner, (60.0, 60.0, 60.0))
    learner = await enrolled(api, course)
    for lecture in lectures:
        await watch(api, learner, lecture, until=45.0)
    # The last quarter of every lecture at once: the three lectures complete together, racing to complete the
    # course. (One player per lecture: two players of one lecture interleave their reports, and a report checked
    # against the *other* player's previous one can show nothing watched, so whether the lecture completes would
    # depend on timing.)
    results = await asyncio.gather(*(watch(api, learner, lecture, start=45.0) for lecture in lectures))
    assert all(out["lecture"]["completed"] for out in results)
    assert any(out["course"]["certificate"] is not None for out in results)
    # Then every lecture's last position again, twice over and all at once: more writes that find the course complete.
    again = await asyncio.gather(*(report(api, learner, lecture, 60.0) for lecture in lectures for _ in range(2)))
    codes = {out["course"]["certificate"]["code"] for out in again + results if out["course"]["certificate"]}
    assert len(codes) == 1
    count = await api.app[CORE].pool.fetchval("SELECT count(*) FROM certificates WHERE user_id = $1::uuid", learner.id)
    assert count == 1
    assert len(await notifications(api, learner, "certificate_issued")) == 1


# --- assignments and submissions -----------------------------------------------------------------


async def make_assignment(
    api: ApiClient, owner: Actor, course: dict[str, Any], due_at: datetime, max_points: float = 10
) -> Any:
    status, assignment = await api.call(
        "POST",
        f"/courses/{course['id']}/assignments",
        owner,
        json={"title": "Prove it", "description": "Show your work", "due_at": iso(due_at), "max_points": max_points},
    )
    assert status == 201, assignment
    return assignment


async def test_assignments_are_set_by_the_owner_and_seen_by_participants(api: ApiClient) -> None:
    owner = await api.user("instructor")
    course, _ = await make_course(api, owner)
    learner = await enrolled(api, course)
    stranger = await api.user()
    due = datetime.now(UTC) + timedelta(days=7)
    path = f"/courses/{course['id']}/assignments"

    status, body = await api.call("POST", path, learner, json={"title": "x", "due_at": iso(due), "max_points": 5})
    assert status == 403
    for bad in [
        {"title": "naive due", "due_at": "2030-01-01T12:00:00", "max_points": 5},
        {"title": "no points", "due_at": iso(due), "max_points": 0},
        {"title": "", "due_at": iso(due), "max_points": 5},
        {"title": "far", "due_at": "0001-01-01T00:00:00+05:00", "max_points": 5},
        {"title": "nul\u0000", "due_at": iso(due), "max_points": 5},
    ]:
        status, body = await api.call("POST", path, owner, json=bad)
        assert status == 400, bad
        assert body["error"]["code"] == "invalid_input"

    assignment = await make_assignment(api, owner, course, due)
    assert assignment["max_points"] == 10 and assignment["description"] == "Show your work"
    status, listing = await api.call("GET", path, learner)
    assert status == 200 and [a["id"] for a in listing["items"]] == [assignment["id"]]
    status, one = await api.call("GET", f"/assignments/{assignment['id']}", learner)
    assert status == 200 and one["title"] == "Prove it"
    status, _ = await api.call("GET", path, stranger)
    assert status == 403
    status, _ = await api.call("GET", f"/assignments/{assignment['id']}", stranger)
    assert status == 403

    status, patched = await api.call(
        "PATCH", f"/assignments/{assignment['id']}", owner, json={"title": "Prove it again"}
    )
    assert status == 200 and patched["title"] == "Prove it again" and patched["max_points"] == 10
    status, _ = await api.call("PATCH", f"/assignments/{assignment['id']}", learner, json={"title": "mine"})
    assert status == 403
    status, _ = await api.call("PATCH", f"/assignments/{assignment['id']}", owner, json={})
    assert status == 400


async def test_assignments_of_a_draft_are_hidden(api: ApiClient) -> None:
    owner = await api.user("instructor")
    course, _ = await make_course(api, owner, publish=False)
    assignment = await make_assignment(api, owner, course, datetime.now(UTC) + timedelta(days=1))
    learner = await api.user()
    for method, path in [
        ("GET", f"/assignments/{assignment['id']}"),
        ("GET", f"/assignments/{assignment['id']}/submissions"),
    ]:
        status, _ = await api.call(method, path, learner)
        assert status == 404
    status, _ = await api.call("POST", f"/assignments/{assignment['id']}/submissions", learner, json={"body": "hi"})
    assert status == 404


async def test_submissions_after_the_due_time_are_late_and_resubmitting_adds_one(api: ApiClient) -> None:
    owner = await api.user("instructor")
    course, _ = await make_course(api, owner)
    learner = await enrolled(api, course)
    past = await make_assignment(api, owner, course, datetime.now(UTC) - timedelta(hours=1))
    future = await make_assignment(api, owner, course, datetime.now(UTC) + timedelta(days=1))

    status, late = await api.call("POST", f"/assignments/{past['id']}/submissions", learner, json={"body": "a"})
    assert status == 201 and late["late"] is True
    status, on_time = await api.call(
        "POST", f"/assignments/{future['id']}/submissions", learner, json={"body": "draft 1"}
    )
    assert status == 201 and on_time["late"] is False and on_time["grade"] is None
    status, second = await api.call(
        "POST", f"/assignments/{future['id']}/submissions", learner, json={"body": "draft 2"}
    )
    assert status == 201 and second["id"] != on_time["id"]
    status, mine = await api.call("GET", f"/assignments/{future['id']}/submissions", learner)
    assert [s["body"] for s in mine["items"]] == ["draft 1", "draft 2"]

    # Only enrolled learners hand in work.
    status, body = await api.call(
        "POST", f"/assignments/{future['id']}/submissions", await api.user(), json={"body": "x"}
    )
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, _ = await api.call("POST", f"/assignments/{future['id']}/submissions", learner, json={"body": ""})
    assert status == 400


async def test_who_sees_which_submissions(api: ApiClient) -> None:
    owner = await api.user("instructor")
    course, _ = await make_course(api, owner)
    alice = await enrolled(api, course)
    bob = await enrolled(api, course)
    assignment = await make_assignment(api, owner, course, datetime.now(UTC) + timedelta(days=1))
    path = f"/assignments/{assignment['id']}/submissions"
    _, from_alice = await api.call("POST", path, alice, json={"body": "alice's answer"})
    _, from_bob = await api.call("POST", path, bob, json={"body": "bob's answer"})

    status, everything = await api.call("GET", path, owner)
    assert status == 200 and {s["id"] for s in everything["items"]} == {from_alice["id"], from_bob["id"]}
    status, page = await api.call("GET", path, owner, params={"limit": "1"})
    assert len(page["items"]) == 1 and page["next_cursor"] is not None
    status, own = await api.call("GET", path, alice)
    assert [s["id"] for s in own["items"]] == [from_alice["id"]]
    assert own["items"][0]["author_name"].startswith("student")

    status, _ = await api.call("GET", f"/submissions/{from_alice['id']}", alice)
    assert status == 200
    status, _ = await api.call("GET", f"/submissions/{from_alice['id']}", owner)
    assert status == 200
    status, _ = await api.call("GET", f"/submissions/{from_alice['id']}", await api.user("admin"))
    assert status == 200
    status, body = await api.call("GET", f"/submissions/{from_alice['id']}", bob)
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, _ = await api.call("GET", "/submissions/00000000-0000-0000-0000-000000000000", owner)
    assert status == 404


async def test_grading_is_bounded_audited_and_notified(api: ApiClient) -> None:
    owner = await api.user("instructor")
    course, _ = await make_course(api, owner)
    learner = await enrolled(api, course)
    assignment = await make_assignment(api, owner, course, datetime.now(UTC) + timedelta(days=1), max_points=20)
    _, submission = await api.call(
        "POST", f"/assignments/{assignment['id']}/submissions", learner, json={"body": "QED"}
    )
    path = f"/submissions/{submission['id']}/grade"

    status, _ = await api.call("PUT", path, learner, json={"grade": 20})
    assert status == 403
    status, _ = await api.call("PUT", path, await api.user("instructor"), json={"grade": 20})
    assert status == 403
    for bad in (20.5, -1):
        status, body = await api.call("PUT", path, owner, json={"grade": bad})
        assert status == 400, bad
        assert body["error"]["code"] == "invalid_input"
    assert await notifications(api, learner, "submission_graded") == []

    status, graded = await api.call("PUT", path, owner, json={"grade": 17.5, "feedback": "Nice proof"})
    assert status == 200, graded
    assert graded["grade"] == 17.5 and graded["feedback"] == "Nice proof" and graded["graded_by"] == owner.id
    status, seen = await api.call("GET", f"/submissions/{submission['id']}", learner)
    assert seen["grade"] == 17.5 and seen["graded_at"] is not None

    [payload] = await notifications(api, learner, "submission_graded")
    assert payload["submission_id"] == submission["id"] and payload["grade"] == 17.5
    audit_rows = await api.app[CORE].pool.fetch(
        "SELECT actor_id, details FROM audit_log WHERE action = 'submission.graded' AND target_id = $1",
        submission["id"],
    )
    assert len(audit_rows) == 1 and str(audit_rows[0]["actor_id"]) == owner.id
    assert audit_rows[0]["details"]["grade"] == 17.5

    # The scale cannot shrink below a grade already given.
    status, body = await api.call("PATCH", f"/assignments/{assignment['id']}", owner, json={"max_points": 10})
    assert status == 409 and body["error"]["code"] == "conflict"
