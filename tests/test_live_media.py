"""Live sessions end to end with real aiortc peers over real Socket.IO: a host publishes a moving picture
and a microphone, viewers receive and decode them, the server forwards without decoding, a late joiner
gets a keyframe, hands are raised and speakers invited, and unauthorised or garbage signalling is refused."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from live.handlers import NODE
from live.sfu import ReceiverTap
from live.signalling import LiveNode
from realtime.app import create_app
from realtime.sockets import SOCKETS
from tests.chat_helpers import Tab, make_room
from tests.conftest import ApiClient, make_settings
from tests.live_helpers import WAIT_S, MovingPicture, Publisher, Viewer, live_room, live_tab

_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"


def node(api: ApiClient) -> LiveNode:
    live: LiveNode = api.app[SOCKETS].services[NODE]
    return live


async def test_viewers_receive_the_hosts_picture_and_sound_forwarded_not_decoded(api: ApiClient) -> None:
    host, alice, bob, carol = await api.user("instructor"), await api.user(), await api.user(), await api.user()
    _, session_id = await live_room(api, host, alice, bob, carol)
    tabs = [await live_tab(api, who) for who in (host, alice, bob, carol)]
    host_tab, *viewer_tabs = tabs
    peers: list[Any] = []
    try:
        for tab in tabs:
            joined = await tab.ok("live:join", {"session_id": session_id})
            assert joined["session"]["id"] == session_id and joined["ice_servers"] == []
        assert joined["may_run"] is False
        started = await host_tab.ok("live:start", {"session_id": session_id})
        assert started["state"]["status"] == "live"
        publisher = Publisher(host_tab, session_id)
        peers.append(publisher)
        await publisher.publish()
        viewers = [Viewer(tab, session_id) for tab in viewer_tabs[:2]]
        peers.extend(viewers)
        for viewer in viewers:
            ack = await viewer.subscribe()
            assert {(t["kind"], t["source"]) for t in ack["tracks"]} == {("video", "camera"), ("audio", "microphone")}
            assert all(t["user"]["id"] == host.id for t in ack["tracks"])
        for viewer in viewers:
            first = await viewer.frame("video")
            assert (first.width, first.height) == (320, 240)
            later = [await viewer.frame("video") for _ in range(10)]
            assert len({f.pts for f in later}) == 10  # a moving stream, not one picture repeated
            assert (await viewer.frame("audio")).sample_rate == 48000

        # The server never decoded: its receivers' decoder queues are taps, its remote tracks got no frame.
        live = node(api).sessions[uuid.UUID(session_id)]
        feeds = [feed for _, feed in live.publishers[uuid.UUID(host.id)].feeds]
        assert {f.kind for f in feeds} == {"video", "audio"}
        for feed in feeds:
            assert isinstance(getattr(feed.receiver, _DECODER_QUEUE), ReceiverTap)
            assert feed.frames > 0 and feed.receiver.track._queue.empty()  # type: ignore[attr-defined]

        # A late joiner's picture starts at a keyframe that the server asked the host for: the host's encoder
        # makes one only at the start and when asked (aiortc's VP8 encoder: a keyframe every 3000 frames).
        video = next(f for f in feeds if f.kind == "video")
        asked, requests = video.plis_sent, video.keyframe_requests
        keyframes = video.keyframes
        late = Viewer(viewer_tabs[2], session_id)
        peers.append(late)
        await late.subscribe()
        # The late joiner asked at once: sent to the host, or merged into the request the rate limit holds back
        # (when the earlier viewers' requests were less than STUDYHALL_LIVE_KEYFRAME_INTERVAL_S ago).
        assert video.keyframe_requests > requests
        assert video.plis_sent > asked or video._pending is not None
        picture = await late.frame("video")
        assert (picture.width, picture.height) == (320, 240)
        assert video.keyframes > keyframes
        assert live.state()["viewers"] == 3
    finally:
        for p in peers:
            await p.close()
        for tab in tabs:
            await tab.close()


async def test_microphone_camera_and_screen_in_a_browsers_order_are_each_forwarded(api: ApiClient) -> None:
    """A browser offers the microphone first, then camera and screen, all in one BUNDLE led by the audio section.
    With aiortc's default bundle policy on the server, the screen's receiver stayed on a discarded transport:
    it received nothing and its packets were taken for the camera's (found by the Chromium test)."""
    host, member = await api.user("instructor"), await api.user()
    _, session_id = await live_room(api, host, member)
    host_tab, member_tab = await live_tab(api, host), await live_tab(api, member)
    ref = {"session_id": session_id}
    publisher = Publisher(host_tab, session_id)
    # As a browser does: every section on one transport (max-bundle), audio first.
    publisher.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    camera, microphone = publisher.tracks
    publisher.tracks = [microphone, camera, MovingPicture(640, 360)]
    viewer = Viewer(member_tab, session_id, kinds=("audio", "video"))
    try:
        await host_tab.ok("live:join", ref)
        await host_tab.ok("live:start", ref)
        ack = await publisher.publish()
        sources = [t["source"] for t in ack["state"]["publishers"][0]["tracks"]]
        assert sources == ["microphone", "camera", "screen"]
        await member_tab.ok("live:join", ref)
        for _ in range(2):
            viewer.pc.addTransceiver("video", direction="recvonly")
        answer = await viewer.subscribe()
        assert sorted(t["source"] for t in answer["tracks"]) == ["camera", "microphone", "screen"]
        widths: set[int] = set()
        async with asyncio.timeout(WAIT_S):
            while widths != {320, 640}:  # the camera's 320×240 and the screen's 640×360, each decoded
                widths.add((await viewer.frame("video")).width)
        feeds = {source: feed for source, feed in node(api).sessions[uuid.UUID(session_id)].publishers[
            uuid.UUID(host.id)].feeds}  # fmt: skip
        assert feeds["screen"].frames > 0 and feeds["camera"].frames > 0
    finally:
        await viewer.close()
        await publisher.close()
        for tab in (host_tab, member_tab):
            await tab.close()


async def test_a_raised_hand_is_invited_to_speak_and_then_publishes(api: ApiClient) -> None:
    host, learner = await api.user("instructor"), await api.user()
    _, session_id = await live_room(api, host, learner)
    host_tab, learner_tab = await live_tab(api, host), await live_tab(api, learner)
    peers: list[Any] = []
    try:
        for tab in (host_tab, learner_tab):
            await tab.ok("live:join", {"session_id": session_id})
        await host_tab.ok("live:start", {"session_id": session_id})
        early = Publisher(learner_tab, session_id, video=False)
        peers.append(early)
        early.pc.addTransceiver(early.tracks[0], direction="sendonly")
        await early.pc.setLocalDescription(await early.pc.createOffer())
        offer = {"session_id": session_id, "sdp": early.pc.localDescription.sdp}
        await learner_tab.fails("live:publish", offer, "forbidden")  # not invited yet
        await learner_tab.fails("live:invite", {"session_id": session_id, "user_id": host.id}, "forbidden")

        raised = await learner_tab.ok("live:hand", {"session_id": session_id, "raised": True})
        assert [h["id"] for h in raised["state"]["hands"]] == [learner.id]
        await host_tab.ok("live:invite", {"session_id": session_id, "user_id": learner.id})
        invited = await learner_tab.next("live:invited")
        assert invited["session_id"] == session_id and invited["by"]["id"] == host.id
        speaker = Publisher(learner_tab, session_id, video=False)
        peers.append(speaker)
        ack = await speaker.publish()
        assert [p["user"]["id"] for p in ack["state"]["publishers"]] == [learner.id]
        assert ack["state"]["hands"] == []

        listener = Viewer(host_tab, session_id, kinds=("audio",))
        peers.append(listener)
        await listener.subscribe()
        assert (await listener.frame("audio")).sample_rate == 48000

        # The host mutes the speaker, then stops them: their publishing ends for everyone.
        muted = await host_tab.ok("live:mute", {"session_id": session_id, "user_id": learner.id})
        assert all(t["muted"] for t in muted["state"]["publishers"][0]["tracks"])
        stopped = await host_tab.ok("live:stop", {"session_id": session_id, "user_id": learner.id})
        assert stopped["state"]["publishers"] == [] and stopped["state"]["speakers"] == []
        # A live session is not cancelled: its host ends it, and then it is over for everyone, stored as ended.
        status, answer = await api.call("POST", f"/live-sessions/{session_id}/cancel", host)
        assert status == 409 and "live" in answer["error"]["message"]
        ended = await host_tab.ok("live:stop", {"session_id": session_id})
        assert ended["state"]["status"] == "ended"
        status, row = await api.call("GET", f"/live-sessions/{session_id}", learner)
        assert status == 200 and row["status"] == "ended"
        await learner_tab.fails("live:join", {"session_id": session_id}, "conflict")
        await host_tab.fails("live:start", {"session_id": session_id}, "conflict")
    finally:
        for p in peers:
            await p.close()
        for tab in (host_tab, learner_tab):
            await tab.close()


async def test_strangers_and_garbage_are_refused_and_the_session_carries_on(api: ApiClient) -> None:
    host, member, stranger = await api.user("instructor"), await api.user(), await api.user()
    _, session_id = await live_room(api, host, member)
    host_tab, member_tab, stranger_tab = (await live_tab(api, host), await live_tab(api, member),
                                          await live_tab(api, stranger))  # fmt: skip
    peers: list[Any] = []
    try:
        ref = {"session_id": session_id}
        # Not a member of the (private) room: the session does not exist for them.
        await stranger_tab.fails("live:join", ref, "not_found")
        await stranger_tab.fails("live:subscribe", {**ref, "sdp": "v=0"}, "conflict")
        await member_tab.fails("live:join", {"session_id": str(uuid.uuid4())}, "not_found")
        await member_tab.fails("live:join", {"session_id": "nope"}, "invalid_input")
        await member_tab.fails("live:subscribe", {**ref, "sdp": "v=0"}, "conflict")  # not joined
        await member_tab.ok("live:join", ref)
        await member_tab.fails("live:start", ref, "forbidden")
        await host_tab.ok("live:join", ref)
        viewer = Viewer(member_tab, session_id)
        peers.append(viewer)
        await viewer.pc.setLocalDescription(await _offer(viewer))
        good = viewer.pc.localDescription.sdp
        await member_tab.fails("live:subscribe", {**ref, "sdp": good}, "conflict")  # not live yet
        await host_tab.ok("live:start", ref)
        publisher = Publisher(host_tab, session_id)
        peers.append(publisher)
        await publisher.publish()
        for garbage in (
            "v=0",
            "hello\r\nworld",
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
            good.replace("a=ice-ufrag", "a=x"),
        ):
            await member_tab.fails("live:subscribe", {**ref, "sdp": garbage}, "invalid_input")
        await member_tab.fails("live:subscribe", {**ref, "sdp": good + "a=x\r\n" * 3000}, "payload_too_large")
        await member_tab.fails("live:subscribe", {**ref, "sdp": 5}, "invalid_input")
        await member_tab.fails("live:publish", {**ref, "sdp": good}, "forbidden")
        # ... and after all that the member still watches.
        answer = await member_tab.ok("live:subscribe", {**ref, "sdp": good})
        await viewer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        assert (await viewer.frame("video")).width == 320
    finally:
        for p in peers:
            await p.close()
        for tab in (host_tab, member_tab, stranger_tab):
            await tab.close()


async def _offer(viewer: Viewer) -> Any:
    for kind in viewer.kinds:
        viewer.pc.addTransceiver(kind, direction="recvonly")
    return await viewer.pc.createOffer()


def media_threads() -> int:
    return sum(1 for t in threading.enumerate() if not t.name.startswith(("ThreadPoolExecutor", "asyncio_")))


async def app_with(aiohttp_client: Any, database_url: str, tmp_path: Path, **settings: Any) -> ApiClient:
    return ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, **settings))))


async def test_joining_and_leaving_fifty_times_leaks_no_thread_or_peer(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    api = await app_with(aiohttp_client, database_url, tmp_path, live_signal_rate_count=1000)
    host, member = await api.user("instructor"), await api.user()
    _, session_id = await live_room(api, host, member)
    host_tab, member_tab = await live_tab(api, host), await live_tab(api, member)
    ref = {"session_id": session_id}
    publisher = Publisher(host_tab, session_id)
    try:
        await host_tab.ok("live:join", ref)
        await host_tab.ok("live:start", ref)
        await publisher.publish()
        viewer = Viewer(member_tab, session_id)
        await member_tab.ok("live:join", ref)
        await viewer.subscribe()
        await viewer.frame("video")
        await viewer.close()
        await member_tab.ok("live:leave", ref)
        # Threads other than the executor's (whose pool grows lazily up to its size) and tasks: a leak per
        # cycle would show as 50 more; a few of aiortc's closing tasks may still be finishing.
        threads, tasks = media_threads(), len(asyncio.all_tasks())
        for _ in range(50):
            await member_tab.ok("live:join", ref)
            viewer = Viewer(member_tab, session_id)
            await viewer.subscribe()
            await viewer.close()
            await member_tab.ok("live:leave", ref)
        live = node(api).sessions[uuid.UUID(session_id)]
        assert live.viewers == {} and [u.id for u in live.members.values()] == [uuid.UUID(host.id)]
        feeds = [f for _, f in live.publishers[uuid.UUID(host.id)].feeds]
        assert all(f.subscribers == set() for f in feeds)
        assert media_threads() <= threads
        assert len(asyncio.all_tasks()) < tasks + 10
    finally:
        await publisher.close()
        for tab in (host_tab, member_tab):
            await tab.close()


async def test_negotiations_are_rate_limited_and_viewers_capped_per_node(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    api = await app_with(
        aiohttp_client, database_url, tmp_path, live_signal_rate_count=2, live_max_viewers_per_node=1,
        live_max_publishers_per_session=1,
    )  # fmt: skip
    host, alice, bob = await api.user("instructor"), await api.user(), await api.user()
    _, session_id = await live_room(api, host, alice, bob)
    tabs = [await live_tab(api, who) for who in (host, alice, bob)]
    ref = {"session_id": session_id}
    peers: list[Any] = []
    try:
        for tab in tabs:
            await tab.ok("live:join", ref)
        await tabs[0].ok("live:start", ref)
        publisher = Publisher(tabs[0], session_id)
        peers.append(publisher)
        await publisher.publish()
        first = Viewer(tabs[1], session_id)
        peers.append(first)
        offer = {**ref, "sdp": (await _offer_of(first)).sdp}
        await tabs[1].ok("live:subscribe", offer)
        # One viewer is all this node carries: the next one is told so, the first keeps watching.
        other = Viewer(tabs[2], session_id)
        peers.append(other)
        message = await tabs[2].fails("live:subscribe", {**ref, "sdp": (await _offer_of(other)).sdp}, "unavailable")
        assert "viewers" in message
        # Re-negotiating replaces one's own peer (no new viewer), up to the rate limit.
        await tabs[1].ok("live:subscribe", offer)
        await tabs[1].fails("live:subscribe", offer, "rate_limited")
        assert node(api).viewer_count == 1
        # One publisher at a time here: an invited speaker waits until the host stops.
        await tabs[0].ok("live:invite", {**ref, "user_id": bob.id})
        speaker = Publisher(tabs[2], session_id, video=False)
        peers.append(speaker)
        speaker.pc.addTransceiver(speaker.tracks[0], direction="sendonly")
        await speaker.pc.setLocalDescription(await speaker.pc.createOffer())
        message = await tabs[2].fails("live:publish", {**ref, "sdp": speaker.pc.localDescription.sdp}, "conflict")
        assert "publishing already" in message
    finally:
        for p in peers:
            await p.close()
        for tab in tabs:
            await tab.close()


async def _offer_of(viewer: Viewer) -> Any:
    await viewer.pc.setLocalDescription(await _offer(viewer))
    return viewer.pc.localDescription


async def watching(host_tab: Tab, member_tab: Tab, ref: dict[str, str], publisher: Publisher, viewer: Viewer) -> None:
    """Both in the session, the host live and publishing, the member's viewer showing the host's picture."""
    for tab in (host_tab, member_tab):
        await tab.ok("live:join", ref)
    await host_tab.ok("live:start", ref)
    await publisher.publish()
    await viewer.subscribe()
    await viewer.frame("video")


async def test_a_publisher_that_vanishes_is_dropped_and_viewers_are_told(api: ApiClient) -> None:
    host, member = await api.user("instructor"), await api.user()
    _, session_id = await live_room(api, host, member)
    host_tab, member_tab = await live_tab(api, host), await live_tab(api, member)
    ref = {"session_id": session_id}
    publisher, viewer = Publisher(host_tab, session_id), Viewer(member_tab, session_id)
    try:
        await watching(host_tab, member_tab, ref, publisher, viewer)
        member_tab.drain("live:state")
        await host_tab.close()  # the host's tab goes away without a word
        while (state := await member_tab.next("live:state"))["publishers"]:
            pass
        assert state["status"] == "live" and state["publishers"] == []
        live = node(api).sessions[uuid.UUID(session_id)]
        assert live.publishers == {} and [u.id for u in live.members.values()] == [uuid.UUID(member.id)]
        assert await member_tab.nothing_pending("live:invited")  # the member's connection still answers
    finally:
        await publisher.close()
        await viewer.close()
        await member_tab.close()


async def test_a_member_banned_from_the_room_loses_the_session_at_once(api: ApiClient) -> None:
    host, member = await api.user("instructor"), await api.user()
    room, session_id = await live_room(api, host, member)
    host_tab, member_tab = await live_tab(api, host), await live_tab(api, member)
    ref = {"session_id": session_id}
    publisher, viewer = Publisher(host_tab, session_id), Viewer(member_tab, session_id)
    try:
        await watching(host_tab, member_tab, ref, publisher, viewer)
        host_tab.drain("live:state")
        await host_tab.join(room)
        await host_tab.ok("chat:ban", {"room_id": room, "user_id": member.id, "on": True})
        while (await host_tab.next("live:state"))["viewers"]:
            pass
        live = node(api).sessions[uuid.UUID(session_id)]
        assert uuid.UUID(member.id) not in {u.id for u in live.members.values()} and live.viewers == {}
        await member_tab.fails("live:join", ref, "forbidden")
    finally:
        await publisher.close()
        await viewer.close()
        for tab in (host_tab, member_tab):
            await tab.close()


async def test_members_in_the_room_hear_of_a_new_session_at_once(api: ApiClient) -> None:
    host, member = await api.user("instructor"), await api.user()
    room = await make_room(api, host, member)
    tab = await live_tab(api, member)
    try:
        await tab.join(room)
        starts = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        status, session = await api.call("POST", f"/rooms/{room}/live-sessions", host,
                                         json={"title": "Tonight", "starts_at": starts})  # fmt: skip
        assert status == 201
        announced = await tab.next("live:session")
        assert announced["id"] == session["id"] and announced["status"] == "scheduled"
        note = await tab.next("notification:new")
        assert note["kind"] == "live_session_scheduled" and note["payload"]["title"] == "Tonight"
        await api.call("POST", f"/live-sessions/{session['id']}/cancel", host)
        assert (await tab.next("live:session"))["status"] == "cancelled"
    finally:
        await tab.close()
