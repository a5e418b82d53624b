"""Applying to teach in the browser: a learner applies from the profile, an admin approves in Administration,
and the learner becomes an instructor (told live)."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from core_api.context import CORE
from tests.browser.conftest import OpenPage, WebServer, log_in


def test_a_learner_applies_and_an_admin_approves(open_page: OpenPage, web_server: WebServer, screenshots: Path) -> None:
    learner = web_server.user("Aspiring Ada")
    admin = web_server.user("Admin Ahmed", role="admin")
    page = open_page()
    log_in(page, learner)
    page.goto("/profile")
    page.get_by_label("Qualifications").fill("short")
    page.get_by_role("button", name="Apply to teach").click()
    expect(page.get_by_text("Say a little more about your qualifications")).to_be_visible()
    page.get_by_label("Qualifications").fill("I taught secondary-school chemistry for eight years.")
    page.get_by_label("Links (optional, one https:// link per line)").fill("https://example.com/ada")
    page.get_by_role("button", name="Apply to teach").click()
    expect(page.get_by_role("status").filter(has_text="waiting for an administrator")).to_be_visible()
    page.screenshot(path=screenshots / "teach-application-pending.png")

    # The test database is shared with the API tests, which leave pending applications behind: set them aside
    # so that the queue (oldest first, 20 a page) opens on this one.
    web_server.run(
        web_server.app[CORE].pool.execute(
            "UPDATE teacher_applications SET state = 'withdrawn', decided_at = now()"
            " WHERE state = 'pending' AND user_id <> $1::uuid",
            learner.id,
        )
    )
    desk = open_page()
    log_in(desk, admin)
    desk.goto("/admin/teachers")
    application = desk.get_by_role("article", name="Application from Aspiring Ada")
    expect(application.get_by_text("eight years")).to_be_visible()
    application.get_by_label("Note to Aspiring Ada").fill("Welcome!")
    desk.screenshot(path=screenshots / "admin-teacher-applications.png")
    application.get_by_role("button", name="Approve Aspiring Ada").click()
    expect(application.get_by_role("status")).to_have_text("Aspiring Ada is now an instructor.")

    # The learner hears it live, and the profile now says Instructor.
    bell = page.get_by_role("navigation", name="Main").get_by_role("button", name="Notifications", exact=True)
    expect(bell).not_to_have_accessible_description("0 unread")
    page.reload()
    expect(page.get_by_text("Instructor", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Teach on studyhall")).to_have_count(0)
