"""Communities, administration and display names in a real browser, several users at once (one browser
context each) against a real server and Postgres.

- A learner finds a community, joins it and sees themself among its members; the owner makes them an admin
  and their page shows it without a reload; the owner removes another member; the new admin leaves.
- An admin grants the instructor role on /admin and reads the entry in the audit log, filtered.
- A learner renames themself on /profile (in a second tab) while in a room: the other person in the room sees
  the new name in "People here" and on the new messages.

Selected by role and accessible name only.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import OpenPage, SignedInPage, User, WebServer, fits_phone, log_in, rest


def new_community(server: WebServer, owner: User, name: str) -> dict[str, Any]:
    status, community = rest(
        server.url,
        "POST",
        "/communities",
        {"name": name, "description": "Weekly problem sets and a Friday contest.", "visibility": "public"},
        owner.token(),
    )
    assert status == 201, community
    return community  # type: ignore[no-any-return]


def members(page: Page) -> Locator:
    return page.get_by_role("list", name="Members")


def member(page: Page, name: str) -> Locator:
    return members(page).get_by_role("listitem").filter(has_text=name)


def test_a_learner_joins_a_community_and_its_owner_manages_the_members(
    signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path
) -> None:
    token = uuid.uuid4().hex[:6]
    name = f"Algorithms Club {token}"
    owner_page, owner = signed_in_page(name=f"Olga Owner {token}")
    community = new_community(web_server, owner, name)
    other = web_server.user(f"Mo Member {token}")
    assert rest(web_server.url, "POST", f"/communities/{community['id']}/join", None, other.token())[0] == 200
    learner_page, learner = signed_in_page(name=f"Lea Learner {token}")

    # The learner finds it from the main navigation, joins from the list and opens it.
    nav = learner_page.get_by_role("navigation", name="Main")
    for stable in ("Courses", "Rooms", "Workspaces", "Contests", "Communities"):
        expect(nav.get_by_role("link", name=stable)).to_be_visible()
    nav.get_by_role("link", name="Communities").click()
    expect(learner_page.get_by_role("heading", name="Communities", level=1)).to_be_visible()
    learner_page.get_by_role("searchbox", name="Find a community").fill(token)
    learner_page.get_by_role("button", name="Find", exact=True).click()
    found = learner_page.get_by_role("list", name="All communities").get_by_role("listitem")
    expect(found).to_have_count(1)
    expect(found).to_contain_text("2 members")
    found.get_by_role("button", name=f"Join {name}").click()
    expect(found).to_contain_text("3 members · you: member")
    expect(found.get_by_role("button", name=f"Join {name}")).to_have_count(0)
    expect(learner_page.get_by_role("list", name="Your communities")).to_contain_text(name)
    learner_page.screenshot(path=str(screenshots / "communities-list.png"))
    found.get_by_role("link", name=name).click()
    expect(learner_page.get_by_role("heading", name=name, level=1)).to_be_visible()
    expect(member(learner_page, f"{learner.display_name} (you)")).to_contain_text("Member")
    expect(members(learner_page).get_by_role("listitem")).to_have_count(3)
    # A plain member manages nobody.
    expect(learner_page.get_by_role("button", name=f"Remove {other.display_name}")).to_have_count(0)

    # The owner makes the learner an admin; the learner's page shows it without a reload.
    owner_page.goto(f"/communities/{community['id']}")
    row = member(owner_page, learner.display_name)
    row.get_by_label(f"New role for {learner.display_name}").select_option(label="Admin")
    row.get_by_role("button", name=f"Set the role of {learner.display_name}").click()
    expect(owner_page.get_by_role("main").get_by_role("status")).to_contain_text(
        f"{learner.display_name} is now admin."
    )
    expect(member(owner_page, learner.display_name)).to_contain_text("Admin")
    expect(learner_page.get_by_text("Your role: Admin")).to_be_visible()
    expect(member(learner_page, f"{learner.display_name} (you)")).to_contain_text("Admin")
    owner_page.screenshot(path=str(screenshots / "communities-desktop.png"), full_page=True)

    # The owner removes the other member, who is gone from both pages.
    member(owner_page, other.display_name).get_by_role("button", name=f"Remove {other.display_name}").click()
    expect(member(owner_page, other.display_name)).to_have_count(0)
    learner_page.reload()
    expect(members(learner_page).get_by_role("listitem")).to_have_count(2)
    # The new admin may not change the owner's role, nor remove them: no such controls.
    expect(learner_page.get_by_role("button", name=f"Remove {owner.display_name}")).to_have_count(0)
    # The owner cannot leave; the admin can.
    expect(owner_page.get_by_role("button", name="Leave community")).to_have_count(0)
    learner_page.get_by_role("button", name="Leave community").click()
    expect(learner_page.get_by_role("main").get_by_role("status")).to_contain_text("You left the community.")
    expect(learner_page.get_by_role("button", name="Join community")).to_be_visible()
    expect(member(learner_page, learner.display_name)).to_have_count(0)


def test_communities_at_phone_width(signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path) -> None:
    token = uuid.uuid4().hex[:6]
    page, user = signed_in_page(phone=True, name=f"Pia Phone {token}")
    community = new_community(web_server, user, f"Phone Readers {token}")
    page.goto(f"/communities/{community['id']}")
    expect(member(page, f"{user.display_name} (you)")).to_contain_text("Owner")
    fits_phone(page)
    page.screenshot(path=str(screenshots / "communities-phone.png"), full_page=True)
    long_one = new_community(web_server, user, "Readers" + uuid.uuid4().hex * 2)  # one long word: it must wrap
    page.goto(f"/communities/{long_one['id']}")
    expect(page.get_by_role("heading", name=long_one["name"])).to_be_visible()
    fits_phone(page)
    page.goto("/communities")
    expect(page.get_by_role("list", name="Your communities")).to_contain_text(community["name"])
    page.screenshot(path=str(screenshots / "communities-list-phone.png"), full_page=True)
    fits_phone(page)


def test_an_admin_grants_the_instructor_role_and_reads_it_in_the_audit_log(
    open_page: OpenPage, signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path
) -> None:
    token = uuid.uuid4().hex[:6]
    admin = web_server.user(f"Ari Admin {token}", role="admin")
    target = web_server.user(f"Tess Teacher {token}")
    learner_page, _ = signed_in_page()
    # Not an admin: no Admin link, and the page says why.
    expect(
        learner_page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin", exact=True)
    ).to_have_count(0)
    learner_page.goto("/admin")
    expect(learner_page.get_by_role("main").get_by_role("alert")).to_contain_text("Only administrators")

    page = open_page()
    log_in(page, admin)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin", exact=True).click()
    expect(page.get_by_role("heading", name="Roles")).to_be_visible()
    page.get_by_role("searchbox", name="Find people by email or name").fill(target.email)
    page.get_by_role("button", name="Find", exact=True).click()
    row = page.get_by_role("list", name="Accounts").get_by_role("listitem")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Learner")
    row.get_by_label(f"New role for {target.display_name}").select_option(label="Instructor")
    row.get_by_role("button", name=f"Grant the role to {target.display_name}").click()
    expect(row.get_by_role("status")).to_contain_text(f"{target.display_name} is now instructor.")
    status, account = rest(web_server.url, "GET", "/me", None, target.token())
    assert account["role"] == "instructor", (status, account)

    page.get_by_role("navigation", name="Administration").get_by_role("link", name="Audit log").click()
    page.get_by_label("Actor (user id)").fill(admin.id)
    page.get_by_label("Action").select_option(label="Role granted")
    page.get_by_role("button", name="Apply filters").click()
    entries = page.get_by_role("list", name="Audit entries").get_by_role("listitem")
    expect(entries).to_have_count(1)
    expect(entries).to_contain_text("user.role_granted")
    expect(entries).to_contain_text(f"by {admin.display_name}")
    expect(entries).to_contain_text(target.display_name)
    expect(entries).to_contain_text("student → instructor")
    page.screenshot(path=str(screenshots / "admin-desktop.png"), full_page=True)
    # A time window before the grant finds nothing.
    page.get_by_label("Until").fill("2020-01-01T00:00")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_text("No entries match.")).to_be_visible()


def test_a_rename_on_the_profile_reaches_the_others_in_a_room(
    signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path
) -> None:
    token = uuid.uuid4().hex[:6]
    ada_page, ada = signed_in_page(name=f"Ada {token}")
    bo_page, bo = signed_in_page(name=f"Bo {token}")
    status, room = rest(
        web_server.url,
        "POST",
        "/rooms",
        {"name": f"Rename {token}", "kind": "study", "visibility": "public"},
        ada.token(),
    )
    assert status == 201, room
    for page in (ada_page, bo_page):
        page.goto(f"/rooms/{room['id']}")
        expect(page.get_by_role("log", name="Messages")).to_be_visible()
    for page in (ada_page, bo_page):
        expect(page.get_by_role("list", name="People here").get_by_role("listitem")).to_have_count(2)
    bo_log = bo_page.get_by_role("log", name="Messages")
    ada_page.get_by_role("textbox", name="Message").fill("before the rename")
    ada_page.get_by_role("button", name="Send").click()
    expect(bo_log.get_by_role("listitem").last).to_contain_text(ada.display_name)

    # Ada renames herself in a second tab, keeping the room open in the first.
    profile = ada_page.context.new_page()
    profile.goto("/profile")
    profile.get_by_role("button", name="Change display name").click()
    # A name that passes for Bo's is refused with the server's reason.
    profile.get_by_label("Display name").fill(f"  BO   {token} ")
    profile.get_by_role("button", name="Save name").click()
    expect(profile.get_by_role("main").get_by_role("alert")).to_contain_text("too close to another user")
    new_name = f"Countess Ada {token}"
    profile.get_by_label("Display name").fill(new_name)
    profile.get_by_role("button", name="Save name").click()
    expect(profile.get_by_role("main").get_by_role("status")).to_contain_text(f"Your display name is now {new_name}.")
    profile.screenshot(path=str(screenshots / "profile-renamed.png"))

    people_here = bo_page.get_by_role("list", name="People here")
    expect(people_here.get_by_role("listitem")).to_contain_text([f"{bo.display_name} (you)", new_name])
    # The "Message" button beside her follows the new name too.
    expect(people_here.get_by_role("button", name=f"Message {new_name}", exact=True)).to_be_visible()
    # Her open room tab heard it too (the header's profile link), and her next message carries it.
    expect(ada_page.get_by_role("link", name=new_name)).to_be_visible()
    ada_page.get_by_role("textbox", name="Message").fill("hello with my new name")
    ada_page.get_by_role("button", name="Send").click()
    last = bo_log.get_by_role("listitem").last
    expect(last).to_contain_text("hello with my new name")
    expect(last).to_contain_text(new_name)
    # Read again, everything shows the new name.
    bo_page.reload()
    expect(bo_page.get_by_role("list", name="People here").get_by_role("listitem")).to_contain_text(
        [f"{bo.display_name} (you)", new_name]
    )
    expect(bo_log.get_by_role("listitem")).to_have_count(2)
    for message in bo_log.get_by_role("listitem").all():  # the older one too: names are read by author id
        expect(message).to_contain_text(new_name)
    bo_page.screenshot(path=str(screenshots / "room-renamed.png"))
