"""Announcements, what is new, and deadline reminders (core_api/announcements/), against real Postgres.

Reminders run on two nodes at once (two apps on one database) and must reach each learner exactly once, and
never one who turned them off or already handed the work in.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

from core_api.announcements.reminders import Reminders
from core_api.context import CORE
from core_api.mail import MAILER
from realtime.app import create_app
from tests.conftest import Actor, ApiClient, make_settings

VIDEO = {"title": "L", "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 60.0}


async def ok(api: ApiClient, method: str, path: str, actor: Actor, **kw: Any) -> Any:
    status, body = await api.call(method, path, actor, **kw)
    assert status < 300, (method, path, status, body)
    return body


async def course_with(api: ApiClient, *learners: Actor) -> tuple[Actor, dict[str, Any]]:
    teacher = await api.user("instructor")
    course = await ok(api, "POST", "/courses", teacher, json={"title": "Announced 101"})
    await ok(api, "POST", f"/courses/{course['id']}/lectures", teacher, json=VIDEO)
    await ok(api, "POST", f"/courses/{course['id']}/publish", teacher)
    for learner in learners:
        await ok(api, "POST", f"/courses/{course['id']}/enroll", learner)
    return teacher, course


async def kinds(api: ApiClient, who: Actor) -> list[tuple[str, dict[str, Any]]]:
    page = await ok(api, "GET", "/me/notifications?limit=100", who)
    return [(n["kind"], n["payload"]) for n in page["items"]]


async def mails_to(api: ApiClient, who: Actor, settle_s: float = 0.3, *more: ApiClient) -> list[Any]:
    """What ``who`` was mailed through these nodes (each writes to its own mail directory in development)."""
    await asyncio.sleep(settle_s)  # mail is written in the background after the commit
    found = []
    for path in [p for node in (api, *more) for p in node.app[MAILER].outbox()]:
        msg = message_from_bytes(path.read_bytes())
        if msg["To"] == who.email:
            found.append(msg)
    return found


async def test_an_announcement_reaches_learners_as_each_wants(api: ApiClient) -> None:
    keen, quiet, no_mail, stranger = [await api.user() for _ in range(4)]
    teacher, course = await course_with(api, keen, quiet, no_mail)
    await ok(api, "PUT", "/me/notification-preferences", quiet, json={"kinds": {"announcement": {"in_app": False}}})
    await ok(api, "PUT", "/me/notification-preferences", no_mail, json={"kinds": {"announcement": {"email": False}}})

    status, posted = await api.call(
        "POST", f"/courses/{course['id']}/announcements", teacher,
        json={"title": "Exam moved", "body": "The exam is now on Friday."},
    )  # fmt: skip
    assert status == 201 and posted["author_name"]
    assert ("announcement", posted["title"]) in [(k, p.get("title")) for k, p in await kinds(api, keen)]
    assert "announcement" not in [k for k, _ in await kinds(api, quiet)]
    assert "announcement" in [k for k, _ in await kinds(api, no_mail)]
    (mail,) = await mails_to(api, keen)
    assert "Exam moved" in mail["Subject"]
    assert await mails_to(api, no_mail, 0) == []
    # Learners read them; a stranger may not, nor post; the owner is limited per hour.
    assert (await ok(api, "GET", f"/courses/{course['id']}/announcements", keen))["items"][0]["title"] == "Exam moved"
    assert (await api.call("GET", f"/courses/{course['id']}/announcements", stranger))[0] == 403
    assert (await api.call("POST", f"/courses/{course['id']}/announcements", keen, json={"title": "x", "body": "y"}))[
        0
    ] == 403
    assert (
        await api.call("POST", f"/courses/{course['id']}/announcements", teacher, json={"title": " ", "body": "y"})
    )[0] == 400


async def test_announcements_are_limited_per_course(aiohttp_client: Any, database_url: str, tmp_path: Path) -> None:
    api = ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, announcements_per_hour=2))))
    teacher, course = await course_with(api)
    codes = [
        (await api.call("POST", f"/courses/{course['id']}/announcements", teacher, json={"title": "t", "body": "b"}))[0]
        for _ in range(3)
    ]
    assert codes == [201, 201, 429]


async def test_preferences_default_and_change_only_what_is_named(api: ApiClient) -> None:
    user = await api.user()
    prefs = {p["kind"]: p for p in (await ok(api, "GET", "/me/notification-preferences", user))["items"]}
    assert prefs["announcement"]["email"] is True and prefs["new_lecture"]["email"] is False
    changed = await ok(
        api, "PUT", "/me/notification-preferences", user, json={"kinds": {"new_lecture": {"in_app": False}}}
    )
    after = {p["kind"]: p for p in changed["items"]}
    assert after["new_lecture"] == {**prefs["new_lecture"], "in_app": False}
    assert after["announcement"] == prefs["announcement"]
    assert (await api.call("PUT", "/me/notification-preferences", user, json={"kinds": {"gossip": {}}}))[0] == 400
    assert (await api.call("PUT", "/me/notification-preferences", user, json={"kinds": {}}))[0] == 400


async def test_new_lectures_assignments_and_quizzes_are_announced(api: ApiClient) -> None:
    learner, deaf = await api.user(), await api.user()
    teacher, course = await course_with(api, learner, deaf)
    await ok(api, "PUT", "/me/notification-preferences", deaf,
             json={"kinds": {k: {"in_app": False} for k in ("new_lecture", "new_assignment", "new_quiz")}})  # fmt: skip
    await ok(api, "POST", f"/courses/{course['id']}/lectures", teacher, json={**VIDEO, "title": "Lecture two"})
    due = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    await ok(api, "POST", f"/courses/{course['id']}/assignments", teacher,
             json={"title": "Essay", "description": "", "due_at": due, "max_points": 10.0})  # fmt: skip
    quiz = {"title": "Check", "questions": [{"kind": "true_false", "prompt": "Yes?", "answer": True, "points": 1}]}
    await ok(api, "POST", f"/courses/{course['id']}/quizzes", teacher, json=quiz)
    got = {k: p for k, p in await kinds(api, learner)}
    assert got["new_lecture"]["title"] == "Lecture two"
    assert got["new_assignment"]["title"] == "Essay"
    assert got["new_quiz"]["title"] == "Check"
    assert not {"new_lecture", "new_assignment", "new_quiz"} & {k for k, _ in await kinds(api, deaf)}


async def test_deadline_reminders_go_out_exactly_once_across_two_nodes(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    node_a = ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path / "a"))))
    node_b = ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path / "b"))))
    api = node_a
    keen, off, done = [await api.user() for _ in range(3)]
    teacher, course = await course_with(api, keen, off, done)
    await ok(api, "PUT", "/me/notification-preferences", off, json={"kinds": {"deadline_reminder": {"in_app": False}}})
    now = datetime.now(UTC)
    soon = await ok(api, "POST", f"/courses/{course['id']}/assignments", teacher,
                    json={"title": "Soon", "description": "", "max_points": 5.0,
                          "due_at": (now + timedelta(minutes=30)).isoformat()})  # fmt: skip
    await ok(api, "POST", f"/courses/{course['id']}/assignments", teacher,
                     json={"title": "Later", "description": "", "max_points": 5.0,
                           "due_at": (now + timedelta(hours=20)).isoformat()})  # fmt: skip
    await ok(api, "POST", f"/assignments/{soon['id']}/submissions", done, json={"body": "handed in"})

    def at(moment: datetime) -> tuple[Reminders, Reminders]:
        return (Reminders(node_a.app[CORE], clock=lambda: moment), Reminders(node_b.app[CORE], clock=lambda: moment))

    # Both nodes run the pass at once, three times over: each reminder goes out once.
    for _ in range(3):
        await asyncio.gather(*(r.tick() for r in at(now)))

    def reminders(items: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, int]]:
        return sorted((p["title"], p["lead_s"]) for k, p in items if k == "deadline_reminder")

    # "Soon" is 30 min away: only the 1 h reminder (not 24 h too); "Later" (20 h): the 24 h one.
    assert reminders(await kinds(api, keen)) == [("Later", 86400), ("Soon", 3600)]
    assert reminders(await kinds(api, off)) == []
    assert reminders(await kinds(api, done)) == [("Later", 86400)]  # handed "Soon" in already
    assert sorted(m["Subject"] for m in await mails_to(api, keen, 0.3, node_b)) == [
        "Assignment is due in 1 hour: Soon", "Assignment is due in 24 hours: Later",
    ]  # fmt: skip

    # 19.5 hours on, "Later" is half an hour away: its 1 h reminder, once.
    for _ in range(2):
        await asyncio.gather(*(r.tick() for r in at(now + timedelta(hours=19, minutes=30))))
    assert reminders(await kinds(api, keen)) == [("Later", 3600), ("Later", 86400), ("Soon", 3600)]


async def test_members_are_told_once_that_their_contest_starts(api: ApiClient) -> None:
    owner, member, outsider = await api.user(), await api.user(), await api.user()
    community = await ok(api, "POST", "/communities", owner, json={"name": f"Starters {uuid.uuid4().hex[:6]}"})
    await ok(api, "POST", f"/communities/{community['id']}/members", owner, json={"user_id": member.id})
    pool = api.app[CORE].pool
    now = datetime.now(UTC)
    contest_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO contests (id, title, created_by, starts_at, ends_at) VALUES ($1, 'Friday war', $2::uuid, $3, $4)",
        contest_id, owner.id, now + timedelta(minutes=40), now + timedelta(hours=3),
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO contest_communities (contest_id, community_id, state) VALUES ($1, $2::uuid, 'accepted')",
        contest_id, community["id"],
    )  # fmt: skip
    for _ in range(2):
        await Reminders(api.app[CORE], clock=lambda: now).tick()
    told = [p for k, p in await kinds(api, member) if k == "contest_starting"]
    assert [p["title"] for p in told] == ["Friday war"]
    assert "contest_starting" not in [k for k, _ in await kinds(api, outsider)]
