"""Course management in a real browser, against a real server and Postgres: the catalogue filtered by category and
tags; a course page with its price, category, tags and prerequisites (and the server's refusal naming the missing
one); "Continue where you left off" on the home page opening the lecture at the saved position; the owner's
learners table with last activity and one learner's lectures; the editor's tags and lifecycle buttons."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import OpenPage, User, WebServer, log_in, media_server, rest
from tests.browser.test_courses import (  # noqa: F401  (`media`: a module fixture, the test's MP4)
    PLAIN_S,
    call,
    instructor,
    media,
    wait_for_video,
)


@pytest.fixture(scope="module")
def site(database_url: str, tmp_path_factory: pytest.TempPathFactory, media: Path) -> Iterator[WebServer]:  # noqa: F811
    """A studyhall app that also serves the test's MP4 at /test-media/ (tests/browser/test_courses.py)."""
    app_server = media_server(database_url, tmp_path_factory, media)
    yield app_server
    app_server.stop()


def lecture_body(server: WebServer, title: str) -> dict[str, object]:
    return {"title": title, "media_kind": "video", "media_url": f"{server.url}/test-media/plain.mp4",
            "duration_s": PLAIN_S}  # fmt: skip


def published(server: WebServer, teacher: User, title: str, lectures: int = 1, **fields: object) -> dict[str, object]:
    course = call(server, teacher, "POST", "/courses", {"title": title, "description": f"About {title}.", **fields})
    for n in range(lectures):
        call(server, teacher, "POST", f"/courses/{course['id']}/lectures", lecture_body(server, f"Part {n + 1}"))
    return dict(call(server, teacher, "POST", f"/courses/{course['id']}/publish"))


def test_a_learner_filters_the_catalogue_and_sees_price_tags_and_prerequisites(
    site: WebServer, open_page: OpenPage, screenshots: Path
) -> None:
    server = site
    mark = uuid.uuid4().hex[:6]
    teacher = instructor(server, f"Teacher {mark}")
    basics = published(server, teacher, f"Basics {mark}")
    wanted = published(server, teacher, f"Data wrangling {mark}", category=f"Data {mark}",
                       tags=[f"python-{mark}", f"ml-{mark}"])  # fmt: skip
    other = published(server, teacher, f"Data viz {mark}", category=f"data {mark}", tags=[f"python-{mark}"])
    call(server, teacher, "PUT", f"/courses/{wanted['id']}/price", {"coins": 30})
    call(server, teacher, "PUT", f"/courses/{wanted['id']}/prerequisites", {"course_ids": [basics["id"]]})

    learner = server.user(f"Lena {mark}")
    page = open_page(server=server)
    log_in(page, learner)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Courses").click()
    search = page.get_by_role("search", name="Filter courses")
    search.get_by_label("Category").fill(f"  DATA {mark} ")
    search.get_by_label("Tags").fill(f"Python-{mark}, ML-{mark}")
    search.get_by_role("button", name="Filter").click()
    listing = page.get_by_role("list", name="Courses")
    expect(listing.get_by_role("link", name=str(wanted["title"]), exact=True)).to_be_visible()
    entries = listing.locator(":scope > li")  # (each entry holds a list of its tags)
    expect(entries).to_have_count(1)
    expect(page.get_by_role("list", name=f"Tags of {wanted['title']}")).to_contain_text(f"ml-{mark}")
    assert f"tag=Python-{mark}" in page.url  # the filter is in the URL: shareable, survives a reload
    page.screenshot(path=screenshots / "catalogue-filtered-desktop.png", full_page=True)

    # One tag only: both data courses.
    search.get_by_label("Tags").fill(f"python-{mark}")
    search.get_by_role("button", name="Filter").click()
    expect(listing.get_by_role("link", name=str(other["title"]), exact=True)).to_be_visible()
    expect(entries).to_have_count(2)

    listing.get_by_role("link", name=str(wanted["title"]), exact=True).click()
    facts = page.get_by_role("definition").filter(has_text="30 coins")
    expect(facts).to_be_visible()
    expect(page.get_by_role("link", name=f"data {mark}", exact=True)).to_be_visible()
    expect(page.get_by_role("list", name="Tags")).to_contain_text(f"python-{mark}")
    expect(
        page.get_by_role("list", name="Prerequisites").get_by_role("link", name=str(basics["title"]))
    ).to_be_visible()
    page.get_by_role("button", name="Buy for 30 coins").click()
    expect(page.get_by_role("alert")).to_contain_text(
        f"complete the prerequisites of this course first: “Basics {mark}”"
    )
    page.screenshot(path=screenshots / "course-prerequisites-desktop.png", full_page=True)

    phone = open_page(server=server, phone=True)
    log_in(phone, learner)
    phone.goto(f"/courses/{wanted['id']}")
    expect(phone.get_by_role("list", name="Prerequisites")).to_be_visible()
    phone.screenshot(path=screenshots / "course-facts-phone.png", full_page=True)


def test_continue_where_you_left_off_and_the_owners_learners_table(
    site: WebServer, open_page: OpenPage, screenshots: Path
) -> None:
    server = site
    mark = uuid.uuid4().hex[:6]
    teacher = instructor(server, f"Owner {mark}")
    course = published(server, teacher, f"Resumable {mark}", lectures=2)
    learner = server.user(f"Rita {mark}")
    token = learner.token()
    call(server, learner, "POST", f"/courses/{course['id']}/enroll")
    lectures = call(server, learner, "GET", f"/courses/{course['id']}/lectures")["items"]
    # Watched the first lecture to 5 s (a report the way the player sends it).
    status, _ = rest(server.url, "PUT", f"/lectures/{lectures[0]['id']}/progress", {"position_s": 5.0}, token=token)
    assert status == 200

    page = open_page(server=server)
    log_in(page, learner)
    resume = page.get_by_role("list", name="Continue where you left off")
    link = resume.get_by_role("link", name=f"Resume Part 1 in {course['title']}", exact=True)
    expect(link).to_be_visible()
    expect(resume).to_contain_text("stopped at 5 s")
    page.screenshot(path=screenshots / "home-continue-desktop.png", full_page=True)
    link.click()
    expect(page.get_by_role("heading", name="Part 1")).to_be_visible()
    assert page.url.endswith("?t=5")
    expect(page.get_by_text("Resuming at 5 s.")).to_be_visible()
    wait_for_video(page, "currentTime", 4.5)
    page.screenshot(path=screenshots / "continue-player-desktop.png")

    owner = open_page(server=server)
    log_in(owner, teacher)
    owner.goto(f"/courses/{course['id']}")
    owner.get_by_role("link", name="Learners' progress").click()
    row = owner.get_by_role("table", name="Learners").get_by_role("row", name=learner.display_name)
    expect(row).to_contain_text("0 of 2")
    expect(row).not_to_contain_text("Not started")  # last activity is the report above
    row.get_by_role("button", name=f"Lectures of {learner.display_name}").click()
    detail = owner.get_by_role("table", name=f"Progress of {learner.display_name}")
    expect(detail.get_by_role("row", name="Part 1")).to_contain_text("5 s of 12 s")
    expect(detail.get_by_role("row", name="Part 2")).to_contain_text("Not started")
    owner.screenshot(path=screenshots / "learners-progress-desktop.png", full_page=True)


def test_the_owner_tags_unpublishes_archives_and_cannot_delete_a_course_with_learners(
    site: WebServer, open_page: OpenPage, screenshots: Path
) -> None:
    server = site
    mark = uuid.uuid4().hex[:6]
    teacher = instructor(server, f"Keeper {mark}")
    course = published(server, teacher, f"Lifecycle {mark}")
    learner = server.user(f"Kim {mark}")
    call(server, learner, "POST", f"/courses/{course['id']}/enroll")

    page: Page = open_page(server=server)
    log_in(page, teacher)
    page.goto(f"/courses/{course['id']}/edit")
    page.get_by_label("Category").fill("  Systems ")
    page.get_by_label("Tags").fill(" Rust , WASM,rust")
    page.get_by_role("button", name="Save details").click()
    expect(page.get_by_label("Tags")).to_have_value("rust, wasm")
    expect(page.get_by_label("Category")).to_have_value("systems")

    page.get_by_role("button", name="Unpublish course").click()
    expect(page.get_by_text("This course is unpublished")).to_be_visible()
    page.get_by_role("button", name="Archive course").click()
    expect(page.get_by_text("This course is archived: read-only")).to_be_visible()
    page.get_by_role("button", name="Delete course").click()
    page.get_by_role("button", name="Delete for good").click()
    expect(page.get_by_role("alert")).to_contain_text("archive it instead")
    page.screenshot(path=screenshots / "course-lifecycle-desktop.png", full_page=True)
    page.get_by_role("button", name="Restore course").click()
    expect(page.get_by_role("button", name="Publish course again")).to_be_visible()

    # The enrolled learner still has it (unpublished), a newcomer does not.
    mine = open_page(server=server)
    log_in(mine, learner)
    mine.goto(f"/courses/{course['id']}")
    expect(mine.get_by_role("heading", name=str(course["title"]))).to_be_visible()
    expect(mine.get_by_text("Unpublished", exact=True)).to_be_visible()
