"""nginx ``X-Accel-Redirect`` (STUDYHALL_MEDIA_ACCEL_PREFIX): after the access check, studyhall answers a
media file with the internal location nginx serves it from instead of streaming it; tested without nginx (the
header and where it points), with ffmpeg-made ladders against real Postgres."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core_api.context import CORE
from realtime.app import create_app
from tests.conftest import ApiClient, make_settings
from tests.test_media_playback import local, uris
from tests.test_media_video import finished, lecture, make_video, upload
from tests.test_submission_files import PDF, attach, course_with_submission

PREFIX = "/_media/"


async def accel_api(aiohttp_client: Any, database_url: str, tmp_path: Path, prefix: str | None) -> ApiClient:
    settings = make_settings(database_url, tmp_path / "data", media_accel_prefix=prefix)
    return ApiClient(await aiohttp_client(create_app(settings)))


async def test_segments_and_posters_go_to_nginx_after_the_check(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    api = await accel_api(aiohttp_client, database_url, tmp_path, PREFIX)
    media = api.app[CORE].settings.media_root
    teacher, stranger = await api.user("instructor"), await api.user()
    lecture_id = await lecture(api, teacher)  # a draft course: only its owner may watch
    upload_id = await upload(api, teacher, make_video(tmp_path / "v.mp4", 320, 240, seconds=7))
    _, job = await api.call("POST", f"/lectures/{lecture_id}/media", teacher, json={"upload_id": upload_id})
    done = await finished(api, teacher, job["id"])
    assert done["state"] == "succeeded", done
    _, lec = await api.call("GET", f"/lectures/{lecture_id}", teacher)

    # The signed master playlist is still rewritten per token by studyhall (the token goes on every URI) ...
    resp = await api.http.get(local(lec["media_url"]))
    assert resp.status == 200 and "X-Accel-Redirect" not in resp.headers
    variant = uris(await resp.text())[0]
    resp = await api.http.get(f"/api/v1/media/{job['id']}/{variant}")
    assert resp.status == 200 and "X-Accel-Redirect" not in resp.headers
    segment = uris(await resp.text())[0]
    # ... and a segment goes to nginx: an empty body, the internal location of the very file, the headers kept.
    resp = await api.http.get(f"/api/v1/media/{job['id']}/{variant.rsplit('/', 1)[0]}/{segment}")
    assert resp.status == 200
    location = resp.headers["X-Accel-Redirect"]
    rung = variant.split("/")[0]
    assert location == f"{PREFIX}outputs/{job['id']}/{rung}/{segment.split('?')[0]}"
    assert await resp.read() == b""
    assert resp.headers["Content-Type"] == "video/mp2t"
    assert resp.headers["Cache-Control"] == "private, max-age=86400, immutable"
    assert (media / location.removeprefix(PREFIX)).stat().st_size > 0
    # The poster and, with a Bearer header, a playlist as it is stored.
    resp = await api.http.get(f"/api/v1/media/{job['id']}/poster.jpg", headers=teacher.headers)
    assert resp.headers["X-Accel-Redirect"] == f"{PREFIX}outputs/{job['id']}/poster.jpg"
    assert resp.headers["Content-Type"] == "image/jpeg"
    resp = await api.http.get(f"/api/v1/media/{job['id']}/master.m3u8", headers=teacher.headers)
    assert resp.headers["X-Accel-Redirect"] == f"{PREFIX}outputs/{job['id']}/master.m3u8"

    # Someone who may not watch gets the refusal, never a location.
    for path in (f"{rung}/{segment.split('?')[0]}", "poster.jpg", "master.m3u8"):
        resp = await api.http.get(f"/api/v1/media/{job['id']}/{path}", headers=stranger.headers)
        assert resp.status == 404 and "X-Accel-Redirect" not in resp.headers
        resp = await api.http.get(f"/api/v1/media/{job['id']}/{path}")
        assert resp.status == 401 and "X-Accel-Redirect" not in resp.headers


async def test_submission_files_go_to_nginx_and_without_the_prefix_studyhall_sends_them(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    for prefix in (PREFIX, None):
        api = await accel_api(aiohttp_client, database_url, tmp_path / str(bool(prefix)), prefix)
        owner, learner, _, sub = await course_with_submission(api)
        status, file = await attach(api, learner, sub, "report.pdf", PDF)
        assert status == 201, file
        resp = await api.http.get(file["url"], headers=owner.headers)
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/pdf"
        assert resp.headers["Content-Disposition"].startswith('attachment; filename="report.pdf"')
        if prefix:
            assert resp.headers["X-Accel-Redirect"] == f"{PREFIX}files/{file['id']}"
            assert await resp.read() == b""
        else:
            assert "X-Accel-Redirect" not in resp.headers
            assert await resp.read() == PDF
        stranger = await api.user()
        resp = await api.http.get(file["url"], headers=stranger.headers)
        assert resp.status == 404 and "X-Accel-Redirect" not in resp.headers
