"""Live sessions' schedule over REST against real Postgres: who may schedule, list, read and cancel, the
notifications the audience gets, the reminder sent exactly once across nodes, and the abuse limits."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core_api.context import CORE
from core_api.settings import ConfigError, Settings, load_settings
from live.handlers import SCHEDULE
from live.schedule import Schedule
from realtime.app import create_app
from tests.chat_helpers import make_room, set_room_role
from tests.conftest import Actor, ApiClient, make_settings


def soon(minutes: float = 60) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


async def notes(api: ApiClient, actor: Actor, kind: str) -> list[dict[str, Any]]:
    status, body = await api.call("GET", "/me/notifications?limit=200", actor)
    assert status == 200, body
    return [n for n in body["items"] if n["kind"] == kind]


async def course_with_learner(api: ApiClient, owner: Actor, learner: Actor) -> str:
    status, course = await api.call("POST", "/courses", owner, json={"title": "Live course"})
    assert status == 201, course
    video = {"title": "L", "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 60.0}
    await api.call("POST", f"/courses/{course['id']}/lectures", owner, json=video)
    status, _ = await api.call("POST", f"/courses/{course['id']}/publish", owner)
    assert status == 200
    status, body = await api.call("POST", f"/courses/{course['id']}/enroll", learner)
    assert status in (200, 201), body
    return str(course["id"])


async def test_a_room_host_schedules_and_members_and_learners_are_told(api: ApiClient) -> None:
    host, member, learner, outsider = (await api.user("instructor"), await api.user(), await api.user(),
                                       await api.user())  # fmt: skip
    room = await make_room(api, host, member)
    course = await course_with_learner(api, host, learner)
    status, session = await api.call(
        "POST", f"/rooms/{room}/live-sessions", host,
        json={"title": "Office hour", "starts_at": soon(), "duration_minutes": 45, "course_id": course},
    )  # fmt: skip
    assert status == 201, session
    assert session["status"] == "scheduled" and session["host"]["id"] == host.id
    assert session["course_id"] == course and session["duration_minutes"] == 45
    for who in (member, learner):
        (note,) = await notes(api, who, "live_session_scheduled")
        assert note["payload"]["session_id"] == session["id"] and note["payload"]["title"] == "Office hour"
    assert await notes(api, host, "live_session_scheduled") == []  # not told of what they did
    assert await notes(api, outsider, "live_session_scheduled") == []

    status, page = await api.call("GET", f"/rooms/{room}/live-sessions", member)
    assert status == 200 and [s["id"] for s in page["items"]] == [session["id"]]
    status, one = await api.call("GET", f"/live-sessions/{session['id']}", member)
    assert status == 200 and one == session
    # A private room's sessions do not exist for those who cannot see the room.
    assert (await api.call("GET", f"/live-sessions/{session['id']}", outsider))[0] == 404
    assert (await api.call("GET", f"/rooms/{room}/live-sessions", outsider))[0] == 404


async def test_plain_members_and_strangers_may_not_schedule_or_cancel(api: ApiClient) -> None:
    host, member, stranger, admin = await api.user(), await api.user(), await api.user(), await api.user("admin")
    room = await make_room(api, host, member)
    body = {"title": "T", "starts_at": soon()}
    status, answer = await api.call("POST", f"/rooms/{room}/live-sessions", member, json=body)
    assert status == 403 and answer["error"]["code"] == "forbidden"
    assert (await api.call("POST", f"/rooms/{room}/live-sessions", stranger, json=body))[0] == 404
    # A moderator may (the default STUDYHALL_LIVE_SCHEDULE_ROOM_ROLE), and may name the host as host.
    await set_room_role(api, room, member, "moderator")
    status, session = await api.call("POST", f"/rooms/{room}/live-sessions", member, json={**body, "host_id": host.id})
    assert status == 201 and session["host"]["id"] == host.id
    # ...but not a plain member as the host.
    plain = await api.user()
    await set_room_role(api, room, plain, "member")
    status, answer = await api.call("POST", f"/rooms/{room}/live-sessions", host, json={**body, "host_id": plain.id})
    assert status == 400, answer
    assert (await api.call("POST", f"/live-sessions/{session['id']}/cancel", plain))[0] == 403
    assert (await api.call("POST", f"/live-sessions/{session['id']}/cancel", stranger))[0] == 404
    status, cancelled = await api.call("POST", f"/live-sessions/{session['id']}/cancel", admin)
    assert status == 200 and cancelled["status"] == "cancelled"
    assert (await api.call("POST", f"/live-sessions/{session['id']}/cancel", host))[0] == 409
    (note,) = await notes(api, plain, "live_session_cancelled")
    assert note["payload"]["session_id"] == session["id"]
    status, page = await api.call("GET", f"/rooms/{room}/live-sessions", host)
    assert page["items"] == []
    status, page = await api.call("GET", f"/rooms/{room}/live-sessions?include=all", host)
    assert [s["status"] for s in page["items"]] == ["cancelled"]


async def test_garbage_and_out_of_range_schedules_are_refused(api: ApiClient) -> None:
    host = await api.user()
    room = await make_room(api, host)
    path = f"/rooms/{room}/live-sessions"
    cases = [
        {"title": "", "starts_at": soon()},
        {"title": "T", "starts_at": "tomorrow"},
        {"title": "T", "starts_at": "2030-01-01T10:00:00"},  # no timezone
        {"title": "T", "starts_at": soon(-60)},  # in the past
        {"title": "T", "starts_at": soon(60 * 24 * 400)},  # beyond STUDYHALL_LIVE_MAX_AHEAD_DAYS
        {"title": "T", "starts_at": soon(), "duration_minutes": 481},  # beyond the longest
        {"title": "T", "starts_at": soon(), "duration_minutes": "60"},
        {"title": "T", "starts_at": soon(), "extra": 1},
        {"title": "x" * 201, "starts_at": soon()},
    ]
    for body in cases:
        status, answer = await api.call("POST", path, host, json=body)
        assert status == 400 and answer["error"]["code"] == "invalid_input", (body, answer)
    status, answer = await api.call("POST", path, host, json={"title": "T", "starts_at": soon(),
                                                              "course_id": str(uuid.uuid4())})  # fmt: skip
    assert status == 404, answer
    other = await api.user("instructor")
    status, course = await api.call("POST", "/courses", other, json={"title": "Not yours"})
    body = {"title": "T", "starts_at": soon(), "course_id": course["id"]}
    status, answer = await api.call("POST", path, host, json=body)
    assert status == 403, answer
    await api.call("POST", f"/rooms/{room}/archive", host)
    status, answer = await api.call("POST", path, host, json={"title": "T", "starts_at": soon()})
    assert status == 409, answer


async def test_scheduling_is_rate_limited_per_user_and_capped_per_room(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, live_schedule_rate_count=3, live_max_upcoming_per_room=2)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    host = await api.user()
    room, other_room = await make_room(api, host), await make_room(api, host)
    made = [await api.call("POST", f"/rooms/{room}/live-sessions", host, json={"title": f"S{i}", "starts_at": soon()})
            for i in range(3)]  # fmt: skip
    assert [s for s, _ in made] == [201, 201, 409]  # the room holds two upcoming sessions
    assert made[2][1]["error"]["code"] == "conflict"
    body = {"title": "S", "starts_at": soon()}
    status, _ = await api.call("POST", f"/rooms/{other_room}/live-sessions", host, json=body)
    assert status == 201  # the third one made
    resp = await api.http.post(
        f"/api/v1/rooms/{other_room}/live-sessions", json={"title": "S", "starts_at": soon()}, headers=host.headers
    )
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["error"]["code"] == "rate_limited"


async def test_the_reminder_goes_out_once_before_the_start_whichever_nodes_run_it(
    aiohttp_client: Any, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    api = ApiClient(await aiohttp_client(create_app(settings)))
    other_node = await aiohttp_client(create_app(make_settings(database_url, tmp_path / "b")))
    host, member = await api.user(), await api.user()
    room = await make_room(api, host, member)
    starts = datetime.now(UTC) + timedelta(minutes=30)
    status, session = await api.call("POST", f"/rooms/{room}/live-sessions", host,
                                     json={"title": "Soon", "starts_at": starts.isoformat()})  # fmt: skip
    assert status == 201
    lead = timedelta(seconds=settings.live_reminder_lead_s)
    # (The database is shared with other tests: their sessions may be reminded by these passes too.)
    await Schedule(api.app[CORE], lambda: starts - lead - timedelta(minutes=1)).remind_due()
    assert await notes(api, member, "live_session_starting") == []  # not yet within the lead
    # Within the lead, two nodes' passes (and a second pass) race: one reminder per person.
    at = starts - lead + timedelta(seconds=5)
    nodes = [Schedule(api.app[CORE], lambda: at), Schedule(other_node.app[CORE], lambda: at)]
    await asyncio.gather(*(n.remind_due() for n in nodes), nodes[0].remind_due())
    for who in (member, host):  # the reminder goes to the host too
        (note,) = await notes(api, who, "live_session_starting")
        assert note["payload"]["session_id"] == session["id"]
    assert isinstance(api.app[SCHEDULE], Schedule)


async def test_cancelled_and_finished_sessions_are_not_reminded(api: ApiClient) -> None:
    host, member = await api.user(), await api.user()
    room = await make_room(api, host, member)
    starts = datetime.now(UTC) + timedelta(minutes=5)
    _, session = await api.call("POST", f"/rooms/{room}/live-sessions", host,
                                json={"title": "Off", "starts_at": starts.isoformat()})  # fmt: skip
    await api.call("POST", f"/live-sessions/{session['id']}/cancel", host)
    await Schedule(api.app[CORE], lambda: starts).remind_due()
    # A session whose planned end has passed is not reminded either.
    later = starts + timedelta(hours=2)
    await api.call("POST", f"/rooms/{room}/live-sessions", host, json={"title": "Past", "starts_at": starts.isoformat(),
                                                                         "duration_minutes": 10})  # fmt: skip
    await Schedule(api.app[CORE], lambda: later).remind_due()
    assert await notes(api, member, "live_session_starting") == []


def test_a_bad_ice_server_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("nope", '[{"urls": "http://stun.example.com"}]', '[{"urls": "stun:x", "extra": 1}]'):
        monkeypatch.setenv("STUDYHALL_ICE_SERVERS", value)
        with pytest.raises(ConfigError, match="STUDYHALL_ICE_SERVERS"):
            load_settings()
    monkeypatch.setenv(
        "STUDYHALL_ICE_SERVERS", '[{"urls": "turn:turn.example.com:3478", "username": "u", "credential": "p"}]'
    )
    assert load_settings().ice_servers[0].urls == "turn:turn.example.com:3478"
