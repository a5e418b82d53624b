"""Direct messages in a real browser: "Message" on a person opens the conversation (a room of kind dm) on the
room screen, at /messages/{id}; the "Messages" screen lists conversations with unread counts that reading
clears; and a third user cannot open someone else's conversation. Selected by role and accessible name."""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import SignedInPage, WebServer, rest
from tests.browser.test_rooms import enter, messages, new_room, send


def conversations(page: Page) -> Locator:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Messages", exact=True).click()
    expect(page.get_by_role("heading", name="Messages", exact=True)).to_be_visible()
    return page.get_by_role("list", name="Conversations")


def test_message_a_person_then_read_and_reply_with_unread_counts(
    signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path
) -> None:
    tag = uuid.uuid4().hex[:4]
    alice_page, alice = signed_in_page(name=f"Alice {tag}")
    bob_page, bob = signed_in_page(name=f"Bob {tag}")
    carol_page, _ = signed_in_page(name=f"Carol {tag}")
    room = new_room(web_server, alice)
    enter(alice_page, room["id"])
    enter(bob_page, room["id"])

    # Alice messages Bob from the room's people list: the conversation opens on the room screen.
    alice_page.get_by_role("button", name=f"Message {bob.display_name}", exact=True).click()
    expect(alice_page.get_by_role("heading", name=bob.display_name, exact=True)).to_be_visible()
    expect(alice_page.get_by_role("link", name="All messages", exact=True)).to_be_visible()
    dm_url = alice_page.url
    dm_id = dm_url.split("/messages/")[1]  # a conversation's address is under Messages, and so is the menu's mark
    assert dm_id != room["id"]
    main_nav = alice_page.get_by_role("navigation", name="Main")
    expect(main_nav.get_by_role("link", name="Messages", exact=True)).to_have_attribute("aria-current", "page")
    expect(main_nav.get_by_role("link", name="Rooms", exact=True)).not_to_have_attribute("aria-current", "page")
    log = alice_page.get_by_role("log", name="Messages")
    for text in (f"hi Bob {tag}", f"are you there {tag}?"):
        send(alice_page, text)
        expect(messages(log).last).to_contain_text(text)
    expect(alice_page.get_by_text("This is the start of your conversation.")).to_be_visible()
    # Nobody is offered "Message" inside a conversation.
    expect(alice_page.get_by_role("button", name=f"Message {bob.display_name}", exact=True)).to_have_count(0)

    # Bob's Messages screen: one conversation, two unread.
    listing = conversations(bob_page)
    alice_link = bob_page.get_by_role("link", name=alice.display_name, exact=True)
    entry = listing.get_by_role("listitem").filter(has=alice_link)
    expect(entry).to_contain_text("2 unread")
    expect(entry).to_contain_text(f"{alice.display_name}: are you there {tag}?")
    nav_link = bob_page.get_by_role("navigation", name="Main").get_by_role("link", name="Messages", exact=True)
    expect(nav_link).to_have_accessible_description("2 unread")  # the badge beside "Messages"
    bob_page.screenshot(path=str(screenshots / "messages-unread-desktop.png"), full_page=True)

    # Opening it reads it: back on the list the count is gone.
    entry.get_by_role("link", name=alice.display_name, exact=True).click()
    bob_log = bob_page.get_by_role("log", name="Messages")
    expect(messages(bob_log)).to_have_count(2)
    expect(messages(bob_log).first).to_contain_text(f"hi Bob {tag}")
    expect(nav_link).not_to_have_accessible_description("2 unread")  # read: the badge goes
    send(bob_page, f"here {tag}")
    expect(messages(log).last).to_contain_text(f"here {tag}")  # live to Alice, who has it open
    alice_page.screenshot(path=str(screenshots / "messages-conversation-desktop.png"), full_page=True)
    # Alice's Messages list follows new messages live, without a reload.
    alice_page.get_by_role("link", name="All messages", exact=True).click()
    alice_entry = alice_page.get_by_role("list", name="Conversations").get_by_role("listitem")
    expect(alice_entry).to_contain_text(f"{bob.display_name}: here {tag}")
    expect(alice_entry).not_to_contain_text("unread")  # she read it in the conversation
    bob_page.get_by_role("link", name="All messages", exact=True).click()
    entry = (
        bob_page.get_by_role("list", name="Conversations")
        .get_by_role("listitem")
        .filter(has=bob_page.get_by_role("link", name=alice.display_name, exact=True))
    )
    expect(entry).to_contain_text(f"You: here {tag}")
    expect(entry).not_to_contain_text("unread")
    enter(bob_page, dm_id)  # (its room address opens it too: a search hit links there)
    send(bob_page, f"still here {tag}")
    expect(alice_entry).to_contain_text("1 unread")
    expect(alice_entry).to_contain_text(f"{bob.display_name}: still here {tag}")

    # Carol, who is not in it, cannot open it, and has no conversations.
    carol_page.goto(dm_url)
    expect(carol_page.get_by_role("alert")).to_contain_text("not found")
    expect(carol_page.get_by_role("log", name="Messages")).to_have_count(0)
    expect(conversations(carol_page)).to_have_count(0)
    expect(carol_page.get_by_text("No conversations yet.")).to_be_visible()


def test_messages_screen_on_a_phone(signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path) -> None:
    tag = uuid.uuid4().hex[:4]
    page, _ = signed_in_page(name=f"Dee {tag}", phone=True)
    other_page, other = signed_in_page(name=f"Eli {tag}")
    # Dee messages Eli from a community's member list.
    status, community = rest(
        web_server.url,
        "POST",
        "/communities",
        {"name": f"Phone club {tag}"},
        other.token(),
    )
    assert status == 201, community
    page.goto(f"/communities/{community['id']}")
    page.get_by_role("button", name="Join community", exact=True).click()
    page.get_by_role("button", name=f"Message {other.display_name}", exact=True).click()
    expect(page.get_by_role("heading", name=other.display_name, exact=True)).to_be_visible()
    send(page, f"hello from the phone {tag}")
    expect(messages(page.get_by_role("log", name="Messages")).last).to_contain_text(f"hello from the phone {tag}")
    listing = conversations(other_page)
    expect(listing.get_by_role("listitem")).to_contain_text("1 unread")
    conversations(page)
    page.screenshot(path=str(screenshots / "messages-phone.png"), full_page=True)
