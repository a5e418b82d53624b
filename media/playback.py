"""Serving a lecture's HLS ladder, only to those allowed to watch the lecture (the paywall holds).

``GET /api/v1/media/{job_id}/{file}`` serves ``master.m3u8``, ``poster.jpg``, ``<rung>/index.m3u8`` and
``<rung>/segment_NNNNN.ts`` of a succeeded lecture video job whose ladder the lecture still uses. Each
request is checked like the lecture's media URL in REST (core_api/paywall.py): the caller must see the
course, and a priced course's lectures play only for enrolled learners, its owner and admins; anyone else
gets 404 (not visible) or 403 (locked, saying how to open it). Range requests and content types come from
aiohttp's ``FileResponse``.

Credentials: the ``Authorization: Bearer`` header (hls.js sends it with ``xhrSetup``). Signed, expiring
URLs that a plain ``<video>`` or hls.js can fetch without headers, and nginx ``X-Accel-Redirect``, are not
built yet (docs/media.md).
"""

from __future__ import annotations

import re
import uuid

from aiohttp import web

from core_api.auth import authenticate
from core_api.context import CORE
from core_api.courses import visible_lecture
from core_api.errors import AppError, forbidden, not_found
from core_api.http import PREFIX
from core_api.paywall import media_access
from media.jobs import JOBS
from media.video import KIND

_FILE = re.compile(r"(master\.m3u8|poster\.jpg|[0-9]{2,4}p/(index\.m3u8|segment_[0-9]{5}\.ts))")
_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t", ".jpg": "image/jpeg"}


async def serve_media(request: web.Request) -> web.StreamResponse:
    user = await authenticate(request)
    name = request.match_info["file"]
    try:
        job_id = uuid.UUID(request.match_info["job_id"])
    except ValueError:
        raise not_found("media") from None
    if not _FILE.fullmatch(name):
        raise not_found("media")
    core = request.app[CORE]
    async with core.pool.acquire() as conn:
        job = await conn.fetchrow(
            "SELECT result FROM jobs WHERE id = $1 AND kind = $2 AND state = 'succeeded'", job_id, KIND
        )
        if job is None:
            raise not_found("media")
        try:
            lecture, course = await visible_lecture(conn, user, uuid.UUID(job["result"]["lecture_id"]))
        except AppError:
            raise not_found("media") from None
        if lecture["media_url"] != job["result"]["master_url"]:
            raise not_found("media")  # a ladder the lecture no longer uses
        access = await media_access(conn, user, course)
    if access.locked:
        raise forbidden(access.reason or "you may not play this lecture")
    path = request.app[JOBS].storage.output_dir(job_id) / name
    suffix = "." + name.rsplit(".", 1)[1]
    # Private: behind the access check, so shared caches must not keep it; segments never change.
    cache = "private, max-age=86400, immutable" if suffix in (".ts", ".jpg") else "private, max-age=60"
    return web.FileResponse(path, headers={"Content-Type": _TYPES[suffix], "Cache-Control": cache})


def mount(app: web.Application) -> None:
    app.router.add_get(PREFIX + "/media/{job_id}/{file:.+}", serve_media)
