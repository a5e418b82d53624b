"""Files attached to assignment submissions: a learner attaches files to their own submission; the learner and
the course's staff (its owner, admins) download them; nobody else learns they exist.

- ``POST /api/v1/submissions/{submission_id}/files?name=<file name>``: the submission's author, still enrolled;
  the body is the file's bytes (``Content-Length`` required), streamed to media storage (``files/<id>``), never
  held in memory. The name's extension must be one of ``STUDYHALL_ASSIGNMENT_FILE_TYPES``; the stored content
  type is the one that extension stands for (what the browser claimed is ignored). Limits:
  ``STUDYHALL_ASSIGNMENT_FILE_MAX_BYTES`` per file and ``STUDYHALL_ASSIGNMENT_FILE_QUOTA_BYTES`` per learner
  (413), ``STUDYHALL_ASSIGNMENT_FILES_PER_SUBMISSION`` (409), ``STUDYHALL_ASSIGNMENT_FILES_PER_HOUR`` (429).
- ``GET /api/v1/submission-files/{file_id}``: the file, with its content type, ``Content-Disposition:
  attachment``, ``X-Content-Type-Options: nosniff`` and range requests (206).
- ``DELETE /api/v1/submission-files/{file_id}``: the author (204); the bytes go too.

Headers and raw bytes, like tus: these routes are outside the OpenAPI table (docs/api.md describes them);
submissions list their files (``files`` of ``SubmissionOut``).
"""

from __future__ import annotations

import mimetypes
import unicodedata
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web

from core_api.auth import authenticate
from core_api.context import CORE, audit
from core_api.courses import visible_course
from core_api.db import Connection, Record
from core_api.enrollments import enrollment_of, is_staff
from core_api.errors import AppError, ErrorCode, conflict, forbidden, invalid, not_found, refuse_past_limit
from core_api.http import PREFIX, Principal
from core_api.settings import Settings
from media.jobs import JOBS
from media.storage import Storage, TooMuchData

NAME_MAX = 200
CHUNK = 256 * 1024
_EXTRA_TYPES = {
    "md": "text/markdown",
    "ipynb": "application/x-ipynb+json",
    "py": "text/x-python",
    "ts": "text/plain",  # TypeScript, not an MPEG transport stream
    "c": "text/x-c",
    "h": "text/x-c",
    "cpp": "text/x-c++",
    "java": "text/x-java",
    "js": "text/javascript",
    "webp": "image/webp",
}


def content_type_of(extension: str) -> str:
    return _EXTRA_TYPES.get(extension) or mimetypes.types_map.get(f".{extension}") or "application/octet-stream"


def clean_name(raw: str | None, allowed: list[str]) -> tuple[str, str]:
    """The file's name as stored (checked) and its extension."""
    if raw is None or not raw.strip():
        raise invalid("name the file: ?name=<file name>", field="name")
    name = unicodedata.normalize("NFC", raw.strip())
    if len(name) > NAME_MAX:
        raise invalid(f"a file name has at most {NAME_MAX} characters", field="name")
    if any(c in name for c in "/\\") or any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in name):
        raise invalid("a file name cannot hold slashes or control characters", field="name")
    extension = name.rsplit(".", 1)[1].lower() if "." in name.strip(".") else ""
    if extension not in allowed:
        raise invalid(
            f"files of this type cannot be attached; allowed: {', '.join(sorted(allowed))}",
            field="name", extension=extension,
        )  # fmt: skip
    return name, extension


def file_out(row: Record) -> dict[str, object]:
    return {
        "id": str(row["id"]),
        "submission_id": str(row["submission_id"]),
        "name": row["filename"],
        "content_type": row["content_type"],
        "size": row["size"],
        "created_at": row["created_at"].isoformat(),
        "url": f"{PREFIX}/submission-files/{row['id']}",
    }


def _storage(request: web.Request) -> Storage:
    return request.app[JOBS].storage


async def _author_submission(conn: Connection, user: Principal, submission_id: uuid.UUID) -> Record:
    """The user's own submission, to attach to (404 for what they may not see; 403 for staff, and for a
    learner no longer enrolled)."""
    sub = await conn.fetchrow(
        "SELECT s.id, s.user_id, a.course_id FROM submissions s JOIN assignments a ON a.id = s.assignment_id"
        " WHERE s.id = $1",
        submission_id,
    )
    if sub is None:
        raise not_found("submission")
    try:
        course = await visible_course(conn, user, sub["course_id"])
    except AppError:
        raise not_found("submission") from None
    if sub["user_id"] != user.id:
        if is_staff(course, user):
            raise forbidden("only the submission's author attaches files to it")
        raise not_found("submission")
    if await enrollment_of(conn, user.id, course["id"]) is None:
        raise forbidden("enroll in this course to attach files")
    return sub


async def attach(request: web.Request) -> web.StreamResponse:
    core = request.app[CORE]
    settings = core.settings
    user = await authenticate(request)
    try:
        submission_id = uuid.UUID(request.match_info["submission_id"])
    except ValueError:
        raise not_found("submission") from None
    name, extension = clean_name(request.query.get("name"), settings.assignment_file_types)
    length = request.content_length
    if length is None:
        raise invalid("send the file with a Content-Length header")
    if length > settings.assignment_file_max_bytes:
        raise AppError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"the file has {length} bytes; an attachment may have at most {settings.assignment_file_max_bytes}",
        )
    async with core.pool.acquire() as conn:
        sub = await _author_submission(conn, user, submission_id)
        await _check_room(conn, settings, user, submission_id, length)
    file_id = uuid.uuid4()
    storage = _storage(request)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(CHUNK):
            yield chunk

    try:
        size = await storage.put_file(file_id, body(), length)
    except TooMuchData:
        raise invalid("the body is longer than its Content-Length") from None
    try:
        if size != length:
            raise invalid(f"the body ended after {size} of {length} bytes")
        async with core.transaction() as tx:
            # One learner's attachments one at a time: two cannot both pass the checks below.
            await tx.conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('submission_files:' || $1::uuid::text))", user.id
            )
            await _author_submission(tx.conn, user, submission_id)
            await _check_room(tx.conn, settings, user, submission_id, length)
            row = await tx.conn.fetchrow(
                """INSERT INTO submission_files (id, submission_id, owner_id, filename, content_type, size)
                   VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
                file_id, sub["id"], user.id, name, content_type_of(extension), size,
            )  # fmt: skip
            assert row is not None
            await audit(tx, user.id, "submission.file_attached", "submission", submission_id,
                        file_id=str(file_id), bytes=size)  # fmt: skip
    except BaseException:
        await storage.remove_file(file_id)
        raise
    return web.json_response(file_out(row), status=201)


async def _check_room(
    conn: Connection, settings: Settings, user: Principal, submission_id: uuid.UUID, length: int
) -> None:
    count = await conn.fetchval("SELECT count(*) FROM submission_files WHERE submission_id = $1", submission_id)
    if count >= settings.assignment_files_per_submission:
        raise conflict(f"a submission holds at most {settings.assignment_files_per_submission} files")
    used = await conn.fetchval(
        "SELECT coalesce(sum(size), 0)::bigint FROM submission_files WHERE owner_id = $1", user.id
    )
    if used + length > settings.assignment_file_quota_bytes:
        raise AppError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"your attachments would take {used + length} bytes; you may hold at most "
            f"{settings.assignment_file_quota_bytes} (delete some)",
            {"used": used, "quota": settings.assignment_file_quota_bytes},
        )
    recent = await conn.fetch(
        "SELECT created_at FROM submission_files WHERE owner_id = $1 AND created_at > now() - interval '1 hour'"
        " ORDER BY created_at",
        user.id,
    )
    per_hour = settings.assignment_files_per_hour
    refuse_past_limit([r["created_at"] for r in recent], per_hour, timedelta(hours=1),
                      f"you may attach {per_hour} files an hour; try again later")  # fmt: skip


async def _readable_file(conn: Connection, user: Principal, file_id: uuid.UUID) -> Record:
    """The file, if the user is its author or the course's staff; 404 for anyone else."""
    row = await conn.fetchrow(
        "SELECT f.*, a.course_id FROM submission_files f JOIN submissions s ON s.id = f.submission_id"
        " JOIN assignments a ON a.id = s.assignment_id WHERE f.id = $1",
        file_id,
    )
    if row is None:
        raise not_found("file")
    if row["owner_id"] == user.id:
        return row
    try:
        course = await visible_course(conn, user, row["course_id"])
    except AppError:
        raise not_found("file") from None
    if not is_staff(course, user):
        raise not_found("file")
    return row


def _file_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["file_id"])
    except ValueError:
        raise not_found("file") from None


def disposition(name: str) -> str:
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


async def download(request: web.Request) -> web.StreamResponse:
    user = await authenticate(request)
    file_id = _file_id(request)
    async with request.app[CORE].pool.acquire() as conn:
        row = await _readable_file(conn, user, file_id)
    headers = {
        "Content-Type": row["content_type"],
        "Content-Disposition": disposition(row["filename"]),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
        "Cache-Control": "private, no-cache",
    }
    try:  # from the media directory (behind nginx: nginx sends it), or the S3 bucket
        return await _storage(request).send(request, f"files/{file_id}", headers)
    except FileNotFoundError:
        raise not_found("file") from None


async def delete(request: web.Request) -> web.StreamResponse:
    user = await authenticate(request)
    file_id = _file_id(request)
    core = request.app[CORE]
    async with core.transaction() as tx:
        row = await _readable_file(tx.conn, user, file_id)
        if row["owner_id"] != user.id:
            raise forbidden("only the file's author may delete it")
        await tx.conn.execute("DELETE FROM submission_files WHERE id = $1", file_id)
        await audit(tx, user.id, "submission.file_deleted", "submission", row["submission_id"], file_id=str(file_id))
    await _storage(request).remove_file(file_id)
    return web.Response(status=204)


def mount(app: web.Application) -> None:
    """The attachment routes (outside the OpenAPI route table: raw bytes, see docs/api.md)."""
    attach.streams_body = True  # type: ignore[attr-defined]  # STUDYHALL_MAX_BODY_BYTES does not apply
    app.router.add_post(PREFIX + "/submissions/{submission_id}/files", attach)
    app.router.add_get(PREFIX + "/submission-files/{file_id}", download)
    app.router.add_delete(PREFIX + "/submission-files/{file_id}", delete)
