"""Lecture videos in a real browser: an instructor uploads a video through the course editor's file input
(tus-js-client, resumable: an upload cut by a reload carries on from where it stopped), watches the upload's
and then the processing job's progress, and the lecture plays from its HLS ladder; a file that is not a video
fails with the server's reason; a learner enrolled in the course plays the ladder through hls.js with the
signed URL (no Authorization header on any playlist or segment request).

Videos are made with ffmpeg in the test (lavfi test sources). The server's ``STUDYHALL_PUBLIC_URL`` is its own
address, so that the ladder's URLs (absolute, signed) point at it.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Request, Response, Route, expect

from core_api.context import CORE
from tests.browser.conftest import OpenPage, User, WebServer, ffmpeg, log_in, rest

# Transcoding takes a few seconds on a small, shared machine; uploads are throttled on purpose.
SLOW = 90_000


@pytest.fixture(scope="module")
def server(start_server: Callable[..., WebServer]) -> WebServer:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return start_server(port=port, public_url=f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``clip``: 20 s of 640x360 test pattern with a tone (one 360p rung, a few seconds to transcode);
    ``big``: the same with noise, about 3 MB (an upload slow enough to watch and to cut); ``corrupt``: not a
    video at all."""
    ffmpeg_bin = ffmpeg()
    root = tmp_path_factory.mktemp("videos")

    def make(name: str, source: str, seconds: int, extra: list[str]) -> Path:
        out = root / name
        subprocess.run(
            [ffmpeg_bin, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
             f"{source}=size=640x360:rate=25:duration={seconds}", "-f", "lavfi", "-i",
             f"sine=frequency=440:duration={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
             "-pix_fmt", "yuv420p", *extra, "-c:a", "aac", "-shortest", str(out)],
            check=True,
        )  # fmt: skip
        return out

    clip = make("lecture-clip.mp4", "testsrc", 20, [])
    big = make("lecture-big.mp4", "testsrc2", 8, ["-vf", "noise=alls=60:allf=t", "-b:v", "3M"])
    corrupt = root / "not-a-video.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
    return {"clip": clip, "big": big, "corrupt": corrupt}


def call(server: WebServer, user: User, method: str, path: str, body: Any = None) -> Any:
    status, answer = rest(server.url, method, path, body, token=user.token())
    assert status < 300, (method, path, status, answer)
    return answer


def course_with_lecture(server: WebServer, teacher: User, lecture: str) -> str:
    """A published, free course whose one lecture still points at a video elsewhere; its id."""
    title = f"Filmed course {uuid.uuid4().hex[:6]}"
    course = call(server, teacher, "POST", "/courses", {"title": title, "description": "Recorded lectures."})
    body = {"title": lecture, "media_kind": "video", "media_url": "https://cdn.example.com/later.mp4", "duration_s": 1}
    call(server, teacher, "POST", f"/courses/{course['id']}/lectures", body)
    call(server, teacher, "POST", f"/courses/{course['id']}/publish")
    return str(course["id"])


def throttle_uploads(page: Page, bytes_per_s: int) -> None:
    """Chromium's own network throttling (DevTools), uploads only: a request body goes at ``bytes_per_s``."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": bytes_per_s},
    )


def wait_for_video(page: Page, prop: str, at_least: float) -> None:
    page.wait_for_function(
        "([prop, value]) => (document.querySelector('video')?.[prop] ?? -1) >= value", arg=[prop, at_least]
    )


def plays(page: Page) -> None:
    """The page's video plays: frames decoded (``videoWidth``) and time advancing (started muted, as browsers
    allow without a click)."""
    wait_for_video(page, "readyState", 1)
    page.locator("video").evaluate("v => { v.muted = true; return v.play(); }")
    wait_for_video(page, "videoWidth", 1)
    wait_for_video(page, "currentTime", 1.5)


def test_an_instructor_uploads_a_video_and_a_learner_plays_it(
    server: WebServer, open_page: OpenPage, videos: dict[str, Path], screenshots: Path
) -> None:
    teacher = server.user("Grace Uploader", role="instructor")
    course_id = course_with_lecture(server, teacher, "Filmed intro")
    desk = open_page(server=server)
    log_in(desk, teacher)
    desk.goto(f"/courses/{course_id}/edit")
    lectures = desk.get_by_role("list", name="Course lectures")
    expect(lectures).to_contain_text("Filmed intro")

    # tus-js-client is fetched only when an upload starts.
    fetched: list[str] = []
    desk.on("response", lambda r: fetched.append(r.url) if r.request.resource_type == "script" else None)
    assert not [u for u in fetched if "tus-js-client" in u]

    desk.get_by_role("button", name="Upload a video for Filmed intro", exact=True).click()
    tus: list[Request] = []
    desk.on("request", lambda r: tus.append(r) if "/api/v1/uploads" in r.url else None)
    desk.get_by_label("Video file for Filmed intro", exact=True).set_input_files(videos["clip"])

    # The processing job's progress (a 20 s video: a few seconds of transcoding), then ready.
    processing = desk.get_by_role("progressbar", name="Processing of Filmed intro", exact=True)
    expect(processing).to_be_visible(timeout=SLOW)
    expect(desk.get_by_text("Transcoding…")).to_be_visible(timeout=SLOW)
    desk.screenshot(path=screenshots / "lecture-video-processing-desktop.png", full_page=True)
    desk.get_by_role("region", name="Lectures").screenshot(path=screenshots / "lecture-video-processing-panel.png")
    expect(desk.get_by_text("Video ready: the lecture now plays it.")).to_be_visible(timeout=SLOW)
    expect(lectures.get_by_role("listitem").first).to_contain_text("HLS")
    desk.screenshot(path=screenshots / "lecture-video-ready-desktop.png", full_page=True)
    assert [u for u in fetched if "tus-js-client" in u], "tus-js-client was not loaded for the upload"
    methods = [r.method for r in tus]
    assert methods[0] == "POST" and "PATCH" in methods, methods
    assert all(r.headers.get("authorization", "").startswith("Bearer ") for r in tus if r.method != "OPTIONS")

    lecture = call(server, teacher, "GET", f"/courses/{course_id}/lectures")["items"][0]
    assert lecture["media_kind"] == "hls" and "/api/v1/media/" in lecture["media_url"]

    # A learner enrols and plays it: hls.js fetches every playlist and segment with the signed URL's token,
    # and no Authorization header.
    learner = server.user("Ada Viewer")
    page = open_page(server=server)
    log_in(page, learner)
    media: list[Request] = []
    page.on("request", lambda r: media.append(r) if "/api/v1/media/" in r.url else None)
    page.goto(f"/courses/{course_id}")
    page.get_by_role("button", name="Enrol").click()
    expect(page.get_by_text("0 of 1 lectures completed")).to_be_visible()
    page.get_by_role("list", name="Lectures").get_by_role("link", name="Filmed intro").click()
    expect(page.get_by_role("heading", name="Filmed intro")).to_be_visible()
    plays(page)
    page.screenshot(path=screenshots / "lecture-hls-playing-desktop.png")
    names = [r.url.split("/api/v1/media/")[1].split("?")[0] for r in media]
    assert any(n.endswith("master.m3u8") for n in names) and any(n.endswith("index.m3u8") for n in names)
    assert any(n.endswith(".ts") for n in names), names
    for request in media:
        assert "token=" in request.url and "authorization" not in request.headers, request.url
    width = page.locator("video").evaluate("v => v.videoWidth")
    assert width == 640  # the 360p rung of a 640x360 source

    # A learner whose URL expires mid-lecture (from its second segment on, the server refuses that URL's token
    # with 403, as it does once it has expired): the player reads the lecture again for a fresh URL and plays on.
    late = server.user("Eve Returner")
    call(server, late, "POST", f"/courses/{course_id}/enroll")
    again = open_page(server=server)
    log_in(again, late)
    # The URL the page is given: a genuine token of this learner, with an expiry of its own (so that the renewed
    # one differs from it whenever it is made).
    job_id = uuid.UUID(lecture["media_url"].split("/api/v1/media/")[1].split("/")[0])
    first = [server.app[CORE].playback.token(job_id, uuid.UUID(late.id), int(time.time()) + 7 * 86400)]

    def given(route: Route) -> None:
        answer = route.fetch()
        body = answer.json()
        for item in body["items"]:
            item["media_url"] = item["media_url"].split("?")[0] + f"?token={first[0]}"
        route.fulfill(response=answer, json=body)

    again.route(f"**/api/v1/courses/{course_id}/lectures", given)
    refused: list[str] = []

    def expiring(route: Route) -> None:
        url = route.request.url
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("token", [""])[0]
        if token == first[0] and "/segment_" in url and not url.split("?")[0].endswith("segment_00000.ts"):
            refused.append(url)
            body = '{"error": {"code": "forbidden", "message": "the playback token has expired"}}'
            route.fulfill(status=403, content_type="application/json", body=body)
        else:
            route.continue_()

    again.route("**/api/v1/media/**", expiring)
    fresh: list[Response] = []
    again.on("response", lambda r: fresh.append(r) if "/segment_00001.ts" in r.url and r.status == 200 else None)
    with again.expect_response(lambda r: r.url.endswith(f"/api/v1/lectures/{lecture['id']}")) as renewed:
        again.goto(f"/courses/{course_id}/lectures/{lecture['id']}")
        plays(again)
    assert refused and renewed.value.status == 200
    wait_for_video(again, "currentTime", 7.0)  # past the first segment (0 s to 6 s)
    # The refused segment came with the renewed URL's token (for the same learner), not the expired one's.
    renewed_token = urllib.parse.parse_qs(urllib.parse.urlsplit(renewed.value.json()["media_url"]).query)["token"][0]
    assert renewed_token != first[0] and renewed_token.startswith(uuid.UUID(late.id).hex + ".")
    assert [r for r in fresh if f"token={renewed_token}" in r.url], [r.url for r in fresh]
    expect(again.get_by_role("alert")).to_have_count(0)
    again.screenshot(path=screenshots / "lecture-hls-renewed-desktop.png")


def test_an_upload_cut_by_a_reload_resumes_and_a_file_that_is_not_a_video_says_why(
    server: WebServer, open_page: OpenPage, videos: dict[str, Path], screenshots: Path
) -> None:
    teacher = server.user("Linus Uploader", role="instructor")
    course_id = course_with_lecture(server, teacher, "Long take")
    desk = open_page(server=server)
    log_in(desk, teacher)
    desk.goto(f"/courses/{course_id}/edit")
    size = videos["big"].stat().st_size
    assert size > 1_500_000, size

    # A slow connection: the upload's progress shows; the page is reloaded halfway.
    throttle_uploads(desk, 400_000)
    desk.get_by_role("button", name="Upload a video for Long take", exact=True).click()
    desk.get_by_label("Video file for Long take", exact=True).set_input_files(videos["big"])
    uploading = desk.get_by_role("progressbar", name="Upload of Long take", exact=True)
    expect(uploading).to_be_visible()
    desk.wait_for_function(
        "() => Number(document.querySelector('progress[aria-label=\"Upload of Long take\"]')?.value ?? 0) >= 25"
    )
    desk.screenshot(path=screenshots / "lecture-video-uploading-desktop.png", full_page=True)
    desk.reload()

    # Picking the same file again resumes it: tus asks where it stopped (HEAD) and sends only the rest.
    tus: list[Request] = []
    desk.on("request", lambda r: tus.append(r) if "/api/v1/uploads" in r.url else None)
    desk.get_by_role("button", name="Upload a video for Long take", exact=True).click()
    desk.get_by_label("Video file for Long take", exact=True).set_input_files(videos["big"])
    expect(desk.get_by_text("Video ready: the lecture now plays it.")).to_be_visible(timeout=SLOW)
    methods = [r.method for r in tus]
    assert "POST" not in methods and methods[0] == "HEAD", methods
    first_patch = next(r for r in tus if r.method == "PATCH")
    assert int(first_patch.headers["upload-offset"]) > 0
    assert len(first_patch.post_data_buffer or b"") < size  # only what was missing

    # A file that is not a video: the job fails and the page shows the server's reason.
    desk.get_by_label("Video file for Long take", exact=True).set_input_files(videos["corrupt"])
    alert = desk.get_by_role("alert")
    expect(alert).to_contain_text("The video could not be processed: not a video ffmpeg can read", timeout=SLOW)
    desk.screenshot(path=screenshots / "lecture-video-failed-desktop.png", full_page=True)
    lecture = call(server, teacher, "GET", f"/courses/{course_id}/lectures")["items"][0]
    assert lecture["media_kind"] == "hls"  # still the ladder made before


def rest_upload(server: WebServer, user: User, path: Path) -> str:
    """A tus upload of ``path`` from the test itself (creation, then one PATCH); the upload's id."""
    token = user.token()
    data = path.read_bytes()
    tus = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"}
    create = urllib.request.Request(
        server.url + "/api/v1/uploads", method="POST", headers={**tus, "Upload-Length": str(len(data))}
    )
    with urllib.request.urlopen(create, timeout=10) as resp:
        location = resp.headers["Location"]
    patch = urllib.request.Request(
        urllib.parse.urljoin(server.url, location),
        data=data,
        method="PATCH",
        headers={**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    with urllib.request.urlopen(patch, timeout=30) as resp:
        assert resp.status == 204
    return str(location.rsplit("/", 1)[1])


def media_requests(into: list[Request]) -> Callable[[Request], None]:
    """A ``request`` listener keeping the page's requests for the ladder's files."""

    def keep(request: Request) -> None:
        if "/api/v1/media/" in request.url:
            into.append(request)

    return keep


def test_a_watch_party_plays_an_uploaded_lecture_with_each_viewers_own_signed_url(
    server: WebServer, open_page: OpenPage, videos: dict[str, Path], screenshots: Path
) -> None:
    teacher = server.user("Mira Host", role="instructor")
    learner = server.user("Noor Viewer")
    course_id = course_with_lecture(server, teacher, "Party lecture")
    lecture_id = call(server, teacher, "GET", f"/courses/{course_id}/lectures")["items"][0]["id"]
    upload_id = rest_upload(server, teacher, videos["clip"])
    job = call(server, teacher, "POST", f"/lectures/{lecture_id}/media", {"upload_id": upload_id})
    deadline = time.monotonic() + SLOW / 1000
    while job["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)  # polling a background job from the test's thread (no event to wait on here)
        job = call(server, teacher, "GET", f"/jobs/{job['id']}")
    assert job["state"] == "succeeded", job
    call(server, learner, "POST", f"/courses/{course_id}/enroll")
    room = call(server, teacher, "POST", "/rooms", {"name": "Lecture night", "kind": "watch", "visibility": "public"})

    pages: dict[str, Page] = {}
    requests: dict[str, list[Request]] = {}
    for user in (teacher, learner):
        page = open_page(server=server)
        log_in(page, user)
        seen: list[Request] = []
        page.on("request", media_requests(seen))
        page.goto(f"/rooms/{room['id']}")
        expect(page.locator("video")).to_have_count(1)
        pages[user.id], requests[user.id] = page, seen

    # The host puts the lecture up by its page's address; each viewer's player plays it with their own URL.
    host = pages[teacher.id]
    host.get_by_label("Video address").fill(f"{server.url}/courses/{course_id}/lectures/{lecture_id}")
    host.get_by_role("button", name="Play now").click()
    for page in pages.values():
        expect(page.get_by_role("list", name="Playlist")).to_contain_text("Party lecture")
        wait_for_video(page, "readyState", 1)
    for page in pages.values():  # started muted (no click on the viewer's page), as browsers allow
        page.locator("video").evaluate("v => { v.muted = true; }")
    host.get_by_role("button", name="Play", exact=True).click()
    for page in pages.values():
        wait_for_video(page, "videoWidth", 1)
        wait_for_video(page, "currentTime", 1.0)
    pages[learner.id].screenshot(path=screenshots / "watch-uploaded-lecture-desktop.png", full_page=True)
    for user in (teacher, learner):
        assert requests[user.id], user.display_name
        for request in requests[user.id]:
            token = urllib.parse.parse_qs(urllib.parse.urlsplit(request.url).query)["token"][0]
            assert token.startswith(uuid.UUID(user.id).hex + "."), (user.display_name, request.url)
            assert "authorization" not in request.headers
