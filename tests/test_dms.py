"""Direct messages (rooms of kind dm) against real Postgres and real Socket.IO clients: find-or-create and
its races, delivery in order with unread counts and read markers, privacy from third users and admins,
blocks, and the limits (size, rate of new conversations, garbage)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from core_api.settings import Settings
from tests.chat_helpers import OpenTab, fetch, fetchval, make_room
from tests.conftest import Actor, ApiClient, make_settings

MAX_PEOPLE = 4
NEW_PER_WINDOW = 3


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, dm_max_participants=MAX_PEOPLE, dm_new_rate_count=NEW_PER_WINDOW)


async def start(api: ApiClient, actor: Actor, *others: Actor | str) -> dict[str, Any]:
    ids = [o if isinstance(o, str) else o.id for o in others]
    status, body = await api.call("POST", "/dms", actor, json={"user_ids": ids})
    assert status == 200, body
    conversation: dict[str, Any] = body
    return conversation


async def conversations(api: ApiClient, actor: Actor) -> dict[str, dict[str, Any]]:
    status, body = await api.call("GET", "/dms?limit=200", actor)
    assert status == 200, body
    return {c["id"]: c for c in body["items"]}


async def test_messages_arrive_in_order_with_unread_counts_and_read_markers(api: ApiClient, tabs: OpenTab) -> None:
    alice, bob = await api.user(name="Alice Dm"), await api.user(name="Bob Dm")
    convo = await start(api, alice, bob)
    assert convo["created"] is True and convo["title"] == "Bob Dm"
    assert {m["id"] for m in convo["members"]} == {alice.id, bob.id}
    room_id = convo["id"]
    # Bob is told, through the notifications he already has.
    status, notes = await api.call("GET", "/me/notifications", bob)
    assert [(n["kind"], n["payload"]["room_id"]) for n in notes["items"]] == [("dm_started", room_id)]

    a, b, b2 = await tabs(alice), await tabs(bob), await tabs(bob)
    await a.join(room_id)
    await b.join(room_id)
    sent = await asyncio.gather(*(a.send(room_id, f"hello {i}") for i in range(5)))
    assert sorted(m["seq"] for m in sent) == [1, 2, 3, 4, 5]
    delivered = [(await b.next("chat:message"))["seq"] for _ in range(5)]
    assert delivered == [1, 2, 3, 4, 5]  # live, in seq order
    # Bob's other tab is not in the room (say, on the Messages list): it hears of each message too.
    heard = sorted([(await b2.next("dm:message"))["message"]["seq"] for _ in range(5)])
    assert heard == [1, 2, 3, 4, 5] and await b2.nothing_pending("chat:message")

    listed = (await conversations(api, bob))[room_id]
    assert (listed["unread"], listed["last_read_seq"], listed["last_seq"]) == (5, 0, 5)
    assert listed["last_message"]["seq"] == 5 and listed["title"] == "Alice Dm"
    assert (await conversations(api, alice))[room_id]["unread"] == 0  # one's own messages are not unread
    status, unread = await api.call("GET", "/dms/unread", bob)
    assert unread == {"conversations": 1, "messages": 5}

    ack = await b.ok("chat:read", {"room_id": room_id, "seq": 3})
    assert (ack["last_read_seq"], ack["unread"]) == (3, 2)
    # Bob's other tab hears it, so both show the same count; the reading tab does not.
    assert await b2.next("chat:read") == {"room_id": room_id, "last_read_seq": 3, "unread": 2}
    assert await b.nothing_pending("chat:read")
    # The marker never moves back and never past the last message.
    assert (await b.ok("chat:read", {"room_id": room_id, "seq": 1}))["last_read_seq"] == 3
    assert (await b.ok("chat:read", {"room_id": room_id, "seq": 10**9}))["last_read_seq"] == 5
    assert (await conversations(api, bob))[room_id]["unread"] == 0

    # Conversations stay out of the room lists unless asked for.
    status, mine = await api.call("GET", "/rooms?mine=true&limit=200", bob)
    assert status == 200 and room_id not in {r["id"] for r in mine["items"]}
    status, dms = await api.call("GET", "/rooms?kind=dm&mine=true&limit=200", bob)
    assert [(r["id"], r["kind"], r["visibility"], r["my_role"]) for r in dms["items"]] == [
        (room_id, "dm", "private", "member")
    ]
    # A deleted message stops counting; a reply makes the other side's count grow.
    await b.send(room_id, "hi back")
    await b.send(room_id, "oops")
    assert (await conversations(api, alice))[room_id]["unread"] == 2
    history = await a.ok("chat:history", {"room_id": room_id})
    assert [m["seq"] for m in history["messages"]] == [1, 2, 3, 4, 5, 6, 7]
    await b.ok("chat:delete", {"room_id": room_id, "message_id": history["messages"][-1]["id"]})
    assert (await conversations(api, alice))[room_id]["unread"] == 1
    status, body = await api.call("GET", f"/dms/{room_id}", alice)
    assert status == 200 and body["unread"] == 1 and body["last_message"]["deleted"] is True


async def test_a_third_user_and_an_admin_cannot_read_or_write_a_dm(api: ApiClient, tabs: OpenTab) -> None:
    alice, bob, carol = await api.user(), await api.user(), await api.user()
    admin = await api.user("admin")
    room_id = (await start(api, alice, bob))["id"]
    a = await tabs(alice)
    await a.join(room_id)
    await a.send(room_id, "secret")
    for outsider in (carol, admin):
        assert (await api.call("GET", f"/dms/{room_id}", outsider))[0] == 404
        assert (await api.call("GET", f"/rooms/{room_id}", outsider))[0] == 404
        assert (await api.call("GET", f"/rooms/{room_id}/members", outsider))[0] == 404
        status, rooms = await api.call("GET", "/rooms?kind=dm&limit=200", outsider)
        assert status == 200 and room_id not in {r["id"] for r in rooms["items"]}
        assert room_id not in await conversations(api, outsider)
        tab = await tabs(outsider)
        for event, data in [
            ("room:join", {"room_id": room_id}),
            ("chat:history", {"room_id": room_id}),
            ("chat:send", {"room_id": room_id, "body": "let me in", "client_msg_id": "x"}),
            ("chat:read", {"room_id": room_id, "seq": 1}),
        ]:
            await tab.fails(event, data, "not_found")
        # Nobody hosts a conversation: a participant cannot invite the outsider either.
        status, _ = await api.call("POST", f"/rooms/{room_id}/invite", alice, json={"user_id": outsider.id})
        assert status == 403
    assert await fetchval(api, "SELECT count(*) FROM room_members WHERE room_id = $1", uuid.UUID(room_id)) == 2
    assert await fetchval(api, "SELECT count(*) FROM chat_messages WHERE room_id = $1", uuid.UUID(room_id)) == 1
    # Messages of other rooms are not announced as direct messages.
    other = await make_room(api, alice, bob)
    a2, b3 = await tabs(alice), await tabs(bob)
    await a2.join(other)
    await a2.send(other, "in a study room")
    assert await b3.nothing_pending("dm:message") and await a2.nothing_pending("dm:message")


async def test_find_or_create_is_idempotent_under_concurrency(api: ApiClient) -> None:
    alice, bob, carol = await api.user(), await api.user(), await api.user()
    # Both sides at once, many times, names in any order: one conversation.
    answers = await asyncio.gather(
        *(start(api, alice, bob) for _ in range(6)), *(start(api, bob, alice, bob, bob) for _ in range(6))
    )
    assert len({a["id"] for a in answers}) == 1
    assert sum(a["created"] for a in answers) == 1
    room = uuid.UUID(answers[0]["id"])
    assert await fetchval(api, "SELECT count(*) FROM room_members WHERE room_id = $1", room) == 2
    key = ",".join(sorted([alice.id, bob.id]))
    assert await fetchval(api, "SELECT count(*) FROM rooms WHERE dm_key = $1", key) == 1
    # A group is another conversation; the same group in another order is the same one.
    group = await asyncio.gather(start(api, alice, carol, bob), start(api, carol, bob, alice))
    assert group[0]["id"] == group[1]["id"] != answers[0]["id"]
    assert len(group[0]["members"]) == 3
    # Finding costs nothing against the rate of new conversations (alice started at most 2 so far).
    for _ in range(5):
        assert (await start(api, alice, bob))["created"] is False


async def test_limits_and_garbage(api: ApiClient) -> None:
    alice = await api.user()
    people = [await api.user() for _ in range(MAX_PEOPLE)]
    cases: list[tuple[Any, int]] = [
        ({"user_ids": [p.id for p in people]}, 400),  # MAX_PEOPLE others + alice is one too many
        ({"user_ids": [alice.id]}, 400),  # only oneself
        ({"user_ids": []}, 400),
        ({"user_ids": [str(uuid.uuid4())]}, 404),  # nobody
        ({"user_ids": ["not-a-uuid"]}, 400),
        ({"user_ids": people[0].id}, 400),
        ({"user_ids": [people[0].id], "name": "extra"}, 400),
        ({"user_ids": [str(uuid.uuid4())] * 101}, 400),
        ([people[0].id], 400),
    ]
    for body, expected in cases:
        status, answer = await api.call("POST", "/dms", alice, json=body)
        assert status == expected, (body, status, answer)
    assert (await api.call("POST", "/dms", None, json={"user_ids": [people[0].id]}))[0] == 401
    # POST /rooms does not open conversations.
    status, _ = await api.call("POST", "/rooms", alice, json={"name": "x", "kind": "dm", "visibility": "private"})
    assert status == 400
    # The largest group allowed works.
    assert len((await start(api, alice, *people[: MAX_PEOPLE - 1]))["members"]) == MAX_PEOPLE
    # New conversations per window: the group was the first of NEW_PER_WINDOW.
    for p in people[1:NEW_PER_WINDOW]:
        assert (await start(api, alice, p))["created"] is True
    status, body = await api.call("POST", "/dms", alice, json={"user_ids": [people[0].id]})
    assert status == 429 and body["error"]["details"]["retry_after_s"] >= 1
    # Others may still start one with alice, and alice still finds her existing ones.
    assert (await start(api, people[0], alice))["created"] is True
    assert (await start(api, alice, people[1]))["created"] is False
    started = await fetch(api, "SELECT id FROM rooms WHERE kind = 'dm' AND created_by = $1", uuid.UUID(alice.id))
    assert len(started) == NEW_PER_WINDOW


async def test_blocks_refuse_new_conversations_and_close_the_pair(api: ApiClient, tabs: OpenTab) -> None:
    alice, bob, carol, dave = await api.user(), await api.user(name="Bob Blocked"), await api.user(), await api.user()
    pair = (await start(api, alice, bob))["id"]
    group = (await start(api, alice, bob, carol))["id"]
    a, b = await tabs(alice), await tabs(bob)
    for tab in (a, b):
        await tab.join(pair)
        await tab.join(group)
    await b.send(pair, "first")

    status, blocked = await api.call("PUT", f"/me/blocks/{bob.id}", alice)
    assert status == 200 and blocked["user_id"] == bob.id and blocked["display_name"] == "Bob Blocked"
    assert (await api.call("PUT", f"/me/blocks/{bob.id}", alice))[0] == 200  # again: no change
    status, listing = await api.call("GET", "/me/blocks", alice)
    assert [x["user_id"] for x in listing["items"]] == [bob.id]

    # Neither may write in their two-person conversation; both still read it.
    for tab in (a, b):
        hey = {"room_id": pair, "body": "hey", "client_msg_id": uuid.uuid4().hex}
        message = await tab.fails("chat:send", hey, "forbidden")
        assert "blocked" in message
        history = await tab.ok("chat:history", {"room_id": pair})
        assert [m["body"] for m in history["messages"]] == ["first"]
    await b.send(group, "groups go on")
    # No new conversation with the blocked user, either way; others are not affected.
    for starter, other in ((bob, alice), (alice, bob)):
        status, body = await api.call("POST", "/dms", starter, json={"user_ids": [other.id, dave.id]})
        assert status == 403, body
    assert (await start(api, bob, dave))["created"] is True

    status, _ = await api.call("DELETE", f"/me/blocks/{bob.id}", alice)
    assert status == 204
    await b.send(pair, "back again")
    assert (await start(api, bob, alice, dave))["created"] is True

    # Garbage and abuse.
    assert (await api.call("PUT", f"/me/blocks/{alice.id}", alice))[0] == 400
    assert (await api.call("PUT", f"/me/blocks/{uuid.uuid4()}", alice))[0] == 404
    assert (await api.call("PUT", "/me/blocks/not-a-uuid", alice))[0] in (400, 404)
    assert (await api.call("DELETE", f"/me/blocks/{bob.id}", alice))[0] == 404  # nothing to lift
    # Bob cannot lift alice's block of him.
    await api.call("PUT", f"/me/blocks/{bob.id}", alice)
    assert (await api.call("DELETE", f"/me/blocks/{alice.id}", bob))[0] == 404
    await b.fails("chat:send", {"room_id": pair, "body": "still?", "client_msg_id": uuid.uuid4().hex}, "forbidden")
    # When both block each other, lifting one block keeps the conversation closed.
    await api.call("PUT", f"/me/blocks/{alice.id}", bob)
    await api.call("DELETE", f"/me/blocks/{bob.id}", alice)
    await a.fails("chat:send", {"room_id": pair, "body": "no", "client_msg_id": uuid.uuid4().hex}, "forbidden")
    await api.call("DELETE", f"/me/blocks/{alice.id}", bob)
    await a.send(pair, "open")


async def test_read_marker_garbage_and_rights(api: ApiClient, tabs: OpenTab) -> None:
    alice, bob = await api.user(), await api.user()
    room_id = (await start(api, alice, bob))["id"]
    a = await tabs(alice)
    await a.join(room_id)
    for data in [
        {"room_id": room_id},
        {"room_id": room_id, "seq": -1},
        {"room_id": room_id, "seq": "3"},
        {"room_id": room_id, "seq": 2**63},
        {"room_id": "nope", "seq": 1},
        {"room_id": room_id, "seq": 1, "extra": True},
    ]:
        await a.fails("chat:read", data, "invalid_input")
    await a.fails("chat:read", {"room_id": str(uuid.uuid4()), "seq": 1}, "not_found")
    assert (await a.ok("chat:read", {"room_id": room_id, "seq": 0}))["unread"] == 0
