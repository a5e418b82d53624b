"""Attendance of live sessions against real Postgres and real Socket.IO connections: who joined, from when to
when, who may read it, and the limits that keep a joining-and-leaving loop from growing the table."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from core_api.context import CORE
from realtime.app import create_app
from tests.chat_helpers import make_room
from tests.conftest import Actor, ApiClient, make_settings
from tests.live_helpers import live_room, live_tab
from tests.test_live_schedule import course_with_learner, soon


async def app_with(aiohttp_client: Any, database_url: str, tmp_path: Path, **settings: Any) -> ApiClient:
    return ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, **settings))))


async def attendance(api: ApiClient, session_id: str, who: Actor, query: str = "") -> tuple[int, Any]:
    return await api.call("GET", f"/live-sessions/{session_id}/attendance{query}", who)


def by_user(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["user"]["id"]: item for item in body["items"]}


async def test_attendance_records_each_join_to_its_leave_and_the_host_reads_it(api: ApiClient) -> None:
    host, alice, bob, outsider = (await api.user("instructor"), await api.user(), await api.user(),
                                  await api.user())  # fmt: skip
    _, session_id = await live_room(api, host, alice, bob)
    ref = {"session_id": session_id}
    host_tab, alice_tab, bob_tab = [await live_tab(api, who) for who in (host, alice, bob)]
    second_alice = await live_tab(api, alice)
    try:
        await host_tab.ok("live:join", ref)
        await host_tab.ok("live:start", ref)
        await alice_tab.ok("live:join", ref)
        await alice_tab.ok("live:join", ref)  # joining again on the same connection opens no second stretch
        await alice_tab.ok("live:leave", ref)
        await alice_tab.ok("live:join", ref)
        await second_alice.ok("live:join", ref)  # a second tab: an overlapping stretch
        await bob_tab.ok("live:join", ref)
        await host_tab.flush()
        while not host_tab.inbox["live:state"].empty():
            host_tab.inbox["live:state"].get_nowait()
        await bob_tab.sio.disconnect()  # a disconnect closes the stretch as a leave does
        await host_tab.next("live:state")  # told after the server handled it (the stretch closed before)

        status, body = await attendance(api, session_id, host)
        assert status == 200, body
        people = by_user(body)
        assert list(people) == [host.id, alice.id, bob.id]  # in order of first arrival
        a = people[alice.id]
        assert [s["left_at"] is None for s in a["stretches"]] == [False, True, True]
        assert a["last_left_at"] is None  # still there
        first = a["stretches"][0]
        assert first["left_at"] >= first["joined_at"] and a["first_joined_at"] == first["joined_at"]
        b = people[bob.id]
        assert len(b["stretches"]) == 1 and b["last_left_at"] == b["stretches"][0]["left_at"] is not None
        assert b["present_s"] >= 0

        # Who may read: the host (above); not a member, nor someone who cannot see the room.
        status, body = await attendance(api, session_id, alice)
        assert status == 403, body
        status, body = await attendance(api, session_id, outsider)
        assert status == 404, body

        # The host ends the session: every stretch still open ends at ended_at.
        await host_tab.ok("live:stop", ref)
        status, session = await api.call("GET", f"/live-sessions/{session_id}", host)
        assert status == 200 and session["ended_at"] is not None
        status, body = await attendance(api, session_id, host)
        people = by_user(body)
        for item in people.values():
            assert item["last_left_at"] is not None
            assert all(s["left_at"] is not None for s in item["stretches"])
        ended = datetime.fromisoformat(session["ended_at"])
        assert datetime.fromisoformat(people[alice.id]["last_left_at"]) == ended
        # Alice's two tabs overlap: present_s counts the time once, never more than first join to the end.
        span = (ended - datetime.fromisoformat(people[alice.id]["first_joined_at"])).total_seconds()
        assert 0 <= people[alice.id]["present_s"] <= span + 0.001
    finally:
        for tab in (host_tab, alice_tab, second_alice, bob_tab):
            await tab.close()


async def test_the_course_instructor_reads_attendance_from_outside_the_room(api: ApiClient) -> None:
    admin, teacher, learner = await api.user("admin"), await api.user("instructor"), await api.user()
    course = await course_with_learner(api, teacher, learner)
    room = await make_room(api, admin, learner)
    body = {"title": "Guest lecture", "starts_at": soon(), "course_id": course}
    status, session = await api.call("POST", f"/rooms/{room}/live-sessions", admin, json=body)
    assert status == 201, session
    tab = await live_tab(api, learner)
    try:
        await tab.ok("live:join", {"session_id": session["id"]})
        status, body = await attendance(api, session["id"], teacher)
        assert status == 200, body
        assert [i["user"]["id"] for i in body["items"]] == [learner.id]
        status, body = await attendance(api, session["id"], admin)
        assert status == 200 and len(body["items"]) == 1
    finally:
        await tab.close()


async def test_attendance_pages_and_refuses_garbage(api: ApiClient) -> None:
    host, *members = [await api.user("instructor")] + [await api.user() for _ in range(3)]
    _, session_id = await live_room(api, host, *members)
    tabs = [await live_tab(api, who) for who in members]
    try:
        for tab in tabs:
            await tab.ok("live:join", {"session_id": session_id})
        status, page = await attendance(api, session_id, host, "?limit=2")
        assert status == 200 and len(page["items"]) == 2 and page["next_cursor"], page
        status, rest = await attendance(api, session_id, host, f"?limit=2&cursor={page['next_cursor']}")
        assert status == 200 and rest["next_cursor"] is None, rest
        seen = [i["user"]["id"] for i in page["items"] + rest["items"]]
        assert seen == [m.id for m in members]
        for query in ("?cursor=garbage", "?limit=0", "?limit=100000"):
            status, body = await attendance(api, session_id, host, query)
            assert status == 400, (query, body)
        status, body = await attendance(api, str(uuid.uuid4()), host)
        assert status == 404, body
        status, body = await api.call("GET", "/live-sessions/not-a-uuid/attendance", host)
        assert status in (400, 404), body
        status, body = await api.call("GET", f"/live-sessions/{session_id}/attendance")
        assert status == 401, body
    finally:
        for tab in tabs:
            await tab.close()


async def test_joining_in_a_loop_is_rate_limited_and_stores_at_most_the_cap(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    api = await app_with(aiohttp_client, database_url, tmp_path, live_join_rate_count=4,
                         live_attendance_max_intervals=2)  # fmt: skip
    host, member = await api.user("instructor"), await api.user()
    _, session_id = await live_room(api, host, member)
    ref = {"session_id": session_id}
    tab = await live_tab(api, member)
    try:
        for _ in range(4):
            await tab.ok("live:join", ref)
            await tab.ok("live:leave", ref)
        message = await tab.fails("live:join", ref, "rate_limited")
        assert "too many joins" in message
        stored = await api.app[CORE].pool.fetch(
            "SELECT joined_at, left_at FROM live_attendance WHERE session_id = $1 AND user_id = $2",
            uuid.UUID(session_id), uuid.UUID(member.id),
        )  # fmt: skip
        assert len(stored) == 2 and all(r["left_at"] is not None for r in stored)
        status, body = await attendance(api, session_id, host)
        assert status == 200 and len(body["items"][0]["stretches"]) == 2
        # Another connection of the same user is limited on its own, and still recorded (the latest reopened).
        other = await live_tab(api, member)
        try:
            await other.ok("live:join", ref)
            status, body = await attendance(api, session_id, host)
            (item,) = body["items"]
            assert len(item["stretches"]) == 2 and item["last_left_at"] is None
        finally:
            await other.close()
    finally:
        await tab.close()
