"""The room screens in a real browser, several users at once (one browser context each) against a real server
and Postgres: chat in order, recovery after the network drops, edits/deletes/reactions, moderation.

Everything is selected by role and accessible name (API.md, "The web app"): the `role="log"` region
"Messages", the textbox "Message", the button "Send", the list "People here".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import socketio
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import SignedInPage, User, WebServer, rest


def new_room(server: WebServer, host: User, visibility: str = "public") -> dict[str, Any]:
    status, room = rest(
        server.url,
        "POST",
        "/rooms",
        {"name": f"Study night {uuid.uuid4().hex[:4]}", "kind": "study", "visibility": visibility},
        host.token(),
    )
    assert status == 201, room
    return room  # type: ignore[no-any-return]


def enter(page: Page, room_id: str) -> Locator:
    """Opens the room; returns its Messages log once the room is joined."""
    page.goto(f"/rooms/{room_id}")
    log = page.get_by_role("log", name="Messages")
    expect(log).to_be_visible()
    return log


def people(page: Page) -> Locator:
    return page.get_by_role("list", name="People here").get_by_role("listitem")


def send(page: Page, text: str) -> None:
    page.get_by_role("textbox", name="Message").fill(text)
    page.get_by_role("button", name="Send").click()


def messages(log: Locator) -> Locator:
    return log.get_by_role("listitem")


def test_four_learners_chat_in_a_room_and_see_each_others_messages_in_order(
    signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path
) -> None:
    names = ["Ada Lovelace", "Bo Chen", "Cy Okafor", "Di Rossi"]
    tabs: list[tuple[Page, User]] = [signed_in_page(name=name, phone=name == "Di Rossi") for name in names]
    room = new_room(web_server, tabs[0][1])
    logs = [enter(page, room["id"]) for page, _ in tabs]
    for page, _ in tabs:  # everyone sees everyone present
        expect(people(page)).to_have_count(4)
        for name in names:
            expect(page.get_by_role("list", name="People here")).to_contain_text(name)

    expected: list[str] = []
    for round_ in range(3):
        for page, user in tabs:
            text = f"{user.display_name.split()[0]} says {round_}: {uuid.uuid4().hex[:6]}"
            send(page, text)
            # The next one is written after this one is in: delivered to every tab, so the server has ordered it
            # (the sender's own tab shows it at once, while it is still being sent).
            for other in logs:
                expect(messages(other).last).to_contain_text(text)
            expected.append(text)
    for log in logs:
        expect(messages(log)).to_have_count(len(expected))
        expect(messages(log)).to_contain_text(expected)  # all of them, in this order, in every tab
    for page, _ in tabs:
        expect(page.get_by_role("textbox", name="Message")).to_have_value("")

    # @mentions: typing "@b" offers Bo Chen; Enter picks him as the server reads a name with a space.
    page = tabs[0][0]
    box = page.get_by_role("textbox", name="Message")
    box.fill("")
    box.press_sequentially("thanks @b")
    expect(page.get_by_role("option", name="Bo Chen")).to_be_visible()
    box.press("Enter")
    expect(box).to_have_value("thanks @[Bo Chen] ")
    box.press("Enter")
    # Shown as the name, not as it was typed.
    expect(messages(logs[1]).last.get_by_role("paragraph")).to_have_text("thanks @Bo Chen")
    bell = tabs[1][0].get_by_role("navigation", name="Main").get_by_role("button", name="Notifications")
    expect(bell).to_have_accessible_description("1 unread")

    # Someone leaves: the others' lists follow.
    tabs[3][0].goto("/rooms")
    for page, _ in tabs[:3]:
        expect(people(page)).to_have_count(3)
    tabs[3][0].go_back()
    for page, _ in tabs:
        expect(people(page)).to_have_count(4)
    # What the room looks like with a reaction and someone typing.
    last = messages(logs[1]).last
    last.get_by_role("button", name="React to Ada Lovelace's message").click()
    last.get_by_role("button", name="React with 🎉").click()
    expect(messages(logs[0]).last.get_by_role("button", name="🎉 1")).to_be_visible()
    tabs[2][0].get_by_role("textbox", name="Message").press_sequentially("I think the answer is")
    expect(tabs[0][0].get_by_text("Cy Okafor is typing…")).to_be_visible()
    tabs[0][0].screenshot(path=screenshots / "room-desktop.png")
    tabs[3][0].screenshot(path=screenshots / "room-phone.png", full_page=True)
    # No horizontal scrolling at phone width.
    width = tabs[3][0].evaluate("document.documentElement.scrollWidth")
    assert width <= 360, width


def test_chat_missed_while_offline_appears_in_order_and_nothing_typed_is_lost(
    signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path
) -> None:
    (away, away_user), (here, _) = signed_in_page(name="Away Learner"), signed_in_page(name="Here Learner")
    room = new_room(web_server, away_user)
    frames: list[str] = []  # what the away tab sends over Socket.IO
    away.on("websocket", lambda ws: ws.on("framesent", lambda payload: frames.append(str(payload))))
    away_log, here_log = enter(away, room["id"]), enter(here, room["id"])
    send(here, "before the drop")
    expect(messages(away_log).last).to_contain_text("before the drop")

    away.context.set_offline(True)
    banner = away.get_by_role("status").filter(has_text="Reconnecting…")
    expect(banner).to_be_visible()
    expect(people(here)).to_have_count(1)  # the others see the user go
    missed = [f"missed {i} {uuid.uuid4().hex[:4]}" for i in range(5)]
    for text in missed:
        send(here, text)
        expect(messages(here_log).last).to_contain_text(text)
    # Written while offline: one message sent (queued), and a draft left in the box.
    send(away, "written while offline")
    expect(messages(away_log).last).to_contain_text("Waiting for the connection")
    away.get_by_role("textbox", name="Message").fill("a draft I am still writing")
    away.screenshot(path=screenshots / "room-offline-desktop.png")

    away.context.set_offline(False)
    expected = ["before the drop", *missed, "written while offline"]
    expect(messages(away_log)).to_have_count(len(expected))
    expect(messages(away_log)).to_contain_text(expected)
    expect(messages(here_log)).to_contain_text(expected)
    expect(banner).to_have_count(0)
    expect(away.get_by_role("textbox", name="Message")).to_have_value("a draft I am still writing")
    expect(people(here)).to_have_count(2)
    # The rejoin was one room:join_many from the last message held: no history fetched twice.
    rejoins = [f for f in frames if '"room:join_many"' in f]
    assert len(rejoins) == 1 and f'"room_id":"{room["id"]}"' in rejoins[0], frames
    assert len([f for f in frames if '"room:join"' in f]) == 1, "only the first join is a room:join"
    assert not [f for f in frames if '"chat:history"' in f], "nothing missed beyond what the rejoin carried"


def test_edits_deletes_and_reactions_reach_the_other_user(signed_in_page: SignedInPage, web_server: WebServer) -> None:
    (ada, ada_user), (bo, _) = signed_in_page(name="Ada Writer"), signed_in_page(name="Bo Reader")
    room = new_room(web_server, ada_user)
    ada_log, bo_log = enter(ada, room["id"]), enter(bo, room["id"])

    # Typing is shown to the others.
    ada.get_by_role("textbox", name="Message").press_sequentially("tpyo here")
    expect(bo.get_by_text("Ada Writer is typing…")).to_be_visible()
    ada.get_by_role("button", name="Send").click()
    send(ada, "to be deleted")
    expect(messages(bo_log)).to_have_count(2)
    expect(bo.get_by_text("Ada Writer is typing…")).to_have_count(0)

    first = messages(ada_log).first
    expect(first).to_contain_text("tpyo here")
    first.get_by_role("button", name="Edit").click()
    edit_box = first.get_by_role("textbox", name="Edit message")
    edit_box.fill("typo fixed")
    first.get_by_role("button", name="Save").click()
    expect(messages(bo_log).first).to_contain_text("typo fixed")
    expect(messages(bo_log).first).to_contain_text("(edited)")
    # Only one's own messages can be edited or deleted (Bo is no moderator).
    expect(messages(bo_log).first.get_by_role("button", name="Edit")).to_have_count(0)
    expect(messages(bo_log).first.get_by_role("button", name="Delete")).to_have_count(0)

    messages(ada_log).filter(has_text="to be deleted").get_by_role("button", name="Delete").click()
    expect(messages(bo_log).last).to_contain_text("This message was deleted.")
    expect(messages(bo_log).last).not_to_contain_text("to be deleted")

    # Bo reacts with the keyboard; Ada sees the count; Bo's second press takes it back.
    bo_first = messages(bo_log).first
    bo_first.get_by_role("button", name="React to Ada Writer's message").focus()
    bo.keyboard.press("Enter")
    bo_first.get_by_role("button", name="React with 🎉").click()
    expect(messages(ada_log).first.get_by_role("button", name="🎉 1")).to_be_visible()
    toggle = bo_first.get_by_role("button", name="🎉 1")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    toggle.click()
    expect(messages(ada_log).first.get_by_role("button", name="🎉 1")).to_have_count(0)


def test_a_moderator_mutes_a_learner_who_sees_it(
    signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path
) -> None:
    (host, host_user), (learner, _) = signed_in_page(name="Mona Host"), signed_in_page(name="Lee Learner")
    room = new_room(web_server, host_user)
    enter(host, room["id"])
    learner_log = enter(learner, room["id"])
    expect(people(host)).to_have_count(2)
    # A learner gets no moderation menu.
    expect(learner.get_by_role("button", name="Moderate Mona Host")).to_have_count(0)

    host.get_by_role("button", name="Moderate Lee Learner").click()
    host.get_by_role("group", name="Moderate Lee Learner").get_by_role("button", name="Mute 5 minutes").click()
    expect(host.get_by_text("Lee Learner: muted for 5 minutes.")).to_be_visible()
    expect(learner.get_by_text("Mona Host muted you until")).to_be_visible()

    send(learner, "can anyone hear me")
    failed = messages(learner_log).filter(has_text="can anyone hear me")
    expect(failed).to_contain_text("Not sent: you are muted")  # the server's message
    learner.screenshot(path=screenshots / "room-muted-desktop.png")

    host.get_by_role("button", name="Moderate Lee Learner").click()
    host.get_by_role("group", name="Moderate Lee Learner").get_by_role("button", name="Unmute").click()
    expect(learner.get_by_text("Mona Host lifted your mute.")).to_be_visible()
    failed.get_by_role("button", name="Retry").click()
    expect(messages(host.get_by_role("log", name="Messages")).last).to_contain_text("can anyone hear me")

    # Slow mode is announced to the room.
    host.get_by_label("Slow mode").select_option("30")
    expect(learner.get_by_text("Mona Host turned on slow mode: one message every 30 s.")).to_be_visible()

    # Kicked: the learner is told and leaves the people list.
    host.get_by_role("button", name="Moderate Lee Learner").click()
    host.get_by_role("group", name="Moderate Lee Learner").get_by_role("button", name="Kick").click()
    expect(learner.get_by_role("alert")).to_contain_text("You were removed from this room.")
    expect(people(host)).to_have_count(1)


def test_rooms_page_creates_a_private_room_and_invites_by_email(
    signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path
) -> None:
    (host, _), (guest, guest_user) = signed_in_page(name="Hana Host"), signed_in_page(name="Gus Guest", phone=True)
    host.goto("/rooms")
    host.get_by_label("Room name").fill("Algebra circle")
    host.get_by_label("Kind").select_option("study")
    host.get_by_label("Who can join").select_option("private")
    host.get_by_role("button", name="Create room").click()
    expect(host.get_by_role("heading", name="Algebra circle", level=1)).to_be_visible()
    room_url = host.url

    guest.goto(room_url)
    expect(guest.get_by_role("alert")).to_contain_text("room not found")  # private: not invited yet

    host.goto("/rooms")
    # The room is the host's own, listed first under "Your rooms" however many public rooms the server has.
    host.get_by_role("list", name="Your rooms").get_by_role("button", name="Invite to Algebra circle").click()
    form = host.get_by_role("form", name="Invite to Algebra circle")
    form.get_by_label("Invitee's email").fill("nobody-here@example.com")
    form.get_by_role("button", name="Invite").click()
    expect(form.get_by_role("alert")).to_contain_text("no account has this email")
    form.get_by_label("Invitee's email").fill(guest_user.email)
    form.get_by_role("button", name="Invite").click()
    expect(form.get_by_role("status")).to_contain_text("Gus Guest was invited to Algebra circle as member.")
    host.screenshot(path=screenshots / "rooms-desktop.png")

    guest.goto("/rooms")
    guest.get_by_role("list", name="Your rooms").get_by_role("link", name="Algebra circle").click()
    expect(guest.get_by_role("log", name="Messages")).to_be_visible()
    expect(people(guest)).to_have_count(1)
    guest.screenshot(path=screenshots / "rooms-guest-phone.png")


def post_history(server: WebServer, user: User, room_id: str, count: int) -> None:
    """``count`` messages from ``user`` over Socket.IO (python-socketio, on the server's loop)."""

    token = user.token()  # not on the server's loop: it answers this request

    async def post() -> None:
        client = socketio.AsyncClient()
        await client.connect(server.url, auth={"token": token}, transports=["websocket"])
        try:
            ack = await client.call("room:join", {"room_id": room_id})
            assert ack["ok"], ack
            for i in range(1, count + 1):
                body = {"room_id": room_id, "body": f"history {i}", "client_msg_id": uuid.uuid4().hex}
                ack = await client.call("chat:send", body)
                assert ack["ok"], ack
        finally:
            await client.disconnect()

    server.run(post())


def test_scrolling_up_loads_older_messages_in_order(
    start_server: Callable[..., WebServer], signed_in_page: SignedInPage
) -> None:
    server = start_server(chat_rate_count=1000)  # one poster writes the history quickly
    poster = server.user("Old Timer")
    room = new_room(server, poster)
    post_history(server, poster, room["id"], 120)
    page, _ = signed_in_page(server=server, name="New Comer")
    log = enter(page, room["id"])
    expect(messages(log)).to_have_count(50)  # the last 50 on joining, the newest in view
    expect(messages(log).last).to_contain_text("history 120")
    expect(messages(log).last).to_be_in_viewport()

    log.evaluate("el => { el.scrollTop = 0; }")  # scrolling to the top loads the 50 before
    expect(messages(log)).to_have_count(100)
    expect(messages(log).last).to_contain_text("history 120")
    # By keyboard: the button at the top of the log loads the rest; then the start of the room shows.
    log.get_by_role("button", name="Load older messages").focus()
    page.keyboard.press("Enter")
    expect(messages(log)).to_have_count(120)
    expect(log.get_by_text("This is the start of the room.")).to_be_visible()
    expect(messages(log)).to_contain_text([f"history {i} " for i in (1, 2, 50, 51, 70, 71, 119, 120)])
