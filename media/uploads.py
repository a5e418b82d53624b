"""Resumable uploads over tus 1.0 at ``/api/v1/uploads``: the service, and the HTTP handlers around it.

- Who: instructors and admins create uploads (others get 403); an upload is its creator's alone (anyone
  else, even an admin, gets 404 for it).
- Limits: ``Upload-Length`` up to ``STUDYHALL_MEDIA_UPLOAD_MAX_BYTES`` (tus ``Tus-Max-Size``, default
  2 GiB), and the uploads a user holds at once add up to at most ``STUDYHALL_MEDIA_QUOTA_BYTES``; past
  either, 413. A user holds at most ``STUDYHALL_MEDIA_UPLOADS_PER_USER`` uploads (429 past it). A PATCH
  body is streamed to storage in chunks, never held in memory, whatever its size (the request body limit
  ``STUDYHALL_MAX_BODY_BYTES`` does not apply to it).
- One PATCH at a time per upload: the writer holds a lease in the row (another gets 423). The offset
  recorded in Postgres is the authority: a PATCH writes from there (cutting whatever a dropped request
  half-wrote past it), and when it ends, however it ends, the bytes that reached storage are recorded.
  With an S3 bucket (media/s3.py) the upload is a multipart upload started at creation (its id in the row,
  ``store_ref``), so a PATCH may go to any node; what is recorded is what the bucket holds for good.
- Expiry: an unfinished upload untouched for ``STUDYHALL_MEDIA_UPLOAD_EXPIRY_S`` is deleted by the sweep
  (tus ``Upload-Expires``). A finished upload stays until its owner deletes it or a job consumes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from core_api.auth import authenticate
from core_api.context import Core
from core_api.db import Record
from core_api.errors import AppError, ErrorCode, conflict, forbidden, invalid, not_found
from core_api.http import PREFIX, Principal
from media import tus
from media.storage import Rewound, Storage, TooMuchData

log = logging.getLogger(__name__)

UPLOADERS = frozenset({"instructor", "admin"})
READ_CHUNK = 256 * 1024
WRITER_LEASE_S = 60.0
"""A PATCH's hold on its upload; renewed every third of it while bytes keep coming."""


class UnsupportedMediaType(AppError):
    def __init__(self, got: str) -> None:
        super().__init__(ErrorCode.INVALID_INPUT, f"a PATCH body must be sent as {tus.CONTENT_TYPE}, not {got!r}")

    @property
    def status(self) -> int:
        return 415


class Locked(AppError):
    """Another PATCH holds the upload (HTTP 423, as tusd answers; tus clients retry it)."""

    def __init__(self) -> None:
        super().__init__(
            ErrorCode.CONFLICT,
            "another request is writing to this upload; wait for it to end, then HEAD for the offset",
        )

    @property
    def status(self) -> int:
        return 423


@dataclass(frozen=True)
class UploadState:
    id: uuid.UUID
    length: int
    offset: int
    metadata: dict[str, str]
    expires_at: datetime | None

    @property
    def complete(self) -> bool:
        return self.offset == self.length


def _state(row: Record) -> UploadState:
    return UploadState(row["id"], row["length"], row["received"], dict(row["metadata"]), row["expires_at"])


class Uploads:
    """The uploads service (one per app; the Celery worker does not need it)."""

    def __init__(self, core: Core, storage: Storage) -> None:
        self.core = core
        self.storage = storage
        self.settings = core.settings

    async def create(self, user: Principal, length: int, metadata: dict[str, str]) -> UploadState:
        if user.role not in UPLOADERS:
            raise forbidden("only instructors and admins upload media")
        limit = self.settings.media_upload_max_bytes
        if length > limit:
            raise AppError(ErrorCode.PAYLOAD_TOO_LARGE, f"Upload-Length {length} is over the limit of {limit} bytes")
        quota = self.settings.media_quota_bytes
        async with self.core.transaction() as tx:
            # One creation at a time per user, so that two at once cannot both fit the quota.
            await tx.conn.execute("SELECT pg_advisory_xact_lock(hashtext('media-quota:' || $1::uuid::text))", user.id)
            counts = await tx.conn.fetchrow(
                "SELECT count(*) AS n, coalesce(sum(length), 0) AS held FROM uploads WHERE owner_id = $1", user.id
            )
            assert counts is not None
            held, most = int(counts["held"]), self.settings.media_uploads_per_user
            if counts["n"] >= most:
                raise AppError(
                    ErrorCode.RATE_LIMITED,
                    f"you hold {counts['n']} uploads (at most {most}): finish or delete some first",
                )
            if held + length > quota:
                raise AppError(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"this upload would take your uploads to {held + length} bytes, over your quota of {quota} bytes:"
                    " delete some (DELETE /api/v1/uploads/{id})",
                    {"held_bytes": held, "quota_bytes": quota},
                )
            upload_id = uuid.uuid4()
            ref = await self.storage.start_upload(upload_id, length)  # S3: the multipart upload
            try:
                row = await tx.conn.fetchrow(
                    """INSERT INTO uploads (id, owner_id, length, metadata, expires_at, completed_at, store_ref)
                       VALUES ($1, $2, $3::bigint, $4, now() + make_interval(secs => $5),
                               CASE WHEN $3::bigint = 0 THEN now() END, $6)
                       RETURNING *""",
                    upload_id, user.id, length, metadata, float(self.settings.media_upload_expiry_s), ref,
                )  # fmt: skip
            except BaseException:
                await asyncio.shield(self.storage.remove_upload(upload_id))
                raise
        assert row is not None
        return _state(row)

    async def status(self, user: Principal, upload_id: uuid.UUID) -> UploadState:
        row = await self.core.pool.fetchrow(
            """SELECT * FROM uploads WHERE id = $1 AND owner_id = $2
               AND (completed_at IS NOT NULL OR expires_at > now())""",
            upload_id, user.id,
        )  # fmt: skip
        if row is None:
            raise not_found("upload")
        return _state(row)

    async def write(
        self, user: Principal, upload_id: uuid.UUID, offset: int, body: AsyncIterator[bytes], declared: int | None
    ) -> UploadState:
        """Append a PATCH body at ``offset``; the upload's new state (its offset is what was stored)."""
        writer = uuid.uuid4()
        row = await self.core.pool.fetchrow(
            """UPDATE uploads SET writer = $3, writer_until = now() + make_interval(secs => $4)
               WHERE id = $1 AND owner_id = $2 AND (completed_at IS NOT NULL OR expires_at > now())
                 AND (writer IS NULL OR writer_until < now())
               RETURNING *""",
            upload_id, user.id, writer, WRITER_LEASE_S,
        )  # fmt: skip
        if row is None:
            await self.status(user, upload_id)  # 404 if it is not there (or not theirs)
            raise Locked()
        try:
            state = _state(row)
            if offset != state.offset:
                raise conflict(
                    f"Upload-Offset {offset} does not match the upload's offset {state.offset}:"
                    " HEAD, then resume from there",
                    offset=state.offset,
                )
            remaining = state.length - state.offset
            if declared is not None and declared > remaining:
                raise AppError(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"the body ({declared} bytes) goes past Upload-Length: {remaining} bytes are left",
                )
            if remaining == 0:
                return state
            size = state.offset
            ref = row["store_ref"]
            try:
                size = await self.storage.append(
                    upload_id, state.offset, self._renewing(upload_id, writer, body), state.length, ref
                )
            except TooMuchData as exc:
                size = exc.size
                raise AppError(
                    ErrorCode.PAYLOAD_TOO_LARGE, f"the body goes past Upload-Length ({state.length} bytes)"
                ) from None
            except Rewound as exc:  # the store lost bytes that were recorded: resume from what it has
                size = exc.size
                raise conflict(
                    f"the store holds {exc.size} bytes of this upload: HEAD, then resume from there",
                    offset=exc.size,
                ) from None
            except BaseException:  # a dropped connection: keep what arrived
                size = await self.storage.upload_size(upload_id, ref, state.length)
                raise
            finally:
                # Shielded: a dropped connection cancels the handler, and what arrived must still be recorded.
                recorded = await asyncio.shield(self._record(upload_id, writer, min(size, state.length)))
                state = recorded or state
            return state
        finally:
            await asyncio.shield(
                self.core.pool.execute(
                    "UPDATE uploads SET writer = NULL, writer_until = NULL WHERE id = $1 AND writer = $2",
                    upload_id,
                    writer,
                )
            )

    async def _renewing(
        self, upload_id: uuid.UUID, writer: uuid.UUID, body: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        renew_at = time.monotonic() + WRITER_LEASE_S / 3
        async for chunk in body:
            yield chunk
            if time.monotonic() >= renew_at:
                renew_at = time.monotonic() + WRITER_LEASE_S / 3
                await self.core.pool.execute(
                    "UPDATE uploads SET writer_until = now() + make_interval(secs => $3) WHERE id = $1 AND writer = $2",
                    upload_id, writer, WRITER_LEASE_S,
                )  # fmt: skip

    async def _record(self, upload_id: uuid.UUID, writer: uuid.UUID, size: int) -> UploadState | None:
        row = await self.core.pool.fetchrow(
            """UPDATE uploads SET received = $3::bigint, writer = NULL, writer_until = NULL,
                      completed_at = CASE WHEN $3::bigint = length THEN now() END,
                      expires_at = CASE WHEN $3::bigint = length THEN NULL
                                        ELSE now() + make_interval(secs => $4) END
               WHERE id = $1 AND writer = $2 RETURNING *""",
            upload_id, writer, size, float(self.settings.media_upload_expiry_s),
        )  # fmt: skip
        if row is None:  # deleted while we wrote: what we wrote goes too
            await self.storage.remove_upload(upload_id)
            return None
        return _state(row)

    async def terminate(self, user: Principal, upload_id: uuid.UUID) -> None:
        deleted = await self.core.pool.fetchval(
            "DELETE FROM uploads WHERE id = $1 AND owner_id = $2 RETURNING id", upload_id, user.id
        )
        if deleted is None:
            raise not_found("upload")
        await self.storage.remove_upload(upload_id)

    async def finished(self, user: Principal, upload_id: uuid.UUID) -> UploadState:
        """A finished upload of the user's, for a job to consume (404 if not theirs, 409 if unfinished)."""
        state = await self.status(user, upload_id)
        if not state.complete:
            raise conflict(f"the upload is not finished ({state.offset} of {state.length} bytes)")
        return state

    async def sweep(self) -> int:
        """Delete unfinished uploads past their expiry (and their bytes); how many went."""
        gone = await self.core.pool.fetch(
            """DELETE FROM uploads WHERE completed_at IS NULL AND expires_at < now()
                 AND (writer IS NULL OR writer_until < now()) RETURNING id"""
        )
        for row in gone:
            await self.storage.remove_upload(row["id"])
        return len(gone)


# --- HTTP (tus) ------------------------------------------------------------------------------------

UPLOADS = web.AppKey("media_uploads", Uploads)
View = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _tus_view(handler: View) -> View:
    """Answer every tus request with the tus headers, errors included (``{"error": ...}`` bodies)."""

    async def view(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except AppError as exc:
            response = web.json_response({"error": exc.to_dict()}, status=exc.status)
            if isinstance(exc, tus.VersionMismatch):
                response.headers["Tus-Version"] = tus.VERSION
        response.headers.update(tus.base_headers())
        return response

    view.__name__ = handler.__name__
    return view


def _upload_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["upload_id"])
    except ValueError:
        raise not_found("upload") from None


def _state_headers(state: UploadState) -> dict[str, str]:
    headers = {"Upload-Offset": str(state.offset), "Upload-Length": str(state.length)}
    if state.expires_at is not None:
        headers["Upload-Expires"] = tus.http_date(state.expires_at)
    return headers


async def tus_options(request: web.Request) -> web.StreamResponse:
    settings = request.app[UPLOADS].settings
    return web.Response(
        status=204,
        headers={
            "Tus-Version": tus.VERSION,
            "Tus-Extension": tus.EXTENSIONS,
            "Tus-Max-Size": str(settings.media_upload_max_bytes),
        },
    )


async def create_upload(request: web.Request) -> web.StreamResponse:
    user = await authenticate(request)
    tus.check_version(request.headers)
    if "Upload-Defer-Length" in request.headers:
        raise invalid("Upload-Defer-Length is not supported: send Upload-Length")
    if request.content_length:
        raise invalid("creation-with-upload is not supported: create with an empty body, then PATCH")
    length = tus.non_negative(request.headers, "Upload-Length")
    metadata = tus.parse_metadata(request.headers.get("Upload-Metadata"))
    state = await request.app[UPLOADS].create(user, length, metadata)
    headers = _state_headers(state)
    headers["Location"] = f"{PREFIX}/uploads/{state.id}"
    return web.Response(status=201, headers=headers)


async def upload_offset(request: web.Request) -> web.StreamResponse:
    user = await authenticate(request)
    tus.check_version(request.headers)
    state = await request.app[UPLOADS].status(user, _upload_id(request))
    headers = _state_headers(state)
    if state.metadata:
        headers["Upload-Metadata"] = tus.encode_metadata(state.metadata)
    return web.Response(status=200, headers=headers)


async def write_upload(request: web.Request) -> web.StreamResponse:
    user = await authenticate(request)
    tus.check_version(request.headers)
    upload_id = _upload_id(request)
    if request.content_type != tus.CONTENT_TYPE:
        raise UnsupportedMediaType(request.content_type)
    offset = tus.non_negative(request.headers, "Upload-Offset")
    body = request.content.iter_chunked(READ_CHUNK)
    state = await request.app[UPLOADS].write(user, upload_id, offset, body, request.content_length)
    headers = _state_headers(state)
    del headers["Upload-Length"]
    return web.Response(status=204, headers=headers)


async def delete_upload(request: web.Request) -> web.StreamResponse:
    user = await authenticate(request)
    tus.check_version(request.headers)
    await request.app[UPLOADS].terminate(user, _upload_id(request))
    return web.Response(status=204)


def mount(app: web.Application) -> None:
    """The tus routes (outside the OpenAPI route table: tus is headers and raw bytes, see docs/media.md)."""
    patch = _tus_view(write_upload)
    patch.streams_body = True  # type: ignore[attr-defined]
    routes: list[tuple[str, str, View]] = [
        ("OPTIONS", "/uploads", _tus_view(tus_options)),
        ("POST", "/uploads", _tus_view(create_upload)),
        ("OPTIONS", "/uploads/{upload_id}", _tus_view(tus_options)),
        ("HEAD", "/uploads/{upload_id}", _tus_view(upload_offset)),
        ("PATCH", "/uploads/{upload_id}", patch),
        ("DELETE", "/uploads/{upload_id}", _tus_view(delete_upload)),
    ]
    for method, path, view in routes:
        app.router.add_route(method, PREFIX + path, view)
