"""The client layer in a real browser: live notifications, and an access token refused mid-session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Locator, Page, Request, expect

from tests.browser.conftest import OpenPage, SignedInPage, WebServer, log_in, rest
from tests.conftest import TEST_JWT_SECRET


def bell(page: Page) -> Locator:
    return page.get_by_role("navigation", name="Main").get_by_role("button", name="Notifications", exact=True)


def test_a_notification_arrives_live_and_is_marked_read(
    signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path
) -> None:
    page, user = signed_in_page()
    expect(bell(page)).to_have_accessible_description("0 unread")
    # Another tab of the same user, to see the read mark travel too.
    other = page.context.new_page()
    other.goto("/")
    expect(bell(other)).to_have_accessible_description("0 unread")

    # An admin grants the learner the instructor role: the server notifies them (role_changed).
    admin = web_server.user("Admin", role="admin")
    status, body = rest(web_server.url, "PUT", f"/users/{user.id}/role", {"role": "instructor"}, admin.token())
    assert status == 200, body

    expect(bell(page)).to_have_accessible_description("1 unread")  # live, no reload
    bell(page).click()
    panel = page.get_by_role("region", name="Notifications")
    expect(panel.get_by_text("Your role is now instructor.", exact=True)).to_be_visible()
    page.screenshot(path=screenshots / "notifications-desktop.png")
    panel.get_by_role("button", name="Mark read: Your role is now instructor.").click()
    expect(bell(page)).to_have_accessible_description("0 unread")
    expect(bell(other)).to_have_accessible_description("0 unread")  # the other tab heard notification:read
    page.keyboard.press("Escape")
    expect(panel).to_have_count(0)
    expect(bell(page)).to_be_focused()  # focus goes back to the button that opened the panel


def test_an_access_token_refused_mid_session_is_refreshed_without_asking(
    open_page: OpenPage, start_server: Callable[..., WebServer]
) -> None:
    # A server whose token key changes on restart: the tab's access token is then refused (401), its refresh
    # token (in the database) still works.
    first = start_server(jwt_secret=TEST_JWT_SECRET)
    user = first.user("Night Owl")
    page = open_page(server=first)
    log_in(page, user)
    refreshes: list[int] = []

    def on_finished(request: Request) -> None:
        response = request.response()
        if request.url.endswith("/api/v1/auth/refresh") and response is not None:
            refreshes.append(response.status)

    page.on("requestfinished", on_finished)
    port = first.port
    first.stop()
    banner = page.get_by_role("status").filter(has_text="Reconnecting")
    expect(banner).to_be_visible()  # the connection dropped: the banner says so

    second = start_server(port=port, jwt_secret="another-key-" + "y" * 40)
    status, _ = rest(second.url, "GET", "/me", token=user.token())  # the new key signs new tokens only
    assert status == 200
    page.get_by_role("link", name="Courses", exact=True).click()
    expect(page.get_by_role("heading", name="Courses", exact=True)).to_be_visible()
    courses = page.get_by_text("No courses are published yet.").or_(page.get_by_role("list", name="Courses"))
    expect(courses).to_be_visible()
    expect(banner).to_have_count(0)  # Socket.IO is back too (its handshake was refused, then refreshed)
    expect(page).to_have_url(second.url + "/courses")  # never sent to /login
    assert refreshes == [200], refreshes  # one refresh, shared by the REST call and the socket


def test_a_refused_refresh_sends_the_user_to_log_in(signed_in_page: SignedInPage, web_server: WebServer) -> None:
    page, _ = signed_in_page()
    # The session is revoked elsewhere (logout with this login's refresh token, as another device would).
    token = page.evaluate("localStorage.getItem('studyhall.refresh_token')")
    status, _ = rest(web_server.url, "POST", "/auth/logout", {"refresh_token": token})
    assert status == 204
    page.reload()  # the access token was in memory only: the app must refresh, and is refused
    expect(page).to_have_url(web_server.url + "/login")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
