"""The course screens in a real browser, against a real server and Postgres, each user in their own context:
an instructor builds and publishes a course, a learner enrols, watches (resuming after a reload) and earns a
certificate whose public page opens signed out; a priced course and a learner without coins; an assignment
handed in, graded, and the grade seen by the learner.

The lectures are real media made with ffmpeg for the test: a plain MP4 (the browser's own player) and an HLS
playlist (hls.js). The test app serves them from ``/test-media/`` on its own origin (the app's
Content-Security-Policy plays media from its origin or https), with byte ranges, as a media host would.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, Response, expect

from tests.browser.conftest import (
    OpenPage,
    SignedInPage,
    User,
    WebServer,
    ffmpeg,
    fits_phone,
    log_in,
    media_server,
    rest,
)

PLAIN_S = 12.0  # the MP4 lecture's length
HLS_S = 6.0  # the HLS lecture's length
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12 s MP4 and a 6 s HLS playlist (three 2 s segments), H.264 test patterns."""
    ffmpeg_bin = ffmpeg()
    root = tmp_path_factory.mktemp("media")
    (root / "hls").mkdir()
    video = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "15"]

    def pattern(seconds: float) -> list[str]:
        return [ffmpeg_bin, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                f"testsrc=size=320x180:rate=15:duration={seconds:g}"]  # fmt: skip

    subprocess.run([*pattern(PLAIN_S), *video, "-movflags", "+faststart", str(root / "plain.mp4")], check=True)
    subprocess.run(
        [*pattern(HLS_S), *video, "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
         "-hls_segment_filename", str(root / "hls" / "seg%d.ts"), str(root / "hls" / "index.m3u8")],
        check=True,
    )  # fmt: skip
    return root


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory, media: Path) -> Iterator[WebServer]:
    """A studyhall app that also serves the test's media at /test-media/ (with Range, as media hosts do)."""
    app_server = media_server(database_url, tmp_path_factory, media)
    yield app_server
    app_server.stop()


def instructor(server: WebServer, name: str = "Grace Teacher") -> User:
    return server.user(name, role="instructor")


def call(server: WebServer, user: User, method: str, path: str, body: Any = None) -> Any:
    status, answer = rest(server.url, method, path, body, token=user.token())
    assert status < 300, (method, path, status, answer)
    return answer


def rest_course(server: WebServer, teacher: User, title: str, price: int = 0) -> dict[str, Any]:
    """A published course with one lecture, made over REST (the screens under test come after)."""
    course = call(server, teacher, "POST", "/courses", {"title": title, "description": f"All about {title}."})
    lecture = {"title": "Getting started", "media_kind": "video", "media_url": f"{server.url}/test-media/plain.mp4",
               "duration_s": PLAIN_S}  # fmt: skip
    call(server, teacher, "POST", f"/courses/{course['id']}/lectures", lecture)
    call(server, teacher, "POST", f"/courses/{course['id']}/publish")
    if price:
        call(server, teacher, "PUT", f"/courses/{course['id']}/price", {"coins": price})
    answer: dict[str, Any] = course
    return answer


def catalogue_entry(page: Page, title: str) -> Locator:
    """The course's entry in the catalogue, paging on with "Load more" as a learner would (the test database
    holds other tests' courses too, oldest first)."""
    entry = (
        page.get_by_role("list", name="Courses")
        .get_by_role("listitem")
        .filter(has=page.get_by_role("link", name=title, exact=True))
    )
    more = page.get_by_role("button", name="Load more")
    expect(page.get_by_role("list", name="Courses")).to_be_visible()
    while entry.count() == 0 and more.count() == 1:
        shown = page.get_by_role("list", name="Courses").get_by_role("listitem").count()
        more.click()
        expect(page.get_by_role("list", name="Courses").get_by_role("listitem")).not_to_have_count(shown)
    expect(entry).to_have_count(1)
    return entry


def video_time(page: Page) -> float:
    return float(page.locator("video").evaluate("v => v.currentTime"))


def wait_for_video(page: Page, prop: str, at_least: float) -> None:
    """Waits until the page's video's ``prop`` reaches ``at_least`` (a function, not a string: the app's CSP
    forbids eval)."""
    page.wait_for_function(
        "([prop, value]) => (document.querySelector('video')?.[prop] ?? -1) >= value", arg=[prop, at_least]
    )


def play(page: Page) -> None:
    """Start the lecture (muted: browsers let pages start muted media without a click)."""
    page.locator("video").evaluate("v => { v.muted = true; return v.play(); }")


def add_lecture(page: Page, title: str, kind: str, url: str, duration: float) -> None:
    form = page.get_by_role("form", name="Add a lecture")
    form.get_by_label("Lecture title").fill(title)
    form.get_by_label("Media type").select_option(kind)
    form.get_by_label("Media URL").fill(url)
    form.get_by_label("Duration in seconds").fill(f"{duration:g}")
    form.get_by_role("button", name="Add lecture").click()
    expect(page.get_by_role("list", name="Course lectures")).to_contain_text(title)


def test_an_instructor_builds_a_course_a_learner_watches_resumes_and_earns_a_certificate(
    server: WebServer, open_page: OpenPage, screenshots: Path
) -> None:
    teacher = instructor(server)
    desk = open_page(server=server)
    log_in(desk, teacher)

    # The instructor creates the course; a bad lecture URL is refused with the server's message, and what was
    # typed stays in the form.
    title = f"Python in practice {uuid.uuid4().hex[:6]}"
    desk.goto("/courses")
    desk.get_by_label("Title").fill(title)
    desk.get_by_label("Description").fill("Loops, functions and a first program.")
    desk.get_by_role("button", name="Create course").click()
    expect(desk.get_by_role("heading", name="Edit course")).to_be_visible()
    course_id = desk.url.split("/courses/")[1].split("/")[0]
    add_lecture(desk, "Welcome", "hls", f"{server.url}/test-media/hls/index.m3u8", HLS_S)
    form = desk.get_by_role("form", name="Add a lecture")
    form.get_by_label("Lecture title").fill("Loops")
    form.get_by_label("Media URL").fill("ftp://example.com/loops.mp4")
    form.get_by_label("Duration in seconds").fill(f"{PLAIN_S:g}")
    form.get_by_role("button", name="Add lecture").click()
    expect(form.get_by_role("alert")).to_contain_text("media_url")
    expect(form.get_by_label("Lecture title")).to_have_value("Loops")
    form.get_by_label("Media URL").fill(f"{server.url}/test-media/plain.mp4")
    form.get_by_role("button", name="Add lecture").click()
    lectures = desk.get_by_role("list", name="Course lectures").get_by_role("listitem")
    expect(lectures).to_have_count(2)

    # Reorder by dragging "Loops" onto the first place, then back with the keyboard, then again: "Loops" goes
    # first, and the keyboard stays on it.
    lectures.nth(1).drag_to(lectures.nth(0))
    expect(lectures.nth(0)).to_contain_text("Loops")
    desk.get_by_role("button", name="Move Loops down").focus()
    desk.keyboard.press("Enter")
    expect(lectures.nth(0)).to_contain_text("Welcome")
    desk.get_by_role("button", name="Move Loops up").focus()
    desk.keyboard.press("Enter")
    expect(lectures.nth(0)).to_contain_text("Loops")
    expect(lectures.nth(1)).to_contain_text("Welcome")
    expect(desk.get_by_role("button", name="Move Loops down")).to_be_focused()
    order = call(server, teacher, "GET", f"/courses/{course_id}/lectures")["items"]
    assert [(lec["title"], lec["position"]) for lec in order] == [("Loops", 0), ("Welcome", 1)]

    desk.get_by_role("button", name="Publish course").click()
    expect(desk.get_by_text("This course is published")).to_be_visible()
    desk.screenshot(path=screenshots / "course-editor-desktop.png", full_page=True)

    # The player's chunk and hls.js are not part of the login page's first load.
    visitor = open_page(server=server)
    scripts: list[str] = []
    visitor.on("response", lambda r: scripts.append(r.url) if r.request.resource_type == "script" else None)
    visitor.goto("/login")
    expect(visitor.get_by_role("button", name="Log in")).to_be_visible()
    visitor.wait_for_load_state("load")
    assert scripts and not [s for s in scripts if "hls" in s or "LecturePage" in s], scripts

    # A learner finds it in the catalogue and enrols.
    learner = server.user("Ada Learner")
    page = open_page(server=server)
    log_in(page, learner)
    hls_loaded: list[str] = []
    page.on("response", lambda r: hls_loaded.append(r.url) if "hls.light" in r.url else None)
    playlists: list[str] = []
    page.on("request", lambda r: playlists.append(r.url) if r.url.endswith(".m3u8") else None)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Courses").click()
    catalogue_entry(page, title).get_by_role("link", name=title).click()
    expect(page.get_by_text("This course is free.")).to_be_visible()
    page.get_by_role("button", name="Enrol").click()
    expect(page.get_by_text("0 of 2 lectures completed")).to_be_visible()

    # Plays "Loops" (the MP4), pauses past 6 s: the pause is reported, and a reload resumes there.
    page.get_by_role("list", name="Lectures").get_by_role("link", name="Loops").click()
    expect(page.get_by_role("heading", name="Loops")).to_be_visible()
    play(page)
    wait_for_video(page, "currentTime", 6.5)

    def pause_report(r: Response) -> bool:  # not a heartbeat that was still in flight when the video paused
        put = r.url.endswith("/progress") and r.request.method == "PUT"
        return put and float((r.request.post_data_json or {}).get("position_s", 0)) >= 6.5

    with page.expect_response(pause_report) as saved:
        page.locator("video").evaluate("v => v.pause()")
    paused_at = saved.value.json()["lecture"]["position_s"]
    assert paused_at >= 6.5
    page.reload()
    expect(page.get_by_text("Resuming at")).to_be_visible()
    wait_for_video(page, "currentTime", paused_at - 0.5)
    assert video_time(page) < paused_at + 1.5  # resumed near where it was, not at the end or the start
    assert hls_loaded == []  # a plain file needs no hls.js
    page.screenshot(path=screenshots / "lecture-player-desktop.png")

    # Watching on to the end completes it: the server saw the heartbeats cover the lecture.
    play(page)
    expect(page.get_by_text("Lecture completed.")).to_be_visible(timeout=30_000)

    # The HLS lecture plays through hls.js (loaded now, on demand) and completes the course.
    page.get_by_role("navigation", name="Lectures").get_by_role("link", name="Welcome").click()
    expect(page.get_by_role("heading", name="Welcome")).to_be_visible()
    wait_for_video(page, "readyState", 1)
    assert hls_loaded, "hls.js was not loaded for the HLS lecture"
    play(page)
    expect(page.get_by_text("Course completed!")).to_be_visible(timeout=30_000)
    assert len(playlists) == 1, playlists  # one player for the lecture, never reloaded under the learner
    page.get_by_role("link", name="View your certificate").click()
    expect(page.get_by_text("Valid certificate")).to_be_visible()
    certificate_url = page.url

    # The course page says so, and "Your courses" on the home page shows the course done.
    page.goto(f"/courses/{course_id}")
    expect(page.get_by_text("2 of 2 lectures completed")).to_be_visible()
    expect(page.get_by_role("list", name="Lectures").get_by_text("Completed")).to_have_count(2)
    page.screenshot(path=screenshots / "course-completed-desktop.png", full_page=True)
    page.get_by_role("link", name="studyhall").click()
    expect(page.get_by_role("list", name="Your courses")).to_contain_text("2 of 2 lectures")

    # The instructor sees the learner's progress.
    desk.goto(f"/courses/{course_id}/learners")
    row = desk.get_by_role("table", name="Learners").get_by_role("row", name="Ada Learner")
    expect(row).to_contain_text("2 of 2")
    expect(row).to_contain_text("100%")

    # The certificate's page opens signed out, in a browser that never logged in.
    stranger = open_page(server=server, phone=True)
    stranger.goto(certificate_url)
    expect(stranger.get_by_text("Valid certificate")).to_be_visible()
    expect(stranger.get_by_text("Ada Learner")).to_be_visible()
    expect(stranger.get_by_role("heading", name=title)).to_be_visible()
    stranger.screenshot(path=screenshots / "certificate-phone.png", full_page=True)
    stranger.goto("/certificates/not-a-real-code")
    expect(stranger.get_by_role("heading", name="No such certificate")).to_be_visible()


def test_a_priced_course_shows_its_price_and_a_learner_without_coins_sees_why_not(
    server: WebServer, signed_in_page: SignedInPage, screenshots: Path
) -> None:
    title = f"Paid algorithms {uuid.uuid4().hex[:6]}"
    course = rest_course(server, instructor(server), title, price=50)
    page, learner = signed_in_page(phone=True, server=server)
    page.goto("/courses")
    entry = catalogue_entry(page, title)
    expect(entry).to_contain_text("50 coins")  # the price, before opening the course
    page.screenshot(path=screenshots / "course-catalogue-phone.png", full_page=True)
    entry.get_by_role("link", name=title).click()
    expect(page.get_by_text("This course costs 50 coins. Your balance: 0 coins.")).to_be_visible()
    expect(page.get_by_text("Locked until you buy the course")).to_be_visible()
    page.get_by_role("button", name="Buy for 50 coins").click()
    expect(page.get_by_role("alert")).to_contain_text("this costs 50 coins and you have 0")
    expect(page.get_by_role("button", name="Buy for 50 coins")).to_be_enabled()  # still there to try again
    page.screenshot(path=screenshots / "course-priced-phone.png", full_page=True)
    fits_phone(page)
    # Nor can its lecture be played by going to its address.
    lecture = call(server, learner, "GET", f"/courses/{course['id']}/lectures")["items"][0]
    page.goto(f"/courses/{course['id']}/lectures/{lecture['id']}")
    expect(page.get_by_role("alert")).to_contain_text("This lecture is locked")
    expect(page.locator("video")).to_have_count(0)


def test_an_assignment_handed_in_is_graded_and_the_learner_sees_grade_and_feedback(
    server: WebServer, open_page: OpenPage, screenshots: Path
) -> None:
    teacher = instructor(server, "Alan Teacher")
    course = rest_course(server, teacher, f"Graded work {uuid.uuid4().hex[:6]}")
    learner = server.user("Barbara Learner")
    call(server, learner, "POST", f"/courses/{course['id']}/enroll")

    desk = open_page(server=server)
    log_in(desk, teacher)
    desk.goto(f"/courses/{course['id']}/edit")
    form = desk.get_by_role("form", name="New assignment")
    form.get_by_label("Assignment title").fill("FizzBuzz")
    form.get_by_label("Instructions").fill("Print 1 to 15, with Fizz and Buzz.")
    form.get_by_label("Points").fill("10")
    form.get_by_role("button", name="Create assignment").click()
    desk.get_by_role("list", name="Assignments").get_by_role("link", name="FizzBuzz").click()
    expect(desk.get_by_text("No one has handed in work yet.")).to_be_visible()

    page = open_page(server=server, phone=True)
    log_in(page, learner)
    page.goto(f"/courses/{course['id']}")
    page.get_by_role("list", name="Assignments").get_by_role("link", name="FizzBuzz").click()
    page.get_by_label("Your answer").fill("for i in range(1, 16): print(i)")
    page.get_by_role("button", name="Hand in").click()
    expect(page.get_by_text("Handed in.")).to_be_visible()
    expect(page.get_by_text("Not graded yet.")).to_be_visible()

    desk.reload()
    submission = desk.get_by_role("list", name="Submissions").get_by_role("listitem").first
    expect(submission).to_contain_text("Barbara Learner")
    expect(submission).to_contain_text("for i in range(1, 16)")
    # Over the maximum: the server's message, and the feedback typed is kept.
    submission.get_by_label("Grade (out of 10)").fill("11")
    submission.get_by_label("Feedback").fill("Good loop; print Fizz for multiples of 3.")
    submission.get_by_role("button", name="Save grade").click()
    expect(submission.get_by_role("alert")).to_contain_text("grade must be between 0 and 10")
    expect(submission.get_by_label("Feedback")).to_have_value("Good loop; print Fizz for multiples of 3.")
    submission.get_by_label("Grade (out of 10)").fill("8")
    submission.get_by_role("button", name="Save grade").click()
    expect(submission.get_by_text("Grade saved")).to_be_visible()
    desk.screenshot(path=screenshots / "grading-desktop.png", full_page=True)

    page.reload()
    mine = page.get_by_role("list", name="Your submissions")
    expect(mine).to_contain_text("Grade: 8 / 10")
    expect(mine).to_contain_text("Feedback: Good loop; print Fizz for multiples of 3.")
    page.screenshot(path=screenshots / "assignment-phone.png", full_page=True)

    # The player and the course editor fit a phone too (no sideways scrolling).
    page.goto(f"/courses/{course['id']}")
    page.get_by_role("list", name="Lectures").get_by_role("link", name="Getting started").click()
    wait_for_video(page, "readyState", 1)
    page.screenshot(path=screenshots / "lecture-player-phone.png", full_page=True)
    fits_phone(page)
    # Offline, a progress report fails with a message; back online, the next heartbeat saves and it goes away.
    page.context.set_offline(True)
    play(page)
    failed = page.get_by_role("alert").filter(has_text="Your progress could not be saved")
    expect(failed).to_contain_text("Cannot reach the server")
    page.context.set_offline(False)
    expect(failed).to_have_count(0)
    page.locator("video").evaluate("v => v.pause()")
    phone_desk = open_page(server=server, phone=True)
    log_in(phone_desk, teacher)
    phone_desk.goto(f"/courses/{course['id']}/edit")
    expect(phone_desk.get_by_role("button", name="Move Getting started up")).to_be_disabled()
    phone_desk.screenshot(path=screenshots / "course-editor-phone.png", full_page=True)
    fits_phone(phone_desk)
    # Editing a lecture: its fields in place, saved, and the list shows the new title.
    phone_desk.get_by_role("button", name="Edit Getting started").click()
    phone_desk.get_by_label("Lecture title").first.fill("First steps")
    phone_desk.get_by_role("button", name="Save lecture").click()
    expect(phone_desk.get_by_role("list", name="Course lectures")).to_contain_text("First steps")
    assert call(server, teacher, "GET", f"/courses/{course['id']}/lectures")["items"][0]["title"] == "First steps"
