"""Community chat with real Socket.IO clients: send, ordering, idempotence, history, edits, reactions,
typing, mentions, and bad payloads. Moderation and rate limits are in test_chat_moderation.py."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from realtime.sockets import MAX_PACKET_BYTES
from tests.chat_helpers import OpenTab, Tab, fetch, fetchval, make_room, set_room_role
from tests.conftest import ApiClient


async def room_with(api: ApiClient, tabs: OpenTab, count: int) -> tuple[str, list[Tab]]:
    """A room whose host is the first of ``count`` connected users, all joined."""
    users = [await api.user() for _ in range(count)]
    room_id = await make_room(api, *users)
    opened = [await tabs(u) for u in users]
    for tab in opened:
        await tab.join(room_id)
    return room_id, opened


async def test_send_is_acked_after_commit_and_reaches_the_room(api: ApiClient, tabs: OpenTab) -> None:
    room_id, (alice, bob) = await room_with(api, tabs, 2)
    ack = await alice.ok(
        "chat:send", {"room_id": room_id, "body": "  hello\r\nworld\x00\x07\t!  ", "client_msg_id": "m1"}
    )
    message = ack["message"]
    # Readable by any other connection the moment the ack arrives: it was committed before.
    stored = await fetch(api, "SELECT seq, body FROM chat_messages WHERE id = $1", uuid.UUID(message["id"]))
    assert [(r["seq"], r["body"]) for r in stored] == [(1, "hello\nworld\t!")]
    assert message == {
        "id": message["id"],
        "room_id": room_id,
        "seq": 1,
        "author": {"id": alice.actor.id, "display_name": message["author"]["display_name"]},
        "body": "hello\nworld\t!",
        "created_at": message["created_at"],
        "edited_at": None,
        "deleted": False,
        "reactions": {},
        "rev": 0,
    }
    assert await bob.next("chat:message") == message
    assert await alice.next("chat:message") == message
    assert await fetchval(api, "SELECT last_seq FROM rooms WHERE id = $1", uuid.UUID(room_id)) == 1


async def test_concurrent_senders_get_seq_1_to_n_without_gaps_or_repeats(api: ApiClient, tabs: OpenTab) -> None:
    room_id, senders = await room_with(api, tabs, 5)
    watcher = await tabs(await api.user())
    await set_room_role(api, room_id, watcher.actor, "member")
    await watcher.join(room_id)

    async def burst(tab: Tab) -> list[int]:
        acks = await asyncio.gather(*(tab.send(room_id, f"{tab.actor.id} #{i}") for i in range(10)))
        return [m["seq"] for m in acks]

    seqs = [s for tab_seqs in await asyncio.gather(*(burst(t) for t in senders)) for s in tab_seqs]
    assert sorted(seqs) == list(range(1, 51))
    stored = await fetch(api, "SELECT seq FROM chat_messages WHERE room_id = $1 ORDER BY seq", uuid.UUID(room_id))
    assert [r["seq"] for r in stored] == list(range(1, 51))
    delivered = [(await watcher.next("chat:message"))["seq"] for _ in range(50)]
    assert sorted(delivered) == list(range(1, 51))
    assert await watcher.nothing_pending("chat:message")


async def test_resending_a_client_msg_id_returns_the_first_message(api: ApiClient, tabs: OpenTab) -> None:
    room_id, (alice, bob) = await room_with(api, tabs, 2)
    first = await alice.send(room_id, "once", "same-id")
    again = await alice.send(room_id, "a different body", "same-id")
    assert again == first
    # Another author may use the same client_msg_id: ids are per author.
    bobs = await bob.send(room_id, "mine", "same-id")
    assert bobs["seq"] == 2
    assert [(await bob.next("chat:message"))["seq"] for _ in range(2)] == [1, 2]
    assert await bob.nothing_pending("chat:message")  # the resend was not broadcast
    assert await fetchval(api, "SELECT count(*) FROM chat_messages WHERE room_id = $1", uuid.UUID(room_id)) == 2


async def test_history_pages_before_and_after_a_seq(api: ApiClient, tabs: OpenTab) -> None:
    room_id, (alice,) = await room_with(api, tabs, 1)
    for i in range(1, 8):
        await alice.send(room_id, f"m{i}")

    async def page(**query: Any) -> tuple[list[int], bool]:
        ack = await alice.ok("chat:history", {"room_id": room_id, **query})
        return [m["seq"] for m in ack["messages"]], ack["has_more"]

    assert await page() == ([1, 2, 3, 4, 5, 6, 7], False)
    assert await page(limit=3) == ([5, 6, 7], True)
    assert await page(before_seq=5, limit=3) == ([2, 3, 4], True)
    assert await page(before_seq=2, limit=3) == ([1], False)
    assert await page(after_seq=0, limit=3) == ([1, 2, 3], True)
    assert await page(after_seq=3, limit=3) == ([4, 5, 6], True)
    assert await page(after_seq=6, limit=3) == ([7], False)
    assert await page(after_seq=7) == ([], False)
    assert await page(after_seq=2, before_seq=6) == ([3, 4, 5], False)
    assert await page(after_seq=2, before_seq=6, limit=2) == ([3, 4], True)


async def test_a_client_that_reconnects_catches_up_in_order_with_after_seq(api: ApiClient, tabs: OpenTab) -> None:
    room_id, (alice, bob) = await room_with(api, tabs, 2)
    await alice.send(room_id, "before the drop")
    last_seen = (await bob.next("chat:message"))["seq"]
    await bob.close()
    sent = [await alice.send(room_id, f"missed {i}") for i in range(5)]

    bob_again = await tabs(bob.actor)
    await bob_again.join(room_id)
    caught_up: list[dict[str, Any]] = []
    after, more = last_seen, True
    while more:
        ack = await bob_again.ok("chat:history", {"room_id": room_id, "after_seq": after, "limit": 2})
        caught_up += ack["messages"]
        more = ack["has_more"]
        after = caught_up[-1]["seq"]
    assert caught_up == sent


async def test_only_the_author_edits_and_everyone_sees_the_edit(api: ApiClient, tabs: OpenTab) -> None:
    room_id, (alice, bob) = await room_with(api, tabs, 2)
    message = await alice.send(room_id, "teh typo")
    await bob.next("chat:message")
    edit = {"room_id": room_id, "message_id": message["id"], "body": "the typo"}
    assert "author" in await bob.fails("chat:edit", edit, "forbidden")
    edited = (await alice.ok("chat:edit", edit))["message"]
    assert edited["body"] == "the typo"
    assert edited["edited_at"] is not None
    assert (edited["seq"], edited["rev"]) == (message["seq"], 1)
    assert (await bob.next("chat:updated"))["message"] == edited
    await alice.fails("chat:edit", {**edit, "message_id": str(uuid.uuid4())}, "not_found")
    other_room = await make_room(api, await api.user(), alice.actor)
    await alice.join(other_room)
    await alice.fails("chat:edit", {**edit, "room_id": other_room}, "not_found")


async def test_deletes_leave_tombstones_and_follow_room_rank(api: ApiClient, tabs: OpenTab) -> None:
    room_id, (host, mod, alice, bob) = await room_with(api, tabs, 4)
    await set_room_role(api, room_id, mod.actor, "moderator")
    by_alice = await alice.send(room_id, "alice's secret")
    by_bob = await bob.send(room_id, "bob's rant")
    by_host = await host.send(room_id, "host speaking")
    ref = {"room_id": room_id}

    assert "moderator" in await alice.fails("chat:delete", {**ref, "message_id": by_bob["id"]}, "forbidden")
    gone = (await alice.ok("chat:delete", {**ref, "message_id": by_alice["id"]}))["message"]
    assert (gone["seq"], gone["body"], gone["deleted"], gone["reactions"]) == (by_alice["seq"], "", True, {})
    assert (await bob.next("chat:updated"))["message"] == gone
    row = (await fetch(api, "SELECT body, deleted_by FROM chat_messages WHERE id = $1", uuid.UUID(gone["id"])))[0]
    assert (row["body"], str(row["deleted_by"])) == ("alice's secret", alice.actor.id)  # kept, never sent
    history = (await bob.ok("chat:history", ref))["messages"]
    assert [(m["seq"], m["body"], m["deleted"]) for m in history] == [
        (1, "", True),
        (2, "bob's rant", False),
        (3, "host speaking", False),
    ]
    await alice.fails("chat:edit", {**ref, "message_id": gone["id"], "body": "back"}, "conflict")
    await bob.fails("chat:react", {**ref, "message_id": gone["id"], "emoji": "👍", "on": True}, "conflict")

    # A moderator deletes a member's message (a moderation action), not the host's.
    await mod.ok("chat:delete", {**ref, "message_id": by_bob["id"]})
    event = await bob.next("chat:moderation")
    assert (event["action"], event["user_id"], event["by"]["id"]) == ("delete_message", bob.actor.id, mod.actor.id)
    audited = await fetchval(
        api,
        "SELECT count(*) FROM audit_log WHERE action = 'chat.delete_message' AND actor_id = $1",
        uuid.UUID(mod.actor.id),
    )
    assert audited == 1
    await mod.fails("chat:delete", {**ref, "message_id": by_host["id"]}, "forbidden")
    by_mod = await mod.send(room_id, "mod note")
    await host.ok("chat:delete", {**ref, "message_id": by_mod["id"]})


async def test_reactions_toggle_and_broadcast_counts(api: ApiClient, tabs: OpenTab) -> None:
    room_id, (alice, bob) = await room_with(api, tabs, 2)
    message = await alice.send(room_id, "react to me")
    ref = {"room_id": room_id, "message_id": message["id"]}

    async def react(tab: Tab, emoji: str, on: bool) -> dict[str, int]:
        counts: dict[str, int] = (await tab.ok("chat:react", {**ref, "emoji": emoji, "on": on}))["reactions"]
        event = await alice.next("chat:reactions")
        assert (event["message_id"], event["reactions"]) == (message["id"], counts)
        return counts

    assert await react(alice, "👍", True) == {"👍": 1}
    assert await react(bob, "👍", True) == {"👍": 2}
    assert await react(bob, "🎉", True) == {"👍": 2, "🎉": 1}
    assert await react(alice, "👍", False) == {"👍": 1, "🎉": 1}
    # Repeating a toggle changes nothing and broadcasts nothing.
    assert (await bob.ok("chat:react", {**ref, "emoji": "🎉", "on": True}))["reactions"] == {"👍": 1, "🎉": 1}
    assert await alice.nothing_pending("chat:reactions")
    history = (await bob.ok("chat:history", {"room_id": room_id}))["messages"]
    assert history[0]["reactions"] == {"👍": 1, "🎉": 1}
    assert list(history[0]["reactions"]) == ["👍", "🎉"]  # in order of first use (Bob's 👍 before his 🎉)
    joined = await bob.ok("room:join", {"room_id": room_id})  # read with the page, as chat:history reads it
    assert [list(m["reactions"].items()) for m in joined["messages"]] == [[("👍", 1), ("🎉", 1)]]
    for emoji in ("", "x" * 17, "a b", "\x00"):
        await bob.fails("chat:react", {**ref, "emoji": emoji, "on": True}, "invalid_input")


async def test_typing_reaches_the_others_only_and_is_not_stored(api: ApiClient, tabs: OpenTab) -> None:
    room_id, (alice, bob) = await room_with(api, tabs, 2)
    stranger = await tabs(await api.user())
    await alice.ok("chat:typing", {"room_id": room_id, "typing": True})
    event = await bob.next("chat:typing")
    assert event == {
        "room_id": room_id,
        "user": {"id": alice.actor.id, "display_name": event["user"]["display_name"]},
        "typing": True,
    }
    assert await alice.nothing_pending("chat:typing")
    # A repeated "still typing" within the refresh interval is not forwarded; a change is.
    await alice.ok("chat:typing", {"room_id": room_id, "typing": True})
    await alice.ok("chat:typing", {"room_id": room_id, "typing": False})
    assert (await bob.next("chat:typing"))["typing"] is False
    assert await bob.nothing_pending("chat:typing")
    await stranger.fails("chat:typing", {"room_id": room_id, "typing": True}, "forbidden")
    assert await fetchval(api, "SELECT count(*) FROM chat_messages WHERE room_id = $1", uuid.UUID(room_id)) == 0


async def test_mentions_notify_the_members_named(api: ApiClient, tabs: OpenTab) -> None:
    author = await api.user(name="Grace Hopper")
    ada, bob = await api.user(name="Ada Lovelace"), await api.user(name="bob")
    outsider = await api.user(name="Ada Lovelace")  # same name, not in the room
    room_id = await make_room(api, author, ada, bob)
    author_tab, ada_tab, bob_tab = await tabs(author), await tabs(ada), await tabs(bob)
    for tab in (author_tab, ada_tab, bob_tab):
        await tab.join(room_id)
    body = "@adalovelace and @[Bob], see grace@example.com; @GraceHopper, @nobody."
    message = await author_tab.send(room_id, body)

    rows = await fetch(
        api,
        "SELECT user_id, payload FROM notifications WHERE kind = 'chat_mention' AND payload->>'room_id' = $1",
        room_id,
    )
    assert sorted(str(r["user_id"]) for r in rows) == sorted([ada.id, bob.id])
    note = await ada_tab.next("notification:new")
    assert note["kind"] == "chat_mention"
    assert note["payload"]["message_id"] == message["id"]
    assert note["payload"]["by"]["id"] == author.id
    assert note["payload"]["excerpt"] == body
    assert outsider.id not in {str(r["user_id"]) for r in rows}
    assert await author_tab.nothing_pending("notification:new")


NEAR_CAP = MAX_PACKET_BYTES - 4096
"""A string as long as a frame may carry: refused by the payload schema, answered with an error ack."""

BAD_PAYLOADS: list[tuple[str, Any, str]] = [
    ("chat:send", None, "invalid_input"),
    ("chat:send", [], "invalid_input"),
    ("chat:send", "hello", "invalid_input"),
    ("chat:send", {}, "invalid_input"),
    ("chat:send", {"room_id": "ROOM", "client_msg_id": "x"}, "invalid_input"),
    ("chat:send", {"room_id": 42, "body": "x", "client_msg_id": "x"}, "invalid_input"),
    ("chat:send", {"room_id": "not-a-uuid", "body": "x", "client_msg_id": "x"}, "invalid_input"),
    ("chat:send", {"room_id": "ROOM", "body": 5, "client_msg_id": "x"}, "invalid_input"),
    ("chat:send", {"room_id": "ROOM", "body": ["x"], "client_msg_id": "x"}, "invalid_input"),
    ("chat:send", {"room_id": "ROOM", "body": "x", "client_msg_id": 7}, "invalid_input"),
    ("chat:send", {"room_id": "ROOM", "body": "x", "client_msg_id": ""}, "invalid_input"),
    ("chat:send", {"room_id": "ROOM", "body": "x", "client_msg_id": "k" * 65}, "invalid_input"),
    ("chat:send", {"room_id": "ROOM", "body": "x", "client_msg_id": "a\x00b"}, "invalid_input"),
    ("chat:send", {"room_id": "ROOM", "body": " \x00\x01\n\t ", "client_msg_id": "x"}, "invalid_input"),
    ("chat:send", {"room_id": "ROOM", "body": "b" * 4001, "client_msg_id": "x"}, "invalid_input"),
    ("chat:send", {"room_id": "ROOM", "body": "b" * NEAR_CAP, "client_msg_id": "x"}, "invalid_input"),
    ("chat:send", {"room_id": "ROOM", "body": "x", "client_msg_id": "x", "extra": 1}, "invalid_input"),
    ("chat:send", {"room_id": str(uuid.UUID(int=1)), "body": "x", "client_msg_id": "x"}, "not_found"),
    ("chat:history", {"room_id": "ROOM", "limit": 0}, "invalid_input"),
    ("chat:history", {"room_id": "ROOM", "limit": 201}, "invalid_input"),
    ("chat:history", {"room_id": "ROOM", "limit": "5"}, "invalid_input"),
    ("chat:history", {"room_id": "ROOM", "before_seq": 2**63}, "invalid_input"),
    ("chat:history", {"room_id": "ROOM", "after_seq": -1}, "invalid_input"),
    ("chat:history", {"room_id": "ROOM", "after_seq": 1.5}, "invalid_input"),
    ("chat:edit", {"room_id": "ROOM", "message_id": "nope", "body": "x"}, "invalid_input"),
    ("chat:edit", {"room_id": "ROOM", "message_id": str(uuid.UUID(int=2)), "body": "x"}, "not_found"),
    ("chat:delete", {"room_id": "ROOM"}, "invalid_input"),
    (
        "chat:react",
        {"room_id": "ROOM", "message_id": str(uuid.UUID(int=2)), "emoji": "👍", "on": "yes"},
        "invalid_input",
    ),
    (
        "chat:react",
        {"room_id": "ROOM", "message_id": str(uuid.UUID(int=2)), "emoji": "e" * NEAR_CAP, "on": True},
        "invalid_input",
    ),
    ("chat:typing", {"room_id": "ROOM", "typing": 1}, "invalid_input"),
    ("chat:mute", {"room_id": "ROOM", "user_id": str(uuid.UUID(int=3)), "seconds": -1}, "invalid_input"),
    ("chat:mute", {"room_id": "ROOM", "user_id": str(uuid.UUID(int=3)), "seconds": 1.5}, "invalid_input"),
    ("chat:slow_mode", {"room_id": "ROOM", "seconds": 3601}, "invalid_input"),
    ("chat:ban", {"room_id": "ROOM", "user_id": str(uuid.UUID(int=3))}, "invalid_input"),
    ("chat:kick", {"room_id": str(uuid.UUID(int=4)), "user_id": str(uuid.UUID(int=3))}, "not_found"),
]


def _fill(payload: Any, room_id: str) -> Any:
    if isinstance(payload, dict):
        return {k: room_id if v == "ROOM" else v for k, v in payload.items()}
    return payload


async def test_bad_payloads_get_error_acks_and_the_connection_keeps_working(api: ApiClient, tabs: OpenTab) -> None:
    room_id, (alice,) = await room_with(api, tabs, 1)
    for event, payload, code in BAD_PAYLOADS:
        await alice.fails(event, _fill(payload, room_id), code)
    # Rooms one may not see do not exist; public rooms one has not joined refuse writes.
    private = await make_room(api, await api.user())
    await alice.fails("chat:send", {"room_id": private, "body": "x", "client_msg_id": "x"}, "not_found")
    await alice.fails("chat:history", {"room_id": private}, "not_found")
    public = await make_room(api, await api.user(), visibility="public")
    assert "join" in await alice.fails("chat:send", {"room_id": public, "body": "x", "client_msg_id": "x"}, "forbidden")
    assert alice.sio.connected
    assert (await alice.send(room_id, "still here"))["seq"] == 1
    assert await fetchval(api, "SELECT last_seq FROM rooms WHERE id = $1", uuid.UUID(room_id)) == 1


async def test_a_frame_over_the_packet_cap_closes_only_that_connection(api: ApiClient, tabs: OpenTab) -> None:
    room_id, (alice, bob) = await room_with(api, tabs, 2)
    closed = asyncio.Event()
    alice.sio.on("disconnect", closed.set)
    # The websocket layer refuses the frame (close code 1009, message too big) before any handler runs.
    await alice.sio.emit("chat:send", {"room_id": room_id, "body": "b" * (MAX_PACKET_BYTES + 1), "client_msg_id": "x"})
    await asyncio.wait_for(closed.wait(), timeout=10)
    assert (await bob.send(room_id, "the node is fine"))["seq"] == 1
    again = await tabs(alice.actor)
    await again.join(room_id)
    assert (await again.send(room_id, "and alice is back"))["seq"] == 2
