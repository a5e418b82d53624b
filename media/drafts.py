"""Lecture drafts: a live session's recording in a course, waiting for the course's staff to publish it.

A recording (``live:record``, :mod:`live.recordings`) of a session that belongs to a course is stored as a
finished upload and, in the same step, becomes a **draft** of that course. A draft is not a lecture: learners
never see it, and no lecture exists before its video is playable. Publishing it (``POST
/lecture-drafts/{id}/publish``) starts the ``lecture_video`` job on the recording (probe, H.264/AAC ladder,
poster, as for an uploaded video); when the job succeeds, in the transaction that records its success, the
lecture is added at the end of the course, the draft points at it, and the course's learners are told
(``new_lecture``) if the course is published. Why not a "draft" state on lectures: every query that lists
lectures (catalogue, progress, search, paywall, analytics) would have to learn to skip drafts, and a missed one
would show learners a lecture with nothing to play.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from core_api.announcements.fanout import notify_learners
from core_api.context import Tx, audit, core_of, new_id
from core_api.courses import lecture_count, owned_course, writable_course
from core_api.db import Connection
from core_api.errors import AppError, conflict, not_found
from core_api.http import Api, Call, Input, Reply
from media.jobs import JOBS, JobFailed, JobOut, enqueue, job_out, too_many
from media.video import KIND as VIDEO_KIND

api = Api()

TITLE_MAX = 200


class LectureDraftOut(BaseModel):
    id: uuid.UUID
    course_id: uuid.UUID
    title: str
    duration_s: float = Field(description="The recording's length in seconds.")
    live_session_id: uuid.UUID | None = Field(description="The live session it was recorded in.")
    created_by: uuid.UUID | None = Field(description="Who recorded it.")
    created_at: datetime
    state: str = Field(description="`draft`, `publishing` (its video job is queued or running) or `published`.")
    job_id: uuid.UUID | None = Field(description="The latest publishing job, if any (follow it at `/jobs/{id}`).")
    lecture_id: uuid.UUID | None = Field(description="The lecture it became (state `published`).")


class LectureDraftsOut(BaseModel):
    items: list[LectureDraftOut]


class PublishDraftIn(Input):
    title: str | None = Field(None, min_length=1, max_length=TITLE_MAX, description="The lecture's title "
                              "(default: the draft's).")  # fmt: skip


_COLUMNS = """d.id, d.course_id, d.title, d.duration_s, d.live_session_id, d.created_by, d.created_at, d.upload_id,
              d.lecture_id, j.id AS job_id, j.state AS job_state"""
_LATEST_JOB = """LEFT JOIN LATERAL (SELECT id, state FROM jobs WHERE kind = 'lecture_video'
                                    AND params->>'draft_id' = d.id::text ORDER BY created_at DESC LIMIT 1) j ON true"""


def _out(row: Any) -> dict[str, Any]:
    if row["lecture_id"] is not None:
        state = "published"
    elif row["job_state"] in ("queued", "running"):
        state = "publishing"
    else:
        state = "draft"
    return {k: row[k] for k in ("id", "course_id", "title", "duration_s", "live_session_id", "created_by",
                                "created_at", "job_id", "lecture_id")} | {"state": state}  # fmt: skip


async def create_draft(
    conn: Connection,
    *,
    course_id: uuid.UUID,
    upload_id: uuid.UUID,
    session_id: uuid.UUID,
    title: str,
    duration_s: float,
    created_by: uuid.UUID,
) -> uuid.UUID | None:
    """A recording of a course's live session becomes a draft of that course (called as it is stored)."""
    draft_id: uuid.UUID | None = await conn.fetchval(
        """INSERT INTO lecture_drafts (id, course_id, upload_id, live_session_id, title, duration_s, created_by)
           SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM courses WHERE id = $2) RETURNING id""",
        new_id(), course_id, upload_id, session_id, title[:TITLE_MAX] or "Recording", duration_s, created_by,
    )  # fmt: skip
    return draft_id  # None: the course was deleted meanwhile


async def become_lecture(tx: Tx, draft_id: uuid.UUID, lecture_id: uuid.UUID, url: str, duration_s: float) -> None:
    """The publishing job succeeded: the draft becomes a lecture at the end of its course (in the job's
    transaction). ``lecture_id`` is derived from the draft, so a retried job cannot add it twice."""
    draft = await tx.conn.fetchrow("SELECT * FROM lecture_drafts WHERE id = $1 FOR UPDATE", draft_id)
    if draft is None:
        raise JobFailed("the lecture draft was discarded while its video was being processed")
    course = await tx.conn.fetchrow(
        "SELECT id, title, status FROM courses WHERE id = $1 FOR UPDATE", draft["course_id"]
    )
    if course is None or course["status"] == "archived":
        raise JobFailed("the course was archived or deleted while the draft's video was being processed")
    position = await lecture_count(tx.conn, draft["course_id"])
    title = draft["title"]
    await tx.conn.execute(
        """INSERT INTO lectures (id, course_id, position, title, media_kind, media_url, duration_s)
           VALUES ($1, $2, $3, $4, 'hls', $5, $6)""",
        lecture_id, draft["course_id"], position, title, url, duration_s,
    )  # fmt: skip
    await tx.conn.execute(
        "UPDATE lecture_drafts SET lecture_id = $2, published_at = now() WHERE id = $1", draft_id, lecture_id
    )
    await tx.conn.execute("UPDATE courses SET updated_at = now() WHERE id = $1", draft["course_id"])
    if course["status"] == "published":
        payload = {"course_id": str(course["id"]), "course_title": course["title"], "lecture_id": str(lecture_id),
                   "title": title}  # fmt: skip
        await notify_learners(tx, course["id"], "new_lecture", payload)


@api.route(
    "GET",
    "/courses/{course_id}/lecture-drafts",
    summary="The course's lecture drafts (its live sessions' recordings)",
    tag="lectures",
    description="The course's owner or an admin. Newest first; a published draft says which lecture it became.",
    response=LectureDraftsOut,
    roles=("instructor", "admin"),
)
async def list_drafts(call: Call) -> LectureDraftsOut:
    core = core_of(call)
    course_id = call.params["course_id"]
    async with core.pool.acquire() as conn:
        await owned_course(conn, call.me, course_id)
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM lecture_drafts d {_LATEST_JOB} WHERE d.course_id = $1"
            " ORDER BY d.created_at DESC, d.id LIMIT 200",
            course_id,
        )
    return LectureDraftsOut(items=[LectureDraftOut(**_out(r)) for r in rows])


async def _draft(conn: Connection, call: Call, *, writable: bool, lock: bool = False) -> Any:
    """The draft with its latest job, or 404 for anyone who may not see it. ``lock`` (inside a transaction) takes
    the draft's row lock first, in its own statement, so the read that follows starts after any concurrent
    publish or discard has committed and sees its job: a lock taken by the read itself would leave the joined
    job from the read's earlier snapshot."""
    if lock:
        await conn.execute("SELECT 1 FROM lecture_drafts WHERE id = $1 FOR UPDATE", call.params["lecture_draft_id"])
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM lecture_drafts d {_LATEST_JOB} WHERE d.id = $1", call.params["lecture_draft_id"]
    )
    if row is None:
        raise not_found("lecture draft")
    try:
        if writable:
            await writable_course(conn, call.me, row["course_id"])
        else:
            await owned_course(conn, call.me, row["course_id"])
    except AppError as exc:  # someone else's course: the draft does not exist for them
        if exc.status in (403, 404):
            raise not_found("lecture draft") from exc
        raise
    return row


@api.route(
    "POST",
    "/lecture-drafts/{lecture_draft_id}/publish",
    summary="Publish a lecture draft: its video becomes a new lecture (a background job)",
    tag="lectures",
    description="The course's owner or an admin; the course must not be archived. Answers 202 with the "
    "`lecture_video` job (follow it at `/jobs/{id}` or by `job:progress`): the recording is transcoded to the "
    "HLS ladder, then the lecture is added at the end of the course and the course's learners are told. "
    "409 when it is already published or being published; 429 past `STUDYHALL_MEDIA_JOBS_PER_USER` jobs.",
    body=PublishDraftIn,
    response=JobOut,
    status=202,
    roles=("instructor", "admin"),
    errors=(409, 429),
)
async def publish_draft(call: Call) -> Reply:
    core = core_of(call)
    user = call.me
    async with core.transaction() as tx:
        draft = await _draft(tx.conn, call, writable=True, lock=True)
        if draft["lecture_id"] is not None:
            raise conflict("this draft is already a lecture")
        if draft["job_state"] in ("queued", "running"):
            raise conflict("this draft is already being published: wait for that job, or cancel it")
        if draft["upload_id"] is None:
            raise conflict("this draft's recording is gone")
        if call.body.title is not None:
            await tx.conn.execute("UPDATE lecture_drafts SET title = $2 WHERE id = $1", draft["id"], call.body.title)
        await tx.conn.execute("SELECT pg_advisory_xact_lock(hashtext('media-jobs:' || $1::uuid::text))", user.id)
        active = int(
            await tx.conn.fetchval(
                "SELECT count(*) FROM jobs WHERE owner_id = $1 AND state IN ('queued', 'running')", user.id
            )
        )
        if active >= core.settings.media_jobs_per_user:
            raise too_many(active, core.settings.media_jobs_per_user)
        params = {"draft_id": str(draft["id"]), "upload_id": str(draft["upload_id"])}
        row = await enqueue(tx.conn, VIDEO_KIND, user.id, params)
        await audit(tx, user.id, "lecture_draft.published", "course", draft["course_id"], draft_id=str(draft["id"]))
    runner = call.request.app.get(JOBS)
    if runner is not None:
        runner.submit(row["id"])
    return Reply(job_out(row), status=202)


@api.route(
    "DELETE",
    "/lecture-drafts/{lecture_draft_id}",
    summary="Discard a lecture draft",
    tag="lectures",
    description="The course's owner or an admin. The recording stays its recorder's upload (downloadable from "
    "the live session) until uploads expire; a published draft's lecture is not touched (delete the lecture "
    "for that). 409 while it is being published.",
    status=204,
    roles=("instructor", "admin"),
    errors=(409,),
)
async def discard_draft(call: Call) -> None:
    core = core_of(call)
    async with core.transaction() as tx:
        draft = await _draft(tx.conn, call, writable=False, lock=True)
        if draft["job_state"] in ("queued", "running"):
            raise conflict("this draft is being published: cancel that job first")
        await tx.conn.execute("DELETE FROM lecture_drafts WHERE id = $1", draft["id"])
        await audit(tx, call.me.id, "lecture_draft.discarded", "course", draft["course_id"], draft_id=str(draft["id"]))
