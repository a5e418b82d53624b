"""The watch party in a real browser: a host and three viewers (separate users, separate browser contexts, one
at phone width) in a watch room; the host puts up an MP4 made with ffmpeg for the test (served by the test app
from its own origin, with byte ranges), plays it and seeks, and the four ``<video>`` elements stay within
100 ms of each other; viewers see the controls disabled and why; a hand-over gives a viewer the controls; the
host's sync report lists everyone; chat keeps working beside the player.

Sampling four pages cannot happen at one instant, so each sample carries the page's own wall clock
(``performance.timeOrigin + performance.now()``, one clock for every page on this machine) with the video's
``currentTime`` and ``playbackRate``, and every page's position is carried forward to the same instant before
they are compared.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import OpenPage, User, WebServer, ffmpeg, log_in, media_server, rest
from tests.browser.test_courses import rest_course

CLIP_S = 90.0
WITHIN_S = 0.1

SAMPLE = """() => {
  const v = document.querySelector("video");
  return [(performance.timeOrigin + performance.now()) / 1000, v.currentTime, v.paused, v.playbackRate, v.readyState];
}"""


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 90 s H.264 test pattern (320×180, 15 fps), short keyframe interval so that seeks land quickly."""
    ffmpeg_bin = ffmpeg()
    root = tmp_path_factory.mktemp("watch-media")
    subprocess.run(
        [ffmpeg_bin, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         f"testsrc=size=320x180:rate=15:duration={CLIP_S:g}", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", "-g", "15", "-movflags", "+faststart", str(root / "pattern.mp4")],
        check=True,
    )  # fmt: skip
    return root


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory, clip: Path) -> Iterator[WebServer]:
    """A studyhall app that also serves the clip at /test-media/ (FileResponse answers byte ranges)."""
    app_server = media_server(database_url, tmp_path_factory, clip)
    yield app_server
    app_server.stop()


def samples(pages: list[Page]) -> list[list[Any]]:
    return [page.evaluate(SAMPLE) for page in pages]


def aligned(pages: list[Page]) -> list[float]:
    """Every page's position carried forward to the moment of the last sample."""
    taken = samples(pages)
    at = max(s[0] for s in taken)
    return [s[1] + (0.0 if s[2] else s[3] * (at - s[0])) for s in taken]


def spread(pages: list[Page]) -> float:
    positions = aligned(pages)
    return max(positions) - min(positions)


def wait_for(check: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    until = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < until, f"not reached within {seconds:g} s: {what}"
        time.sleep(0.1)


def assert_in_step(pages: list[Page], rounds: int = 5) -> list[float]:
    """Waits for the players to converge, then checks they stay within 100 ms over several samples."""
    wait_for(lambda: all(not s[2] for s in samples(pages)), "every video playing")
    wait_for(lambda: spread(pages) < WITHIN_S, "the four videos within 100 ms")
    spreads = []
    for _ in range(rounds):
        time.sleep(0.3)
        spreads.append(spread(pages))
    print("spreads (ms):", [round(s * 1000, 1) for s in spreads])
    assert max(spreads) < WITHIN_S, f"the videos drifted apart: {[round(s * 1000) for s in spreads]} ms"
    return spreads


def test_four_viewers_stay_within_100_ms_after_play_and_after_a_seek(
    open_page: OpenPage, server: WebServer, screenshots: Path
) -> None:
    names = ["Hana Host", "Ivo Viewer", "Jun Viewer", "Kai Viewer"]
    users: list[User] = [server.user(f"{n} {uuid.uuid4().hex[:3]}") for n in names]
    status, room = rest(server.url, "POST", "/rooms", {"name": "Movie night", "kind": "watch", "visibility": "public"},
                        users[0].token())  # fmt: skip
    assert status == 201, room
    pages: list[Page] = []
    for i, user in enumerate(users):
        page = open_page(server=server, phone=i == 3)
        log_in(page, user)
        page.goto(f"/rooms/{room['id']}")
        expect(page.get_by_role("log", name="Messages")).to_be_visible()
        expect(page.locator("video")).to_have_count(1)
        pages.append(page)
    host, viewers = pages[0], pages[1:]

    # A viewer cannot control, and is told why.
    expect(viewers[0].get_by_role("button", name="Play", exact=True)).to_be_disabled()
    expect(viewers[0].get_by_text("the room's host and moderators control the player")).to_be_visible()

    # A refusal is shown as the server's message.
    host.get_by_label("Video address").fill("javascript:alert(1)")
    host.get_by_role("button", name="Play now").click()
    refusal = host.get_by_role("region", name="Watch party").get_by_role("alert")
    expect(refusal).to_contain_text("url")
    expect(host.get_by_label("Video address")).to_have_value("javascript:alert(1)")  # kept to correct

    # The host puts the clip up and plays it.
    host.get_by_label("Video address").fill(f"{server.url}/test-media/pattern.mp4")
    host.get_by_label("Title").fill("Test pattern")
    host.get_by_role("button", name="Play now").click()
    for page in pages:
        expect(page.get_by_role("list", name="Playlist")).to_contain_text("Test pattern")
        wait_for(lambda page=page: page.evaluate(SAMPLE)[4] >= 1, "the clip's metadata loaded")  # type: ignore[misc]
    host.get_by_role("button", name="Play", exact=True).click()
    expect(host.get_by_role("button", name="Pause")).to_be_visible()
    assert_in_step(pages)
    played_to = min(aligned(pages))
    assert 0.0 < played_to < 30.0

    # A seek 30 s on: everyone jumps there, together.
    host.get_by_role("button", name="Forward 10 s").click()
    host.get_by_role("button", name="Forward 10 s").click()
    host.get_by_role("button", name="Forward 10 s").click()
    wait_for(lambda: min(aligned(pages)) > played_to + 25, "every video past the seek")
    assert_in_step(pages)
    assert max(aligned(pages)) < played_to + 45

    # A viewer's player stumbles (a jump of 300 ms, as after a stall): the correction brings it back.
    viewers[1].evaluate("() => { document.querySelector('video').currentTime += 0.3; }")
    wait_for(lambda: spread(pages) > 0.2, "the stumble seen")
    assert_in_step(pages)

    # The host's sync report lists the four connections.
    host.get_by_role("button", name="Sync report").click()
    report = host.get_by_role("table", name="Sync report")
    expect(report.get_by_role("row")).to_have_count(5)  # the header and four viewers
    for user in users:
        expect(report).to_contain_text(user.display_name)

    # Chat works beside the player.
    viewers[1].get_by_role("textbox", name="Message").fill("what a pattern")
    viewers[1].get_by_role("button", name="Send").click()
    expect(host.get_by_role("log", name="Messages")).to_contain_text("what a pattern")

    host.screenshot(path=str(screenshots / "watch-host-desktop.png"), full_page=True)
    viewers[2].screenshot(path=str(screenshots / "watch-viewer-phone.png"), full_page=True)

    # The phone viewer's page does not scroll sideways.
    assert viewers[2].evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")

    # Pausing stops everyone at the same frame.
    host.get_by_role("button", name="Pause").click()
    wait_for(lambda: all(s[2] for s in samples(pages)), "every video paused")
    wait_for(lambda: spread(pages) < 0.02, "paused at the same position")

    # The host hands over: that viewer can now control; the others still cannot.
    host.get_by_label("Hand over to").select_option(label=users[1].display_name)
    host.get_by_role("button", name="Hand over").click()
    expect(viewers[0].get_by_text(f"{users[1].display_name} leads the party.")).to_be_visible()
    expect(viewers[0].get_by_role("button", name="Play", exact=True)).to_be_enabled()
    expect(viewers[1].get_by_role("button", name="Play", exact=True)).to_be_disabled()
    viewers[0].get_by_role("button", name="Play", exact=True).click()
    assert_in_step(pages, rounds=3)

    # A course lecture goes on the playlist by its page's address (the server fills in URL and title).
    course = rest_course(server, server.user("Lena Lecturer", role="instructor"), f"Optics {uuid.uuid4().hex[:4]}")
    status, lectures = rest(server.url, "GET", f"/courses/{course['id']}/lectures", token=users[1].token())
    assert status == 200, lectures
    items = lectures["items"] if isinstance(lectures, dict) else lectures
    viewers[0].get_by_label("Video address").fill(f"{server.url}/courses/{course['id']}/lectures/{items[0]['id']}")
    viewers[0].get_by_role("button", name="Add to queue").click()
    for page in pages:
        expect(page.get_by_role("list", name="Playlist")).to_contain_text("Getting started")

    # A ready check: the play waits until everyone present has said they are ready, then starts for all.
    host.get_by_role("button", name="Pause").click()
    wait_for(lambda: all(s[2] for s in samples(pages)), "every video paused again")
    host.get_by_label("Wait for").select_option(label="everyone")
    host.get_by_role("button", name="Set ready check").click()
    expect(viewers[2].get_by_role("button", name="I'm ready")).to_be_visible()
    host.get_by_role("button", name="Play", exact=True).click()
    expect(host.get_by_role("button", name="Waiting…")).to_be_visible()
    expect(viewers[0].get_by_text("The play waits for the ready check.")).to_be_visible()
    for page in pages:
        assert page.evaluate(SAMPLE)[2], "a video started before everyone was ready"
        page.get_by_role("button", name="I'm ready").click()
    expect(host.get_by_role("button", name="Pause")).to_be_visible()
    assert_in_step(pages, rounds=3)
