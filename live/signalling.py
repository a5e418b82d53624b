"""Live sessions on this node: who is in each one, who publishes, who watches, raised hands, invitations.

One :class:`LiveNode` per app holds every live session this node carries, with the WebRTC peers of its
publishers and viewers (their media is forwarded by :mod:`live.sfu`). Signalling is non-trickle: a client
sends a complete SDP offer (ICE candidates gathered) in ``live:publish`` or ``live:subscribe`` and gets the
server's complete answer in the ack.

Who may do what (the rules; ``runner`` = the session's host or scheduler, a room member of
``STUDYHALL_LIVE_SCHEDULE_ROOM_ROLE`` or higher, the course's instructor in the room, or an admin):

- ``live:join``: an active member of the session's room (joined, not banned); not after it ended. Each new
  join opens an attendance stretch (:mod:`live.attendance`), closed by the leave, the disconnect or the end;
  a connection joins at most ``STUDYHALL_LIVE_JOIN_RATE_COUNT`` times per ``..._WINDOW_S``.
- ``live:start``: a runner; makes the session ``live`` (``went_live_at``).
- ``live:publish``: a runner, or a member a runner invited to speak (``live:invite``); only while live;
  at most ``STUDYHALL_LIVE_MAX_PUBLISHERS_PER_SESSION`` at once (``conflict``).
- ``live:subscribe``: anyone who joined, while live; refused with ``unavailable`` once this node carries
  ``STUDYHALL_LIVE_MAX_VIEWERS_PER_NODE`` viewers.
- ``live:unsubscribe``: anyone who joined; closes their receiving peer and frees its viewer slot.
- ``live:record``: a runner, while live and someone publishes (:mod:`live.recordings`); rate-limited per
  connection (``STUDYHALL_LIVE_RECORD_RATE_COUNT`` per ``..._WINDOW_S``).
- ``live:hand``: anyone who joined. ``live:invite``: a runner. ``live:mute``: a runner, or oneself.
- ``live:stop``: a publisher stops themselves; a runner stops anyone's publishing, or (no ``user_id``)
  ends the session for everyone.

Offers are limited to ``STUDYHALL_LIVE_MAX_SDP_BYTES``, and a connection may start
``STUDYHALL_LIVE_SIGNAL_RATE_COUNT`` negotiations per ``STUDYHALL_LIVE_SIGNAL_RATE_WINDOW_S``. State
changes reach everyone in the session as ``live:state`` (Socket.IO room ``live:<session id>``).

With several nodes each session lives on one node, its owner: :mod:`live.routing` brings every ``live:*``
event about it there, so a remote connection appears here by its sid like a local one (see docs/live.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from core_api.context import Core
from core_api.errors import AppError, ErrorCode, conflict, forbidden, invalid
from core_api.events import EventCall, Transport
from core_api.http import Principal
from core_api.settings import Settings
from live.attendance import Attendance
from live.recordings import Recordings
from live.schedule import Schedule, session_out
from live.sfu import Feed, ForwardedTrack, codec_preferences, forward_keyframe_requests
from live.turn import SERVER_USER, ice_servers_for
from rooms.access import require_member

log = logging.getLogger(__name__)

JOINED = "live.joined"
"""Session key: the ids of the live sessions this connection joined."""
_SIGNALS = "live.signals"
_JOINS = "live.joins"
_RECORDS = "live.records"
MAX_VIDEO_TRACKS = 2  # camera and screen share, in that order
MAX_SUBSCRIBE_TRACKS = 32


def live_room(session_id: uuid.UUID | str) -> str:
    return f"live:{session_id}"


@dataclass
class Publisher:
    user: Principal
    sid: str
    pc: RTCPeerConnection
    feeds: list[tuple[str, Feed]] = field(default_factory=list)  # (source, feed): camera, screen, microphone


@dataclass
class Viewer:
    user: Principal
    pc: RTCPeerConnection
    tracks: list[ForwardedTrack] = field(default_factory=list)


@dataclass
class LiveSession:
    """One session's live state on this node."""

    id: uuid.UUID
    room_id: uuid.UUID
    status: str
    members: dict[str, Principal] = field(default_factory=dict)  # sid → user
    hands: dict[uuid.UUID, Principal] = field(default_factory=dict)
    speakers: set[uuid.UUID] = field(default_factory=set)  # invited to speak
    publishers: dict[uuid.UUID, Publisher] = field(default_factory=dict)
    viewers: dict[str, Viewer] = field(default_factory=dict)  # sid → viewer (one peer per connection)
    stretches: dict[str, uuid.UUID] = field(default_factory=dict)  # sid → its open attendance row
    recording: bool = False  # live:record (live/recording.py)

    def state(self) -> dict[str, Any]:
        return {
            "session_id": str(self.id),
            "status": self.status,
            "publishers": [
                {
                    "user": _user(p.user),
                    "tracks": [{"kind": f.kind, "source": source, "muted": f.muted} for source, f in p.feeds],
                }
                for p in self.publishers.values()
            ],
            "hands": [_user(u) for u in self.hands.values()],
            "speakers": [str(u) for u in self.speakers],
            "viewers": len(self.viewers),
            "recording": self.recording,
        }

    def tracks(self) -> list[tuple[Publisher, str, Feed]]:
        """Every forwarded track in a stable order: the publishers in arrival order, each one's tracks."""
        return [(p, source, feed) for p in self.publishers.values() for source, feed in p.feeds]


def _user(user: Principal) -> dict[str, str]:
    return {"id": str(user.id), "display_name": user.display_name}


def parse_offer(sdp: str, max_bytes: int) -> SessionDescription:
    """The offer parsed (aiortc's SDP parser), or ``invalid_input`` saying what is wrong with it."""
    if len(sdp.encode()) > max_bytes:
        raise AppError(ErrorCode.PAYLOAD_TOO_LARGE, f"the SDP offer is larger than {max_bytes} bytes")
    try:
        description = SessionDescription.parse(sdp)
    except Exception:
        raise invalid("the offer is not valid SDP") from None
    if not description.media:
        raise invalid("the offer has no media sections")
    for media in description.media:
        if media.kind not in ("audio", "video"):
            raise invalid(f"the offer has a {media.kind!r} section; only audio and video are carried")
        if media.ice is None or not media.ice.usernameFragment or not media.dtls or not media.dtls.fingerprints:
            raise invalid("the offer lacks ICE credentials or a DTLS fingerprint")
    return description


def _rate(session: MutableMapping[str, Any], key: str, count: int, window: float, what: str) -> None:
    """A per-connection sliding-window limit: ``rate_limited`` past ``count`` in ``window`` seconds."""
    times: deque[float] = session.setdefault(key, deque())
    now = time.monotonic()
    while times and times[0] <= now - window:
        times.popleft()
    if len(times) >= count:
        wait = max(1, math.ceil(times[0] + window - now))
        raise AppError(ErrorCode.RATE_LIMITED, f"{what}; try again in {wait} s", {"retry_after_s": wait})
    times.append(now)


class LiveNode:
    """Every live session this node carries (see the module doc for the rules).

    Args:
        core: the database and bus.
        transport: the Socket.IO server (emits ``live:state`` and ``live:invited``).
        settings: limits and ICE servers.
    """

    def __init__(self, core: Core, transport: Transport, settings: Settings) -> None:
        self.core = core
        self.transport = transport
        self.settings = settings
        self.schedule = Schedule(core)
        self.attendance = Attendance(core)
        self.sessions: dict[uuid.UUID, LiveSession] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self.recordings = Recordings(self)

    @property
    def viewer_count(self) -> int:
        return sum(len(s.viewers) for s in self.sessions.values())

    # --- helpers ---------------------------------------------------------------------------------

    def _peer(self) -> RTCPeerConnection:
        servers = [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                   for s in ice_servers_for(self.settings, SERVER_USER)]  # fmt: skip
        # An explicit list, even empty: aiortc would otherwise add a public STUN server of its own.
        # max-bundle: every section on the first section's transport. With aiortc's default ("balanced"), a
        # second video section is put on the first video's transport when created, and BUNDLE led by an audio
        # section then moves only the first video: a browser's offer of microphone, camera, screen left the
        # screen's receiver on a discarded transport and its packets decoded as the camera's.
        config = RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        return RTCPeerConnection(config)

    def _lock(self, session_id: uuid.UUID) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    async def _row(self, user: Principal, session_id: uuid.UUID) -> Any:
        async with self.core.pool.acquire() as conn:
            row = await self.schedule.visible_session(conn, user, session_id)
            await require_member(conn, user, row["room_id"])
        return row

    async def _may_run(self, user: Principal, row: Any) -> bool:
        async with self.core.pool.acquire() as conn:
            return await self.schedule.may_run(conn, user, row)

    def _joined(self, call: EventCall, session_id: uuid.UUID) -> LiveSession:
        session = self.sessions.get(session_id)
        if session is None or call.sid not in session.members:
            raise conflict("join the live session first (live:join)")
        return session

    def _signal_allowed(self, session: MutableMapping[str, Any]) -> None:
        s = self.settings
        _rate(session, _SIGNALS, s.live_signal_rate_count, s.live_signal_rate_window_s, "too many negotiations")

    async def _announce(self, session: LiveSession) -> None:
        await self.transport.emit("live:state", session.state(), to=live_room(session.id))

    async def _answer(self, pc: RTCPeerConnection, offer: str) -> str:
        try:
            async with asyncio.timeout(self.settings.live_negotiation_timeout_s):
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
                await pc.setLocalDescription(await pc.createAnswer())
        except TimeoutError:
            raise AppError(ErrorCode.UNAVAILABLE, "could not answer the offer in time") from None
        except AppError:
            raise
        except Exception as exc:  # aiortc refuses offers it cannot use (no common codec, bad direction...)
            raise invalid(f"the offer cannot be answered: {exc}") from None
        return str(pc.localDescription.sdp)

    # --- use cases -------------------------------------------------------------------------------

    async def join(self, call: EventCall, session_id: uuid.UUID) -> dict[str, Any]:
        row = await self._row(call.user, session_id)
        if row["cancelled_at"] is not None or row["ended_at"] is not None:
            raise conflict("the live session is over" if row["ended_at"] else "the live session was cancelled")
        session = self.sessions.get(session_id)
        if session is None or call.sid not in session.members:
            limits = self.settings
            _rate(call.session, _JOINS, limits.live_join_rate_count, limits.live_join_rate_window_s, "too many joins")
            stretch = await self.attendance.opened(session_id, call.user.id)
            session = self.sessions.get(session_id)  # the await above let others in
            if session is None:
                status = "live" if row["went_live_at"] is not None else "scheduled"
                session = self.sessions.setdefault(session_id, LiveSession(session_id, row["room_id"], status))
            if call.sid in session.stretches:  # the same connection joined twice at once: one stretch
                await self.attendance.closed([stretch])
            else:
                session.stretches[call.sid] = stretch
        session.members[call.sid] = call.user
        call.session.setdefault(JOINED, set()).add(session_id)
        await call.transport.enter_room(call.sid, live_room(session_id))
        may_run = await self._may_run(call.user, row)
        ice = [s.model_dump(exclude_none=True) for s in ice_servers_for(self.settings, str(call.user.id))]
        return {"session": session_out(row).model_dump(mode="json"), "state": session.state(), "may_run": may_run,
                "ice_servers": ice}  # fmt: skip

    async def start(self, call: EventCall, session_id: uuid.UUID) -> dict[str, Any]:
        session = self._joined(call, session_id)
        row = await self._row(call.user, session_id)
        if not await self._may_run(call.user, row):
            raise forbidden("only the session's host or the room's hosts may start it")
        if row["cancelled_at"] is not None or row["ended_at"] is not None:
            raise conflict("the live session is over" if row["ended_at"] else "the live session was cancelled")
        await self.schedule.mark(session_id, "went_live_at")
        session.status = "live"
        await self._announce(session)
        return {"state": session.state()}

    async def publish(self, call: EventCall, session_id: uuid.UUID, sdp: str) -> dict[str, Any]:
        session = self._joined(call, session_id)
        description = parse_offer(sdp, self.settings.live_max_sdp_bytes)
        row = await self._row(call.user, session_id)
        if call.user.id not in session.speakers and not await self._may_run(call.user, row):
            raise forbidden("raise your hand and wait to be invited to speak")
        if session.status != "live":
            raise conflict("the session is not live yet (the host starts it with live:start)")
        kinds = [m.kind for m in description.media]
        if kinds.count("audio") > 1 or kinds.count("video") > MAX_VIDEO_TRACKS:
            raise invalid(f"publish at most one audio and {MAX_VIDEO_TRACKS} video tracks (camera, screen)")
        self._signal_allowed(call.session)
        async with self._lock(session_id):
            others = len(session.publishers) - (call.user.id in session.publishers)
            if others >= self.settings.live_max_publishers_per_session:
                raise conflict(f"{others} people are publishing already (the most at once); ask one to stop")
            await self._drop_publisher(session, call.user.id)
            pc = self._peer()
            publisher = Publisher(call.user, call.sid, pc)
            videos = 0
            for media in description.media:
                transceiver = pc.addTransceiver(media.kind, direction="recvonly")
                transceiver.setCodecPreferences(codec_preferences(media.kind))
                feed = Feed(media.kind, transceiver.receiver, self.settings.live_keyframe_interval_s)
                feed.attach()  # before the receiver starts: its frames are forwarded, never decoded
                source = "microphone" if media.kind == "audio" else ("camera", "screen")[videos]
                videos += media.kind == "video"
                publisher.feeds.append((source, feed))
            self._watch(pc, session, call.user.id)
            try:
                answer = await self._answer(pc, sdp)
            except AppError:
                await self._close_publisher(publisher)
                raise
            session.publishers[call.user.id] = publisher
            self.recordings.republished(session, publisher)
        await self._announce(session)
        return {"sdp": answer, "type": "answer", "state": session.state()}

    async def subscribe(self, call: EventCall, session_id: uuid.UUID, sdp: str) -> dict[str, Any]:
        session = self._joined(call, session_id)
        description = parse_offer(sdp, self.settings.live_max_sdp_bytes)
        if session.status != "live":
            raise conflict("the session is not live yet")
        if len(description.media) > MAX_SUBSCRIBE_TRACKS:
            raise invalid(f"subscribe to at most {MAX_SUBSCRIBE_TRACKS} tracks")
        self._signal_allowed(call.session)
        async with self._lock(session_id):
            replacing = call.sid in session.viewers
            if not replacing and self.viewer_count >= self.settings.live_max_viewers_per_node:
                raise AppError(ErrorCode.UNAVAILABLE,
                               "this server carries as many viewers as it can; try again later")  # fmt: skip
            await self._drop_viewer(session, call.sid)
            pc = self._peer()
            viewer = Viewer(call.user, pc)
            available = session.tracks()
            sent: list[dict[str, Any]] = []
            for media in description.media:
                index = next((i for i, t in enumerate(available) if t[2].kind == media.kind), None)
                if index is None:
                    transceiver = pc.addTransceiver(media.kind, direction="inactive")
                    transceiver.setCodecPreferences(codec_preferences(media.kind))
                    continue
                publisher, source, feed = available.pop(index)
                track = feed.subscribe()
                viewer.tracks.append(track)
                transceiver = pc.addTransceiver(track, direction="sendonly")
                transceiver.setCodecPreferences(codec_preferences(media.kind))
                forward_keyframe_requests(transceiver.sender, feed)
                sent.append({"mid": media.rtp.muxId, "kind": media.kind, "source": source,
                             "user": _user(publisher.user)})  # fmt: skip
            try:
                answer = await self._answer(pc, sdp)
            except AppError:
                await self._close_viewer(viewer)
                raise
            session.viewers[call.sid] = viewer
        return {"sdp": answer, "type": "answer", "tracks": sent}

    async def hand(self, call: EventCall, session_id: uuid.UUID, raised: bool) -> dict[str, Any]:
        session = self._joined(call, session_id)
        if raised:
            session.hands[call.user.id] = call.user
        else:
            session.hands.pop(call.user.id, None)
        await self._announce(session)
        return {"state": session.state()}

    async def invite(self, call: EventCall, session_id: uuid.UUID, user_id: uuid.UUID) -> dict[str, Any]:
        session = self._joined(call, session_id)
        row = await self._row(call.user, session_id)
        if not await self._may_run(call.user, row):
            raise forbidden("only the session's host or the room's hosts may invite speakers")
        if user_id not in {u.id for u in session.members.values()}:
            raise conflict("that user is not in the live session")
        session.speakers.add(user_id)
        session.hands.pop(user_id, None)
        await self.transport.emit("live:invited", {"session_id": str(session_id), "by": _user(call.user)},
                                  to=f"user:{user_id}")  # fmt: skip
        await self._announce(session)
        return {"state": session.state()}

    async def mute(self, call: EventCall, session_id: uuid.UUID, user_id: uuid.UUID, kind: str) -> dict[str, Any]:
        session = self._joined(call, session_id)
        if user_id != call.user.id and not await self._may_run(call.user, await self._row(call.user, session_id)):
            raise forbidden("only the session's host or the room's hosts may mute others")
        publisher = session.publishers.get(user_id)
        if publisher is None:
            raise conflict("that user is not publishing")
        for _, feed in publisher.feeds:
            if kind in ("all", feed.kind):
                feed.muted = True
        await self._announce(session)
        return {"state": session.state()}

    async def stop(self, call: EventCall, session_id: uuid.UUID, user_id: uuid.UUID | None) -> dict[str, Any]:
        session = self._joined(call, session_id)
        if user_id != call.user.id and not await self._may_run(call.user, await self._row(call.user, session_id)):
            raise forbidden("only the session's host or the room's hosts may stop others or end the session")
        async with self._lock(session_id):
            if user_id is None:
                await self.recordings.session_ended(session)
                ended = await self.schedule.mark(session_id, "ended_at")
                await self.attendance.close_session(session_id, ended["ended_at"])
                session.stretches.clear()
                session.status = "ended"
                for uid in list(session.publishers):
                    await self._drop_publisher(session, uid)
                for sid in list(session.viewers):
                    await self._drop_viewer(session, sid)
            else:
                session.speakers.discard(user_id)
                await self._drop_publisher(session, user_id)
        await self._announce(session)
        if session.status == "ended":
            self.sessions.pop(session_id, None)
            self._locks.pop(session_id, None)
        return {"state": session.state()}

    async def leave(self, sid: str, joined: set[uuid.UUID], session_id: uuid.UUID) -> None:
        joined.discard(session_id)
        session = self.sessions.get(session_id)
        if session is None:
            return
        user = session.members.pop(sid, None)
        stretch = session.stretches.pop(sid, None)
        if stretch is not None:
            await self.attendance.closed([stretch])
        with contextlib.suppress(Exception):
            await self.transport.leave_room(sid, live_room(session_id))
        async with self._lock(session_id):
            await self._drop_viewer(session, sid)
            if user is not None:
                publisher = session.publishers.get(user.id)
                if publisher is not None and publisher.sid == sid:
                    await self._drop_publisher(session, user.id)
                if user.id not in {u.id for u in session.members.values()}:
                    session.hands.pop(user.id, None)
        if not session.members and not session.publishers:
            self.sessions.pop(session_id, None)
            self._locks.pop(session_id, None)
        else:
            await self._announce(session)

    async def leave_all(self, sid: str, joined: set[uuid.UUID]) -> None:
        for session_id in list(joined):
            await self.leave(sid, joined, session_id)

    async def recheck(self, sid: str, user: Principal, joined: set[uuid.UUID]) -> None:
        """The user's rights changed: leave the sessions whose room they may no longer act in."""
        for session_id in list(joined):
            try:
                await self._row(user, session_id)
            except AppError:
                await self.leave(sid, joined, session_id)

    async def unsubscribe(self, call: EventCall, session_id: uuid.UUID) -> dict[str, Any]:
        """Give one's viewer slot back: the receiving peer closes, the connection stays in the session."""
        session = self._joined(call, session_id)
        async with self._lock(session_id):
            viewing = call.sid in session.viewers
            await self._drop_viewer(session, call.sid)
        if viewing:
            await self._announce(session)
        return {"state": session.state(), "was_viewing": viewing}

    async def record(self, call: EventCall, session_id: uuid.UUID, on: bool) -> dict[str, Any]:
        """Start or stop recording the session (a runner); see :class:`live.recordings.Recordings`."""
        session = self._joined(call, session_id)
        row = await self._row(call.user, session_id)
        if not await self._may_run(call.user, row):
            raise forbidden("only the session's host or the room's hosts may record it")
        limits = self.settings
        _rate(call.session, _RECORDS, limits.live_record_rate_count, limits.live_record_rate_window_s,
              "too many recording changes")  # fmt: skip
        if on:
            return await self.recordings.start(call.user, session, row)
        return await self.recordings.stop(session)

    async def close(self) -> None:
        await self.recordings.close()
        stretches = [s for session in self.sessions.values() for s in session.stretches.values()]
        with contextlib.suppress(Exception):  # the database may be gone already; the rows stay open then
            await self.attendance.closed(stretches)
        for session in list(self.sessions.values()):
            for uid in list(session.publishers):
                await self._drop_publisher(session, uid)
            for sid in list(session.viewers):
                await self._drop_viewer(session, sid)
        self.sessions.clear()

    # --- peers -----------------------------------------------------------------------------------

    def _watch(self, pc: RTCPeerConnection, session: LiveSession, user_id: uuid.UUID) -> None:
        """A publisher whose connection fails (it vanished) is dropped and the session told."""

        @pc.on("connectionstatechange")
        async def changed() -> None:
            if pc.connectionState in ("failed", "closed"):
                publisher = session.publishers.get(user_id)
                if publisher is not None and publisher.pc is pc:
                    async with self._lock(session.id):
                        await self._drop_publisher(session, user_id)
                    await self._announce(session)

    async def _drop_publisher(self, session: LiveSession, user_id: uuid.UUID) -> None:
        publisher = session.publishers.pop(user_id, None)
        if publisher is not None:
            await self._close_publisher(publisher)

    async def _close_publisher(self, publisher: Publisher) -> None:
        for _, feed in publisher.feeds:
            feed.close()
        await publisher.pc.close()

    async def _drop_viewer(self, session: LiveSession, sid: str) -> None:
        viewer = session.viewers.pop(sid, None)
        if viewer is not None:
            await self._close_viewer(viewer)

    async def _close_viewer(self, viewer: Viewer) -> None:
        for track in viewer.tracks:
            track.stop()
        await viewer.pc.close()
