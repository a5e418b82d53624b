"""Names of one long word (a room, a workspace, a person, a course and its lecture) wrap at phone width: no
screen that shows them scrolls sideways. Selected by role and accessible name."""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.sync_api import expect

from tests.browser.conftest import OpenPage, SignedInPage, WebServer, fits_phone, log_in, rest


def long_word(prefix: str) -> str:
    return prefix + uuid.uuid4().hex + uuid.uuid4().hex[:16]  # 48 characters and more, no space


def test_long_names_wrap_on_a_phone(signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path) -> None:
    page, user = signed_in_page(phone=True, name=long_word("Person"))
    token = user.token()
    status, room = rest(
        web_server.url, "POST", "/rooms", {"name": long_word("Room"), "kind": "study", "visibility": "public"}, token
    )
    assert status == 201, room
    body = {"name": long_word("Workspace"), "language": "python", "files": {}}
    status, workspace = rest(web_server.url, "POST", "/workspaces", body, token)
    assert status == 201, workspace

    page.goto("/rooms")
    expect(page.get_by_role("link", name=room["name"]).first).to_be_visible()
    fits_phone(page)
    page.goto(f"/rooms/{room['id']}")
    expect(page.get_by_role("heading", name=room["name"])).to_be_visible()
    expect(page.get_by_role("log", name="Messages")).to_be_visible()
    page.get_by_role("textbox", name="Message").fill(long_word("message"))
    page.get_by_role("button", name="Send").click()
    message = page.get_by_role("log", name="Messages").get_by_role("listitem")
    expect(message).to_have_count(1)
    # Sent, not pending any more (the pending line is replaced by the message: measured before, it is gone).
    expect(message.get_by_role("button", name="Edit")).to_be_visible()
    fits_phone(page)
    # The author's name wraps inside the message list, which scrolls only up and down: none of it is cut off.
    author = message.get_by_text(user.display_name, exact=True)
    clipped = author.evaluate(
        "e => e.getBoundingClientRect().right > e.closest('[role=log]').getBoundingClientRect().right"
    )
    assert not clipped
    page.screenshot(path=str(screenshots / "long-names-room-phone.png"), full_page=True)
    page.goto("/workspaces")
    expect(page.get_by_role("link", name=workspace["name"]).first).to_be_visible()
    fits_phone(page)
    page.goto(f"/workspaces/{workspace['id']}")
    expect(page.get_by_role("heading", name=workspace["name"])).to_be_visible()
    expect(page.get_by_role("list", name="People in this workspace")).to_contain_text(user.display_name)
    fits_phone(page)
    page.screenshot(path=str(screenshots / "long-names-workspace-phone.png"), full_page=True)
    page.goto("/profile")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    fits_phone(page)


def test_a_long_course_title_wraps_on_a_phone(open_page: OpenPage, web_server: WebServer, screenshots: Path) -> None:
    teacher = web_server.user(long_word("Teacher"), role="instructor")
    token = teacher.token()
    title, lecture_title = long_word("Course"), long_word("Lecture")
    body = {"title": title, "description": long_word("about")}
    status, course = rest(web_server.url, "POST", "/courses", body, token)
    assert status == 201, course
    lecture = {"title": lecture_title, "media_kind": "video", "media_url": "https://example.com/a.mp4",
               "duration_s": 60}  # fmt: skip
    status, body = rest(web_server.url, "POST", f"/courses/{course['id']}/lectures", lecture, token)
    assert status == 201, body
    page = open_page(phone=True)
    log_in(page, teacher)
    page.goto(f"/courses/{course['id']}")
    expect(page.get_by_role("heading", level=1, name=title)).to_be_visible()
    expect(page.get_by_text(lecture_title).first).to_be_visible()
    fits_phone(page)
    page.goto(f"/courses/{course['id']}/edit")
    expect(page.get_by_role("heading", level=1, name="Edit course")).to_be_visible()
    expect(page.get_by_text(lecture_title).first).to_be_visible()
    fits_phone(page)
    page.screenshot(path=str(screenshots / "long-names-course-editor-phone.png"), full_page=True)
