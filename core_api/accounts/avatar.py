"""Profile pictures: ``PUT /me/avatar`` (an image's bytes), ``DELETE /me/avatar``, ``GET /users/{id}/avatar``,
and ``GET /users/{id}/profile`` (what anyone signed in may see of a person).

An uploaded picture is never served as it came: ffmpeg decodes it (PNG, JPEG, WebP or GIF, recognised by
its first bytes, at most ``STUDYHALL_AVATAR_MAX_BYTES``), crops it to a square and writes a fresh 256x256
PNG — no metadata (location, camera) survives, and a file that only pretends to be an image is refused with a
clear 400. The PNG is kept in Postgres (every node serves it) and served to anyone who has its URL (an
``<img>`` cannot send a token; a profile picture is public, as on most platforms) with an ETag; its URL
carries a version that changes with each new picture. ffmpeg runs at most ``STUDYHALL_AVATAR_ENCODERS`` at a
time per node, each for at most ``STUDYHALL_AVATAR_ENCODE_TIMEOUT_S``; a
user changes their picture at most ``STUDYHALL_AVATAR_CHANGES_PER_HOUR`` times an hour (429).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from datetime import datetime, timedelta

from aiohttp import web
from pydantic import BaseModel

from core_api.auth import TAG, UserOut, account, avatar_url, user_out
from core_api.context import Core, audit, core_of, rights_changed
from core_api.errors import AppError, ErrorCode, invalid, not_found, refuse_past_limit, unauthorized
from core_api.http import Api, Call

api = Api()
SIZE = 256
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)
_ENCODERS: dict[int, asyncio.Semaphore] = {}  # per event loop (tests run several apps on several loops)


def sniff(data: bytes) -> str | None:
    """The image format by its first bytes, or None (only these four are taken)."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


async def reencode(data: bytes, timeout_s: float, encoders: int) -> bytes:
    """A fresh 256x256 PNG from ``data`` (ffmpeg); raises ``invalid`` if it is not a picture ffmpeg can read."""
    loop_id = id(asyncio.get_running_loop())
    slots = _ENCODERS.setdefault(loop_id, asyncio.Semaphore(encoders))
    async with slots:
        proc = await asyncio.create_subprocess_exec(
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-i", "pipe:0", "-frames:v", "1",
            "-vf", f"scale={SIZE}:{SIZE}:force_original_aspect_ratio=increase,crop={SIZE}:{SIZE}",
            "-map_metadata", "-1", "-f", "image2", "-c:v", "png", "pipe:1",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(proc.communicate(data), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise invalid("this picture took too long to read; try a smaller one") from None
    if proc.returncode != 0 or not out.startswith(b"\x89PNG"):
        raise invalid("this file is not a picture we can read (PNG, JPEG, WebP or GIF)")
    return out


async def set_avatar(core: Core, call: Call) -> UserOut:
    settings = core.settings
    user = call.me
    if not call.request.can_read_body:
        raise invalid("send the picture's bytes as the request body")
    data = await call.request.read()  # the app's body limit applies (STUDYHALL_MAX_BODY_BYTES)
    if len(data) > settings.avatar_max_bytes:
        raise AppError(ErrorCode.PAYLOAD_TOO_LARGE, f"a picture may be at most {settings.avatar_max_bytes} bytes")
    if sniff(data) is None:
        raise invalid("this file is not a PNG, JPEG, WebP or GIF picture")
    recent = await core.pool.fetch(
        "SELECT created_at FROM audit_log WHERE actor_id = $1 AND action = 'user.avatar_changed'"
        " AND created_at > now() - interval '1 hour' ORDER BY created_at",
        user.id,
    )
    limit = settings.avatar_changes_per_hour
    refuse_past_limit(
        [r["created_at"] for r in recent], limit, timedelta(hours=1),
        f"you can change your picture {limit} times an hour; try again later",
    )  # fmt: skip
    image = await reencode(data, settings.avatar_encode_timeout_s, settings.avatar_encoders)
    async with core.transaction() as tx:
        await tx.conn.execute(
            "INSERT INTO avatars (user_id, image) VALUES ($1, $2)"
            " ON CONFLICT (user_id) DO UPDATE SET image = EXCLUDED.image, updated_at = now()",
            user.id,
            image,
        )
        await tx.conn.execute(
            "UPDATE users SET avatar_version = coalesce(avatar_version, 0) + 1 WHERE id = $1", user.id
        )
        await audit(tx, user.id, "user.avatar_changed", "user", user.id, bytes=len(image))
        rights_changed(tx, user.id)  # the user's open tabs hear me:changed
    row = await account(core, user.id)
    if row is None:
        raise unauthorized("account no longer exists")
    return user_out(row)


@api.route(
    "PUT",
    "/me/avatar",
    summary="Set your profile picture (the request body is the image: PNG, JPEG, WebP or GIF)",
    description="The body is the picture's bytes (any `Content-Type`), at most `STUDYHALL_AVATAR_MAX_BYTES` (413 "
    "over it). The server re-encodes it to a 256x256 PNG (cropped to a square, no metadata kept); a file that is "
    "not such a picture gets 400. At most `STUDYHALL_AVATAR_CHANGES_PER_HOUR` changes an hour (429). Answers the "
    "account with its new `avatar_url`.",
    tag=TAG,
    response=UserOut,
    errors=[413, 429],
)
async def put_avatar(call: Call) -> UserOut:
    return await set_avatar(core_of(call), call)


@api.route("DELETE", "/me/avatar", summary="Remove your profile picture", tag=TAG, response=UserOut)
async def delete_avatar(call: Call) -> UserOut:
    core = core_of(call)
    async with core.transaction() as tx:
        await tx.conn.execute("DELETE FROM avatars WHERE user_id = $1", call.me.id)
        await tx.conn.execute("UPDATE users SET avatar_version = NULL WHERE id = $1", call.me.id)
        rights_changed(tx, call.me.id)
    row = await account(core, call.me.id)
    if row is None:
        raise unauthorized("account no longer exists")
    return user_out(row)


class ProfileOut(BaseModel):
    id: uuid.UUID
    display_name: str
    role: str
    bio: str
    avatar_url: str | None
    created_at: datetime


@api.route(
    "GET",
    "/users/{user_id}/profile",
    summary="What anyone signed in may see of a person: name, role, bio, picture",
    tag=TAG,
    response=ProfileOut,
    errors=[404],
)
async def get_profile(call: Call) -> ProfileOut:
    row = await core_of(call).pool.fetchrow(
        "SELECT id, display_name, role, bio, avatar_version, created_at FROM users"
        " WHERE id = $1 AND deleted_at IS NULL",
        call.params["user_id"],
    )
    if row is None:
        raise not_found("user")
    return ProfileOut(
        id=row["id"], display_name=row["display_name"], role=row["role"], bio=row["bio"],
        avatar_url=avatar_url(row["id"], row["avatar_version"]), created_at=row["created_at"],
    )  # fmt: skip


async def serve_avatar(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/users/{user_id}/avatar``: the PNG (404 when there is none). Public, as profile pictures are
    on most platforms, so that an ``<img>`` shows it (it cannot send a token); the user chose to publish it."""
    from core_api.context import CORE

    try:
        user_id = uuid.UUID(request.match_info["user_id"])
    except ValueError:
        raise not_found("avatar") from None
    image = await request.app[CORE].pool.fetchval(
        "SELECT a.image FROM avatars a JOIN users u ON u.id = a.user_id WHERE a.user_id = $1 AND u.deleted_at IS NULL",
        user_id,
    )
    if image is None:
        raise not_found("avatar")
    etag = '"' + hashlib.sha256(image).hexdigest()[:20] + '"'
    headers = {"Cache-Control": "public, max-age=3600", "ETag": etag, "X-Content-Type-Options": "nosniff"}
    if etag in {t.strip() for t in request.headers.get("If-None-Match", "").split(",")}:
        return web.Response(status=304, headers=headers)
    return web.Response(body=bytes(image), content_type="image/png", headers=headers)


def mount(app: web.Application) -> None:
    """The picture itself is binary: a plain route (documented in docs/api.md, not in the OpenAPI table)."""
    app.router.add_get("/api/v1/users/{user_id}/avatar", serve_avatar)
