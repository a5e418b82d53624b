"""The app shell in a real browser: sign up, log in and out, the navigation, the 404 page, phone width."""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import PASSWORD, OpenPage, SignedInPage, WebServer, fits_phone, log_in, rest

NAV_LINKS = ("Courses", "Rooms", "Workspaces", "Contests")


def expect_navigation(page: Page) -> None:
    nav = page.get_by_role("navigation", name="Main")
    expect(nav).to_be_visible()
    for name in NAV_LINKS:
        expect(nav.get_by_role("link", name=name, exact=True)).to_be_visible()
    expect(nav.get_by_role("button", name="Notifications", exact=True)).to_be_visible()


def test_register_log_in_see_the_navigation_and_log_out(
    open_page: OpenPage, web_server: WebServer, screenshots: Path
) -> None:
    page = open_page()
    page.goto("/")
    expect(page).to_have_url(web_server.url + "/login")  # signed out: the start page asks to log in
    page.screenshot(path=screenshots / "login-desktop.png")
    page.get_by_role("link", name="Create account").click()
    expect(page).to_have_url(web_server.url + "/register")
    email = f"new-{uuid.uuid4().hex[:12]}@example.com"
    page.get_by_label("Display name").fill("Ada Learner")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()

    expect_navigation(page)
    expect(page.get_by_role("heading", name="Welcome, Ada Learner")).to_be_visible()
    expect(page).to_have_url(web_server.url + "/")
    page.screenshot(path=screenshots / "home-desktop.png")

    # A reload keeps the session (the refresh token is kept; the access token is not).
    page.reload()
    expect_navigation(page)
    refresh_token = page.evaluate("localStorage.getItem('studyhall.refresh_token')")
    assert refresh_token

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(web_server.url + "/login")
    expect(page.get_by_role("navigation", name="Main")).to_have_count(0)
    # Logging out revoked the refresh token on the server, not only in this tab.
    status, body = rest(web_server.url, "POST", "/auth/refresh", {"refresh_token": refresh_token})
    assert status == 401, body

    # A wrong password is answered with the server's message; the right one signs in.
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("wrong email or password")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect_navigation(page)


def test_pages_for_signed_in_users_come_back_after_logging_in(open_page: OpenPage, web_server: WebServer) -> None:
    user = web_server.user("Returning Reader")
    page = open_page()
    page.goto("/rooms")
    expect(page).to_have_url(web_server.url + "/login?next=%2Frooms")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")  # the keyboard submits the form
    expect(page).to_have_url(web_server.url + "/rooms")
    expect(page.get_by_role("heading", name="Rooms", exact=True)).to_be_visible()


def test_unknown_pages_show_the_404_page(open_page: OpenPage, web_server: WebServer, screenshots: Path) -> None:
    page = open_page()
    response = page.goto("/no/such/page")
    assert response is not None and response.status == 200  # index.html: the app decides
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page.get_by_text("/no/such/page")).to_be_visible()

    log_in(page, web_server.user())
    page.goto("/courses/not-a-screen-yet/at-all")
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()  # still inside the app shell
    page.screenshot(path=screenshots / "not-found-desktop.png")
    page.get_by_role("link", name="Go to the start page").click()
    expect(page).to_have_url(web_server.url + "/")


def test_phone_width(open_page: OpenPage, web_server: WebServer, screenshots: Path) -> None:
    page = open_page(phone=True)
    page.goto("/login")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    page.screenshot(path=screenshots / "login-phone.png")
    log_in(page, web_server.user("Phone Person With A Long Name"))
    nav = page.get_by_role("navigation", name="Main")
    page.screenshot(path=screenshots / "home-phone.png")
    for control in [nav.get_by_role("link", name=n, exact=True) for n in NAV_LINKS] + [
        nav.get_by_role("button", name="Notifications", exact=True),
        nav.get_by_role("button", name="Log out"),
    ]:
        expect(control).to_be_in_viewport()  # not scrolled away after logging in
        box = control.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360 and box["y"] < 740, box
    # Nothing is wider than the screen (no sideways scrolling).
    fits_phone(page)
    nav.get_by_role("button", name="Notifications", exact=True).click()
    expect(page.get_by_text("Nothing yet.")).to_be_visible()
    page.screenshot(path=screenshots / "notifications-phone.png")
    fits_phone(page)


def test_keyboard_reaches_the_navigation_with_a_visible_focus(signed_in_page: SignedInPage) -> None:
    page, _ = signed_in_page()
    page.reload()  # from the top of a freshly loaded page
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    page.keyboard.press("Tab")  # the skip link first
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    for name in ("studyhall", *NAV_LINKS):
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name=name, exact=True)).to_be_focused()
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("none", ""), f"no visible focus on {name}"
    page.keyboard.press("Enter")  # follows the focused link: Contests
    expect(page.get_by_role("heading", name="Contests", exact=True)).to_be_visible()


def test_api_errors_are_shown_as_their_message(open_page: OpenPage, web_server: WebServer) -> None:
    taken = web_server.user("First Owner")
    page = open_page()
    page.goto("/register")
    page.get_by_label("Display name").fill("Second Owner")
    page.get_by_label("Email").fill(taken.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("alert")).to_have_text("an account with this email already exists")  # the 409's message
    expect(page.get_by_label("Display name")).to_have_value("Second Owner")  # nothing typed is lost
