"""Group commit of ``chat:send`` (``rooms/chat_writer.py``): the sends of the same few milliseconds share one
transaction, and each sender still hears its ack only once its message is committed, with the room's next
gap-free ``seq``, in the order it sent; one message that fails fails alone.

Real Socket.IO clients and the real writer against Postgres. The writer's wait is long here (50 ms) so that
concurrent sends reliably share batches; the direct tests queue a batch on the writer itself, so they know
exactly what shared a transaction.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core_api.auth import current_principal
from core_api.context import CORE
from core_api.http import Principal
from core_api.settings import Settings
from realtime.sockets import SOCKETS
from rooms import chat_store as store
from rooms.chat_writer import WRITER, ChatWriter
from tests.chat_helpers import OpenTab, Tab, fetch, fetchval, make_room, tabs
from tests.conftest import Actor, ApiClient, make_settings

__all__ = ["tabs"]

WAIT_S = 0.05


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, chat_rate_count=1000, chat_group_commit_wait_s=WAIT_S)


def writer_of(api: ApiClient) -> ChatWriter:
    writer: ChatWriter = api.app[SOCKETS].services[WRITER]
    return writer


async def principal(api: ApiClient, actor: Actor) -> Principal:
    user = await current_principal(api.app[CORE], uuid.UUID(actor.id))
    assert user is not None
    return user


async def test_concurrent_senders_across_rooms_are_acked_after_commit_with_gap_free_seqs_in_send_order(
    api: ApiClient, tabs: OpenTab, database_url: str
) -> None:
    senders = [await api.user() for _ in range(5)]
    watcher = await api.user()
    rooms = [await make_room(api, senders[0], *senders[1:], watcher) for _ in range(3)]
    watch = await tabs(watcher)
    for room in rooms:
        await watch.join(room)
    sender_tabs = [await tabs(s) for s in senders]
    writer = writer_of(api)
    batches0, messages0, redone0 = writer.batches, writer.messages, writer.redone
    # Another connection to Postgres: an ack must never come before its message is visible there.
    reader = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    early: list[str] = []

    async def send(tab: Tab, room: str, body: str) -> dict[str, Any]:
        message = await tab.send(room, body, client_msg_id=body)
        seen = await reader.fetchval(
            "SELECT seq FROM chat_messages WHERE room_id = $1 AND client_msg_id = $2", uuid.UUID(room), body
        )
        if seen != message["seq"]:
            early.append(body)
        return message

    async def sender(n: int, tab: Tab) -> list[tuple[str, int]]:
        # 12 messages each, every one in flight before the previous is acked, spread over the rooms.
        sends = [send(tab, rooms[i % len(rooms)], f"s{n}-{i}") for i in range(12)]
        acked = await asyncio.gather(*sends)
        return [(m["room_id"], m["seq"]) for m in acked]

    try:
        results = await asyncio.gather(*(sender(n, tab) for n, tab in enumerate(sender_tabs)))
    finally:
        await reader.close()
    assert early == [], f"acked before their commit was visible: {early}"

    total = 5 * 12
    assert writer.messages - messages0 == total
    assert writer.redone == redone0, "nothing refused: every batch stored in one pass"
    assert writer.batches - batches0 < total / 2, "concurrent sends shared transactions"
    for room in rooms:
        seqs = [r["seq"] for r in await fetch(api, "SELECT seq FROM chat_messages WHERE room_id = $1", uuid.UUID(room))]
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), f"gap or repeat in {room}"
    # Each sender's messages to a room got increasing seqs, in the order sent.
    for n, acked in enumerate(results):
        for room in rooms:
            mine = [seq for r, seq in acked if r == room]
            assert mine == sorted(mine), f"sender {n} out of order in {room}: {mine}"
    # And the room heard them once each, in seq order.
    await watch.flush()
    live = watch.drain("chat:message")
    for room in rooms:
        heard = [m["seq"] for m in live if m["room_id"] == room]
        assert heard == list(range(1, total // len(rooms) + 1)), f"{room}: {heard}"


async def test_a_bad_message_in_a_batch_fails_alone(api: ApiClient) -> None:
    author, muted, outsider = await api.user(), await api.user(), await api.user()
    room = await make_room(api, author, muted)
    other = await make_room(api, author)
    await api.app[CORE].pool.execute(
        "UPDATE room_members SET muted_until = now() + interval '1 hour' WHERE room_id = $1 AND user_id = $2",
        uuid.UUID(room),
        uuid.UUID(muted.id),
    )
    poison = f"poison {uuid.uuid4().hex}"
    # A real constraint, as a message could break one: only this one body violates it.
    constraint = f"test_no_poison_{uuid.uuid4().hex[:8]}"
    await api.app[CORE].pool.execute(
        f"ALTER TABLE chat_messages ADD CONSTRAINT {constraint} CHECK (body <> '{poison}') NOT VALID"
    )
    try:
        writer = writer_of(api)
        me, them, nobody = await principal(api, author), await principal(api, muted), await principal(api, outsider)
        pace = store.Pace(10.0, 1000, False)
        batches0, redone0 = writer.batches, writer.redone
        posts = [
            writer.post(uuid.UUID(room), me, "a1", "first", pace),
            writer.post(uuid.UUID(room), me, "bad", poison, pace),
            writer.post(uuid.UUID(room), them, "m1", "muted says hi", pace),
            writer.post(uuid.UUID(other), nobody, "x1", "not a member", pace),
            writer.post(uuid.UUID(room), me, "a2", "second", pace),
            writer.post(uuid.UUID(room), me, "a1", "first, resent", pace),
            writer.post(uuid.UUID(other), me, "o1", "elsewhere", pace),
        ]
        outcomes = await asyncio.gather(*posts, return_exceptions=True)
    finally:
        await api.app[CORE].pool.execute(f"ALTER TABLE chat_messages DROP CONSTRAINT {constraint}")
    lanes = {uuid.UUID(room).int % writer.lanes, uuid.UUID(other).int % writer.lanes}
    assert writer.batches - batches0 == len(lanes), "each room's messages shared one transaction"
    assert writer.redone - redone0 >= 1, "stored again, message by message, after the refusals"
    first, bad, muted_out, stranger, second, resent, elsewhere = outcomes
    assert isinstance(bad, asyncpg.CheckViolationError)
    assert isinstance(muted_out, store.PostRefused) and muted_out.reason == "muted"
    assert isinstance(stranger, store.PostRefused) and stranger.reason == "not_member"
    assert not isinstance(first, BaseException) and not isinstance(second, BaseException)
    assert not isinstance(resent, BaseException) and not isinstance(elsewhere, BaseException)
    # The others are stored, the room's seqs without the holes the failures would have left.
    assert (first["seq"], first["fresh"]) == (1, True)
    assert (second["seq"], second["fresh"]) == (2, True)
    assert (resent["id"], resent["fresh"]) == (first["id"], False), "a resend in the same batch is the first message"
    assert elsewhere["seq"] == 1
    rows = await fetch(api, "SELECT seq, body FROM chat_messages WHERE room_id = $1 ORDER BY seq", uuid.UUID(room))
    assert [(r["seq"], r["body"]) for r in rows] == [(1, "first"), (2, "second")]
    assert await fetchval(api, "SELECT last_seq FROM rooms WHERE id = $1", uuid.UUID(room)) == 2


async def test_through_chat_send_a_refused_message_in_a_busy_batch_is_told_why_and_the_rest_land(
    api: ApiClient, tabs: OpenTab
) -> None:
    host, member = await api.user(), await api.user(name="Bea Batch")
    room = await make_room(api, host, member)
    host_tab, member_tab = await tabs(host), await tabs(member)
    await host_tab.join(room)
    await host_tab.ok("chat:mute", {"room_id": room, "user_id": member.id, "seconds": 600})
    calls = [
        host_tab.call("chat:send", {"room_id": room, "body": f"hello @BeaBatch {i}", "client_msg_id": f"h{i}"})
        for i in range(4)
    ] + [member_tab.call("chat:send", {"room_id": room, "body": "let me speak", "client_msg_id": "m"})]
    acks = await asyncio.gather(*calls)
    assert [a["ok"] for a in acks] == [True, True, True, True, False]
    assert acks[4]["error"]["code"] == "forbidden" and "muted" in acks[4]["error"]["message"]
    assert sorted(a["message"]["seq"] for a in acks[:4]) == [1, 2, 3, 4]
    # The mentions of the batch's messages were stored with them, and reach the member live.
    mentions = await fetchval(
        api,
        "SELECT count(*) FROM notifications WHERE user_id = $1 AND kind = 'chat_mention' AND payload->>'room_id' = $2",
        uuid.UUID(member.id),
        room,
    )
    assert mentions == 4
    got = [await member_tab.next("notification:new") for _ in range(4)]
    assert sorted(n["payload"]["seq"] for n in got) == [1, 2, 3, 4]


async def test_without_group_commit_each_send_commits_alone(
    database_url: str, tmp_path: Path, aiohttp_client: Any
) -> None:
    from realtime.app import create_app

    api = ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, chat_group_commit=False))))
    assert WRITER not in api.app[SOCKETS].services
    host = await api.user()
    room = await make_room(api, host)
    tab = await Tab(host).open(str(api.http.make_url("/")).rstrip("/"))
    try:
        await tab.join(room)
        acks = await asyncio.gather(*(tab.send(room, f"m{i}") for i in range(5)))
        assert sorted(m["seq"] for m in acks) == [1, 2, 3, 4, 5]
    finally:
        await tab.close()


async def test_a_batch_without_refusals_is_stored_in_one_pass_in_order_with_resends_answered(api: ApiClient) -> None:
    author, other = await api.user(), await api.user()
    room = await make_room(api, author, other)
    writer = writer_of(api)
    me, them = await principal(api, author), await principal(api, other)
    pace = store.Pace(10.0, 1000, False)
    batches0, redone0 = writer.batches, writer.redone
    posts = [
        writer.post(uuid.UUID(room), me, "a", "one", pace),
        writer.post(uuid.UUID(room), them, "b", "two", pace),
        writer.post(uuid.UUID(room), me, "c", "three", pace),
        writer.post(uuid.UUID(room), me, "a", "one again", pace),
        writer.post(uuid.UUID(room), them, "d", "four", pace),
    ]
    rows = await asyncio.gather(*posts)
    assert writer.batches - batches0 == 1 and writer.redone == redone0
    assert [(r["seq"], r["body"], r["fresh"]) for r in rows] == [
        (1, "one", True),
        (2, "two", True),
        (3, "three", True),
        (1, "one", False),
        (4, "four", True),
    ]
    assert await fetchval(api, "SELECT last_seq FROM rooms WHERE id = $1", uuid.UUID(room)) == 4
