"""Serving a lecture's HLS ladder, only to those allowed to watch the lecture (the paywall holds).

``GET /api/v1/media/{job_id}/{file}`` serves ``master.m3u8``, ``poster.jpg``, ``<rung>/index.m3u8`` and
``<rung>/segment_NNNNN.ts`` of a succeeded lecture video job whose ladder the lecture still uses. Each
request is checked like the lecture's media URL in REST (core_api/paywall.py): the caller must see the
course, and a priced course's lectures play only for enrolled learners, its owner and admins; anyone else
gets 404 (not visible) or 403 (locked, saying how to open it).

Credentials, either of:

- ``?token=`` — the signed, expiring playback token of the lecture's media URL as REST hands it to those
  allowed to play it (core_api/media_urls.py). The token names its user, whose access is checked as above
  on every request; a malformed, forged, expired or other ladder's token is 403. Playlists are served with
  the token added to every URI in them, so a player that sends no headers (hls.js, ``<video>``) carries it
  to each variant playlist and segment.
- ``Authorization: Bearer`` — an access token (API clients, hls.js with ``xhrSetup``).

Files are sent by the storage (media/storage.py ``send``): from the media directory with aiohttp's
``FileResponse`` (range requests on segments and the poster), or, with ``STUDYHALL_S3_BUCKET``, streamed from
the bucket or redirected to a presigned URL (media/s3.py). Playlists are small and rewritten per token, so
they are always sent whole by studyhall. Everything is ``Cache-Control: private``.

Behind nginx (``STUDYHALL_MEDIA_ACCEL_PREFIX`` set to an internal location aliasing the media directory), a
file that is sent as it is (segments, the poster, a playlist asked for with a Bearer header) is answered,
after the same checks, with an empty body and ``X-Accel-Redirect: <prefix>outputs/<job id>/<file>``: nginx
sends the file itself (ranges included), keeping this response's content type and cache headers.
"""

from __future__ import annotations

import re
import time
import uuid

from aiohttp import web

from core_api.auth import authenticate, current_principal
from core_api.context import CORE
from core_api.courses import visible_lecture
from core_api.errors import AppError, forbidden, not_found
from core_api.http import PREFIX, Principal
from core_api.media_urls import TOKEN_PARAM, TokenRefused
from core_api.paywall import media_access
from media.jobs import JOBS
from media.video import KIND

_FILE = re.compile(r"(master\.m3u8|poster\.jpg|[0-9]{2,4}p/(index\.m3u8|segment_[0-9]{5}\.ts))")
_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t", ".jpg": "image/jpeg"}


_URI_ATTR = re.compile(r'URI="([^"]*)"')


def with_token(playlist: str, token: str) -> str:
    """The playlist with ``token`` added to every URI in it: the variant playlists or segments on their own
    lines, and ``URI="..."`` attributes (keys, init segments, alternate renditions)."""
    param = f"{TOKEN_PARAM}={token}"

    def signed(uri: str) -> str:
        return f"{uri}{'&' if '?' in uri else '?'}{param}" if uri else uri

    lines = []
    for line in playlist.splitlines():
        if line.startswith("#"):
            line = _URI_ATTR.sub(lambda m: f'URI="{signed(m.group(1))}"', line)
        elif line.strip():
            line = signed(line.strip())
        lines.append(line)
    return "\n".join(lines) + "\n"


async def viewer(request: web.Request, job_id: uuid.UUID) -> tuple[Principal, str | None]:
    """Who is asking, by the playback token in the URL or else the Bearer header; and the token, if any."""
    token = request.query.get(TOKEN_PARAM)
    if token is None:
        return await authenticate(request), None
    core = request.app[CORE]
    try:
        user_id = core.playback.verify(token, job_id, time.time())
    except TokenRefused as refused:
        raise forbidden(str(refused)) from None
    user = await current_principal(core, user_id)
    if user is None:
        raise forbidden("the playback token's account no longer exists")
    return user, token


async def serve_media(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    try:
        job_id = uuid.UUID(request.match_info["job_id"])
    except ValueError:
        raise not_found("media") from None
    if not _FILE.fullmatch(name):
        raise not_found("media")
    user, token = await viewer(request, job_id)
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
    storage = request.app[JOBS].storage
    suffix = "." + name.rsplit(".", 1)[1]
    if suffix == ".m3u8" and token is not None:
        try:
            text = (await storage.read_output(job_id, name)).decode()
        except FileNotFoundError:
            raise not_found("media") from None
        headers = {"Cache-Control": "private, max-age=60"}
        return web.Response(text=with_token(text, token), content_type=_TYPES[suffix], headers=headers)
    # Private: behind the access check, so shared caches must not keep it; segments never change.
    cache = "private, max-age=86400, immutable" if suffix in (".ts", ".jpg") else "private, max-age=60"
    headers = {"Content-Type": _TYPES[suffix], "Cache-Control": cache}
    try:  # from the media directory (or nginx, STUDYHALL_MEDIA_ACCEL_PREFIX), or the S3 bucket
        return await storage.send(request, f"outputs/{job_id}/{name}", headers)
    except FileNotFoundError:
        raise not_found("media") from None


def mount(app: web.Application) -> None:
    app.router.add_get(PREFIX + "/media/{job_id}/{file:.+}", serve_media)
