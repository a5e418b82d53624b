"""``room:join_many``: a reconnecting client rejoins all its rooms in one event and gets exactly what it
missed (each room's messages after its ``after_seq``, in order, none twice), then everything live.

Real Socket.IO clients against the real server, Postgres behind it. The limits are set low in this module
(a batch of at most 4 rooms, 5 missed messages per room, 3 batches per connection per minute) so that the
refusals are reached with small numbers, and the node's join gate lets one join through at a time.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from core_api.settings import Settings
from realtime.sockets import SOCKETS
from rooms.live import JOIN_GATE
from tests.chat_helpers import OpenTab, Tab, make_room, tabs
from tests.conftest import ApiClient, make_settings

__all__ = ["tabs"]

MAX_ROOMS = 4
MAX_MESSAGES = 5
RATE = 3


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path,
        chat_rate_count=1000,
        room_join_many_max_rooms=MAX_ROOMS,
        room_join_many_max_messages=MAX_MESSAGES,
        room_join_many_rate_count=RATE,
        room_joins_at_once=1,  # the node's join gate at its narrowest: every test here also goes through it
    )


def bodies(messages: list[dict[str, Any]]) -> list[str]:
    return [m["body"] for m in messages]


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in messages]


async def join_many(tab: Tab, rooms: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    ack = await tab.ok("room:join_many", {"rooms": rooms})
    results = ack["rooms"]
    assert [r["room_id"] for r in results] == [r["room_id"] for r in rooms], "results in the order asked"
    return {r["room_id"]: r for r in results}


async def test_a_reconnect_rejoins_every_room_in_one_event_and_gets_exactly_what_it_missed(
    api: ApiClient, tabs: OpenTab
) -> None:
    host, reader = await api.user(), await api.user()
    rooms = [await make_room(api, host, reader) for _ in range(3)]
    sender = await tabs(host)
    for room in rooms:
        await sender.join(room)
        for i in range(2):
            await sender.send(room, f"{room[:4]} before {i}")

    first = await tabs(reader)
    held: dict[str, list[int]] = {}
    for room in rooms:
        held[room] = seqs((await first.join(room))["messages"])
    assert all(held[room] == [1, 2] for room in rooms)
    await first.close()

    # While the reader is away: 3, 0 and 5 messages.
    missed = {rooms[0]: 3, rooms[1]: 0, rooms[2]: 5}
    for room, count in missed.items():
        for i in range(count):
            await sender.send(room, f"{room[:4]} missed {i}")

    again = await tabs(reader)
    results = await join_many(again, [{"room_id": room, "after_seq": held[room][-1]} for room in rooms])
    for room, count in missed.items():
        result = results[room]
        assert result["ok"] is True, result
        assert bodies(result["messages"]) == [f"{room[:4]} missed {i}" for i in range(count)]
        assert seqs(result["messages"]) == list(range(3, 3 + count))
        assert result["has_more"] is False
        assert result["room"]["id"] == room
        assert {m["id"] for m in result["members"]} == {host.id, reader.id}
        assert result["member_count"] == 2
        assert isinstance(result["presence_rev"], int)

    # Rejoined: what is sent now arrives live, once, right after what the answer carried.
    for room in rooms:
        await sender.send(room, f"{room[:4]} live")
    await again.flush()
    live = again.drain("chat:message")
    for room, count in missed.items():
        assert [m["seq"] for m in live if m["room_id"] == room] == [3 + count]
    # And the others saw the reader come back.
    joined = [e for e in sender.drain("room:presence") if e["user"]["id"] == reader.id and e["state"] == "joined"]
    assert {e["room_id"] for e in joined} >= set(rooms)


async def test_more_missed_than_the_limit_says_has_more_and_chat_history_pages_the_rest(
    api: ApiClient, tabs: OpenTab
) -> None:
    host, reader = await api.user(), await api.user()
    room = await make_room(api, host, reader)
    sender = await tabs(host)
    await sender.join(room)
    for i in range(MAX_MESSAGES * 2 + 2):
        await sender.send(room, f"m{i + 1}")

    tab = await tabs(reader)
    result = (await join_many(tab, [{"room_id": room, "after_seq": 1}]))[room]
    assert seqs(result["messages"]) == list(range(2, 2 + MAX_MESSAGES))
    assert result["has_more"] is True
    page = await tab.ok("chat:history", {"room_id": room, "after_seq": result["messages"][-1]["seq"], "limit": 200})
    assert seqs(page["messages"]) == list(range(2 + MAX_MESSAGES, MAX_MESSAGES * 2 + 3))
    assert page["has_more"] is False


async def test_a_room_without_after_seq_answers_as_room_join_does(api: ApiClient, tabs: OpenTab) -> None:
    host, reader = await api.user(), await api.user()
    room = await make_room(api, host, reader)
    sender = await tabs(host)
    await sender.join(room)
    for i in range(7):
        await sender.send(room, f"m{i}")
    tab = await tabs(reader)
    result = (await join_many(tab, [{"room_id": room}]))[room]
    single = await (await tabs(reader)).join(room)
    assert seqs(result["messages"]) == seqs(single["messages"]) == list(range(1, 8))
    assert set(single) == {"ok", "room", "members", "member_count", "presence_rev", "messages"}, "room:join unchanged"
    # A client that claims more than was ever sent gets nothing, and no error.
    tab2 = await tabs(reader)
    ahead = (await join_many(tab2, [{"room_id": room, "after_seq": 100}]))[room]
    assert ahead["ok"] is True and ahead["messages"] == [] and ahead["has_more"] is False


async def test_rooms_the_caller_may_not_join_fail_alone_and_leak_nothing(api: ApiClient, tabs: OpenTab) -> None:
    host, reader, stranger = await api.user(), await api.user(), await api.user()
    mine = await make_room(api, host, reader)
    secret = await make_room(api, host)  # private, reader not invited
    banned = await make_room(api, host, reader)
    nowhere = str(uuid.uuid4())
    moderator = await tabs(host)
    await moderator.join(banned)
    await moderator.ok("chat:ban", {"room_id": banned, "user_id": reader.id, "on": True})
    await moderator.send(secret, "do not read this")

    tab = await tabs(reader)
    results = await join_many(
        tab,
        [
            {"room_id": secret, "after_seq": 0},
            {"room_id": mine, "after_seq": 0},
            {"room_id": nowhere, "after_seq": 0},
            {"room_id": banned, "after_seq": 0},
        ],
    )
    assert results[mine]["ok"] is True
    assert results[secret]["ok"] is False and results[nowhere]["ok"] is False
    # A private room one was not invited to looks exactly like one that does not exist.
    assert results[secret]["error"] == results[nowhere]["error"]
    assert results[secret]["error"]["code"] == "not_found"
    assert set(results[secret]) == {"room_id", "ok", "error"}
    assert results[banned]["error"]["code"] == "forbidden"
    # Not entered: nothing of the secret room reaches the reader, and the stranger is not listed anywhere.
    await moderator.send(secret, "still secret")
    assert await tab.nothing_pending("chat:message")
    assert stranger.id not in {m["id"] for m in results[mine]["members"]}


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ({}, "rooms"),
        ({"rooms": []}, "rooms"),
        ({"rooms": "all"}, "rooms"),
        ({"rooms": [{"room_id": "not-a-uuid"}]}, "room_id"),
        ({"rooms": [{"room_id": str(uuid.uuid4()), "after_seq": -1}]}, "after_seq"),
        ({"rooms": [{"room_id": str(uuid.uuid4()), "after_seq": "5"}]}, "after_seq"),
        ({"rooms": [{"room_id": str(uuid.uuid4()), "extra": 1}]}, "extra"),
        ({"rooms": [{"room_id": str(uuid.uuid4())}] * 2}, "listed twice"),
        ({"rooms": [{"room_id": str(uuid.uuid4())} for _ in range(MAX_ROOMS + 1)]}, f"at most {MAX_ROOMS} rooms"),
        ({"rooms": [{"room_id": str(uuid.uuid4())} for _ in range(5000)]}, "rooms"),
        ([1, 2], "payload"),
    ],
)
async def test_garbage_and_oversized_batches_are_refused_whole_and_clearly(
    api: ApiClient, tabs: OpenTab, payload: Any, says: str
) -> None:
    host = await api.user()
    room = await make_room(api, host)
    tab = await tabs(host)
    message = await tab.fails("room:join_many", payload, "invalid_input")
    assert says in message, message
    assert "room:join_many" in message
    # The connection stays usable.
    assert (await tab.join(room))["room"]["id"] == room


async def test_batches_per_connection_are_rate_limited(api: ApiClient, tabs: OpenTab) -> None:
    host = await api.user()
    room = await make_room(api, host)
    tab = await tabs(host)
    for _ in range(RATE):
        await join_many(tab, [{"room_id": room}])
    message = await tab.fails("room:join_many", {"rooms": [{"room_id": room}]}, "rate_limited")
    assert "retry_after=" in message
    # Another connection (a reconnect) has its own allowance.
    assert (await join_many(await tabs(host), [{"room_id": room}]))[room]["ok"] is True


async def test_a_storm_of_rejoins_goes_through_the_join_gate_one_at_a_time_and_all_are_answered(
    api: ApiClient, tabs: OpenTab
) -> None:
    """Many clients rejoining at once (a node died) queue at the gate (``STUDYHALL_ROOM_JOINS_AT_ONCE``, 1 here):
    each gets its whole answer, the members list included, and the gate is free again afterwards."""
    host = await api.user()
    readers = [await api.user() for _ in range(12)]
    rooms = [await make_room(api, host, *readers) for _ in range(3)]
    sender = await tabs(host)
    for room in rooms:
        await sender.join(room)
        await sender.send(room, "before the storm")
    clients = [await tabs(reader) for reader in readers]
    answers = await asyncio.gather(
        *(join_many(tab, [{"room_id": r, "after_seq": 0} for r in rooms]) for tab in clients)
    )
    for answer in answers:
        for room in rooms:
            assert answer[room]["ok"] is True, answer[room]
            assert bodies(answer[room]["messages"]) == ["before the storm"]
    # Everyone is present in every room (the last to join sees all 13), and chat flows to all of them.
    last = await clients[-1].ok("room:join", {"room_id": rooms[0]})
    assert last["member_count"] == 13
    await sender.send(rooms[0], "after the storm")
    for tab in clients:
        message = await tab.next("chat:message")
        assert message["body"] == "after the storm"
    gate = api.app[SOCKETS].services[JOIN_GATE]
    assert not gate.locked()
