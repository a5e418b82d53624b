"""Profiles: a bio and a picture (core_api/accounts/avatar.py, PATCH /me). Pictures are made by ffmpeg in the
test and re-encoded by the server's ffmpeg; against real Postgres."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from realtime.app import create_app
from tests.conftest import ApiClient, make_settings


def picture(tmp_path: Path, size: str = "640x360", ext: str = "jpg") -> bytes:
    out = tmp_path / f"pic-{size}.{ext}"
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}",
            "-frames:v",
            "1",
            str(out),
        ],
        check=True,
    )
    return out.read_bytes()


def dimensions(data: bytes) -> tuple[int, int, str]:
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=width,height,codec_name", "-of", "json", "-"],
        input=data, capture_output=True, check=True,
    )  # fmt: skip
    (stream,) = json.loads(probe.stdout)["streams"]
    return stream["width"], stream["height"], stream["codec_name"]


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "gif"])
async def test_a_picture_becomes_a_fresh_square_png_that_others_can_see(
    api: ApiClient, tmp_path: Path, ext: str
) -> None:
    user, other = await api.user(), await api.user()
    status, me = await api.call("PUT", "/me/avatar", user, data=picture(tmp_path, ext=ext))
    assert status == 200, me
    url = me["avatar_url"]
    assert url.startswith(f"/api/v1/users/{user.id}/avatar?v=")
    resp = await api.http.get(url, headers=other.headers)
    assert resp.status == 200 and resp.content_type == "image/png"
    assert resp.headers["Cache-Control"].startswith("public")
    body = await resp.read()
    assert dimensions(body) == (256, 256, "png")
    again = await api.http.get(url, headers={**other.headers, "If-None-Match": resp.headers["ETag"]})
    assert again.status == 304
    assert (await api.http.get(url)).status == 200  # public, so that an <img> shows it
    status, profile = await api.call("GET", f"/users/{user.id}/profile", other)
    assert status == 200 and profile["avatar_url"] == url

    # A new picture is a new URL; removing it leaves none.
    status, newer = await api.call("PUT", "/me/avatar", user, data=picture(tmp_path, "100x300", "png"))
    assert status == 200 and newer["avatar_url"] != url
    status, gone = await api.call("DELETE", "/me/avatar", user)
    assert status == 200 and gone["avatar_url"] is None
    assert (await api.http.get(url, headers=other.headers)).status == 404


async def test_what_is_not_a_picture_is_refused(aiohttp_client: Any, database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, avatar_max_bytes=50_000, avatar_changes_per_hour=2)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    user = await api.user()
    status, body = await api.call("PUT", "/me/avatar", user, data=b"just some text, not an image")
    assert status == 400 and "not a PNG, JPEG, WebP or GIF" in body["error"]["message"]
    status, body = await api.call("PUT", "/me/avatar", user, data=b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 100)
    assert status == 400 and "not a picture we can read" in body["error"]["message"]
    status, _ = await api.call("PUT", "/me/avatar", user, data=b"\xff\xd8\xff" + b"\x00" * 60_000)
    assert status == 413
    assert (await api.call("PUT", "/me/avatar", user))[0] == 400  # no body
    small = picture(tmp_path, "64x64", "png")
    assert [(await api.call("PUT", "/me/avatar", user, data=small))[0] for _ in range(3)] == [200, 200, 429]


async def test_a_bio_is_saved_and_shown(api: ApiClient) -> None:
    user, other = await api.user(), await api.user()
    status, me = await api.call("PATCH", "/me", user, json={"bio": "  I teach graphs.\nAsk me anything.  "})
    assert status == 200 and me["bio"] == "I teach graphs.\nAsk me anything."
    status, profile = await api.call("GET", f"/users/{user.id}/profile", other)
    assert profile["bio"] == "I teach graphs.\nAsk me anything." and profile["avatar_url"] is None
    assert (await api.call("PATCH", "/me", user, json={"bio": "x" * 1001}))[0] == 400
    assert (await api.call("PATCH", "/me", user, json={"bio": "hidden\u202etext"}))[0] == 400
    assert (await api.call("PATCH", "/me", user, json={}))[0] == 400
    status, me = await api.call("PATCH", "/me", user, json={"bio": ""})
    assert status == 200 and me["bio"] == ""
    assert (await api.call("GET", "/users/00000000-0000-0000-0000-000000000000/profile", other))[0] == 404
