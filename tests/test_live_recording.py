"""Recording a live session (``live:record``) and giving a viewer slot back (``live:unsubscribe``), with real
aiortc peers over real Socket.IO: the file is the published VP8 and Opus remuxed (byte for byte, no encoder),
ffprobe reads its length and streams, ffmpeg decodes it, its recorder downloads it and the course's owner makes
it a lecture's HLS ladder through the existing media job."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import pytest
from aiortc.mediastreams import MediaStreamError

from live.recording import vp8_size
from live.signalling import LiveNode
from tests.chat_helpers import make_room
from tests.conftest import ApiClient
from tests.live_helpers import MovingPicture, Publisher, Viewer, live_room, live_tab, record_briefly
from tests.test_live_media import app_with, node

RECORD_S = 4.0


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    info: dict[str, Any] = json.loads(out.stdout)
    return info


def decoded_frames(path: Path) -> dict[str, int]:
    """Frames ffmpeg decodes from the file, per kind (it plays)."""
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    with av.open(str(path)) as container:
        counts = {"video": 0, "audio": 0}
        for stream in container.streams:
            for _ in container.decode(stream):
                counts[stream.type] += 1
            container.seek(0)
    return counts


async def collect(live: LiveNode, session_id: str, user_id: str, sink: set[bytes]) -> asyncio.Task[None]:
    """What the SFU forwards of the host's camera, byte for byte (one more subscriber of the feed)."""
    feeds = dict(live.sessions[uuid.UUID(session_id)].publishers[uuid.UUID(user_id)].feeds)
    track = feeds["camera"].subscribe()

    async def read() -> None:
        try:
            while True:
                sink.add(bytes(await track.recv()))
        except MediaStreamError:
            pass

    task = asyncio.create_task(read())
    task.add_done_callback(lambda _: track.stop())
    return task


async def test_the_host_records_the_session_remuxed_and_it_plays(api: ApiClient) -> None:
    host, member = await api.user("instructor"), await api.user()
    _, session_id = await live_room(api, host, member)
    host_tab, member_tab = await live_tab(api, host), await live_tab(api, member)
    ref = {"session_id": session_id}
    publisher = Publisher(host_tab, session_id)
    forwarded: set[bytes] = set()
    try:
        for tab in (host_tab, member_tab):
            await tab.ok("live:join", ref)
        await host_tab.ok("live:start", ref)
        await publisher.publish()
        collector = await collect(node(api), session_id, host.id, forwarded)
        member_tab.drain("live:state")
        started = await host_tab.ok("live:record", {**ref, "on": True})
        began = time.monotonic()
        assert started["state"]["recording"] is True
        assert (await member_tab.next("live:state"))["recording"] is True
        # While it records, the recorder's streams have no codec context: nothing can encode or decode.
        recorder, upload_id = node(api).recordings.running[uuid.UUID(session_id)]
        assert str(upload_id) == started["recording"]["upload_id"]
        await asyncio.sleep(1)
        assert recorder._streams and all(s.codec_context is None for s in recorder._streams.values())
        await asyncio.sleep(RECORD_S - 1)
        stopped = await host_tab.ok("live:record", {**ref, "on": False})
        lasted = time.monotonic() - began  # RECORD_S, and a little more on a busy machine
        recording = stopped["recording"]
        assert stopped["state"]["recording"] is False
        assert recording["video_codec"] == "vp8" and recording["audio_codec"] == "opus"
        assert abs(recording["duration_s"] - RECORD_S) <= 1 and abs(recording["duration_s"] - lasted) <= 1, recording
        event = await host_tab.next("live:recorded")
        assert event["recording"] == recording and event["reason"] == "stopped"
        collector.cancel()

        path = node(api).settings.media_root / "uploads" / recording["upload_id"]
        info = probe(path)
        streams = {s["codec_type"]: s for s in info["streams"]}
        assert set(streams) == {"video", "audio"}
        assert streams["video"]["codec_name"] == "vp8" and streams["audio"]["codec_name"] == "opus"
        assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
        assert abs(float(info["format"]["duration"]) - lasted) <= 1, (info["format"], lasted)
        frames = decoded_frames(path)
        assert frames["video"] >= 60 and frames["audio"] >= 100, frames  # ~30 fps video, 50 audio frames/s
        # Not re-encoded: every video packet in the file is a frame the publisher sent, byte for byte.
        with av.open(str(path)) as container:
            packets = [bytes(p) for p in container.demux(video=0) if p.size]
        assert vp8_size(packets[0]) == (320, 240)  # starts at a keyframe
        assert packets and all(p in forwarded for p in packets)

        # Its recorder downloads it; nobody else does.
        status, body = await api.call("GET", f"/live-sessions/{session_id}/recordings/{recording['upload_id']}", host)
        assert status == 200 and body == path.read_bytes()
        assert recording["download_url"].endswith(f"/live-sessions/{session_id}/recordings/{recording['upload_id']}")
        status, _ = await api.call("GET", f"/live-sessions/{session_id}/recordings/{recording['upload_id']}", member)
        assert status == 404
        status, _ = await api.call("GET", f"/live-sessions/{session_id}/recordings/{recording['upload_id']}")
        assert status == 401
        status, _ = await api.call("GET", f"/live-sessions/{session_id}/recordings/nope", host)
        assert status == 404
    finally:
        await publisher.close()
        for tab in (host_tab, member_tab):
            await tab.close()


async def test_a_recording_becomes_a_lecture_through_the_media_job(api: ApiClient) -> None:
    host = await api.user("instructor")
    _, session_id = await live_room(api, host)
    recording = await record_briefly(api, host, session_id)
    status, course = await api.call("POST", "/courses", host, json={"title": "Recorded"})
    assert status == 201
    lecture_in = {"title": "Live", "media_kind": "video", "media_url": "https://example.com/x.mp4", "duration_s": 1.0}
    status, lecture = await api.call("POST", f"/courses/{course['id']}/lectures", host, json=lecture_in)
    assert status == 201
    status, job = await api.call("POST", f"/lectures/{lecture['id']}/media", host,
                                 json={"upload_id": recording["upload_id"]})  # fmt: skip
    assert status == 202, job
    async with asyncio.timeout(120):
        while job["state"] in ("queued", "running"):
            await asyncio.sleep(0.5)
            _, job = await api.call("GET", f"/jobs/{job['id']}", host)
    assert job["state"] == "succeeded", job
    assert abs(job["result"]["duration_s"] - recording["duration_s"]) <= 1
    status, played = await api.call("GET", f"/lectures/{lecture['id']}", host)
    assert status == 200 and played["media_kind"] == "hls" and "master.m3u8" in played["media_url"]


async def test_a_course_sessions_recording_is_a_lecture_draft_until_its_staff_publish_it(api: ApiClient) -> None:
    """The recording of a session held for a course becomes a draft of that course: its staff see it, learners
    do not; publishing it transcodes it and adds the lecture at the end, and the enrolled learners are told."""
    host, learner, stranger = await api.user("instructor"), await api.user(), await api.user("instructor")
    status, course = await api.call("POST", "/courses", host, json={"title": f"Optics {uuid.uuid4().hex[:4]}"})
    assert status == 201, course
    first = {"title": "Lenses", "media_kind": "video", "media_url": "https://example.com/l.mp4", "duration_s": 60.0}
    assert (await api.call("POST", f"/courses/{course['id']}/lectures", host, json=first))[0] == 201
    assert (await api.call("POST", f"/courses/{course['id']}/publish", host))[0] == 200
    assert (await api.call("POST", f"/courses/{course['id']}/enroll", learner))[0] in (200, 201)
    room = await make_room(api, host)
    starts = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    session_in = {"title": "Mirrors, live", "starts_at": starts, "course_id": course["id"]}
    status, session = await api.call("POST", f"/rooms/{room}/live-sessions", host, json=session_in)
    assert status == 201, session
    session_id = str(session["id"])
    recording = await record_briefly(api, host, session_id)
    draft_id = recording["lecture_draft_id"]
    assert draft_id is not None, recording

    status, drafts = await api.call("GET", f"/courses/{course['id']}/lecture-drafts", host)
    assert status == 200
    (draft,) = [d for d in drafts["items"] if d["id"] == draft_id]
    assert (draft["title"], draft["state"], draft["live_session_id"]) == ("Mirrors, live", "draft", session_id)
    assert abs(draft["duration_s"] - recording["duration_s"]) < 0.01
    # Nobody else sees it or publishes it; learners see the course's one lecture, no draft.
    assert (await api.call("GET", f"/courses/{course['id']}/lecture-drafts", learner))[0] == 403
    assert (await api.call("GET", f"/courses/{course['id']}/lecture-drafts", stranger))[0] == 403
    assert (await api.call("POST", f"/lecture-drafts/{draft_id}/publish", stranger, json={}))[0] == 404
    assert (await api.call("DELETE", f"/lecture-drafts/{draft_id}", stranger))[0] == 404
    status, seen = await api.call("GET", f"/courses/{course['id']}/lectures", learner)
    assert status == 200 and [lec["title"] for lec in seen["items"]] == ["Lenses"]
    status, bad = await api.call("POST", f"/lecture-drafts/{draft_id}/publish", host, json={"title": ""})
    assert status == 400, bad

    # Several publishes at once (a double click, two staff tabs): one job, the others 409.
    answers = await asyncio.gather(
        *(api.call("POST", f"/lecture-drafts/{draft_id}/publish", host, json={"title": "Mirrors"}) for _ in range(4))
    )
    assert sorted(status for status, _ in answers) == [202, 409, 409, 409], answers
    (job,) = [body for status, body in answers if status == 202]
    async with asyncio.timeout(120):
        while job["state"] in ("queued", "running"):
            await asyncio.sleep(0.5)
            _, job = await api.call("GET", f"/jobs/{job['id']}", host)
    assert job["state"] == "succeeded", job

    _, drafts = await api.call("GET", f"/courses/{course['id']}/lecture-drafts", host)
    (draft,) = [d for d in drafts["items"] if d["id"] == draft_id]
    assert draft["state"] == "published" and draft["lecture_id"] is not None
    status, seen = await api.call("GET", f"/courses/{course['id']}/lectures", learner)
    assert [lec["title"] for lec in seen["items"]] == ["Lenses", "Mirrors"]
    status, lecture = await api.call("GET", f"/lectures/{draft['lecture_id']}", learner)
    assert status == 200 and lecture["media_kind"] == "hls" and "master.m3u8" in lecture["media_url"]
    assert abs(lecture["duration_s"] - recording["duration_s"]) <= 1
    _, notes = await api.call("GET", "/me/notifications?limit=100", learner)
    told = [n["payload"] for n in notes["items"] if n["kind"] == "new_lecture"]
    assert {"lecture_id": draft["lecture_id"], "title": "Mirrors"}.items() <= told[0].items(), told
    assert (await api.call("POST", f"/lecture-drafts/{draft_id}/publish", host, json={}))[0] == 409
    assert (await api.call("DELETE", f"/lecture-drafts/{draft_id}", host))[0] == 204
    _, drafts = await api.call("GET", f"/courses/{course['id']}/lecture-drafts", host)
    assert draft_id not in [d["id"] for d in drafts["items"]]
    assert (await api.call("GET", f"/lectures/{draft['lecture_id']}", learner))[0] == 200  # the lecture stays


async def test_a_recording_goes_on_when_the_host_publishes_again_and_ends_with_the_session(api: ApiClient) -> None:
    """Sharing the screen publishes again (a new peer replaces the old one, with new feeds): the recording carries
    on in the same file; ending the session ends it."""
    host, member = await api.user("instructor"), await api.user()
    _, session_id = await live_room(api, host, member)
    tab, member_tab = await live_tab(api, host), await live_tab(api, member)
    ref = {"session_id": session_id}
    first, again = Publisher(tab, session_id), Publisher(tab, session_id)
    again.tracks.insert(1, MovingPicture(640, 360))  # camera, screen, microphone
    try:
        for t in (tab, member_tab):
            await t.ok("live:join", ref)
        await tab.ok("live:start", ref)
        await first.publish()
        await tab.ok("live:record", {**ref, "on": True})
        began = time.monotonic()
        await asyncio.sleep(2)
        await again.publish()
        await first.close()
        await asyncio.sleep(2)
        assert node(api).recordings.running  # still recording
        ended = await tab.ok("live:stop", ref)
        lasted = time.monotonic() - began  # about 4 s, more on a busy machine (publishing again takes a while)
        assert ended["state"]["status"] == "ended"
        event = await tab.next("live:recorded")
        assert event["reason"] == "session_ended", event
        assert abs(event["recording"]["duration_s"] - lasted) <= 1, (event, lasted)
        path = node(api).settings.media_root / "uploads" / event["recording"]["upload_id"]
        assert abs(float(probe(path)["format"]["duration"]) - lasted) <= 1
        assert decoded_frames(path)["video"] >= 60  # both feeds' frames, one after the other
        assert await member_tab.nothing_pending("live:recorded")  # only the recorder hears of it
    finally:
        await first.close()
        await again.close()
        for t in (tab, member_tab):
            await t.close()


async def test_recording_is_refused_to_others_and_to_garbage(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    api = await app_with(aiohttp_client, database_url, tmp_path, live_record_rate_count=3)
    host, member, stranger = await api.user("instructor"), await api.user(), await api.user()
    _, session_id = await live_room(api, host, member)
    host_tab, member_tab, stranger_tab = (await live_tab(api, host), await live_tab(api, member),
                                          await live_tab(api, stranger))  # fmt: skip
    ref = {"session_id": session_id}
    publisher = Publisher(host_tab, session_id)
    try:
        await stranger_tab.fails("live:record", {**ref, "on": True}, "conflict")  # not joined (cannot join)
        await member_tab.ok("live:join", ref)
        await host_tab.ok("live:join", ref)
        await member_tab.fails("live:record", {**ref, "on": True}, "forbidden")
        for garbage in ({**ref, "on": "yes"}, {**ref}, {"session_id": "x", "on": True}, {**ref, "on": True, "x": 1},
                        [session_id], "record"):  # fmt: skip
            await host_tab.fails("live:record", garbage, "invalid_input")
        await host_tab.fails("live:record", {**ref, "on": True}, "conflict")  # not live yet
        await host_tab.ok("live:start", ref)
        message = await host_tab.fails("live:record", {**ref, "on": True}, "conflict")  # nothing published
        assert "publishing" in message
        await publisher.publish()
        await host_tab.fails("live:record", {**ref, "on": False}, "conflict")  # not recording
        await host_tab.fails("live:record", {**ref, "on": True}, "rate_limited")
        assert await member_tab.nothing_pending("live:recorded")
        assert node(api).recordings.running == {}
    finally:
        await publisher.close()
        for tab in (host_tab, member_tab, stranger_tab):
            await tab.close()


async def test_a_recording_stops_at_its_longest_and_the_quota_refuses_the_next(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    api = await app_with(aiohttp_client, database_url, tmp_path, live_recording_max_s=2.0, media_quota_bytes=1024)
    host = await api.user("instructor")
    _, session_id = await live_room(api, host)
    tab = await live_tab(api, host)
    ref = {"session_id": session_id}
    publisher = Publisher(tab, session_id)
    try:
        await tab.ok("live:join", ref)
        await tab.ok("live:start", ref)
        await publisher.publish()
        await tab.ok("live:record", {**ref, "on": True})
        event = await tab.next("live:recorded")  # by itself, after STUDYHALL_LIVE_RECORDING_MAX_S
        assert event["reason"] == "max_duration" and 1 <= event["recording"]["duration_s"] <= 3, event
        # The saved recording fills this user's (tiny) upload quota: the next one is refused, saying why.
        message = await tab.fails("live:record", {**ref, "on": True}, "payload_too_large")
        assert "quota" in message
    finally:
        await publisher.close()
        await tab.close()


async def test_two_runners_starting_at_once_make_one_recording(api: ApiClient) -> None:
    host = await api.user("instructor")
    _, session_id = await live_room(api, host)
    tabs = [await live_tab(api, host), await live_tab(api, host)]
    ref = {"session_id": session_id}
    publisher = Publisher(tabs[0], session_id)
    try:
        for tab in tabs:
            await tab.ok("live:join", ref)
        await tabs[0].ok("live:start", ref)
        await publisher.publish()
        acks = await asyncio.gather(*(tab.call("live:record", {**ref, "on": True}) for tab in tabs))
        assert sorted(a["ok"] for a in acks) == [False, True], acks
        assert next(a for a in acks if not a["ok"])["error"]["code"] == "conflict"
        assert len(node(api).recordings.running) == 1
        await asyncio.sleep(1)
        stopped = await tabs[1].ok("live:record", {**ref, "on": False})  # any runner stops it
        assert stopped["recording"]["duration_s"] > 0
    finally:
        await publisher.close()
        for tab in tabs:
            await tab.close()


async def test_a_recording_ends_cleanly_when_the_publisher_vanishes(api: ApiClient) -> None:
    host = await api.user("instructor")
    _, session_id = await live_room(api, host)
    publishing, recording_tab = await live_tab(api, host), await live_tab(api, host)  # two tabs of the host
    ref = {"session_id": session_id}
    publisher = Publisher(publishing, session_id)
    try:
        for tab in (publishing, recording_tab):
            await tab.ok("live:join", ref)
        await publishing.ok("live:start", ref)
        await publisher.publish()
        await recording_tab.ok("live:record", {**ref, "on": True})
        await asyncio.sleep(2)
        await publishing.close()  # the publishing tab goes away without a word
        event = await recording_tab.next("live:recorded")
        assert event["reason"] == "publisher_gone" and event["recording"]["duration_s"] > 1
        while (await recording_tab.next("live:state"))["recording"]:
            pass
        path = node(api).settings.media_root / "uploads" / event["recording"]["upload_id"]
        assert {s["codec_type"] for s in probe(path)["streams"]} == {"video", "audio"}
        assert decoded_frames(path)["video"] > 0
        assert node(api).recordings.running == {}
        # The session carries on, and can be recorded again once someone publishes.
        await recording_tab.fails("live:record", {**ref, "on": False}, "conflict")
    finally:
        await publisher.close()
        await recording_tab.close()


async def test_a_viewer_gives_its_slot_back_and_another_takes_it(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    api = await app_with(aiohttp_client, database_url, tmp_path, live_max_viewers_per_node=1)
    host, alice, bob = await api.user("instructor"), await api.user(), await api.user()
    _, session_id = await live_room(api, host, alice, bob)
    tabs = [await live_tab(api, who) for who in (host, alice, bob)]
    ref = {"session_id": session_id}
    publisher = Publisher(tabs[0], session_id)
    peers: list[Any] = [publisher]
    try:
        for tab in tabs:
            await tab.ok("live:join", ref)
        await tabs[0].ok("live:start", ref)
        await publisher.publish()
        first = Viewer(tabs[1], session_id)
        peers.append(first)
        await first.subscribe()
        await first.frame("video")
        refused = Viewer(tabs[2], session_id)
        peers.append(refused)
        with pytest.raises(AssertionError, match="as many viewers as it can"):
            await refused.subscribe()
        await tabs[2].fails("live:unsubscribe", {"session_id": str(uuid.uuid4())}, "conflict")  # not in it
        await tabs[2].fails("live:unsubscribe", {"session_id": session_id, "x": 1}, "invalid_input")
        tabs[0].drain("live:state")
        gone = await tabs[1].ok("live:unsubscribe", ref)
        assert gone["was_viewing"] is True and gone["state"]["viewers"] == 0
        assert (await tabs[0].next("live:state"))["viewers"] == 0
        again = await tabs[1].ok("live:unsubscribe", ref)  # nothing to give back: still fine
        assert again["was_viewing"] is False
        live = node(api).sessions[uuid.UUID(session_id)]
        assert len(live.members) == 3 and node(api).viewer_count == 0  # alice stays in the session
        second = Viewer(tabs[2], session_id)
        peers.append(second)
        await second.subscribe()
        assert (await second.frame("video")).width == 320
        assert node(api).viewer_count == 1
    finally:
        for p in peers:
            await p.close()
        for tab in tabs:
            await tab.close()
