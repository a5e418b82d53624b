"""The live room in a real browser: Chromium with its fake camera and microphone
(``--use-fake-device-for-media-stream``) and permission prompts answered yes (``--use-fake-ui-for-media-stream``),
against the real server and its forwarding SFU on 127.0.0.1.

A host schedules a session from a live room's page and opens its live room; two viewers (separate users,
separate browser contexts) wait in the lobby with its countdown; the host presses "Go live" and both viewers'
``<video>`` elements show moving video (``videoWidth > 0`` and ``getVideoPlaybackQuality().totalVideoFrames``
growing) with the host's microphone in the same stream; a viewer raises a hand and the host sees it with
"Invite … to speak"; the host shares the screen (a second moving video in every viewer's page); the host
invites the raised hand, and the speaker's camera reaches the host and the other viewer, until the host stops
them; a viewer past the node's viewer limit is refused with the server's message, and gets the slot the host's
page gives back (``live:unsubscribe``) once nobody else publishes; the host's "Stop" ends the
session in every page and the attendance lists the four who joined.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, BrowserType, Page, expect

from realtime.sockets import SOCKETS
from tests.browser.conftest import DESKTOP, User, WebServer, log_in, rest

FAKE_MEDIA_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    # getDisplayMedia without a picker: the whole (virtual) screen.
    "--auto-select-desktop-capture-source=Entire screen",
    "--autoplay-policy=no-user-gesture-required",
]

FRAMES = """(label) => {
  const v = document.querySelector(`video[aria-label="${label}"]`);
  if (!v) return null;
  const s = v.srcObject;
  return {
    width: v.videoWidth,
    frames: v.getVideoPlaybackQuality().totalVideoFrames,
    paused: v.paused,
    audio: s ? s.getAudioTracks().filter((t) => t.readyState === "live").length : 0,
  };
}"""


@pytest.fixture(scope="module")
def media_browser(browser_type: BrowserType, browser_type_launch_args: dict[str, Any]) -> Iterator[Browser]:
    """Chromium launched with the fake media devices (the session's shared browser has none)."""
    args = [*browser_type_launch_args.get("args", []), *FAKE_MEDIA_ARGS]
    browser = browser_type.launch(**{**browser_type_launch_args, "args": args})
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def live_server(start_server: Callable[..., WebServer]) -> WebServer:
    # Three subscribers on this node at most (two viewers, and the host once someone else speaks): the fourth
    # is refused (the limit's clear error, in the page).
    return start_server(live_max_viewers_per_node=3)


@pytest.fixture
def media_page(media_browser: Browser, live_server: WebServer) -> Iterator[Callable[[User], Page]]:
    contexts: list[BrowserContext] = []

    def open_(user: User) -> Page:
        context = media_browser.new_context(base_url=live_server.url, viewport=DESKTOP)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        log_in(page, user)
        return page

    yield open_
    for context in contexts:
        context.close()


def wait_for(check: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    until = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < until, f"not reached within {seconds:g} s: {what}"
        time.sleep(0.1)


LOUDNESS = """async (label) => {
  // The loudest moment of the labelled video's audio over 2 s (RMS of the samples), heard through Web Audio as the
  // element plays it; and whether the element itself would be heard (not muted, volume up).
  const v = document.querySelector(`video[aria-label="${label}"]`);
  const ctx = new AudioContext();
  await ctx.resume();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 2048;
  ctx.createMediaStreamSource(v.srcObject).connect(analyser);
  const data = new Float32Array(analyser.fftSize);
  let loudest = 0;
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 20));
    analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (const x of data) sum += x * x;
    loudest = Math.max(loudest, Math.sqrt(sum / data.length));
  }
  await ctx.close();
  return { loudest, muted: v.muted, volume: v.volume };
}"""


def moving(page: Page, label: str) -> dict[str, Any]:
    """Waits until the labelled video has a picture and its decoded frame count grows; returns the last sample."""
    wait_for(lambda: (s := page.evaluate(FRAMES, label)) is not None and s["width"] > 0 and s["frames"] > 0,
             f"{label} shows a picture")  # fmt: skip
    first = page.evaluate(FRAMES, label)
    wait_for(lambda: page.evaluate(FRAMES, label)["frames"] >= first["frames"] + 15, f"{label} keeps moving")
    last: dict[str, Any] = page.evaluate(FRAMES, label)
    assert last["width"] > 0 and not last["paused"], last
    return last


def test_the_host_goes_live_and_two_viewers_watch_moving_video(
    media_page: Callable[[User], Page], live_server: WebServer, screenshots: Path
) -> None:
    tag = uuid.uuid4().hex[:4]
    host_user = live_server.user(f"Lena Host {tag}")
    viewer_users = [live_server.user(f"{n} {tag}") for n in ("Mo Viewer", "Noor Viewer", "Oda Late")]
    token = host_user.token()
    status, room = rest(live_server.url, "POST", "/rooms",
                        {"name": f"Lecture hall {tag}", "kind": "live", "visibility": "private"}, token)  # fmt: skip
    assert status == 201, room
    for v in viewer_users:
        status, body = rest(live_server.url, "POST", f"/rooms/{room['id']}/invite", {"user_id": v.id}, token)
        assert status == 201, body

    # The host schedules from the room's page and opens the session's live room from its link.
    host = media_page(host_user)
    host.goto(f"/rooms/{room['id']}")
    sessions = host.get_by_role("region", name="Live sessions")
    sessions.get_by_label("Session title").fill(f"Signals {tag}")
    sessions.get_by_role("button", name="Schedule", exact=True).click()
    sessions.get_by_role("link", name=f"Signals {tag}").click()
    expect(host.get_by_role("heading", name=f"Signals {tag}")).to_be_visible()
    expect(host.get_by_role("timer", name="Time until the session starts")).to_contain_text("Starts in")

    viewers: list[Page] = []
    for v in viewer_users[:2]:
        page = media_page(v)
        page.goto(f"/rooms/{room['id']}")
        page.get_by_role("region", name="Live sessions").get_by_role("link", name=f"Signals {tag}").click()
        expect(page.get_by_role("timer", name="Time until the session starts")).to_contain_text("Starts in")
        expect(page.get_by_role("button", name="Go live", exact=True)).to_have_count(0)  # viewers cannot
        viewers.append(page)
    viewers[0].screenshot(path=str(screenshots / "live-lobby-viewer.png"))

    host.get_by_role("button", name="Go live", exact=True).click()
    expect(host.get_by_role("button", name="Stop", exact=True)).to_be_visible()
    moving(host, "You (camera preview)")
    camera = f"{host_user.display_name}'s camera"
    for page in viewers:
        sample = moving(page, camera)
        assert sample["audio"] == 1, sample  # the host's microphone plays with the camera
        heard = page.evaluate(LOUDNESS, camera)  # ... and is heard: Chromium's fake microphone beeps every second
        assert heard["loudest"] > 0.01 and not heard["muted"] and heard["volume"] > 0, heard
    viewers[1].screenshot(path=str(screenshots / "live-viewer.png"))

    # A raised hand reaches the host, who may invite it to speak.
    viewers[0].get_by_role("button", name="Raise hand", exact=True).click()
    expect(viewers[0].get_by_role("button", name="Raise hand", exact=True)).to_have_attribute("aria-pressed", "true")
    hands = host.get_by_role("complementary", name="Raised hands")
    expect(hands.get_by_role("button", name=f"Invite {viewer_users[0].display_name} to speak")).to_be_visible()

    # The screen goes out as a second video; the camera carries on.
    host.get_by_role("button", name="Share screen", exact=True).click()
    expect(host.get_by_role("button", name="Stop sharing", exact=True)).to_be_visible()
    screen = f"{host_user.display_name}'s screen"
    for page in viewers:
        moving(page, screen)
        moving(page, camera)
    host.screenshot(path=str(screenshots / "live-host.png"))
    viewers[0].screenshot(path=str(screenshots / "live-viewer-screen.png"))

    # The host invites the raised hand; the speaker's camera reaches the host (who subscribes now) and the
    # other viewer.
    hands.get_by_role("button", name=f"Invite {viewer_users[0].display_name} to speak").click()
    viewers[0].get_by_role("button", name="Start speaking", exact=True).click()
    expect(viewers[0].get_by_role("button", name="Stop speaking", exact=True)).to_be_visible()
    speaker = f"{viewer_users[0].display_name}'s camera"
    moving(host, speaker)
    moving(viewers[1], speaker)
    moving(viewers[0], screen)  # the speaker still sees the host
    viewers[1].screenshot(path=str(screenshots / "live-viewer-speaker.png"))

    # A third viewer is past this node's viewer limit (two viewers and the host, who watches the speaker):
    # refused with the server's words, not a broken page.
    late = media_page(viewer_users[2])
    late.goto(f"/rooms/{room['id']}")
    late.get_by_role("region", name="Live sessions").get_by_role("link", name=f"Signals {tag}").click()
    expect(late.get_by_role("alert")).to_contain_text("as many viewers as it can")
    expect(late.get_by_role("button", name="Try again", exact=True)).to_be_visible()
    late.screenshot(path=str(screenshots / "live-viewer-refused.png"))

    # The host stops the speaker: their camera leaves the other viewer's page, their own devices go off.
    host.get_by_role("button", name=f"Stop {viewer_users[0].display_name}", exact=True).click()
    expect(viewers[1].locator(f'video[aria-label="{speaker}"]')).to_have_count(0)
    expect(viewers[0].get_by_role("button", name="Stop speaking", exact=True)).to_have_count(0)
    expect(viewers[0].locator('video[aria-label="You (camera preview)"]')).to_have_count(0)
    moving(viewers[1], camera)  # the host carries on
    # With nobody else to watch, the host's page gave its viewer slot back (live:unsubscribe), and the late
    # viewer's page, subscribing again as what is published changed, gets it: the host's camera, no refusal.
    moving(late, camera)
    expect(late.get_by_role("alert")).to_have_count(0)

    # At phone width the viewer's page stacks (no sideways scrolling) and the video still plays.
    viewers[1].set_viewport_size({"width": 360, "height": 740})
    moving(viewers[1], screen)
    assert viewers[1].evaluate("() => document.documentElement.scrollWidth") <= 360
    viewers[1].screenshot(path=str(screenshots / "live-viewer-phone.png"), full_page=True)

    # Stop: the session ends for everyone; the host's attendance lists who joined.
    host.get_by_role("button", name="Stop", exact=True).click()
    for page in [host, *viewers, late]:
        expect(page.get_by_role("status").filter(has_text="The live session has ended.")).to_be_visible()
        expect(page.locator("video")).to_have_count(0)
    host.get_by_text("Attendance", exact=True).click()
    table = host.get_by_role("table")
    for u in [host_user, *viewer_users]:
        expect(table).to_contain_text(u.display_name)
    host.screenshot(path=str(screenshots / "live-host-ended.png"))


def test_a_viewer_whose_sessions_server_is_lost_is_offered_to_join_again(
    media_page: Callable[[User], Page], live_server: WebServer, screenshots: Path
) -> None:
    """``live:ended`` comes when the node carrying the session dies (tests/test_live_scaleout.py makes it
    happen with two real nodes); here the one server sends it, as a dead owner's neighbour would."""
    tag = uuid.uuid4().hex[:4]
    host_user, viewer_user = live_server.user(f"Ira Host {tag}"), live_server.user(f"Jo Viewer {tag}")
    token = host_user.token()
    status, room = rest(live_server.url, "POST", "/rooms",
                        {"name": f"Hall {tag}", "kind": "live", "visibility": "private"}, token)  # fmt: skip
    assert status == 201, room
    status, body = rest(live_server.url, "POST", f"/rooms/{room['id']}/invite", {"user_id": viewer_user.id}, token)
    assert status == 201, body
    starts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    status, session = rest(live_server.url, "POST", f"/rooms/{room['id']}/live-sessions",
                           {"title": f"Optics {tag}", "starts_at": starts}, token)  # fmt: skip
    assert status == 201, session
    page = media_page(viewer_user)
    page.goto(f"/live/{session['id']}")
    expect(page.get_by_role("timer", name="Time until the session starts")).to_contain_text("Starts in")

    message = "the server carrying this live session stopped; join it again to continue"
    ended = {"session_id": session["id"], "reason": "server_lost", "message": message}
    live_server.run(live_server.app[SOCKETS].emit("live:ended", ended, to=f"user:{viewer_user.id}"))
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(f"The live session was interrupted: {message}.")
    expect(page.get_by_role("timer", name="Time until the session starts")).to_have_count(0)
    page.screenshot(path=str(screenshots / "live-interrupted.png"))
    alert.get_by_role("button", name="Try again", exact=True).click()
    expect(page.get_by_role("timer", name="Time until the session starts")).to_contain_text("Starts in")
    expect(page.get_by_role("alert")).to_have_count(0)


def test_the_host_records_the_session_and_downloads_the_recording(
    media_page: Callable[[User], Page], live_server: WebServer, screenshots: Path, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:4]
    host_user = live_server.user(f"Rita Recorder {tag}")
    token = host_user.token()
    status, room = rest(live_server.url, "POST", "/rooms",
                        {"name": f"Studio {tag}", "kind": "live", "visibility": "private"}, token)  # fmt: skip
    assert status == 201, room
    host = media_page(host_user)
    host.goto(f"/rooms/{room['id']}")
    sessions = host.get_by_role("region", name="Live sessions")
    sessions.get_by_label("Session title").fill(f"Recorded {tag}")
    sessions.get_by_role("button", name="Schedule", exact=True).click()
    sessions.get_by_role("link", name=f"Recorded {tag}").click()
    host.get_by_role("button", name="Go live", exact=True).click()
    moving(host, "You (camera preview)")

    host.get_by_role("button", name="Record", exact=True).click()
    expect(host.get_by_role("button", name="Stop recording", exact=True)).to_be_visible()
    expect(host.get_by_role("status").filter(has_text="Recording")).to_be_visible()
    host.screenshot(path=str(screenshots / "live-host-recording.png"), full_page=True)
    time.sleep(4)
    host.get_by_role("button", name="Stop recording", exact=True).click()
    expect(host.get_by_role("status").filter(has_text="Recording saved")).to_be_visible()
    expect(host.get_by_role("button", name="Record", exact=True)).to_be_visible()
    host.screenshot(path=str(screenshots / "live-host-recorded.png"))
    with host.expect_download() as download:
        host.get_by_role("button", name="Download recording", exact=True).click()
    saved = tmp_path / "recording.webm"
    download.value.save_as(saved)
    info = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(saved)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout)  # fmt: skip
    codecs = {s["codec_type"]: s["codec_name"] for s in info["streams"]}
    assert codecs == {"video": "vp8", "audio": "opus"}, codecs  # what Chromium published, as it was sent
    assert 3 <= float(info["format"]["duration"]) <= 6, info["format"]
    host.get_by_role("button", name="Stop", exact=True).click()
    expect(host.get_by_role("status").filter(has_text="The live session has ended.")).to_be_visible()
    expect(host.get_by_role("status").filter(has_text="Recording saved")).to_be_visible()


def test_a_course_sessions_recording_is_published_from_the_course_editor(
    media_page: Callable[[User], Page], live_server: WebServer, screenshots: Path
) -> None:
    """The recording of a course's session waits among the course's lecture drafts; its owner names it and
    publishes it, sees the processing's progress, and it becomes the course's last lecture."""
    tag = uuid.uuid4().hex[:4]
    owner = live_server.user(f"Uma Owner {tag}", role="instructor")
    token = owner.token()
    status, course = rest(live_server.url, "POST", "/courses", {"title": f"Optics {tag}"}, token)
    assert status == 201, course
    status, room = rest(live_server.url, "POST", "/rooms",
                        {"name": f"Lab {tag}", "kind": "live", "visibility": "private"}, token)  # fmt: skip
    assert status == 201, room
    starts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    planned = {"title": f"Prisms {tag}", "starts_at": starts, "course_id": course["id"]}
    status, session = rest(live_server.url, "POST", f"/rooms/{room['id']}/live-sessions", planned, token)
    assert status == 201, session
    page = media_page(owner)
    page.goto(f"/live/{session['id']}")
    page.get_by_role("button", name="Go live", exact=True).click()
    moving(page, "You (camera preview)")
    page.get_by_role("button", name="Record", exact=True).click()
    expect(page.get_by_role("button", name="Stop recording", exact=True)).to_be_visible()
    time.sleep(3)
    page.get_by_role("button", name="Stop recording", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="Recording saved")).to_be_visible()
    page.get_by_role("button", name="Stop", exact=True).click()

    page.goto(f"/courses/{course['id']}/edit")
    drafts = page.get_by_role("region", name="Lecture drafts")
    expect(drafts.get_by_role("listitem")).to_have_count(1)
    drafts.get_by_label("Lecture title").fill(f"Prisms, recorded {tag}")
    page.screenshot(path=str(screenshots / "course-lecture-drafts.png"), full_page=True)
    drafts.get_by_role("button", name=f"Publish Prisms {tag}", exact=True).click()
    lectures = page.get_by_role("list", name="Course lectures")
    expect(lectures).to_contain_text(f"Prisms, recorded {tag}", timeout=120_000)
    expect(page.get_by_role("region", name="Lecture drafts")).to_have_count(0)
    status, listed = rest(live_server.url, "GET", f"/courses/{course['id']}/lectures", None, token)
    assert status == 200 and [lec["media_kind"] for lec in listed["items"]] == ["hls"], listed
