"""Lecture video: an upload probed with ffprobe and transcoded by ffmpeg into an HLS ladder.

The ladder has the rungs of 1080p, 720p, 480p and 360p no higher than the source (a source below 360p
gets one rung at its own height), H.264 (main profile) and AAC, 6 s segments on aligned keyframes, a
``master.m3u8`` naming every rung, a poster image and the duration. One ffmpeg process makes every rung
(the source is decoded once); its ``-progress`` output drives the job's progress.

``POST /api/v1/lectures/{id}/media {upload_id}`` queues the job (:func:`start_lecture_video`); when it
succeeds the lecture's ``media_kind`` is ``hls`` and its ``media_url`` the master playlist, and the source
upload is deleted (it no longer counts against the quota).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import signal
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from core_api.context import Core, Tx, core_of
from core_api.courses import visible_lecture, writable_course
from core_api.db import Connection
from core_api.errors import conflict
from core_api.http import Api, Call, Input, Reply
from core_api.settings import Settings
from media.jobs import JOBS, Finish, JobContext, JobFailed, JobOut, enqueue, job_out, too_many
from media.storage import Storage
from media.uploads import UPLOADS

log = logging.getLogger(__name__)

KIND = "lecture_video"
_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In ffmpeg's child, before exec: SIGKILL when the process that started it dies (a worker killed with
    -9 must not leave an orphan ffmpeg writing into the directory the job's retry now fills)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


SEGMENT_S = 6
RUNGS = ((1080, 5000, 128), (720, 2800, 128), (480, 1400, 96), (360, 800, 96))
"""(height, video kbit/s, audio kbit/s)."""


@dataclass(frozen=True)
class Probe:
    width: int
    height: int
    duration_s: float
    has_audio: bool


def ladder(height: int) -> list[tuple[int, int, int]]:
    """The rungs no higher than the source; a source below the lowest gets one rung at its own (even) height."""
    rungs = [r for r in RUNGS if r[0] <= height]
    if not rungs:
        low = RUNGS[-1]
        rungs = [(max(2, height - height % 2), low[1], low[2])]
    return rungs


def parse_probe(raw: dict[str, Any], max_duration_s: float) -> Probe:
    """ffprobe's JSON to what the transcode needs, or :class:`JobFailed` saying why this is not a video."""
    streams = raw.get("streams") or []
    video = [
        s for s in streams if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    if not video:
        kinds = sorted({str(s.get("codec_type")) for s in streams}) or ["nothing"]
        raise JobFailed(f"not a video: the file has no video stream (it has {', '.join(kinds)})")
    v = video[0]
    try:
        width, height = int(v["width"]), int(v["height"])
        duration = float((raw.get("format") or {}).get("duration") or v.get("duration") or 0)
    except (KeyError, TypeError, ValueError):
        raise JobFailed("not a video ffmpeg can read: its size or duration is missing") from None
    if width <= 0 or height <= 0 or duration <= 0:
        raise JobFailed("not a video ffmpeg can read: its size or duration is missing")
    if duration > max_duration_s:
        raise JobFailed(f"the video is {duration:.0f} s long, over the limit of {max_duration_s:.0f} s")
    return Probe(width, height, duration, any(s.get("codec_type") == "audio" for s in streams))


async def probe(settings: Settings, source: Path) -> Probe:
    proc = await asyncio.create_subprocess_exec(
        settings.media_ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(source),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip().splitlines()
        reason = detail[-1].split(": ", 1)[-1] if detail else f"ffprobe exited with {proc.returncode}"
        raise JobFailed(f"not a video ffmpeg can read: {reason}")
    try:
        raw = json.loads(out)
    except ValueError:
        raise JobFailed("not a video ffmpeg can read: ffprobe gave no description of it") from None
    return parse_probe(raw, settings.media_max_duration_s)


def transcode_command(settings: Settings, source: Path, out: Path, info: Probe) -> list[str]:
    rungs = ladder(info.height)
    n = len(rungs)
    split = f"[0:v]split={n}" + "".join(f"[s{i}]" for i in range(n))
    scales = [f"[s{i}]scale=-2:{h}[v{i}]" for i, (h, _, _) in enumerate(rungs)]
    cmd = [
        settings.media_ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-i", str(source),
        "-progress", "pipe:1", "-nostats", "-filter_complex", ";".join([split, *scales]),
    ]  # fmt: skip
    if settings.media_ffmpeg_threads:
        cmd += ["-threads", str(settings.media_ffmpeg_threads)]
    streams = []
    for i, (h, vkbps, akbps) in enumerate(rungs):
        cmd += ["-map", f"[v{i}]", f"-c:v:{i}", "libx264", f"-b:v:{i}", f"{vkbps}k",
                f"-maxrate:v:{i}", f"{int(vkbps * 1.07)}k", f"-bufsize:v:{i}", f"{vkbps * 2}k"]  # fmt: skip
        entry = f"v:{i}"
        if info.has_audio:
            cmd += ["-map", "0:a:0", f"-c:a:{i}", "aac", f"-b:a:{i}", f"{akbps}k", f"-ac:a:{i}", "2"]
            entry += f",a:{i}"
        streams.append(f"{entry},name:{h}p")
    cmd += [
        "-preset", "veryfast", "-profile:v", "main", "-pix_fmt", "yuv420p", "-sc_threshold", "0",
        "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_S})",
        "-f", "hls", "-hls_time", str(SEGMENT_S), "-hls_playlist_type", "vod", "-hls_flags", "independent_segments",
        "-hls_segment_filename", str(out / "%v" / "segment_%05d.ts"), "-master_pl_name", "master.m3u8",
        "-var_stream_map", " ".join(streams), str(out / "%v" / "index.m3u8"),
    ]  # fmt: skip
    return cmd


async def _run(cmd: list[str], on_time: Any = None) -> None:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=_die_with_parent
    )
    stderr = bytearray()

    async def drain() -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(65536):
            stderr.extend(chunk[: max(0, 65536 - len(stderr))])

    drainer = asyncio.create_task(drain())
    try:
        assert proc.stdout is not None
        async for line in proc.stdout:
            key, _, value = line.decode(errors="replace").strip().partition("=")
            if on_time is not None and key == "out_time_us" and value.isdigit():
                await on_time(int(value) / 1e6)
        await proc.wait()
        await drainer
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        drainer.cancel()
        raise
    if proc.returncode != 0:
        lines = stderr.decode(errors="replace").strip().splitlines()
        raise JobFailed(f"ffmpeg could not transcode the video: {lines[-1] if lines else f'exit {proc.returncode}'}")


async def transcode_lecture(ctx: JobContext) -> Finish:
    """The ``lecture_video`` job: probe, transcode to the ladder, poster; then point the lecture at it."""
    settings = ctx.core.settings
    upload_id = uuid.UUID(ctx.params["upload_id"])
    # A lecture's new video, or a lecture draft (a live session's recording) published as a new lecture.
    draft_id = uuid.UUID(ctx.params["draft_id"]) if ctx.params.get("draft_id") else None
    lecture_id = uuid.UUID(ctx.params["lecture_id"]) if draft_id is None else uuid.uuid5(draft_id, "lecture")
    async with ctx.upload_copy(upload_id) as source:  # removed when the block ends (an S3 bucket's copy)
        await ctx.report(0.0, "probe")
        info = await probe(settings, source)
        out = await ctx.storage.fresh_output_dir(ctx.id)
        await ctx.report(0.01, "transcode")

        async def on_time(seconds: float) -> None:
            await ctx.report(0.01 + 0.94 * min(seconds / info.duration_s, 1.0), "transcode")

        await _run(transcode_command(settings, source, out, info), on_time)
        await ctx.report(0.96, "poster")
        at = min(1.0, info.duration_s / 2)
        poster = out / "poster.jpg"
        scale = f"scale=-2:{min(info.height, 720)}"
        await _run([settings.media_ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-ss", f"{at:.3f}",
                    "-i", str(source), "-frames:v", "1", "-vf", scale, str(poster)])  # fmt: skip
    await ctx.report(0.97, "publish")

    async def publishing(fraction: float) -> None:
        await ctx.report(0.97 + 0.02 * fraction, "publish")

    await ctx.storage.publish_output(ctx.id, publishing)  # to the S3 bucket when there is one (same keys on a retry)
    rungs = [f"{h}p" for h, _, _ in ladder(info.height)]
    base = f"{settings.base_url}/api/v1/media/{ctx.id}"
    result = {
        "lecture_id": str(lecture_id), "master_url": f"{base}/master.m3u8", "poster_url": f"{base}/poster.jpg",
        "duration_s": round(info.duration_s, 3), "renditions": rungs,
        "source": {"width": info.width, "height": info.height},
    }  # fmt: skip

    published: list[Tx] = []

    async def apply(conn: Connection) -> None:
        if draft_id is not None:
            from media import drafts  # (drafts starts these jobs: imported here, not at the top)

            tx = Tx(conn)
            await drafts.become_lecture(tx, draft_id, lecture_id, str(result["master_url"]), info.duration_s)
            published.append(tx)
        else:
            updated = await conn.fetchval(
                "UPDATE lectures SET media_kind = 'hls', media_url = $2, duration_s = $3 WHERE id = $1 RETURNING id",
                lecture_id, result["master_url"], info.duration_s,
            )  # fmt: skip
            if updated is None:
                raise JobFailed("the lecture was deleted while its video was being processed")
        await conn.execute("DELETE FROM uploads WHERE id = $1", upload_id)

    async def after() -> None:
        await ctx.storage.remove_upload(upload_id)
        for tx in published:  # the learners' new_lecture notifications
            for topic, payload, every_node in tx.events:
                await ctx.core.bus.publish(topic, payload, every_node=every_node)

    return Finish(result, apply, after)


# --- unused ladders ----------------------------------------------------------------------------------

# A ladder is in use while its own lecture points at its master playlist (media/playback.py serves it only then).
_IN_USE = """EXISTS (SELECT 1 FROM lectures l WHERE l.id = (j.result->>'lecture_id')::uuid
                                               AND l.media_url = j.result->>'master_url')"""
_LADDERS = "j.kind = 'lecture_video' AND j.state = 'succeeded' AND j.output_removed_at IS NULL"


async def remove_unused_ladders(core: Core, storage: Storage, keep_s: float, batch: int = 100) -> int:
    """The media sweep's part for ladders: a ladder first found unused is marked, one used again is unmarked, and
    one unused for ``keep_s`` loses its files (each in a transaction that locks its job row first, so a lecture
    pointed back at it at that moment either keeps it or is refused: ``core_api.media_urls.ensure_ladder_kept``).
    Returns how many ladders went. Nodes may sweep at once: a job row locked by another is skipped."""
    async with core.pool.acquire() as conn:
        await conn.execute(f"UPDATE jobs j SET ladder_unused_since = now() WHERE {_LADDERS} "
                           f"AND j.ladder_unused_since IS NULL AND NOT {_IN_USE}")  # fmt: skip
        await conn.execute(f"UPDATE jobs j SET ladder_unused_since = NULL WHERE {_LADDERS} "
                           f"AND j.ladder_unused_since IS NOT NULL AND {_IN_USE}")  # fmt: skip
        due = await conn.fetch(
            f"SELECT j.id FROM jobs j WHERE {_LADDERS} AND j.ladder_unused_since <= now() - make_interval(secs => $1)"
            " ORDER BY j.ladder_unused_since LIMIT $2",
            keep_s, batch,
        )  # fmt: skip
    removed = 0
    for row in due:
        removed += await _remove_ladder(core, storage, row["id"])
    return removed


async def _remove_ladder(core: Core, storage: Storage, job_id: uuid.UUID) -> bool:
    """Remove one unused ladder's files; False if it is in use again, another node has it, or removing failed."""
    try:
        async with core.transaction() as tx:
            locked = await tx.conn.fetchval(
                f"SELECT j.id FROM jobs j WHERE j.id = $1 AND {_LADDERS} FOR UPDATE SKIP LOCKED", job_id
            )
            # The lock first, then the check in a statement of its own: it sees any lecture change that committed
            # while the lock was awaited.
            if locked is None or await tx.conn.fetchval(f"SELECT {_IN_USE} FROM jobs j WHERE j.id = $1", job_id):
                return False
            await tx.conn.execute("UPDATE jobs SET output_removed_at = now() WHERE id = $1", job_id)
            # Inside the transaction: if the files (or objects) cannot go, the ladder is not marked removed.
            await storage.remove_output(job_id)
    except Exception:
        log.exception("media: could not remove the unused ladder of job %s; trying again later", job_id)
        return False
    return True


# --- REST -------------------------------------------------------------------------------------------

api = Api()


class LectureMediaIn(Input):
    upload_id: uuid.UUID = Field(description="A finished upload of yours (tus, `/api/v1/uploads`).")


@api.route(
    "POST",
    "/lectures/{lecture_id}/media",
    summary="Make an uploaded video the lecture's HLS ladder (a background job)",
    tag="lectures",
    description="The course's owner or an admin, with a finished upload of their own (resumable uploads: tus "
    "1.0 at `/api/v1/uploads`, see docs/media.md). Answers 202 with the job; follow it with `GET /jobs/{id}` or "
    "the `job:progress` Socket.IO event. The job probes the file (not a video: the job fails saying so), "
    "transcodes it to an HLS ladder no higher than the source (1080p/720p/480p/360p, H.264/AAC, 6 s segments), "
    "makes a poster, then sets the lecture's `media_kind` to `hls`, its `media_url` to the master playlist and "
    "its duration, and deletes the upload. One video job per lecture at a time (409); at most "
    "`STUDYHALL_MEDIA_JOBS_PER_USER` jobs of a user queued or running (429).",
    body=LectureMediaIn,
    response=JobOut,
    status=202,
    roles=("instructor", "admin"),
    errors=(409, 429),
)
async def start_lecture_video(call: Call) -> Reply:
    core = core_of(call)
    user, lecture_id = call.me, call.params["lecture_id"]
    upload = await call.request.app[UPLOADS].finished(user, call.body.upload_id)
    limit = core.settings.media_jobs_per_user
    async with core.transaction() as tx:
        lecture, course = await visible_lecture(tx.conn, user, lecture_id)
        await writable_course(tx.conn, user, course["id"])  # an archived course's lectures stay as they are
        busy = await tx.conn.fetchval(
            """SELECT count(*) FROM jobs
               WHERE kind = $1 AND state IN ('queued', 'running') AND params->>'lecture_id' = $2""",
            KIND, str(lecture_id),
        )  # fmt: skip
        if busy:
            raise conflict("this lecture's video is already being processed: wait for that job, or cancel it")
        await tx.conn.execute("SELECT pg_advisory_xact_lock(hashtext('media-jobs:' || $1::uuid::text))", user.id)
        active = int(
            await tx.conn.fetchval(
                "SELECT count(*) FROM jobs WHERE owner_id = $1 AND state IN ('queued', 'running')", user.id
            )
        )
        if active >= limit:
            raise too_many(active, limit)
        row = await enqueue(tx.conn, KIND, user.id, {"lecture_id": str(lecture["id"]), "upload_id": str(upload.id)})
    runner = call.request.app.get(JOBS)
    if runner is not None:
        runner.submit(row["id"])
    return Reply(job_out(row), status=202)
