"""Signed, expiring playback URLs: the media URL REST hands to someone allowed to play a lecture's ladder
carries a token that a player without headers (hls.js, ``<video>``) follows through the master playlist,
the rung playlists and every segment; a token that is forged, expired, another ladder's, or whose user
may not watch (any more) is refused; nobody else gets a playable URL. Videos are made by ffmpeg."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from core_api.context import CORE
from realtime.app import create_app
from tests.conftest import Actor, ApiClient, make_settings
from tests.test_media_video import finished, lecture, make_video, upload
from tests.test_paywall import give_coins
from tests.watch_helpers import Open, fails, ok, state_with, watch_room

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (scripts/setup installs it)"
)

TOKEN_S = 120
HLS = "application/vnd.apple.mpegurl"


@pytest.fixture
async def api(aiohttp_client: Any, database_url: str, tmp_path: Path) -> ApiClient:
    settings = make_settings(database_url, tmp_path / "data", media_playback_token_s=TOKEN_S)
    return ApiClient(await aiohttp_client(create_app(settings)))


def local(url: str) -> str:
    """The path and query of an absolute URL (the test server listens on another port than the URL names)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def uris(playlist: str) -> list[str]:
    return [line for line in playlist.splitlines() if line and not line.startswith("#")]


async def priced_ladder(api: ApiClient, tmp_path: Path) -> tuple[Actor, Actor, Actor, str, dict[str, Any]]:
    """A priced course whose lecture is a 7 s 320x240 ladder, its owner, a buyer and a stranger:
    (teacher, buyer, stranger, lecture id, the succeeded job)."""
    teacher, buyer, stranger = await api.user("instructor"), await api.user(), await api.user()
    lecture_id = await lecture(api, teacher)
    upload_id = await upload(api, teacher, make_video(tmp_path / "p.mp4", 320, 240, seconds=7))
    _, job = await api.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": upload_id})
    done = await finished(api, teacher, job["id"])
    assert done["state"] == "succeeded", done
    _, lec = await api.call("GET", f"/lectures/{lecture_id}", teacher)
    assert (await api.call("POST", f"/courses/{lec['course_id']}/publish", teacher))[0] == 200
    assert (await api.call("PUT", f"/courses/{lec['course_id']}/price", teacher, json={"coins": 10}))[0] == 200
    await give_coins(api, buyer, 10)
    assert (await api.call("POST", f"/courses/{lec['course_id']}/buy", buyer))[0] == 201
    return teacher, buyer, stranger, lecture_id, done


async def test_a_signed_url_plays_the_whole_ladder_without_headers(api: ApiClient, tmp_path: Path) -> None:
    teacher, buyer, _stranger, lecture_id, job = await priced_ladder(api, tmp_path)
    before = datetime.now(UTC)
    status, lec = await api.call("GET", f"/lectures/{lecture_id}", buyer)
    assert status == 200 and lec["media_kind"] == "hls"
    url = lec["media_url"]
    assert url.startswith(job["result"]["master_url"] + "?token=")
    # The URL lasts the token lifetime plus the lecture's duration (7 s), counted from when it was handed out.
    expires = datetime.fromisoformat(lec["media_url_expires_at"])
    assert 0 <= (expires - before).total_seconds() - (TOKEN_S + 7) <= 3
    token = parse_qs(urlsplit(url).query)["token"][0]
    assert buyer.id.replace("-", "") in token  # bound to the buyer ...
    _, theirs = await api.call("GET", f"/lectures/{lecture_id}", teacher)
    assert theirs["media_url"] != url  # ... the owner gets their own
    # The listing signs the same way.
    _, listing = await api.call("GET", f"/courses/{lec['course_id']}/lectures", buyer)
    assert listing["items"][0]["media_url"].startswith(job["result"]["master_url"] + "?token=")

    # A player with no Authorization header follows master -> rung playlist -> segments, each carrying the token.
    master = await api.http.get(local(url))
    assert master.status == 200 and master.content_type == HLS
    assert master.headers["Cache-Control"].startswith("private")
    variants = uris(await master.text())
    assert variants == [f"240p/index.m3u8?token={token}"]
    base = local(job["result"]["master_url"]).rsplit("/", 1)[0]
    rung = await api.http.get(f"{base}/{variants[0]}")
    assert rung.status == 200 and rung.content_type == HLS
    segments = uris(await rung.text())
    assert segments == [f"segment_0000{i}.ts?token={token}" for i in range(2)]  # 6 s + 1 s
    sizes = []
    for segment in segments:
        resp = await api.http.get(f"{base}/240p/{segment}")
        assert resp.status == 200 and resp.content_type == "video/mp2t"
        assert resp.headers["Cache-Control"] == "private, max-age=86400, immutable"
        sizes.append(len(await resp.read()))
    assert all(size > 0 and size % 188 == 0 for size in sizes)  # whole MPEG-TS packets
    # Range requests with the token (players and seeking), and the poster.
    part = await api.http.get(f"{base}/240p/{segments[1]}", headers={"Range": "bytes=188-375"})
    assert part.status == 206 and len(await part.read()) == 188
    assert part.headers["Content-Range"] == f"bytes 188-375/{sizes[1]}"
    poster = await api.http.get(f"{base}/poster.jpg?token={token}")
    assert poster.status == 200 and poster.content_type == "image/jpeg"
    # Without a token or a Bearer header: 401, as before.
    assert (await api.http.get(f"{base}/240p/segment_00000.ts")).status == 401

    # An editor that sends back the signed URL it was shown stores the playlist's own URL, not the token.
    status, _patched = await api.call(
        "PATCH", f"/lectures/{lecture_id}", teacher, json={"media_url": theirs["media_url"]}
    )
    assert status == 200
    stored = await api.app[CORE].pool.fetchval("SELECT media_url FROM lectures WHERE id = $1", uuid.UUID(lecture_id))
    assert stored == job["result"]["master_url"]
    assert (await api.http.get(local(url))).status == 200  # the ladder is still the lecture's


async def test_forged_expired_and_other_ladders_tokens_are_refused(api: ApiClient, tmp_path: Path) -> None:
    teacher, buyer, stranger, lecture_id, job = await priced_ladder(api, tmp_path)
    signer = api.app[CORE].playback
    job_id, buyer_id = uuid.UUID(job["id"]), uuid.UUID(buyer.id)
    base = local(job["result"]["master_url"]).rsplit("/", 1)[0]
    files = ["master.m3u8", "240p/index.m3u8", "240p/segment_00000.ts", "poster.jpg"]

    async def status_of(token: str, name: str = "master.m3u8") -> int:
        resp = await api.http.get(f"{base}/{name}", params={"token": token})
        return resp.status

    good = signer.token(job_id, buyer_id, int(time.time()) + 60)
    assert await status_of(good) == 200
    user_hex, expires, signature = good.split(".")
    refused = {
        "expired": signer.token(job_id, buyer_id, int(time.time()) - 1),
        "another ladder's": signer.token(uuid.uuid4(), buyer_id, int(time.time()) + 60),
        "a later expiry, same signature": f"{user_hex}.{int(expires) + 3600}.{signature}",
        "another user's name on it": f"{uuid.UUID(teacher.id).hex}.{expires}.{signature}",
        "a flipped signature": f"{user_hex}.{expires}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}",
        "signed with another secret": other_secret_token(job_id, buyer_id, int(expires)),
        "garbage": "not-a-token",
        "empty": "",
        "overlong": "a" * 5000,
    }
    for why, token in refused.items():
        for name in files:
            assert await status_of(token, name) == 403, (why, name)
    # A genuine token for someone who may not watch (a stranger to the priced course): refused too.
    strangers = signer.token(job_id, uuid.UUID(stranger.id), int(time.time()) + 60)
    for name in files:
        assert await status_of(strangers, name) == 403, name
    # Access is checked on every request: the ladder stops playing when the lecture no longer uses it.
    body = {"media_kind": "video", "media_url": "https://cdn.example.com/other.mp4"}
    assert (await api.call("PATCH", f"/lectures/{lecture_id}", teacher, json=body))[0] == 200
    assert await status_of(good) == 404


def other_secret_token(job_id: uuid.UUID, user_id: uuid.UUID, expires: int) -> str:
    from core_api.media_urls import PlaybackSigner
    from core_api.settings import Settings

    other = Settings(jwt_secret="another-secret-another-secret-another-secret", redis_url=None)
    return PlaybackSigner(other).token(job_id, user_id, expires)


async def test_an_unenrolled_learner_gets_no_playable_url(api: ApiClient, tmp_path: Path) -> None:
    _teacher, buyer, stranger, lecture_id, job = await priced_ladder(api, tmp_path)
    _, lec = await api.call("GET", f"/lectures/{lecture_id}", stranger)
    assert (lec["media_url"], lec["locked"], lec["media_url_expires_at"]) == (None, True, None)
    _, listing = await api.call("GET", f"/courses/{lec['course_id']}/lectures", stranger)
    assert [item["media_url"] for item in listing["items"]] == [None]
    # The buyer's URL handed on to the stranger still plays only as the buyer (it names them), and the
    # stranger's own credentials open nothing.
    base = local(job["result"]["master_url"]).rsplit("/", 1)[0]
    for name in ("master.m3u8", "240p/index.m3u8", "240p/segment_00000.ts", "240p/segment_00001.ts"):
        assert (await api.http.get(f"{base}/{name}", headers=stranger.headers)).status == 403, name
    # A buyer who leaves the course (refunded) loses the ladder at the next request, token or not.
    _, mine = await api.call("GET", f"/lectures/{lecture_id}", buyer)
    assert (await api.http.get(local(mine["media_url"]))).status == 200
    await api.app[CORE].pool.execute(
        "DELETE FROM enrollments WHERE user_id = $1 AND course_id = $2", uuid.UUID(buyer.id),
        uuid.UUID(lec["course_id"]),
    )  # fmt: skip
    assert (await api.http.get(local(mine["media_url"]))).status == 403


async def test_a_watch_party_hands_the_ladder_to_entitled_viewers_only(
    api: ApiClient, tmp_path: Path, viewers: Open
) -> None:
    teacher, buyer, stranger, lecture_id, job = await priced_ladder(api, tmp_path)
    room = await watch_room(api, teacher, buyer, stranger)
    t, b, s = await viewers(teacher, room), await viewers(buyer, room), await viewers(stranger, room)
    await fails(s, "watch:load", {"room_id": room, "media": {"lecture_id": lecture_id}}, "forbidden")
    loaded = (await ok(t, "watch:load", {"room_id": room, "media": {"lecture_id": lecture_id}}))["state"]
    # The party's state names the ladder (not a signed URL: one state goes to many viewers, and it outlives any
    # token); entitled players ask REST for their own signed URL (or send their Bearer token).
    master = job["result"]["master_url"]
    assert (loaded["media"]["url"], loaded["media"]["kind"]) == (master, "hls")
    got = await b.inbox.wait_for("watch:state", state_with(room, version=loaded["version"]))
    assert got["media"]["url"] == master
    seen = await s.inbox.wait_for("watch:state", state_with(room, version=loaded["version"]))
    assert seen["media"]["url"] is None and seen["media"]["locked"] is True
    synced = (await ok(s, "watch:sync", {"room_id": room}))["state"]
    assert synced["media"]["url"] is None
    assert job["id"] not in json.dumps(s.inbox.events)  # nothing the stranger was sent names the ladder
    # The state's URL alone plays nothing: no credentials, 401; the stranger's, 403.
    assert (await api.http.get(local(master))).status == 401
    assert (await api.http.get(local(master), headers=stranger.headers)).status == 403


def test_every_uri_of_a_playlist_carries_the_token() -> None:
    from media.playback import with_token

    playlist = (
        '#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-MAP:URI="init.mp4"\n'
        '#EXT-X-KEY:METHOD=AES-128,URI="key.bin?v=2",IV=0x1\n#EXTINF:6.0,\nsegment_00000.ts\n\n'
        "#EXTINF:1.0,\n  segment_00001.ts  \n#EXT-X-ENDLIST\n"
    )
    assert with_token(playlist, "u.1.s").splitlines() == [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        '#EXT-X-MAP:URI="init.mp4?token=u.1.s"',
        '#EXT-X-KEY:METHOD=AES-128,URI="key.bin?v=2&token=u.1.s",IV=0x1',
        "#EXTINF:6.0,",
        "segment_00000.ts?token=u.1.s",
        "",
        "#EXTINF:1.0,",
        "segment_00001.ts?token=u.1.s",
        "#EXT-X-ENDLIST",
    ]
