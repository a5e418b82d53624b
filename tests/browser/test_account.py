"""Account security in the browser: a forgotten password reset from the emailed link, changing the password,
and signing other sessions out from the profile page."""

from __future__ import annotations

import json
import re
import subprocess
import time
import zipfile
from email import message_from_bytes
from pathlib import Path

from playwright.sync_api import expect

from core_api.mail import MAILER
from tests.browser.conftest import PASSWORD, OpenPage, WebServer, fits_phone, log_in

NEW = "a much newer passphrase"


def reset_path(server: WebServer, email: str) -> str:
    """The path of the reset link mailed to ``email`` (development mode writes mail to the data directory)."""
    for _ in range(100):
        for path in server.app[MAILER].outbox():
            msg = message_from_bytes(path.read_bytes())
            if msg["To"] == email:
                body = msg.get_payload(decode=True)
                assert isinstance(body, bytes)
                found = re.search(r"https?://[^/\s]+(/reset-password\?token=\S+)", body.decode())
                assert found is not None
                return found.group(1)
        time.sleep(0.05)  # the mail is written in the background, by the server's thread
    raise AssertionError(f"no reset mail to {email}")


def test_a_forgotten_password_is_reset_from_the_emailed_link(
    open_page: OpenPage, web_server: WebServer, screenshots: Path
) -> None:
    user = web_server.user("Forgetful Fay")
    stale = open_page()
    log_in(stale, user)  # a session somewhere else, which the reset must end

    page = open_page()
    page.goto("/login")
    page.get_by_role("link", name="Forgot password?").click()
    # The log-in form has an "Email" field too: wait for the new page, or the fill can land on the old one.
    expect(page.get_by_role("heading", name="Forgot your password?")).to_be_visible()
    page.get_by_label("Email").fill(user.email)
    page.get_by_role("button", name="Send reset link").click()
    expect(page.get_by_role("status").filter(has_text="If an account uses this address")).to_be_visible()
    page.screenshot(path=screenshots / "forgot-password.png")

    page.goto(reset_path(web_server, user.email))
    page.get_by_label("New password", exact=True).fill(NEW)
    page.get_by_label("New password, again").fill("not the same")
    page.get_by_role("button", name="Set new password").click()
    expect(page.get_by_text("The two passwords differ.")).to_be_visible()
    page.get_by_label("New password, again").fill(NEW)
    page.screenshot(path=screenshots / "reset-password.png")
    page.get_by_role("button", name="Set new password").click()
    expect(page.get_by_role("status").filter(has_text="Your new password is set")).to_be_visible()
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(NEW)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()

    # The other browser's session ended with the reset: its next request signs it out.
    stale.goto("/profile")
    expect(stale.get_by_role("button", name="Log in")).to_be_visible()

    # The link worked once.
    page.goto(reset_path(web_server, user.email))
    page.get_by_label("New password", exact=True).fill("yet another passphrase")
    page.get_by_label("New password, again").fill("yet another passphrase")
    page.get_by_role("button", name="Set new password").click()
    expect(page.get_by_text("this reset link is invalid, used or expired")).to_be_visible()


def test_the_profile_changes_the_password_and_signs_other_sessions_out(
    open_page: OpenPage, web_server: WebServer, screenshots: Path
) -> None:
    user = web_server.user("Careful Cai")
    laptop, phone = open_page(), open_page(phone=True)
    log_in(laptop, user)
    log_in(phone, user)

    laptop.goto("/profile")
    sessions = laptop.get_by_role("list", name="Sessions")
    expect(sessions.get_by_role("listitem")).to_have_count(2)
    expect(sessions.get_by_text("This device")).to_have_count(1)
    laptop.screenshot(path=screenshots / "profile-sessions.png", full_page=True)
    laptop.get_by_role("button", name="Sign out everywhere else").click()
    expect(laptop.get_by_role("status").filter(has_text="Signed out 1 other session.")).to_be_visible()
    expect(sessions.get_by_role("listitem")).to_have_count(1)
    phone.goto("/profile")
    expect(phone.get_by_role("button", name="Log in")).to_be_visible()

    laptop.get_by_label("Current password").fill("not my password")
    laptop.get_by_label("New password", exact=True).fill(NEW)
    laptop.get_by_label("New password, again").fill(NEW)
    laptop.get_by_role("button", name="Change password").click()
    expect(laptop.get_by_text("the current password is wrong")).to_be_visible()
    laptop.get_by_label("Current password").fill(PASSWORD)
    laptop.get_by_role("button", name="Change password").click()
    expect(laptop.get_by_role("status").filter(has_text="Your password is changed")).to_be_visible()
    laptop.reload()  # this session stays signed in
    expect(laptop.get_by_role("heading", name="Profile")).to_be_visible()


def test_a_user_downloads_their_data_and_deletes_their_account(
    open_page: OpenPage, web_server: WebServer, screenshots: Path
) -> None:
    user = web_server.user("Leaving Lee")
    page = open_page()
    log_in(page, user)
    page.goto("/profile")
    page.get_by_role("button", name="Export my data").click()
    download_button = page.get_by_role("button", name="Download your data")
    expect(download_button).to_be_visible()
    with page.expect_download() as info:
        download_button.click()
    archive = zipfile.ZipFile(info.value.path())
    (me,) = json.loads(archive.read("users.json"))
    assert me["email"] == user.email and "password_hash" not in me
    assert "sessions" in json.loads(archive.read("manifest.json"))["tables"]

    page.get_by_role("button", name="Delete account…").click()
    page.get_by_role("textbox", name="Password", exact=True).fill("wrong password")
    page.get_by_role("button", name="Delete my account").click()
    expect(page.get_by_text("the password is wrong")).to_be_visible()
    page.get_by_role("textbox", name="Password", exact=True).fill(PASSWORD)
    page.get_by_label("Also erase my chat messages").check()
    page.screenshot(path=screenshots / "profile-delete-account.png", full_page=True)
    page.get_by_role("button", name="Delete my account").click()
    expect(page.get_by_role("status").filter(has_text="Your account was deleted")).to_be_visible()
    page.get_by_label("Email").fill(user.email)
    page.get_by_role("textbox", name="Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("wrong email or password")).to_be_visible()


def test_the_profile_fits_a_phone(open_page: OpenPage, web_server: WebServer, screenshots: Path) -> None:
    user = web_server.user("Phone Pat")
    page = open_page(phone=True)
    log_in(page, user)
    page.goto("/profile")
    expect(page.get_by_role("heading", name="Where you are signed in")).to_be_visible()
    expect(page.get_by_role("button", name="Export my data")).to_be_visible()
    page.screenshot(path=screenshots / "profile-phone.png", full_page=True)
    fits_phone(page)


def test_a_picture_and_a_bio_on_the_profile(
    open_page: OpenPage, web_server: WebServer, screenshots: Path, tmp_path: Path
) -> None:
    user = web_server.user("Pictured Pia")
    picture = tmp_path / "me.jpg"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x480", "-frames:v", "1",
         str(picture)],
        check=True,
    )  # fmt: skip
    page = open_page()
    log_in(page, user)
    page.goto("/profile")
    page.get_by_label("Profile picture").set_input_files(str(picture))
    image = page.get_by_role("img", name="Pictured Pia's picture")
    expect(image).to_be_visible()
    page.wait_for_function("document.querySelector('.picture img')?.naturalWidth === 256")
    page.get_by_label("About you").fill("I like graphs and long walks.")
    page.get_by_role("button", name="Save bio").click()
    expect(page.get_by_role("status").filter(has_text="Your bio is saved.")).to_be_visible()
    page.screenshot(path=screenshots / "profile-picture.png")
    page.reload()
    expect(page.get_by_label("About you")).to_have_value("I like graphs and long walks.")
    page.get_by_role("button", name="Remove picture").click()
    expect(image).to_have_count(0)
