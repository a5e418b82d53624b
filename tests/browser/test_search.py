"""Search in a real browser: the header's search box leads to a results page grouped by kind, with the matched
words highlighted, and nothing the learner may not see (another instructor's draft, a room they are not in).

Selected by role and accessible name only.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from playwright.sync_api import expect

from core_api.context import CORE
from tests.browser.conftest import SignedInPage, WebServer
from tests.search_helpers import (
    add_community,
    add_course,
    add_lecture,
    add_member,
    add_message,
    add_reply,
    add_room,
    add_topic,
)


def test_the_search_box_finds_courses_lectures_and_messages_grouped_with_highlights(
    signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path
) -> None:
    tag = "zq" + uuid.uuid4().hex[:6].translate(str.maketrans("0123456789", "ghijklmnop"))
    page, learner = signed_in_page(name=f"Lea Searcher {tag}")
    teacher = web_server.user(f"Tom Teacher {tag}", role="instructor")

    async def world() -> dict[str, uuid.UUID]:
        async with web_server.app[CORE].pool.acquire() as conn:
            me, other = uuid.UUID(learner.id), uuid.UUID(teacher.id)
            course = await add_course(
                conn,
                other,
                f"Algorithms {tag}",
                "Algorithmic thinking: sorting, graphs and dynamic programming, with exercises in Python.",
            )
            await add_lecture(conn, course, f"Graph algorithms {tag}")
            draft = await add_course(conn, other, f"Algorithms draft {tag}", published=False)
            mine = await add_room(conn, me, "private", name=f"Study group {tag}")
            await add_member(conn, mine, me)
            await add_member(conn, mine, other)
            await add_message(conn, mine, other, f"Who has read the algorithms chapter for {tag} yet?")
            theirs = await add_room(conn, other, "private", name=f"Staff room {tag}")
            await add_member(conn, theirs, other)
            await add_message(conn, theirs, other, f"Algorithms exam answers for {tag}")
            board = await add_community(conn, other, "public")
            topic, opening = await add_topic(
                conn, other, f"Sorting help {tag}", "Which sort should I use?", community=board
            )
            await add_reply(conn, topic, opening, other, f"Merge sort: the algorithm is stable ({tag}).")
            hidden = await add_community(conn, other, "private")
            await add_topic(conn, other, f"Private forum {tag}", f"Algorithms grading rubric {tag}", community=hidden)
            return {"course": course, "draft": draft, "topic": topic}

    ids = web_server.run(world())

    box = page.get_by_role("searchbox", name="Search", exact=True)
    box.fill(f"algo {tag}")
    box.press("Enter")
    expect(page).to_have_url(re.compile(r"/search\?q=algo\+" + tag + "$"))
    expect(page.get_by_role("heading", name="Search", level=1)).to_be_visible()
    expect(box).to_have_value(f"algo {tag}")
    courses = page.get_by_role("region", name="Courses", exact=True)
    lectures = page.get_by_role("region", name="Lectures", exact=True)
    messages = page.get_by_role("region", name="Messages", exact=True)
    expect(courses.get_by_role("listitem")).to_have_count(1)
    expect(courses.get_by_role("link", name=f"Algorithms {tag}", exact=True)).to_be_visible()
    expect(courses.locator("mark").first).to_have_text("Algorithmic")
    expect(lectures.get_by_role("link", name=f"Graph algorithms {tag}", exact=True)).to_be_visible()
    expect(messages.get_by_role("listitem")).to_have_count(1)
    expect(messages.get_by_role("link", name=f"{teacher.display_name} in Study group {tag}")).to_be_visible()
    expect(messages.locator("mark").first).to_have_text("algorithms")
    posts = page.get_by_role("region", name="Posts", exact=True)
    expect(posts.get_by_role("listitem")).to_have_count(1)
    expect(posts.get_by_role("link", name=f"Sorting help {tag}", exact=True)).to_be_visible()
    expect(posts.locator("mark").first).to_have_text("algorithm")
    # Nothing the learner may not see: the draft, the staff room; and no people group (admins only).
    expect(page.get_by_text(f"Algorithms draft {tag}")).to_have_count(0)
    expect(page.get_by_text("exam answers")).to_have_count(0)
    expect(page.get_by_text("grading rubric")).to_have_count(0)
    expect(page.get_by_role("region", name="People", exact=True)).to_have_count(0)
    page.screenshot(path=str(screenshots / "search-results.png"), full_page=True)

    # A word found nowhere says so; the hit leads to its course.
    box.fill(f"nothingmatches {tag}")
    box.press("Enter")
    expect(page.get_by_text(f"Nothing found for “nothingmatches {tag}”.")).to_be_visible()
    page.go_back()
    page.get_by_role("region", name="Courses", exact=True).get_by_role("link", name=f"Algorithms {tag}").click()
    expect(page).to_have_url(re.compile(f"/courses/{ids['course']}$"))
    # A post leads to its topic.
    page.go_back()
    page.get_by_role("region", name="Posts", exact=True).get_by_role("link", name=f"Sorting help {tag}").click()
    expect(page).to_have_url(re.compile(f"/topics/{ids['topic']}$"))
    expect(page.get_by_role("heading", name=f"Sorting help {tag}", level=1)).to_be_visible()


def test_the_search_box_on_a_phone(signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path) -> None:
    page, learner = signed_in_page(phone=True)
    tag = "zq" + uuid.uuid4().hex[:6].translate(str.maketrans("0123456789", "ghijklmnop"))

    async def world() -> None:
        async with web_server.app[CORE].pool.acquire() as conn:
            await add_course(
                conn, uuid.UUID(learner.id), f"Python for data {tag}", "Python with pandas, plots and matrices."
            )

    web_server.run(world())
    box = page.get_by_role("searchbox", name="Search", exact=True)
    expect(box).to_be_visible()
    box.fill(f"pyth {tag}")
    box.press("Enter")
    expect(page.get_by_role("region", name="Courses", exact=True).locator("mark").first).to_have_text("Python")
    page.screenshot(path=str(screenshots / "search-phone.png"), full_page=True)
