"""Recordings of live sessions: who may record, what is recorded, and where the file goes.

``live:record {session_id, on: true}`` (a runner: the host, the scheduler, room members of the scheduling
role, the course's instructor, admins; while live) starts a :class:`~live.recording.Recorder` on the
session's main picture and sound: the recording runner's own camera (else screen) and microphone if they
publish, else the first publisher's. ``on: false`` stops it (any runner), and so does the session's end. A
recording also ends by itself when what it records stops (the publisher stopped or vanished; when they publish
again, e.g. to share the screen, it goes on with their new feeds) or at its limits.

The file (WebM: VP8 and Opus as published, remuxed, never re-encoded) becomes a finished *upload* of the
person who started it (``uploads`` row, bytes at ``uploads/<id>`` in media storage, metadata naming the
session; written on the recording node's disk, and put into the S3 bucket when it ends if there is one, so any
node or media worker reads it), so:

- the host downloads it (``GET /api/v1/live-sessions/{session_id}/recordings/{upload_id}``, its owner only);
- the course's owner makes it a lecture's HLS ladder with ``POST /api/v1/lectures/{id}/media {upload_id}``
  (the existing ``lecture_video`` job, docs/media.md), which then plays behind the course's paywall.

When it ends, the recorder's connections get ``live:recorded {session_id, recording}`` and everyone joined a
``live:state`` with ``recording: false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core_api.auth import authenticate
from core_api.context import CORE
from core_api.errors import AppError, ErrorCode, conflict, not_found
from core_api.http import Principal
from live.recording import Recorded, Recorder
from live.sfu import Feed
from media.drafts import create_draft
from media.storage import LocalStorage, Storage
from media.uploads import UPLOADS

if TYPE_CHECKING:
    from live.signalling import LiveNode, LiveSession, Publisher

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
RECORDED_EVENT = "live:recorded"


def main_feeds(publisher: Publisher) -> tuple[Feed | None, Feed | None]:
    """What is recorded of a publisher: their camera (else their screen) and their microphone."""
    feeds = dict(publisher.feeds)
    return feeds.get("camera") or feeds.get("screen"), feeds.get("microphone")


def download_path(session_id: uuid.UUID, upload_id: uuid.UUID) -> str:
    return f"{PREFIX}/live-sessions/{session_id}/recordings/{upload_id}"


class Recordings:
    """The recordings running on one node, one per session at most."""

    def __init__(self, node: LiveNode) -> None:
        self.node = node
        self.running: dict[uuid.UUID, tuple[Recorder, uuid.UUID]] = {}  # session id → (recorder, upload id)
        self.sources: dict[uuid.UUID, uuid.UUID] = {}  # session id → whose picture and sound are recorded
        self._stored: dict[uuid.UUID, dict[str, Any] | None] = {}  # upload id → what live:recorded said
        self._store: Storage | None = None  # where a finished recording goes (the S3 bucket when there is one)

    def _media_store(self) -> Storage:
        if self._store is None:
            from media.wiring import open_storage  # (the media services import much; only needed here)

            self._store = open_storage(self.node.settings)
        return self._store

    @property
    def storage(self) -> LocalStorage:
        return LocalStorage(self.node.settings.media_root)

    async def start(self, user: Principal, session: LiveSession, row: Any) -> dict[str, Any]:
        settings = self.node.settings
        self._check(user, session)
        held = await self.node.core.pool.fetchval(
            "SELECT coalesce(sum(length), 0) FROM uploads WHERE owner_id = $1", user.id
        )
        if int(held) >= settings.media_quota_bytes:
            raise AppError(ErrorCode.PAYLOAD_TOO_LARGE,
                           f"your uploads take {held} bytes, your whole quota: delete some to record",
                           {"held_bytes": int(held), "quota_bytes": settings.media_quota_bytes})  # fmt: skip
        # Checked again after the await (another runner may have started meanwhile); nothing awaits from here on.
        source, video, audio = self._check(user, session)
        upload_id = uuid.uuid4()
        path = self.storage.upload_path(upload_id)

        async def ended(result: Recorded) -> None:
            await self._ended(session, user, row, upload_id, result)

        recorder = Recorder(path, video, audio, settings.live_recording_max_s, settings.live_recording_max_bytes,
                            ended)  # fmt: skip
        self.running[session.id] = (recorder, upload_id)
        self.sources[session.id] = source
        session.recording = True
        await self.node._announce(session)
        return {"state": session.state(), "recording": {"upload_id": str(upload_id), "session_id": str(session.id)}}

    def _check(self, user: Principal, session: LiveSession) -> tuple[uuid.UUID, Feed | None, Feed | None]:
        """Whose feeds to record (the caller's own if they publish, else the first publisher's), or why not."""
        if session.status != "live":
            raise conflict("the session is not live yet (the host starts it with live:start)")
        if session.id in self.running:
            raise conflict("the session is being recorded already")
        mine = session.publishers.get(user.id)
        publishers = ([mine] if mine is not None else []) + [p for p in session.publishers.values() if p is not mine]
        for publisher in publishers:
            video, audio = main_feeds(publisher)
            if video is not None or audio is not None:
                return publisher.user.id, video, audio
        raise conflict("nobody is publishing yet: go live with a camera or microphone first")

    async def stop(self, session: LiveSession) -> dict[str, Any]:
        running = self.running.get(session.id)
        if running is None:
            raise conflict("the session is not being recorded")
        recorder, upload_id = running
        await recorder.stop("stopped")
        return {"state": session.state(), "recording": self._stored.pop(upload_id, None)}

    def republished(self, session: LiveSession, publisher: Publisher) -> None:
        """The recorded publisher published again (new peer, new feeds): the recording goes on with them."""
        running = self.running.get(session.id)
        if running is not None and self.sources.get(session.id) == publisher.user.id:
            running[0].attach(*main_feeds(publisher))

    async def session_ended(self, session: LiveSession) -> None:
        running = self.running.get(session.id)
        if running is not None:
            await running[0].stop("session_ended")

    async def _ended(self, session: LiveSession, user: Principal, row: Any, upload_id: uuid.UUID,
                     result: Recorded) -> None:  # fmt: skip
        self.running.pop(session.id, None)
        self.sources.pop(session.id, None)
        session.recording = False
        out: dict[str, Any] | None = None
        try:
            if result.bytes > 0 and result.duration_s > 0:
                out = await self._keep(session, user, row, upload_id, result)
            else:
                await asyncio.to_thread(result.path.unlink, True)
        finally:
            self._stored[upload_id] = out
            event = {"session_id": str(session.id), "recording": out, "reason": result.reason}
            with contextlib.suppress(Exception):
                await self.node.transport.emit(RECORDED_EVENT, event, to=f"user:{user.id}")
                if session.status != "ended":
                    await self.node._announce(session)

    async def _keep(self, session: LiveSession, user: Principal, row: Any, upload_id: uuid.UUID,
                     result: Recorded) -> dict[str, Any]:  # fmt: skip
        title = str(row["title"])
        metadata = {
            "filename": f"{title[:100]}.webm", "filetype": "video/webm", "live_session_id": str(session.id),
            "duration_s": str(result.duration_s),
        }  # fmt: skip
        draft_id: uuid.UUID | None = None
        try:  # into the S3 bucket when there is one, so that any node or media worker reads it
            await self._media_store().adopt_upload(upload_id, result.path)
        except Exception:  # it stays on this node's disk, where this node still serves and transcodes it
            log.exception("live: could not put the recording %s into the media store; it stays on this node", upload_id)
        async with self.node.core.transaction() as tx:
            await tx.conn.execute(
                """INSERT INTO uploads (id, owner_id, length, received, metadata, completed_at)
                   VALUES ($1, $2, $3, $3, $4, now())""",
                upload_id, user.id, result.bytes, metadata,
            )  # fmt: skip
            if row["course_id"] is not None:  # the course's staff find it among its lecture drafts
                draft_id = await create_draft(
                    tx.conn, course_id=row["course_id"], upload_id=upload_id, session_id=session.id,
                    title=title, duration_s=result.duration_s, created_by=user.id,
                )  # fmt: skip
        return {
            "upload_id": str(upload_id), "session_id": str(session.id),
            "course_id": str(row["course_id"]) if row["course_id"] else None,
            "lecture_draft_id": str(draft_id) if draft_id is not None else None,
            "duration_s": result.duration_s, "bytes": result.bytes, "video_codec": result.video_codec,
            "audio_codec": result.audio_codec, "reason": result.reason,
            "download_url": download_path(session.id, upload_id),
        }  # fmt: skip

    async def close(self) -> None:
        for recorder, _ in list(self.running.values()):
            with contextlib.suppress(Exception):
                await recorder.stop("stopped")
        if self._store is not None:
            await self._store.close()


# --- download ----------------------------------------------------------------------------------------


async def download_recording(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/live-sessions/{session_id}/recordings/{upload_id}``: the file, to whoever recorded it."""
    user = await authenticate(request)
    try:
        session_id = uuid.UUID(request.match_info["session_id"])
        upload_id = uuid.UUID(request.match_info["upload_id"])
    except ValueError:
        raise not_found("recording") from None
    core = request.app[CORE]
    row = await core.pool.fetchrow(
        """SELECT metadata FROM uploads WHERE id = $1 AND owner_id = $2 AND completed_at IS NOT NULL
           AND metadata->>'live_session_id' = $3""",
        upload_id, user.id, str(session_id),
    )  # fmt: skip
    if row is None:
        raise not_found("recording")
    name = "".join(c if c.isalnum() or c in " ._-" else "_" for c in row["metadata"].get("filename", "live.webm"))
    headers = {"Content-Type": "video/webm", "Cache-Control": "private, no-store",
               "Content-Disposition": f'attachment; filename="{name}"'}  # fmt: skip
    path = LocalStorage(core.settings.media_root).upload_path(upload_id)
    if await asyncio.to_thread(path.is_file):  # on this node's disk (no bucket)
        return web.FileResponse(path, headers=headers)
    uploads = request.app.get(UPLOADS)
    if uploads is None:
        raise not_found("recording")
    try:  # from the S3 bucket (streamed or redirected, STUDYHALL_S3_SERVE)
        return await uploads.storage.send(request, f"uploads/{upload_id}", headers)
    except FileNotFoundError:
        raise not_found("recording") from None


def mount(app: web.Application) -> None:
    app.router.add_get(PREFIX + "/live-sessions/{session_id}/recordings/{upload_id}", download_recording)
