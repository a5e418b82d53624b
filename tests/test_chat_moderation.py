"""Chat moderation and pacing with real Socket.IO clients: mute, kick, ban, slow mode, the per-user rate
limit, the rank rules, audit rows and ``chat:moderation`` broadcasts.

Time windows are crossed without waiting: the rules read the database clock, so moving a user's
messages back in time (``age_messages``) is exactly what the passing of that time looks like to them.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from realtime.app import create_app
from tests.chat_helpers import OpenTab, Tab, age_messages, fetch, fetchval, make_room, open_tab, set_room_role
from tests.conftest import ApiClient, make_settings


async def staffed_room(api: ApiClient, tabs: OpenTab, visibility: str = "private") -> tuple[str, Tab, Tab, Tab, Tab]:
    """A room with a host, a moderator and two members, all connected and joined."""
    host, mod, alice, bob = [await api.user() for _ in range(4)]
    room_id = await make_room(api, host, mod, alice, bob, visibility=visibility)
    await set_room_role(api, room_id, mod, "moderator")
    opened = [await tabs(u) for u in (host, mod, alice, bob)]
    for tab in opened:
        await tab.join(room_id)
    return room_id, opened[0], opened[1], opened[2], opened[3]


async def audit_actions(api: ApiClient, room_id: str) -> list[tuple[str, Any]]:
    rows = await fetch(
        api, "SELECT action, details FROM audit_log WHERE target_id = $1 ORDER BY created_at, action", room_id
    )
    return [(r["action"], r["details"]) for r in rows]


def retry_after(message: str) -> int:
    found = re.search(r"retry_after=(\d+)", message)
    assert found, message
    return int(found.group(1))


async def test_mute_blocks_sends_until_lifted_and_follows_rank(api: ApiClient, tabs: OpenTab) -> None:
    room_id, host, mod, alice, bob = await staffed_room(api, tabs)
    sent = await alice.send(room_id, "before the mute", "early")
    mute = {"room_id": room_id, "user_id": alice.actor.id, "seconds": 600}
    await bob.fails("chat:mute", mute, "forbidden")  # members do not moderate
    await mod.fails("chat:mute", {**mute, "user_id": host.actor.id}, "forbidden")  # nor on the host
    await mod.fails("chat:mute", {**mute, "user_id": mod.actor.id}, "invalid_input")  # nor on themselves
    other_mod = await api.user()
    await set_room_role(api, room_id, other_mod, "moderator")
    await mod.fails("chat:mute", {**mute, "user_id": other_mod.id}, "forbidden")  # nor on a peer
    await host.ok("chat:mute", {**mute, "user_id": other_mod.id, "seconds": 0})  # the host may
    await mod.fails("chat:mute", {**mute, "user_id": str(uuid.uuid4())}, "not_found")

    ack = await mod.ok("chat:mute", mute)
    assert ack["muted_until"] is not None
    event = await bob.next("chat:moderation")
    assert event["action"] == "unmute"  # the host's no-op unmute of the other moderator came first
    event = await bob.next("chat:moderation")
    assert (event["action"], event["user_id"], event["by"]["id"], event["seconds"]) == (
        "mute",
        alice.actor.id,
        mod.actor.id,
        600,
    )
    assert "muted" in await alice.fails(
        "chat:send", {"room_id": room_id, "body": "let me talk", "client_msg_id": "late"}, "forbidden"
    )
    assert await alice.send(room_id, "retry of an earlier send", "early") == sent  # resends still answer
    await alice.fails("chat:typing", {"room_id": room_id, "typing": True}, "forbidden")

    await mod.ok("chat:mute", {**mute, "seconds": 0})
    assert (await alice.send(room_id, "free again"))["seq"] == 2
    actions = [a for a, _ in await audit_actions(api, room_id)]
    assert actions.count("chat.mute") == 1
    assert actions.count("chat.unmute") == 2


async def test_kick_takes_the_user_out_of_the_room_at_once(api: ApiClient, tabs: OpenTab) -> None:
    room_id, host, mod, alice, bob = await staffed_room(api, tabs, "public")  # so alice may join again
    alice_second_tab = await tabs(alice.actor)
    await alice_second_tab.join(room_id)
    await mod.fails("chat:kick", {"room_id": room_id, "user_id": host.actor.id}, "forbidden")
    await bob.fails("chat:kick", {"room_id": room_id, "user_id": alice.actor.id}, "forbidden")

    await mod.ok("chat:kick", {"room_id": room_id, "user_id": alice.actor.id})
    for tab in (alice, alice_second_tab):
        assert await tab.next("room:kicked") == {"room_id": room_id, "reason": "kick"}
    event = await bob.next("chat:moderation")
    assert (event["action"], event["user_id"]) == ("kick", alice.actor.id)
    assert await alice.nothing_pending("chat:moderation")  # already out of the room when announced

    await bob.send(room_id, "is she gone?")
    await host.next("chat:message")
    for tab in (alice, alice_second_tab):
        assert await tab.nothing_pending("chat:message")
    assert "join" in await alice.fails(
        "chat:send", {"room_id": room_id, "body": "hey", "client_msg_id": "x"}, "forbidden"
    )
    await alice.fails("chat:typing", {"room_id": room_id, "typing": True}, "forbidden")
    assert (
        await fetchval(
            api,
            "SELECT count(*) FROM room_members WHERE room_id = $1 AND user_id = $2",
            uuid.UUID(room_id),
            uuid.UUID(alice.actor.id),
        )
        == 0
    )
    assert ("chat.kick", {"user_id": alice.actor.id}) in await audit_actions(api, room_id)

    # The kick took her out of the room's presence as well, announced once for both tabs.
    await bob.flush()
    lefts = [p for p in bob.drain("room:presence") if p["state"] == "left"]
    assert [(p["room_id"], p["user"]["id"]) for p in lefts] == [(room_id, alice.actor.id)]
    for tab in (alice, alice_second_tab):
        await tab.ok("room:leave", {"room_id": room_id})  # what a client does on room:kicked: harmless
    assert await bob.nothing_pending("room:presence")

    # A kick is not a ban: joining again works.
    await alice.join(room_id)
    await bob.send(room_id, "welcome back")
    assert (await alice.next("chat:message"))["body"] == "welcome back"


async def test_ban_removes_the_user_and_keeps_them_out_until_lifted(api: ApiClient, tabs: OpenTab) -> None:
    room_id, host, mod, alice, bob = await staffed_room(api, tabs, "public")  # so anyone could join
    stranger = await api.user()
    await mod.fails("chat:ban", {"room_id": room_id, "user_id": mod.actor.id, "on": True}, "invalid_input")
    await mod.ok("chat:ban", {"room_id": room_id, "user_id": alice.actor.id, "on": True})
    assert await alice.next("room:kicked") == {"room_id": room_id, "reason": "ban"}
    assert (await bob.next("chat:moderation"))["action"] == "ban"
    assert "banned" in await alice.fails("room:join", {"room_id": room_id}, "forbidden")
    assert "banned" in await alice.fails(
        "chat:send", {"room_id": room_id, "body": "x", "client_msg_id": "x"}, "forbidden"
    )
    await alice.fails("chat:history", {"room_id": room_id}, "forbidden")
    await bob.send(room_id, "quiet now")
    assert await alice.nothing_pending("chat:message")

    # Someone who never joined can be banned ahead of time.
    await host.ok("chat:ban", {"room_id": room_id, "user_id": stranger.id, "on": True})
    assert (await bob.next("chat:moderation"))["user_id"] == stranger.id
    stranger_tab = await tabs(stranger)
    await stranger_tab.fails("room:join", {"room_id": room_id}, "forbidden")

    await mod.ok("chat:ban", {"room_id": room_id, "user_id": alice.actor.id, "on": False})
    assert (await bob.next("chat:moderation"))["action"] == "unban"
    await alice.join(room_id)
    assert (await alice.send(room_id, "thanks"))["seq"] == 2
    actions = [a for a, _ in await audit_actions(api, room_id)]
    assert actions.count("chat.ban") == 2
    assert actions.count("chat.unban") == 1


async def test_slow_mode_paces_members_but_not_moderators(api: ApiClient, tabs: OpenTab) -> None:
    room_id, _host, mod, alice, bob = await staffed_room(api, tabs)
    await alice.fails("chat:slow_mode", {"room_id": room_id, "seconds": 30}, "forbidden")
    await mod.ok("chat:slow_mode", {"room_id": room_id, "seconds": 30})
    event = await bob.next("chat:moderation")
    assert (event["action"], event["user_id"], event["seconds"]) == ("slow_mode", None, 30)

    await alice.send(room_id, "one")
    message = await alice.fails(
        "chat:send", {"room_id": room_id, "body": "two", "client_msg_id": "two"}, "rate_limited"
    )
    assert 29 <= retry_after(message) <= 30
    await bob.send(room_id, "bob has his own allowance")
    await mod.send(room_id, "moderators")
    await mod.send(room_id, "are not slowed")
    await age_messages(api, alice.actor, 31)
    await alice.send(room_id, "two", "two")
    await mod.ok("chat:slow_mode", {"room_id": room_id, "seconds": 0})
    await alice.send(room_id, "three")
    seqs = await fetch(api, "SELECT seq FROM chat_messages WHERE room_id = $1 ORDER BY seq", uuid.UUID(room_id))
    assert [r["seq"] for r in seqs] == [1, 2, 3, 4, 5, 6]  # refused sends took no seq
    assert ("chat.slow_mode", {"seconds": 30}) in await audit_actions(api, room_id)


@pytest.fixture
async def strict_api(aiohttp_client: Any, database_url: str, tmp_path: Path) -> ApiClient:
    """An app allowing 3 chat messages per user per 60 s."""
    settings = make_settings(database_url, tmp_path, chat_rate_count=3, chat_rate_window_s=60)
    return ApiClient(await aiohttp_client(create_app(settings)))


async def test_the_per_user_rate_limit_answers_rate_limited(strict_api: ApiClient) -> None:
    api = strict_api
    user = await api.user()
    room_a, room_b = await make_room(api, user), await make_room(api, user)
    tab = await open_tab(api, user)
    try:
        await tab.join(room_a)
        await tab.join(room_b)
        first = await tab.send(room_a, "1", "first")
        await tab.send(room_b, "2")  # the limit counts every room
        await age_messages(api, user, 20)
        await tab.send(room_a, "3")
        message = await tab.fails("chat:send", {"room_id": room_a, "body": "4", "client_msg_id": "4"}, "rate_limited")
        assert 39 <= retry_after(message) <= 40  # until the oldest of the three is 60 s old
        again = await tab.send(room_a, "again", "first")
        assert (again["id"], again["seq"], again["body"]) == (first["id"], 1, "1")
        await age_messages(api, user, 41)
        assert (await tab.send(room_a, "4", "4"))["seq"] == 3
    finally:
        await tab.close()


async def test_a_member_banned_from_a_private_room_is_told_so(api: ApiClient, tabs: OpenTab) -> None:
    host, alice = await api.user(), await api.user()
    room_id = await make_room(api, host, alice)  # private: only members see it
    host_tab, alice_tab = await tabs(host), await tabs(alice)
    await host_tab.join(room_id)
    await alice_tab.join(room_id)
    await host_tab.ok("chat:ban", {"room_id": room_id, "user_id": alice.id, "on": True})
    assert "banned" in await alice_tab.fails("room:join", {"room_id": room_id}, "forbidden")
    assert "banned" in await alice_tab.fails(
        "chat:send", {"room_id": room_id, "body": "x", "client_msg_id": "x"}, "forbidden"
    )
    stranger = await tabs(await api.user())
    await stranger.fails("room:join", {"room_id": room_id}, "not_found")


async def test_a_burst_of_concurrent_sends_stores_exactly_the_limit(strict_api: ApiClient) -> None:
    """Sends fired at once, without waiting for acks, are checked one after the other: 3 of 8 are stored."""
    api = strict_api
    user = await api.user()
    room_id = await make_room(api, user)
    tab = await open_tab(api, user)
    try:
        await tab.join(room_id)
        acks = await asyncio.gather(
            *(tab.call("chat:send", {"room_id": room_id, "body": f"b{i}", "client_msg_id": f"b{i}"}) for i in range(8))
        )
        stored = sorted(a["message"]["seq"] for a in acks if a["ok"])
        refused = [a["error"]["code"] for a in acks if not a["ok"]]
        assert stored == [1, 2, 3]
        assert refused == ["rate_limited"] * 5
    finally:
        await tab.close()


def _redis_url() -> str:
    url = os.environ.get("STUDYHALL_REDIS_URL") or "redis://127.0.0.1:6379/11"
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        pytest.skip(f"no Redis at {url} for the two-node kick test")
    finally:
        client.close()
    return url


@pytest.fixture
async def two_nodes(aiohttp_client: Any, database_url: str, tmp_path: Path) -> tuple[ApiClient, ApiClient]:
    """Two apps sharing Postgres and Redis, as two ``studyhall serve`` nodes do."""
    settings = make_settings(database_url, tmp_path, redis_url=_redis_url())
    return (
        ApiClient(await aiohttp_client(create_app(settings))),
        ApiClient(await aiohttp_client(create_app(settings))),
    )


async def test_a_kick_on_one_node_evicts_the_connections_on_another(two_nodes: tuple[ApiClient, ApiClient]) -> None:
    node_a, node_b = two_nodes
    host, alice, carol = await node_a.user(), await node_a.user(), await node_a.user()
    room_id = await make_room(node_a, host, alice, carol)
    host_b, alice_a, carol_a = (
        await open_tab(node_b, host),
        await open_tab(node_a, alice),
        await open_tab(node_a, carol),
    )
    try:
        for tab in (host_b, alice_a, carol_a):
            await tab.join(room_id)
        # A message from node B reaching node A shows node A listens to Redis already.
        await host_b.send(room_id, "warm up")
        for tab in (alice_a, carol_a):
            assert (await tab.next("chat:message"))["body"] == "warm up"

        await host_b.ok("chat:kick", {"room_id": room_id, "user_id": alice.id})
        assert await alice_a.next("room:kicked") == {"room_id": room_id, "reason": "kick"}
        assert (await carol_a.next("chat:moderation"))["user_id"] == alice.id
        await host_b.send(room_id, "after the kick")
        # carol, on alice's node, got it: had alice still been in the room, she would have too.
        assert (await carol_a.next("chat:message"))["body"] == "after the kick"
        assert await alice_a.nothing_pending("chat:message")
        assert await alice_a.nothing_pending("chat:moderation")
    finally:
        for tab in (host_b, alice_a, carol_a):
            await tab.close()
