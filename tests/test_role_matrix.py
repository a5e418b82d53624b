"""Role × endpoint matrix: every REST operation, called by every kind of caller, answers as the rules say.

Callers: ``anon`` (no token), ``stranger`` (a student with no tie to anything), ``learner`` (a student
enrolled in the course, member of the community, author of the submission, owner of the notification),
``instructor`` (another course's instructor), ``owner`` (the instructor owning the course and the
community) and ``admin``. After a caller's call changed something (a write that succeeded) the next caller
gets a freshly built world, so a successful change by one caller cannot alter what the next one sees; a read,
or a write that was refused, leaves the world as it was, and the next caller uses it too. A final check makes
sure the table covers every operation in the served OpenAPI document, so a new endpoint cannot skip the matrix.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core_api.context import CORE
from sandbox.host import probe
from tests.conftest import Actor, ApiClient
from tests.learning_helpers import watch

CALLERS = ("anon", "stranger", "learner", "instructor", "owner", "admin")
VIDEO = {"title": "L", "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 60.0}


@dataclass
class World:
    actors: dict[str, Actor]
    ids: dict[str, str]


async def build_world(api: ApiClient) -> World:
    actors = {name: await api.user(role) for name, role in
              [("stranger", "student"), ("learner", "student"), ("instructor", "instructor"),
               ("owner", "instructor"), ("admin", "admin")]}  # fmt: skip
    owner, learner = actors["owner"], actors["learner"]

    async def ok(method: str, path: str, actor: Actor, **kw: Any) -> Any:
        status, body = await api.call(method, path, actor, **kw)
        assert status < 300, (method, path, status, body)
        return body

    course = await ok("POST", "/courses", owner, json={"title": "Published"})
    lecture = await ok("POST", f"/courses/{course['id']}/lectures", owner, json=VIDEO)
    await ok("POST", f"/courses/{course['id']}/lectures", owner, json=VIDEO)
    await ok("POST", f"/courses/{course['id']}/publish", owner)
    draft = await ok("POST", "/courses", owner, json={"title": "Draft"})
    await ok("POST", f"/courses/{draft['id']}/lectures", owner, json=VIDEO)
    await ok("POST", f"/courses/{course['id']}/enroll", learner)
    assignment = await ok(
        "POST",
        f"/courses/{course['id']}/assignments",
        owner,
        json={"title": "A", "description": "", "due_at": "2099-01-01T00:00:00Z", "max_points": 10.0},
    )
    submission = await ok("POST", f"/assignments/{assignment['id']}/submissions", learner, json={"body": "x"})
    attached = await api.http.post(
        f"/api/v1/submissions/{submission['id']}/files?name=work.pdf", data=b"%PDF-1.4 work", headers=learner.headers
    )
    assert attached.status == 201, await attached.text()
    sfile = (await attached.json())["id"]
    quiz = await ok("POST", f"/courses/{course['id']}/quizzes", owner, json=new_quiz({}))
    attempt = await ok("POST", f"/quizzes/{quiz['id']}/attempts", learner)
    # A certificate: a one-lecture course the learner completes.
    short = await ok("POST", "/courses", owner, json={"title": "Short"})
    short_lecture = await ok("POST", f"/courses/{short['id']}/lectures", owner, json={**VIDEO, "duration_s": 1.0})
    await ok("POST", f"/courses/{short['id']}/publish", owner)
    await ok("POST", f"/courses/{short['id']}/enroll", learner)
    assert (await watch(api, learner, short_lecture))["course"]["certificate"] is not None
    certs = await ok("GET", "/me/certificates", learner)
    community = await ok("POST", "/communities", owner, json={"name": f"C {uuid.uuid4().hex[:8]}"})
    await ok("POST", f"/communities/{community['id']}/members", owner, json={"user_id": learner.id})
    private = await ok(
        "POST", "/communities", owner, json={"name": f"P {uuid.uuid4().hex[:8]}", "visibility": "private"}
    )
    await ok("POST", f"/communities/{private['id']}/members", owner, json={"user_id": learner.id})
    # Rooms: the owner hosts a room of the public community and a private room; the learner is invited to both.
    room = await ok(
        "POST", "/rooms", owner, json={"name": "R", "kind": "study", "visibility": "community",
                                       "community_id": community["id"]}
    )  # fmt: skip
    proom = await ok("POST", "/rooms", owner, json={"name": "P", "kind": "ide", "visibility": "private"})
    for r in (room, proom):
        await ok("POST", f"/rooms/{r['id']}/invite", owner, json={"user_id": learner.id})
    newcomer = await api.user()
    # Workspaces: the owner opens one in the community room (the learner is in it and also holds an
    # explicit grant) and one of their own.
    ws = await ok("POST", "/workspaces", owner, json={"name": "W", "language": "python", "room_id": room["id"]})
    await ok("PUT", f"/workspaces/{ws['id']}/members/{learner.id}", owner, json={"access": "edit"})
    notes = await ok("GET", "/me/notifications", learner)
    # A finished execution of the learner's, stored directly: reading it needs no sandbox on this machine.
    execution = uuid.uuid4()
    await api.app[CORE].pool.execute(
        "INSERT INTO executions (id, user_id, language, kind, state, result) VALUES ($1, $2, 'python', 'run',"
        " 'finished', '{\"run\": null, \"judge\": null}')",
        execution,
        uuid.UUID(learner.id),
    )
    run = uuid.uuid4()  # ... and a run of the workspace that was that execution
    await api.app[CORE].pool.execute(
        "INSERT INTO workspace_runs (id, workspace_id, execution_id, user_id, entry)"
        " VALUES ($1, $2, $3, $4, 'main.py')",
        run,
        uuid.UUID(ws["id"]),
        execution,
        uuid.UUID(learner.id),
    )
    # Group wars: a running contest of the public community (organised by it) and one that has ended.
    now = datetime.now(UTC)
    problem = {"title": "P", "tests": [{"stdin": "", "expected_output": "1"}]}
    war = {"title": "W", "organizer_id": community["id"], "communities": [community["id"]], "problems": [problem]}
    contest = await ok(
        "POST",
        "/contests",
        owner,
        json={
            **war,
            "starts_at": (now - timedelta(hours=1)).isoformat(),
            "ends_at": (now + timedelta(hours=1)).isoformat(),
        },
    )
    ended = await ok("POST", "/contests", owner, json={**war, "starts_at": (now - timedelta(hours=2)).isoformat(),
                                                        "ends_at": (now - timedelta(hours=1)).isoformat()})  # fmt: skip
    # ... one offering prizes (waiting for a platform admin's approval) and a weekly template.
    prized = await ok("POST", "/contests", owner, json={**war, "prizes": [10], "starts_at": now.isoformat(),
                                                        "ends_at": (now + timedelta(hours=1)).isoformat()})  # fmt: skip
    template = await ok("POST", "/contest-templates", owner, json=new_template({"community": community["id"]}))
    # Live sessions: the owner (the room's host) schedules one in the community room.
    live = await ok("POST", f"/rooms/{room['id']}/live-sessions", owner, json=new_live_session({}))
    csub = uuid.uuid4()
    await api.app[CORE].pool.execute(
        "INSERT INTO contest_submissions (id, contest_id, problem_id, user_id, community_id, language, source,"
        " submitted_at, verdict, passed, total, judged_at) VALUES ($1, $2, $3, $4, $5, 'python', 'print(1)', now(),"
        " 'accepted', 1, 1, now())",
        csub, uuid.UUID(contest["id"]), uuid.UUID(contest["problems"][0]["id"]), uuid.UUID(learner.id),
        uuid.UUID(community["id"]),
    )  # fmt: skip
    # Media: a finished (empty) upload of the owner's, and a job of theirs that another runner holds.
    upload, job = uuid.uuid4(), uuid.uuid4()
    await api.app[CORE].pool.execute(
        "INSERT INTO uploads (id, owner_id, length, received, completed_at) VALUES ($1, $2, 0, 0, now())",
        upload, uuid.UUID(owner.id),
    )  # fmt: skip
    await api.app[CORE].pool.execute(
        "INSERT INTO jobs (id, kind, owner_id, state, claimed_by, lease_until) VALUES ($1, 'lecture_video', $2,"
        " 'running', $3, now() + interval '1 hour')",
        job, uuid.UUID(owner.id), uuid.uuid4(),
    )  # fmt: skip
    # A lecture draft of the course: a recording of the owner's (an upload) waiting to be published.
    recording, lecture_draft = uuid.uuid4(), uuid.uuid4()
    await api.app[CORE].pool.execute(
        "INSERT INTO uploads (id, owner_id, length, received, completed_at) VALUES ($1, $2, 0, 0, now())",
        recording, uuid.UUID(owner.id),
    )  # fmt: skip
    await api.app[CORE].pool.execute(
        "INSERT INTO lecture_drafts (id, course_id, upload_id, title, duration_s, created_by)"
        " VALUES ($1, $2, $3, 'Recorded', 60, $4)",
        lecture_draft, uuid.UUID(course["id"]), recording, uuid.UUID(owner.id),
    )  # fmt: skip
    # The learner's application to teach, pending.
    application = await ok(
        "POST", "/teacher-applications", learner, json={"qualifications": "Years of tutoring in maths and physics."}
    )
    # A session of the learner's (a sign-in), which only the learner may end.
    signed_in = await ok("POST", "/auth/login", learner, json={"email": learner.email, "password": learner.password})
    session = await api.app[CORE].pool.fetchval(
        "SELECT id FROM sessions WHERE user_id = $1::uuid ORDER BY created_at DESC LIMIT 1", learner.id
    )
    assert signed_in["access_token"] and session is not None
    # Forums: the learner's topic in the public community with the owner's reply.
    topic = await ok("POST", f"/communities/{community['id']}/topics", learner, json={"title": "Q", "body": "?"})
    reply = await ok("POST", f"/topics/{topic['id']}/posts", owner, json={"body": "A"})
    # A direct-message conversation of the learner and the owner (a room of kind dm).
    dm = await ok("POST", "/dms", learner, json={"user_ids": [owner.id]})
    return World(
        actors=actors,
        ids={
            "session": str(session),
            "application": application["id"],
            "upload": str(upload),
            "lecture_draft": str(lecture_draft),
            "job": str(job),
            "course": course["id"],
            "draft": draft["id"],
            "lecture": lecture["id"],
            "assignment": assignment["id"],
            "submission": submission["id"],
            "sfile": sfile,
            "quiz": quiz["id"],
            "attempt": attempt["id"],
            "cert": certs["items"][0]["code"],
            "community": community["id"],
            "private": private["id"],
            "room": room["id"],
            "proom": proom["id"],
            "learner": learner.id,
            "stranger": actors["stranger"].id,
            "newcomer": newcomer.id,
            "notification": notes["items"][0]["id"],
            "execution": str(execution),
            "ws": ws["id"],
            "run": str(run),
            "contest": contest["id"],
            "ended": ended["id"],
            "problem": contest["problems"][0]["id"],
            "csub": str(csub),
            "prized": prized["id"],
            "template": template["id"],
            "live": live["id"],
            "dm": dm["id"],
            "topic": topic["id"],
            "post": topic["opening"]["id"],
            "reply": reply["id"],
        },
    )


def unique_email(ids: dict[str, str]) -> dict[str, Any]:
    return {"email": f"m-{uuid.uuid4().hex[:10]}@example.com", "password": "long-password", "display_name": "M"}


def new_quiz(ids: dict[str, str]) -> dict[str, Any]:
    return {"title": "Q", "attempts_allowed": 2, "questions": [{"kind": "true_false", "prompt": "?", "answer": True}]}


def new_community(ids: dict[str, str]) -> dict[str, Any]:
    return {"name": f"N {uuid.uuid4().hex[:10]}"}


def new_contest(ids: dict[str, str]) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "title": "N", "organizer_id": ids["community"], "communities": [ids["community"]],
        "starts_at": now.isoformat(), "ends_at": (now + timedelta(hours=1)).isoformat(),
        "problems": [{"title": "P", "tests": [{"stdin": "", "expected_output": "1"}]}],
    }  # fmt: skip


def new_live_session(ids: dict[str, str]) -> dict[str, Any]:
    return {"title": "Live", "starts_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}


def new_template(ids: dict[str, str]) -> dict[str, Any]:
    return {
        "title": "T", "organizer_id": ids["community"], "communities": [ids["community"]],
        "problems": [{"title": "P", "tests": [{"stdin": "", "expected_output": "1"}]}], "prizes": [10],
    }  # fmt: skip


@dataclass
class Row:
    method: str
    path: str  # "{course}" etc. are filled from World.ids; the OpenAPI template is derived from it
    expect: dict[str, int]
    body: Callable[[dict[str, str]], Any] | dict[str, Any] | None = None


def everyone(status: int, anon: int = 401, **overrides: int) -> dict[str, int]:
    out = {c: status for c in CALLERS}
    out["anon"] = anon
    out.update(overrides)
    return out


def only(allowed: int, denied: int, *who: str, **overrides: int) -> dict[str, int]:
    out = {c: (allowed if c in who else denied) for c in CALLERS}
    out["anon"] = 401
    out.update(overrides)
    return out


STAFF = ("owner", "admin")
EXECUTION_ADMITTED = 202 if probe("bwrap", Path("/sys/fs/cgroup")).ok else 503
ROWS: list[Row] = [
    # auth (public endpoints answer the same to everyone)
    Row("POST", "/auth/register", everyone(201, anon=201), unique_email),
    Row("POST", "/auth/login", everyone(401, anon=401), {"email": "nobody@example.com", "password": "wrong-pass"}),
    Row("POST", "/auth/refresh", everyone(401, anon=401), {"refresh_token": "not-a-token"}),
    Row("POST", "/auth/logout", everyone(204, anon=204), {"refresh_token": "not-a-token"}),
    Row("POST", "/auth/ws-ticket", everyone(200)),
    Row("GET", "/me", everyone(200)),
    Row("PATCH", "/me", everyone(200), lambda _: {"display_name": f"Renamed {uuid.uuid4().hex[:8]}"}),
    # the caller's sessions and password (core_api/accounts/)
    Row("GET", "/me/sessions", everyone(200)),
    Row("DELETE", "/me/sessions", everyone(200)),
    Row("DELETE", "/me/sessions/{session}", only(204, 404, "learner")),
    Row("POST", "/me/password", everyone(400), {"current_password": "not it", "new_password": "long enough new"}),
    Row("POST", "/auth/password-reset", everyone(202, anon=202), {"email": "nobody@example.com"}),
    # the caller's data (core_api/privacy/): an export is theirs alone; deleting needs the password
    Row("POST", "/me/exports", everyone(202)),
    Row("GET", "/me/exports/{job}/download", everyone(404)),  # the owner's lecture job: not an export of anyone's
    Row("DELETE", "/me", everyone(400), {"password": "not the password"}),
    Row("PUT", "/me/avatar", everyone(400), {"not": "a picture"}),
    Row("DELETE", "/me/avatar", everyone(200)),
    Row("GET", "/users/{learner}/profile", everyone(200)),
    Row(
        "POST",
        "/courses/{course}/grade-uploads",
        everyone(404, owner=202),
        lambda ids: {"upload_id": ids["upload"], "mode": "valid_rows"},
    ),  # the owner's upload: theirs alone
    Row("GET", "/courses/{course}/grade-uploads/{job}/results", only(404, 403, *STAFF, stranger=403, learner=403)),
    # search (core_api/search/): anyone signed in, each seeing only what they may
    Row("GET", "/search", everyone(400)),  # no q: refused alike (what each finds: tests/test_search_visibility.py)
    Row("GET", "/me/notification-preferences", everyone(200)),
    Row("PUT", "/me/notification-preferences", everyone(200), {"kinds": {"new_lecture": {"email": True}}}),
    Row(
        "POST",
        "/courses/{course}/announcements",
        only(201, 403, *STAFF, stranger=403, learner=403),
        {"title": "Heads up", "body": "Read chapter 2."},
    ),
    Row("GET", "/courses/{course}/announcements", only(200, 403, "learner", *STAFF)),
    # applying to teach (core_api/teaching/): learners apply, admins decide
    Row(
        "POST",
        "/teacher-applications",
        everyone(201, learner=409, instructor=409, owner=409, admin=409),
        {"qualifications": "A decade of teaching calculus to first-year students."},
    ),
    Row("GET", "/me/teacher-applications", everyone(200)),
    Row("GET", "/teacher-applications", only(200, 403, "admin")),
    Row("POST", "/teacher-applications/{application}/withdraw", only(200, 404, "learner")),
    Row("POST", "/teacher-applications/{application}/decision", only(200, 403, "admin"), {"decision": "reject"}),
    Row(
        "POST",
        "/auth/password-reset/confirm",
        everyone(400, anon=400),
        {"token": "made-up", "new_password": "long enough new"},
    ),
    # users and audit
    Row("GET", "/users", only(200, 403, "admin")),
    Row("GET", "/users/{learner}", only(200, 403, "learner", "admin")),
    Row("PUT", "/users/{stranger}/role", only(200, 403, "admin"), {"role": "instructor"}),
    Row("GET", "/audit", only(200, 403, "admin")),
    # courses and lectures
    Row("GET", "/courses", everyone(200)),
    Row("POST", "/courses", only(201, 403, "instructor", "owner", "admin"), {"title": "New"}),
    Row("GET", "/courses/{course}", everyone(200)),
    Row("GET", "/courses/{draft}", only(200, 404, *STAFF)),
    Row("PATCH", "/courses/{course}", only(200, 403, *STAFF), {"title": "Renamed"}),
    Row("POST", "/courses/{draft}/publish", only(200, 404, *STAFF)),
    # course management (core_api/catalog/): the world's course has an enrolled learner
    Row("POST", "/courses/{course}/unpublish", only(200, 403, *STAFF)),
    Row("POST", "/courses/{course}/archive", only(200, 403, *STAFF)),
    Row("POST", "/courses/{course}/restore", only(409, 403, *STAFF)),  # not archived
    Row("DELETE", "/courses/{course}", only(409, 403, *STAFF)),  # learners enrolled: archive instead
    Row("PUT", "/courses/{course}/prerequisites", only(200, 403, *STAFF), {"course_ids": []}),
    Row("GET", "/courses/{course}/learners", only(200, 403, *STAFF)),
    Row("GET", "/courses/{course}/learners/{learner}/progress", only(200, 403, *STAFF)),
    Row("GET", "/courses/{course}/analytics", only(200, 403, *STAFF)),
    Row("GET", "/admin/analytics", only(200, 403, "admin")),
    Row("GET", "/me/continue", everyone(200)),
    Row("GET", "/courses/{course}/lectures", everyone(200)),
    Row("POST", "/courses/{course}/lectures", only(201, 403, *STAFF), VIDEO),
    Row("GET", "/lectures/{lecture}", everyone(200)),
    Row("PATCH", "/lectures/{lecture}", only(200, 403, *STAFF), {"title": "Renamed"}),
    Row("DELETE", "/lectures/{lecture}", only(204, 403, *STAFF)),
    # enrollments, progress, certificates
    Row("POST", "/courses/{course}/enroll", everyone(201, learner=200)),
    Row("DELETE", "/courses/{course}/enroll", only(204, 404, "learner")),
    Row("GET", "/me/enrollments", everyone(200)),
    Row("GET", "/courses/{course}/enrollments", only(200, 403, *STAFF)),
    Row("PUT", "/lectures/{lecture}/progress", only(200, 403, "learner"), {"position_s": 5.0, "completed": False}),
    Row("GET", "/courses/{course}/progress", only(200, 403, "learner")),
    Row("GET", "/me/certificates", everyone(200)),
    Row("GET", "/certificates/{cert}", everyone(200, anon=200)),
    # assignments and submissions
    Row(
        "POST",
        "/courses/{course}/assignments",
        only(201, 403, *STAFF),
        {"title": "B", "due_at": "2099-01-01T00:00:00Z", "max_points": 5.0},
    ),
    Row("GET", "/courses/{course}/assignments", only(200, 403, "learner", *STAFF)),
    Row("GET", "/assignments/{assignment}", only(200, 403, "learner", *STAFF)),
    Row("PATCH", "/assignments/{assignment}", only(200, 403, *STAFF), {"title": "B2"}),
    Row("POST", "/assignments/{assignment}/submissions", only(201, 403, "learner"), {"body": "answer"}),
    Row("GET", "/assignments/{assignment}/submissions", only(200, 403, "learner", *STAFF)),
    Row("GET", "/submissions/{submission}", only(200, 403, "learner", *STAFF)),
    Row("PUT", "/submissions/{submission}/grade", only(200, 403, *STAFF), {"grade": 7.0}),
    # files attached to submissions (raw bytes, outside the OpenAPI table: here the body is a small JSON file)
    Row(
        "POST",
        "/submissions/{submission}/files?name=notes.json",
        only(201, 404, "learner", owner=403, admin=403),
        {"notes": "mine"},
    ),
    Row("GET", "/submission-files/{sfile}", only(200, 404, "learner", *STAFF)),
    Row("DELETE", "/submission-files/{sfile}", only(204, 404, "learner", owner=403, admin=403)),
    # quizzes and the gradebook (the learner has an attempt in progress: starting again answers it)
    Row("POST", "/courses/{course}/quizzes", only(201, 403, *STAFF), new_quiz),
    Row("GET", "/courses/{course}/quizzes", only(200, 403, "learner", *STAFF)),
    Row("GET", "/quizzes/{quiz}", only(200, 403, "learner", *STAFF)),
    Row("PATCH", "/quizzes/{quiz}", only(200, 403, *STAFF), {"title": "Q2"}),
    Row("GET", "/quizzes/{quiz}/questions", only(200, 403, *STAFF)),
    Row("POST", "/quizzes/{quiz}/attempts", only(200, 403, "learner")),
    Row("GET", "/quizzes/{quiz}/attempts", only(200, 403, "learner", *STAFF)),
    Row("GET", "/quizzes/{quiz}/stats", only(200, 403, *STAFF)),
    Row("GET", "/attempts/{attempt}", only(200, 403, "learner", *STAFF)),
    Row("PUT", "/attempts/{attempt}/answers", only(200, 403, "learner"), {"answers": {}}),
    Row("POST", "/attempts/{attempt}/submit", only(200, 403, "learner"), {}),
    Row("GET", "/courses/{course}/gradebook", only(200, 403, *STAFF)),
    Row("GET", "/courses/{course}/gradebook.csv", only(200, 403, *STAFF)),
    # communities
    Row("GET", "/communities", everyone(200)),
    Row("POST", "/communities", everyone(201), new_community),
    Row("GET", "/communities/{community}", everyone(200)),
    Row("GET", "/communities/{private}", only(200, 404, "learner", *STAFF)),
    Row("PATCH", "/communities/{community}", only(200, 403, *STAFF), {"description": "changed"}),
    Row("POST", "/communities/{community}/join", everyone(200)),
    Row("POST", "/communities/{private}/join", everyone(403, learner=200, owner=200, admin=200)),
    Row("POST", "/communities/{community}/leave", everyone(204, owner=409)),
    Row("GET", "/communities/{community}/members", everyone(200)),
    Row("GET", "/communities/{private}/members", only(200, 404, "learner", *STAFF)),
    Row("POST", "/communities/{community}/members", only(201, 403, *STAFF), lambda ids: {"user_id": ids["newcomer"]}),
    Row("PUT", "/communities/{community}/members/{learner}", only(200, 403, *STAFF), {"role": "admin"}),
    Row("DELETE", "/communities/{community}/members/{learner}", only(204, 403, *STAFF)),
    Row("GET", "/communities/{community}/analytics", only(200, 403, *STAFF)),
    # rooms (room: in the public community, learner invited; proom: private, learner invited)
    Row("GET", "/rooms", everyone(200)),
    Row("POST", "/rooms", everyone(201), {"name": "Mine", "kind": "study", "visibility": "public"}),
    Row("GET", "/rooms/{room}", only(200, 404, "learner", *STAFF)),
    Row("GET", "/rooms/{proom}", only(200, 404, "learner", *STAFF)),
    Row("GET", "/rooms/{room}/members", only(200, 404, "learner", *STAFF)),
    Row(
        "POST",
        "/rooms/{room}/invite",
        only(201, 404, *STAFF, learner=403),
        lambda ids: {"user_id": ids["newcomer"]},
    ),
    Row("PUT", "/rooms/{room}/members/{learner}", only(200, 404, *STAFF, learner=403), {"role": "moderator"}),
    Row("POST", "/rooms/{room}/archive", only(200, 404, *STAFF, learner=403)),
    # live sessions (live/): room hosts schedule and cancel, whoever sees the room reads
    Row("POST", "/rooms/{room}/live-sessions", only(201, 404, *STAFF, learner=403), new_live_session),
    Row("GET", "/rooms/{room}/live-sessions", only(200, 404, "learner", *STAFF)),
    Row("GET", "/live-sessions/{live}", only(200, 404, "learner", *STAFF)),
    Row("GET", "/live-sessions/{live}/attendance", only(200, 404, *STAFF, learner=403)),
    Row("POST", "/live-sessions/{live}/cancel", only(200, 404, *STAFF, learner=403)),
    # workspaces (ws: in the community room, the learner a member of the room with an explicit grant)
    Row("GET", "/workspaces/templates", everyone(200)),
    Row("POST", "/workspaces", everyone(201), {"name": "Mine", "language": "python"}),
    Row("GET", "/workspaces", everyone(200)),
    Row("GET", "/workspaces/{ws}", only(200, 404, "learner", *STAFF)),
    Row("GET", "/workspaces/{ws}/members", only(200, 404, "learner", *STAFF)),
    Row(
        "PUT",
        "/workspaces/{ws}/members/{newcomer}",
        only(200, 404, *STAFF, learner=403),
        {"access": "read"},
    ),
    Row("DELETE", "/workspaces/{ws}/members/{learner}", only(204, 404, *STAFF, learner=403)),
    Row("GET", "/workspaces/{ws}/files", only(200, 404, "learner", *STAFF)),
    Row("GET", "/workspaces/{ws}/archive", only(200, 404, "learner", *STAFF)),
    Row("POST", "/workspaces/{ws}/runs", only(EXECUTION_ADMITTED, 404, "learner", *STAFF), {}),
    Row("GET", "/workspaces/{ws}/runs", only(200, 404, "learner", *STAFF)),
    Row("GET", "/workspaces/{ws}/runs/{run}", only(200, 404, "learner", *STAFF)),
    # notifications
    Row("GET", "/me/notifications", everyone(200)),
    Row("GET", "/me/notifications/unread-count", everyone(200)),
    Row("POST", "/me/notifications/read-all", everyone(200)),
    Row("POST", "/notifications/{notification}/read", only(200, 404, "learner")),
    # executions (503 everywhere on a machine that cannot sandbox: nothing runs unsandboxed)
    Row("POST", "/executions", everyone(EXECUTION_ADMITTED), {"language": "python", "source": "print(1)"}),
    Row("GET", "/executions/{execution}", only(200, 404, "learner", "admin")),
    Row("GET", "/languages", everyone(200, anon=200)),
    # group wars (an unknown language: members get 400 once past the membership check, nothing is judged)
    Row("POST", "/contests", only(201, 403, *STAFF), lambda ids: new_contest(ids)),
    Row("GET", "/contests", everyone(200)),
    Row("GET", "/contests/{contest}", everyone(200)),
    Row(
        "POST",
        "/contests/{contest}/problems/{problem}/submissions",
        only(400, 403, "learner", "owner"),
        {"language": "no-such-language", "source": "x"},
    ),
    Row("GET", "/contests/{contest}/submissions", everyone(200)),
    Row("GET", "/contests/{contest}/standings", everyone(200)),
    Row("GET", "/contests/{contest}/board", everyone(200)),
    Row("GET", "/contests/{contest}/board/me", everyone(200)),
    Row("POST", "/contests/{ended}/finalise", only(200, 403, *STAFF)),
    Row("GET", "/leaderboards/communities", everyone(200)),
    Row("POST", "/contests/{contest}/problems/{problem}/rejudge", only(EXECUTION_ADMITTED, 403, *STAFF)),
    Row("PATCH", "/contests/{contest}/problems/{problem}", only(200, 403, *STAFF), {"title": "Fixed"}),
    Row("POST", "/contests/{contest}/submissions/{csub}/disqualify", only(200, 403, *STAFF), {"reason": "copied"}),
    Row("POST", "/contest-templates", only(201, 403, *STAFF), lambda ids: new_template(ids)),
    Row("GET", "/contest-templates", everyone(200)),
    # prizes: approval and budgets are the platform admins'; the organizer's admins read the budgets
    Row("POST", "/contests/{prized}/approval", only(200, 403, "admin"), {"approve": True}),
    Row("POST", "/contest-templates/{template}/approval", only(200, 403, "admin"), {"approve": False}),
    Row("GET", "/communities/{community}/prize-budget", only(200, 403, *STAFF)),
    Row("PUT", "/communities/{community}/prize-budget", only(200, 403, "admin"), {"coins": 500}),
    Row("GET", "/contests/{prized}/prize-budget", only(200, 403, *STAFF)),
    Row("PUT", "/contests/{prized}/prize-budget", only(200, 403, "admin"), {"coins": 50, "note": "one-off"}),
    Row("GET", "/contest-templates/{template}/prize-budget", only(200, 403, *STAFF)),
    Row("PUT", "/contest-templates/{template}/prize-budget", only(200, 403, "admin"), {"coins": 50}),
    # community consent: the community's owner and admins answer its invitations
    Row("GET", "/communities/{community}/contest-invitations", only(200, 403, *STAFF)),
    Row("POST", "/contests/{contest}/communities/{community}/answer", only(200, 403, *STAFF), {"accept": True}),
    Row(
        "POST",
        "/contest-templates/{template}/communities/{community}/answer",
        only(200, 403, *STAFF),
        {"accept": False},
    ),
    # direct messages (dm: the learner's conversation with the owner; admins do not see it) and blocks
    Row("POST", "/dms", everyone(200), lambda ids: {"user_ids": [ids["newcomer"]]}),
    Row("GET", "/dms", everyone(200)),
    Row("GET", "/dms/unread", everyone(200)),
    Row("GET", "/dms/{dm}", only(200, 404, "learner", "owner")),
    Row("GET", "/me/blocks", everyone(200)),
    Row("PUT", "/me/blocks/{stranger}", everyone(200, stranger=400)),
    Row("DELETE", "/me/blocks/{stranger}", everyone(404)),
    # forums (topic: the learner's, in the public community; post: its opening post; reply: the owner's)
    Row("GET", "/communities/{community}/topics", everyone(200)),
    Row("GET", "/communities/{private}/topics", only(200, 404, "learner", *STAFF)),
    Row("POST", "/communities/{community}/topics", only(201, 403, "learner", *STAFF), {"title": "T", "body": "B"}),
    Row("GET", "/courses/{course}/topics", only(200, 403, "learner", *STAFF)),
    Row("POST", "/courses/{course}/topics", only(201, 403, "learner", *STAFF), {"title": "T", "body": "B"}),
    Row("GET", "/topics/{topic}", everyone(200)),
    Row("GET", "/topics/{topic}/posts", everyone(200)),
    Row("POST", "/topics/{topic}/posts", only(201, 403, "learner", *STAFF), {"body": "R"}),
    Row("PATCH", "/posts/{post}", only(200, 403, "learner"), {"body": "edited"}),
    Row("DELETE", "/posts/{post}", only(200, 403, "learner", *STAFF)),
    Row("PUT", "/posts/{post}/vote", only(200, 403, *STAFF), {"value": 1}),
    Row("PUT", "/topics/{topic}/accepted", only(200, 403, "learner", *STAFF), lambda ids: {"post_id": ids["reply"]}),
    Row("PUT", "/topics/{topic}/pinned", only(200, 403, *STAFF), {"on": True}),
    Row("PUT", "/topics/{topic}/locked", only(200, 403, *STAFF), {"on": True}),
    # coins
    Row("GET", "/me/wallet", everyone(200)),
    Row("PUT", "/courses/{course}/price", only(200, 403, *STAFF), {"coins": 5}),
    Row("POST", "/courses/{course}/buy", everyone(409)),  # a free course is enrolled in, not bought
    # media: jobs are their owner's (and admins'); a lecture's video comes from its owner's own upload
    Row("GET", "/jobs/{job}", only(200, 404, *STAFF)),
    Row("DELETE", "/jobs/{job}", only(200, 404, *STAFF)),
    Row(
        "POST",
        "/lectures/{lecture}/media",
        only(202, 404, "owner", stranger=403, learner=403),  # an upload is only its owner's: admin's is 404
        lambda ids: {"upload_id": ids["upload"]},
    ),
    # lecture drafts (media/drafts.py): a course's recordings, its staff's alone
    Row("GET", "/courses/{course}/lecture-drafts", only(200, 403, *STAFF)),
    Row("POST", "/lecture-drafts/{lecture_draft}/publish", only(202, 404, *STAFF, stranger=403, learner=403), {}),
    Row("DELETE", "/lecture-drafts/{lecture_draft}", only(204, 404, *STAFF, stranger=403, learner=403)),
]

_TEMPLATE_NAMES = {
    "job": "job_id",
    "course": "course_id",
    "draft": "course_id",
    "lecture_draft": "lecture_draft_id",
    "lecture": "lecture_id",
    "assignment": "assignment_id",
    "submission": "submission_id",
    "quiz": "quiz_id",
    "attempt": "attempt_id",
    "cert": "code",
    "community": "community_id",
    "private": "community_id",
    "room": "room_id",
    "proom": "room_id",
    "learner": "user_id",
    "stranger": "user_id",
    "notification": "notification_id",
    "execution": "execution_id",
    "ws": "workspace_id",
    "run": "run_id",
    "newcomer": "user_id",
    "contest": "contest_id",
    "ended": "contest_id",
    "problem": "problem_id",
    "csub": "submission_id",
    "prized": "contest_id",
    "template": "template_id",
    "live": "session_id",
    "dm": "room_id",
    "topic": "topic_id",
    "post": "post_id",
    "session": "session_id",
    "application": "application_id",
}


def template_of(path: str) -> str:
    for key, name in _TEMPLATE_NAMES.items():
        path = path.replace("{" + key + "}", "{" + name + "}")
    return "/api/v1" + path


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.method} {r.path}" for r in ROWS])
async def test_each_caller_gets_the_documented_answer(api: ApiClient, row: Row) -> None:
    mismatches = []
    world: World | None = None
    for caller in CALLERS:
        if world is None:
            world = await build_world(api)
        path = row.path.format(**world.ids)
        body = row.body(world.ids) if callable(row.body) else row.body
        actor = None if caller == "anon" else world.actors[caller]
        status, answer = await api.call(row.method, path, actor, **({"json": body} if body is not None else {}))
        if status < 300 and row.method not in ("GET", "HEAD"):
            world = None  # it changed something: the next caller gets a world of its own
        if status != row.expect[caller]:
            mismatches.append(f"{caller}: expected {row.expect[caller]}, got {status} {answer}")
        if status >= 400:
            assert answer["error"]["code"], answer
    assert not mismatches, "\n".join(mismatches)


async def test_matrix_covers_every_documented_operation(api: ApiClient) -> None:
    resp = await api.http.get("/api/v1/openapi.json")
    spec = await resp.json()
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    covered = {(r.method, template_of(r.path)) for r in ROWS}
    assert documented - covered == set(), "operations missing from the role matrix"
