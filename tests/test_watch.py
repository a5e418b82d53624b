"""Watch parties against a real server: real Socket.IO clients, real Postgres, the in-process board."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core_api.context import CORE
from realtime.app import create_app
from realtime.sockets import SOCKETS
from tests.conftest import ApiClient, make_settings
from tests.nodes import Client
from tests.watch_helpers import VIDEO, Open, fails, ok, state_with, watch_room
from watch_party.service import WATCH


@pytest.fixture
async def api(aiohttp_client: Any, database_url: str, tmp_path: Path) -> ApiClient:
    """The usual test server, with a quick upkeep beat so leader and ready changes show up fast."""
    return ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, watch_upkeep_s=0.1))))


async def test_a_viewer_joining_a_watch_room_gets_the_state_at_once(api: ApiClient, viewers: Open) -> None:
    host, late = await api.user(), await api.user()
    room = await watch_room(api, host, late)
    h = await viewers(host, room)
    first = await h.inbox.wait_for("watch:state", state_with(room))
    assert first["media"] is None and first["version"] == 0 and first["leader"]["id"] == host.id
    await ok(h, "watch:load", {"room_id": room, "media": VIDEO})
    played = (await ok(h, "watch:play", {"room_id": room}))["state"]

    v = await viewers(late, room)
    got = await v.inbox.wait_for("watch:state", state_with(room))
    assert {k: got[k] for k in ("version", "playing", "position", "server_time", "rate")} == {
        k: played[k] for k in ("version", "playing", "position", "server_time", "rate")
    }
    assert got["media"]["url"] == VIDEO["url"] and got["media"]["duration"] == 600.0
    readiness = await v.inbox.wait_for("watch:readiness")
    assert readiness["room_id"] == room and readiness["ready"] == []
    synced = await ok(v, "watch:sync", {"room_id": room})
    assert synced["state"]["version"] == played["version"]
    assert set(synced["tuning"]) >= {"heartbeat_s", "seek_threshold_s", "nudge_threshold_s", "max_nudge"}
    assert abs(synced["server_time"] - played["server_time"]) < 60


async def test_commands_reach_every_viewer_in_order_and_stale_ones_are_refused(api: ApiClient, viewers: Open) -> None:
    host, ann = await api.user(), await api.user()
    room = await watch_room(api, host, ann)
    h, a = await viewers(host, room), await viewers(ann, room)
    loaded = (await ok(h, "watch:load", {"room_id": room, "media": VIDEO, "version": 0}))["state"]
    seeked = (await ok(h, "watch:seek", {"room_id": room, "position": 42.5, "version": loaded["version"]}))["state"]
    assert seeked["position"] == 42.5 and seeked["version"] == loaded["version"] + 1
    got = await a.inbox.wait_for("watch:state", state_with(room, version=seeked["version"]))
    assert (got["cause"], got["by"]["id"], got["position"]) == ("seek", host.id, 42.5)
    versions = [s["version"] for s in a.inbox.of("watch:state") if s["room_id"] == room]
    assert versions == sorted(versions)

    # An echo of the older state (based on the load) cannot undo the seek.
    await fails(h, "watch:pause", {"room_id": room, "position": 0.0, "version": loaded["version"]}, "conflict")
    now = (await ok(h, "watch:sync", {"room_id": room}))["state"]
    assert now["position"] == 42.5 and now["version"] == seeked["version"]


async def test_only_those_in_control_command_the_player(api: ApiClient, viewers: Open) -> None:
    host, ann, mod, stranger = await api.user(), await api.user(), await api.user(), await api.user()
    room = await watch_room(api, host, ann, mod)
    status, _ = await api.call("PUT", f"/rooms/{room}/members/{mod.id}", host, json={"role": "moderator"})
    assert status == 200
    h, a, m = await viewers(host, room), await viewers(ann, room), await viewers(mod, room)
    await ok(h, "watch:load", {"room_id": room, "media": VIDEO})
    await fails(a, "watch:play", {"room_id": room}, "forbidden")
    await fails(a, "watch:control", {"room_id": room, "mode": "everyone"}, "forbidden")
    await ok(m, "watch:play", {"room_id": room})
    await ok(m, "watch:control", {"room_id": room, "mode": "everyone"})
    await ok(a, "watch:seek", {"room_id": room, "position": 10.0})
    await fails(a, "watch:control", {"room_id": room, "mode": "host"}, "forbidden")
    s = await viewers(stranger)
    await fails(s, "watch:play", {"room_id": room}, "not_found")  # a private room the stranger cannot see
    await fails(s, "watch:heartbeat", {"room_id": room, "position": 1.0, "playing": True, "client_time": 1.0},
                "forbidden")  # fmt: skip
    await fails(a, "watch:report", {"room_id": room}, "forbidden")


async def test_the_leader_hands_over_and_control_passes_on_when_they_leave(api: ApiClient, viewers: Open) -> None:
    host, ann, bob = await api.user(), await api.user(), await api.user()
    room = await watch_room(api, host, ann, bob)
    h, a, b = await viewers(host, room), await viewers(ann, room), await viewers(bob, room)
    await ok(h, "watch:load", {"room_id": room, "media": VIDEO})
    await fails(h, "watch:handover", {"room_id": room, "user_id": str(uuid.uuid4())}, "conflict")  # not present
    handed = (await ok(h, "watch:handover", {"room_id": room, "user_id": ann.id}))["state"]
    assert handed["leader"]["id"] == ann.id
    await ok(a, "watch:play", {"room_id": room})
    await fails(b, "watch:pause", {"room_id": room}, "forbidden")

    await ok(h, "room:leave", {"room_id": room})
    await a.disconnect()  # the leader goes: bob, the only one left, takes over
    passed = await b.inbox.wait_for("watch:state", state_with(room, cause="leader"))
    assert passed["leader"]["id"] == bob.id
    await ok(b, "watch:pause", {"room_id": room})


async def test_play_waits_for_the_ready_check(api: ApiClient, viewers: Open) -> None:
    host, ann = await api.user(), await api.user()
    room = await watch_room(api, host, ann)
    h, a = await viewers(host, room), await viewers(ann, room)
    await ok(h, "watch:load", {"room_id": room, "media": VIDEO})
    await ok(h, "watch:ready_check", {"room_id": room, "mode": "all"})
    waiting = (await ok(h, "watch:play", {"room_id": room}))["state"]
    assert waiting["waiting"] is True and waiting["playing"] is False
    assert (await ok(h, "watch:ready", {"room_id": room, "ready": True}))["readiness"]["met"] is False
    marks = await h.inbox.wait_for("watch:readiness", lambda r: r["ready"] == [host.id])
    assert marks["present"] == 2
    last = await ok(a, "watch:ready", {"room_id": room, "ready": True})
    assert last["readiness"]["met"] is True
    started = await h.inbox.wait_for("watch:state", state_with(room, cause="ready"))
    assert started["playing"] is True and started["waiting"] is False


async def test_heartbeats_sync_the_clock_and_feed_the_hosts_report(api: ApiClient, viewers: Open) -> None:
    host, ann = await api.user(), await api.user()
    room = await watch_room(api, host, ann)
    h, a = await viewers(host, room), await viewers(ann, room)
    await ok(h, "watch:load", {"room_id": room, "media": VIDEO})
    state = (await ok(h, "watch:pause", {"room_id": room, "position": 30.0}))["state"]
    ack = await ok(a, "watch:heartbeat", {"room_id": room, "position": 30.0, "playing": False, "client_time": 5.0,
                                          "version": state["version"], "offset": 0.0, "rtt": 0.01})  # fmt: skip
    assert ack["client_time"] == 5.0 and ack["version"] == state["version"]
    assert ack["received_at"] <= ack["server_time"]
    await ok(h, "watch:heartbeat", {"room_id": room, "position": 31.5, "playing": False, "client_time": 5.0,
                                    "version": state["version"]})  # fmt: skip
    report = await ok(h, "watch:report", {"room_id": room})
    rows = {row["user"]["id"]: row for row in report["viewers"]}
    assert rows[ann.id]["status"] == "in_sync" and rows[ann.id]["drift_ms"] == 0.0
    assert rows[host.id]["status"] == "drifting" and rows[host.id]["drift_ms"] == 1500.0
    assert report["summary"]["out_of_step"] == 1 and report["summary"]["connections"] == 2
    assert report["viewers"][0]["user"]["id"] == host.id  # the worst first

    await a.disconnect()  # gone viewers leave the report
    report = await ok(h, "watch:report", {"room_id": room})
    assert [row["user"]["id"] for row in report["viewers"]] == [host.id]


async def test_an_item_that_runs_out_advances_to_the_next(api: ApiClient, viewers: Open) -> None:
    host = await api.user()
    room = await watch_room(api, host)
    h = await viewers(host, room)
    short = {"url": "https://example.com/a.mp4", "kind": "video", "duration": 0.5}
    await ok(h, "watch:queue", {"room_id": room, "media": short})
    second = await ok(h, "watch:queue", {"room_id": room, "media": {**short, "url": "https://example.com/b.mp4"}})
    second_id = second["state"]["playlist"][1]["id"]
    await ok(h, "watch:play", {"room_id": room})
    advanced = await h.inbox.wait_for("watch:state", state_with(room, cause="advance"))
    assert advanced["current"] == second_id and advanced["playing"] is True and advanced["position"] == 0.0
    ended = await h.inbox.wait_for("watch:state", state_with(room, cause="advance", playing=False))
    assert ended["current"] == second_id and ended["position"] == 0.5


async def test_the_state_survives_a_server_restart(
    database_url: str, tmp_path: Path, viewers: Open, api: ApiClient
) -> None:
    host = await api.user()
    room = await watch_room(api, host)
    h = await viewers(host, room)
    await ok(h, "watch:load", {"room_id": room, "media": VIDEO})
    await ok(h, "watch:queue", {"room_id": room, "media": {**VIDEO, "url": "https://example.com/next.mp4"}})
    await ok(h, "watch:seek", {"room_id": room, "position": 120.0})
    before = (await ok(h, "watch:play", {"room_id": room}))["state"]
    await h.disconnect()
    await api.http.close()  # the server stops

    again = TestClient(TestServer(create_app(make_settings(database_url, tmp_path / "again"))))
    await again.start_server()
    try:
        url = str(again.make_url("/")).rstrip("/")
        client = Client()
        await client.connect(url, auth={"token": host.token}, transports=["websocket"], wait_timeout=10)
        try:
            ack = await client.ask("room:join", {"room_id": room})
            assert ack["ok"], ack
            after = await client.inbox.wait_for("watch:state", state_with(room))
        finally:
            await client.disconnect()
    finally:
        await again.close()
    for key in ("media", "playing", "position", "server_time", "rate", "version", "playlist"):
        assert after[key] == before[key], key


async def test_watching_a_lecture_together_moves_enrolled_viewers_resume_points(api: ApiClient, viewers: Open) -> None:
    teacher, learner, guest = await api.user("instructor"), await api.user(), await api.user()
    _, course = await api.call("POST", "/courses", teacher, json={"title": "Watched together"})
    lecture_body = {
        "title": "L1",
        "media_kind": "video",
        "media_url": "https://example.com/l1.mp4",
        "duration_s": 100.0,
    }
    status, lecture = await api.call("POST", f"/courses/{course['id']}/lectures", teacher, json=lecture_body)
    assert status == 201, lecture
    assert (await api.call("POST", f"/courses/{course['id']}/publish", teacher))[0] == 200
    assert (await api.call("POST", f"/courses/{course['id']}/enroll", learner))[0] in (200, 201)
    room = await watch_room(api, teacher, learner, guest, course_id=course["id"])
    t, ln, g = await viewers(teacher, room), await viewers(learner, room), await viewers(guest, room)
    state = (await ok(t, "watch:load", {"room_id": room, "media": {"lecture_id": lecture["id"]}}))["state"]
    assert state["media"]["url"] == "https://example.com/l1.mp4" and state["media"]["lecture_id"] == lecture["id"]
    beat = {"room_id": room, "position": 42.0, "playing": True, "client_time": 1.0, "version": state["version"]}
    await ok(ln, "watch:heartbeat", beat)
    await ok(g, "watch:heartbeat", beat)  # not enrolled: nothing to record, no error

    async def resume_point() -> tuple[float, bool]:
        status, progress = await api.call("GET", f"/courses/{course['id']}/progress", learner)
        assert status == 200, progress
        row = progress["lectures"][0]
        return row["position_s"], row["completed"]

    node = api.app[SOCKETS].services[WATCH]
    await node.settle()  # the writes run in the background, off the heartbeat's path
    assert await resume_point() == (42.0, False)
    await ok(ln, "watch:heartbeat", {**beat, "position": 97.0})  # near the end: written at once
    await node.settle()
    # ...but a position is no evidence of watching: the room never played (see test_progress_evidence.py).
    assert await resume_point() == (97.0, False)
    assert (
        await api.app[CORE].pool.fetchval(
            "SELECT count(*) FROM lecture_progress WHERE user_id = $1", uuid.UUID(guest.id)
        )
        == 0
    )


async def test_bad_input_gets_error_acks(api: ApiClient, viewers: Open) -> None:
    host = await api.user()
    room = await watch_room(api, host)
    h = await viewers(host, room)
    await fails(h, "watch:play", {"room_id": room}, "conflict")  # nothing loaded
    await fails(h, "watch:load", {"room_id": room, "media": {"url": "javascript:alert(1)", "kind": "video"}},
                "invalid_input")  # fmt: skip
    await fails(h, "watch:load", {"room_id": room, "media": {"lecture_id": str(uuid.uuid4())}}, "not_found")
    await fails(h, "watch:seek", {"room_id": room, "position": -1}, "invalid_input")
    await fails(h, "watch:rate", {"room_id": room, "rate": 10}, "invalid_input")
    await fails(h, "watch:dequeue", {"room_id": room, "item_id": "nope"}, "conflict")
