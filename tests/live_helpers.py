"""Helpers of the live-session tests: real aiortc peers (a publisher with synthetic tracks, viewers that
decode what they receive) talking to the server over real Socket.IO connections.

Every peer is made with an explicit empty ICE server list: aiortc would otherwise ask a public STUN
server, and these tests talk only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack, VideoStreamTrack

from tests.chat_helpers import Tab, make_room, open_tab
from tests.conftest import Actor, ApiClient

WAIT_S = 20  # generous: five agents share this machine's two cores; the bound that matters is in bench/live.py
LIVE_EVENTS = ("live:state", "live:invited", "live:session", "live:recorded")


class MovingPicture(VideoStreamTrack):
    """A synthetic 320×240 camera whose picture changes every frame (so the encoder has work to do)."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width, self.height, self.count = width, height, 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        shade = (self.count * 7) % 200 + 20
        row = bytes((shade + x // 8) % 256 for x in range(frame.planes[0].line_size))
        frame.planes[0].update(row * self.height)
        for plane in frame.planes[1:]:
            plane.update(bytes([128]) * plane.buffer_size)
        self.count += 1
        frame.pts, frame.time_base = pts, time_base
        return frame


def peer() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def live_tab(api: ApiClient, actor: Actor) -> Tab:
    tab = await open_tab(api, actor)
    for name in LIVE_EVENTS:
        tab.inbox[name] = asyncio.Queue()
        tab.sio.on(name, tab.inbox[name].put)
    return tab


async def live_room(api: ApiClient, host: Actor, *members: Actor) -> tuple[str, str]:
    """A private room (``host`` its host, ``members`` invited) with a session scheduled by the host."""
    room = await make_room(api, host, *members)
    starts = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    status, session = await api.call("POST", f"/rooms/{room}/live-sessions", host,
                                     json={"title": "Live", "starts_at": starts})  # fmt: skip
    assert status == 201, session
    return room, str(session["id"])


async def record_briefly(api: ApiClient, host: Actor, session_id: str, seconds: float = 2) -> dict[str, Any]:
    """The host goes live in ``session_id``, publishes, records ``seconds`` and stops: the recording's ack."""
    tab = await live_tab(api, host)
    ref = {"session_id": session_id}
    publisher = Publisher(tab, session_id)
    try:
        await tab.ok("live:join", ref)
        await tab.ok("live:start", ref)
        await publisher.publish()
        await tab.ok("live:record", {**ref, "on": True})
        await asyncio.sleep(seconds)
        recording: dict[str, Any] = (await tab.ok("live:record", {**ref, "on": False}))["recording"]
        return recording
    finally:
        await publisher.close()
        await tab.close()


class Publisher:
    """A publishing peer: a moving picture and a (silent) microphone, or only the microphone."""

    def __init__(self, tab: Tab, session_id: str, *, video: bool = True) -> None:
        self.tab, self.session_id = tab, session_id
        self.pc = peer()
        self.tracks: list[MediaStreamTrack] = [AudioStreamTrack()]
        if video:
            self.tracks.insert(0, MovingPicture())

    async def publish(self) -> dict[str, Any]:
        for track in self.tracks:
            self.pc.addTransceiver(track, direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        ack = await self.tab.ok("live:publish", {"session_id": self.session_id, "sdp": self.pc.localDescription.sdp})
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=ack["sdp"], type="answer"))
        return ack

    async def close(self) -> None:
        await self.pc.close()


class Viewer:
    """A subscribing peer that decodes what it receives; ``frames[kind]`` gets each decoded frame."""

    def __init__(self, tab: Tab, session_id: str, kinds: tuple[str, ...] = ("video", "audio")) -> None:
        self.tab, self.session_id, self.kinds = tab, session_id, kinds
        self.pc = peer()
        self.frames: dict[str, asyncio.Queue[Any]] = {k: asyncio.Queue() for k in kinds}
        self._readers: list[asyncio.Task[None]] = []

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._readers.append(asyncio.create_task(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await self.frames[track.kind].put(await track.recv())

    async def subscribe(self) -> dict[str, Any]:
        for kind in self.kinds:
            self.pc.addTransceiver(kind, direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        ack = await self.tab.ok("live:subscribe", {"session_id": self.session_id, "sdp": self.pc.localDescription.sdp})
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=ack["sdp"], type="answer"))
        return ack

    async def frame(self, kind: str = "video") -> Any:
        return await asyncio.wait_for(self.frames[kind].get(), timeout=WAIT_S)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
