"""Forums in a real browser: a member opens a topic on a community's board, another replies and answers a
reply, votes, the asker accepts an answer, the owner pins and locks; an outsider reads but cannot post.
Selected by role and accessible name."""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import OpenPage, SignedInPage, WebServer, log_in, rest


def post_by(page: Page, name: str, text: str) -> Locator:
    return page.get_by_role("article", name=f"Post by {name}", exact=True).filter(has_text=text)


def test_a_community_forum_topic_with_threaded_replies_votes_and_an_accepted_answer(
    signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path
) -> None:
    tag = uuid.uuid4().hex[:4]
    owner_page, owner = signed_in_page(name=f"Olga {tag}")
    asker_page, asker = signed_in_page(name=f"Ann {tag}")
    helper_page, helper = signed_in_page(name=f"Hal {tag}")
    outsider_page, _ = signed_in_page(name=f"Otto {tag}")
    status, community = rest(web_server.url, "POST", "/communities", {"name": f"Forum club {tag}"}, owner.token())
    assert status == 201, community
    for user in (asker, helper):
        status, _ = rest(
            web_server.url, "POST", f"/communities/{community['id']}/members", {"user_id": user.id}, owner.token()
        )
        assert status == 201

    # Ann opens a topic from the community page's Forum link.
    asker_page.goto(f"/communities/{community['id']}")
    asker_page.get_by_role("link", name="Forum", exact=True).click()
    expect(asker_page.get_by_role("heading", name="Forum", exact=True)).to_be_visible()
    asker_page.get_by_role("textbox", name="Title").fill(f"Why does my recursion never stop {tag}?")
    asker_page.get_by_role("textbox", name="Post").fill("It prints forever.")
    asker_page.get_by_role("button", name="Post topic").click()
    expect(asker_page.get_by_role("heading", name=f"Why does my recursion never stop {tag}?")).to_be_visible()
    topic_url = asker_page.url

    # Hal replies, then answers his own reply's follow-up in a thread.
    helper_page.goto(topic_url)
    helper_page.get_by_role("textbox", name="Your reply").fill("You need a base case.")
    helper_page.get_by_role("button", name="Post reply").click()
    answer = post_by(helper_page, helper.display_name, "You need a base case.")
    expect(answer).to_be_visible()
    asker_page.reload()
    post_by(asker_page, helper.display_name, "You need a base case.").get_by_role("button", name="Reply").click()
    asker_page.get_by_role("textbox", name=f"Reply to {helper.display_name}").fill("Where does it go?")
    asker_page.get_by_role("button", name="Post reply").click()
    replies = asker_page.get_by_role("list", name="Replies").get_by_role("listitem")
    expect(replies).to_have_count(2)
    expect(replies.nth(1)).to_contain_text("Where does it go?")

    # Votes: Ann upvotes Hal's answer (pressing again would take it back); nobody votes on their own post.
    ann_view = post_by(asker_page, helper.display_name, "You need a base case.")
    ann_view.get_by_role("button", name="Upvote").click()
    expect(ann_view.get_by_role("button", name="Upvote")).to_have_attribute("aria-pressed", "true")
    expect(ann_view.get_by_text("1 point", exact=True)).to_be_visible()
    expect(
        post_by(asker_page, asker.display_name, "Where does it go?").get_by_role("button", name="Upvote")
    ).to_have_count(0)

    # Ann accepts Hal's answer; Hal (not the asker) is not offered to.
    ann_view.get_by_role("button", name="Accept answer").click()
    expect(ann_view).to_contain_text("Accepted answer")
    helper_page.reload()
    expect(helper_page.get_by_role("button", name="Accept answer")).to_have_count(0)
    asker_page.screenshot(path=str(screenshots / "forum-topic-desktop.png"), full_page=True)

    # The owner pins and locks; the board shows it, and no one can reply any more.
    owner_page.goto(topic_url)
    owner_page.get_by_role("group", name="Moderation").get_by_role("button", name="Pin").click()
    expect(owner_page.get_by_role("button", name="Unpin")).to_be_visible()
    owner_page.get_by_role("button", name="Lock").click()
    expect(owner_page.get_by_text("This topic is locked: no new replies.")).to_be_visible()
    helper_page.reload()
    expect(helper_page.get_by_role("button", name="Post reply")).to_have_count(0)

    # An outsider reads the public board but is not offered to post.
    outsider_page.goto(f"/communities/{community['id']}/forum")
    entry = outsider_page.get_by_role("list", name="Topics").get_by_role("listitem")
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text("Pinned")
    expect(entry).to_contain_text("Answered")
    expect(outsider_page.get_by_role("button", name="Post topic")).to_have_count(0)
    expect(outsider_page.get_by_text("Only members can start topics and reply here.")).to_be_visible()
    outsider_page.screenshot(path=str(screenshots / "forum-board-desktop.png"), full_page=True)


def test_a_course_forum_on_a_phone(
    signed_in_page: SignedInPage, open_page: OpenPage, web_server: WebServer, screenshots: Path
) -> None:
    tag = uuid.uuid4().hex[:4]
    teacher = web_server.user(f"Tess {tag}", role="instructor")
    teacher_page = open_page()
    log_in(teacher_page, teacher)
    page, learner = signed_in_page(name=f"Lee {tag}", phone=True)
    teacher_token = teacher.token()
    status, course = rest(web_server.url, "POST", "/courses", {"title": f"Loops {tag}"}, teacher_token)
    assert status == 201, course
    lecture = {"title": "L", "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 60.0}
    assert rest(web_server.url, "POST", f"/courses/{course['id']}/lectures", lecture, teacher_token)[0] == 201
    assert rest(web_server.url, "POST", f"/courses/{course['id']}/publish", None, teacher_token)[0] == 200
    # Not enrolled: the board says so.
    page.goto(f"/courses/{course['id']}/forum")
    expect(page.get_by_role("alert")).to_contain_text("enroll in the course")
    assert rest(web_server.url, "POST", f"/courses/{course['id']}/enroll", None, learner.token())[0] == 201
    page.goto(f"/courses/{course['id']}")
    page.get_by_role("link", name="Forum", exact=True).click()
    page.get_by_role("textbox", name="Title").fill(f"Off by one {tag}")
    page.get_by_role("textbox", name="Post").fill("range(1, n) misses n?")
    page.get_by_role("button", name="Post topic").click()
    expect(page.get_by_role("heading", name=f"Off by one {tag}")).to_be_visible()
    teacher_page.goto(page.url.replace(web_server.url, ""))
    teacher_page.get_by_role("textbox", name="Your reply").fill("Yes: the stop is excluded.")
    teacher_page.get_by_role("button", name="Post reply").click()
    page.reload()
    expect(post_by(page, teacher.display_name, "the stop is excluded")).to_be_visible()
    page.screenshot(path=str(screenshots / "forum-topic-phone.png"), full_page=True)
