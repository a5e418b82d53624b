"""Signed, expiring playback URLs for the HLS ladders studyhall serves itself (``/api/v1/media/{job}/...``).

A player (hls.js, a plain ``<video>``, Safari's own HLS) fetches playlists and segments without an
``Authorization`` header, so the lecture's media URL handed to someone allowed to play it carries a token
in its query: ``?token=<user>.<expires>.<signature>``, an HMAC-SHA256 of the job, the user and the expiry
under a key derived from the token signing secret (``STUDYHALL_JWT_SECRET`` or the generated one). The
token is bound to one ladder (a token for another job is refused) and one user (whose access is checked
again on every request, media/playback.py), and it expires ``STUDYHALL_MEDIA_PLAYBACK_TOKEN_S`` plus the
lecture's duration after it was handed out: long enough to press play and watch straight through, short
enough that a copied URL soon stops working. Playlists are served with the token added to every URL in
them, so hls.js carries it to each variant playlist and segment.

Only URLs of this server's own ladders are signed (``STUDYHALL_PUBLIC_URL/api/v1/media/<job>/master.m3u8``);
a lecture pointing elsewhere keeps its URL as it is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from core_api.db import Connection
from core_api.errors import conflict
from core_api.settings import Settings

MEDIA_PATH = "/api/v1/media/"
TOKEN_PARAM = "token"
_TOKEN = re.compile(r"([0-9a-f]{32})\.([0-9]{1,12})\.([A-Za-z0-9_-]{22})")
_MASTER = re.compile(r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/master\.m3u8")
MAX_TOKEN_CHARS = 80


class TokenRefused(Exception):
    """The token is malformed, forged, for another ladder, or expired (the message says which)."""


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at: datetime | None
    """When the URL's token expires; None for a URL that is not one of this server's ladders."""


class PlaybackSigner:
    """Signs and checks playback tokens for one server's settings (held by :class:`core_api.context.Core`)."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.jwt_key().encode()
        self._key = hmac.new(secret, b"studyhall media playback v1", hashlib.sha256).digest()
        self._prefix = settings.base_url + MEDIA_PATH
        self.ttl_s = settings.media_playback_token_s

    def _signature(self, job_id: uuid.UUID, user_id: uuid.UUID, expires: int) -> str:
        mac = hmac.new(self._key, job_id.bytes + user_id.bytes + str(expires).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:16]).rstrip(b"=").decode()

    def token(self, job_id: uuid.UUID, user_id: uuid.UUID, expires: int) -> str:
        """The token for ``user_id`` to play ladder ``job_id`` until ``expires`` (Unix seconds)."""
        return f"{user_id.hex}.{expires}.{self._signature(job_id, user_id, expires)}"

    def verify(self, token: str, job_id: uuid.UUID, now: float) -> uuid.UUID:
        """The user the token was given to, if it is genuine, for ``job_id`` and not expired at ``now``."""
        match = _TOKEN.fullmatch(token) if len(token) <= MAX_TOKEN_CHARS else None
        if match is None:
            raise TokenRefused("the playback token is malformed")
        user_hex, expires_s, signature = match.groups()
        user_id, expires = uuid.UUID(hex=user_hex), int(expires_s)
        if not hmac.compare_digest(self._signature(job_id, user_id, expires), signature):
            raise TokenRefused("the playback token is not valid for this video")
        if expires <= now:
            raise TokenRefused("the playback token has expired: load the lecture again for a fresh URL")
        return user_id

    def ladder_of(self, url: str) -> uuid.UUID | None:
        """The job whose ladder ``url`` is the master playlist of, if it is one of this server's; else None."""
        if not url.startswith(self._prefix):
            return None
        match = _MASTER.fullmatch(url[len(self._prefix) :])
        return uuid.UUID(match.group(1)) if match else None

    def sign(self, url: str, user_id: uuid.UUID, duration_s: float, now: datetime) -> SignedUrl:
        """``url`` as ``user_id`` may play it: this server's ladders with a token valid for the token
        lifetime plus ``duration_s``; any other URL unchanged."""
        job_id = self.ladder_of(url)
        if job_id is None:
            return SignedUrl(url, None)
        expires = math.ceil(now.timestamp() + self.ttl_s + max(duration_s, 0.0))
        return SignedUrl(
            f"{url}?{TOKEN_PARAM}={self.token(job_id, user_id, expires)}", datetime.fromtimestamp(expires, UTC)
        )


def unsigned(settings: Settings, url: str) -> str:
    """A media URL as stored: a signed URL of this server's ladder without its token (an editor that sends
    back what it was given must not store a token that will expire)."""
    prefix = settings.base_url + MEDIA_PATH
    if url.startswith(prefix) and "?" in url:
        return url.split("?", 1)[0]
    return url


async def ensure_ladder_kept(conn: Connection, job_id: uuid.UUID) -> None:
    """Inside the transaction that points a lecture at ladder ``job_id``: 409 if its files were removed (it went
    unused for ``STUDYHALL_MEDIA_LADDER_KEEP_S``, media/video.py ``remove_unused_ladders``). The share lock keeps
    the sweep from removing it until that transaction ends."""
    removed = await conn.fetchval(
        "SELECT output_removed_at IS NOT NULL FROM jobs WHERE id = $1 AND kind = 'lecture_video' FOR SHARE", job_id
    )
    if removed:
        raise conflict("that video's files were removed after it went unused: upload the video again")
