"""Rooms: REST rules (visibility, community rooms, invites, roles, archive), room:join/leave with real
Socket.IO clients, presence once per user across tabs, and presence across nodes on a real Redis.

Nothing here sleeps to synchronise: events are awaited with timeouts, and "no event came" is shown by
a later marker event arriving first (one server sends one client its events in order).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import socketio
from aiohttp.test_utils import TestServer

from core_api.context import CORE
from core_api.settings import ConfigError, load_settings
from realtime.app import create_app
from rooms.presence import LocalPresence, Presence, PresenceChange, PresenceSnapshot, PresentUser, RedisPresence
from tests.conftest import Actor, ApiClient, make_settings

WAIT = 5.0
VIDEO = {"title": "L", "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 60.0}

# --- helpers -------------------------------------------------------------------------------------


async def ok(api: ApiClient, method: str, path: str, actor: Actor, status: int = 200, **kw: Any) -> Any:
    got, body = await api.call(method, path, actor, **kw)
    assert got == status, (method, path, got, body)
    return body


async def new_room(api: ApiClient, actor: Actor, visibility: str = "public", **extra: Any) -> dict[str, Any]:
    body = {"name": f"Room {uuid.uuid4().hex[:6]}", "kind": "study", "visibility": visibility, **extra}
    room: dict[str, Any] = await ok(api, "POST", "/rooms", actor, 201, json=body)
    return room


async def new_community(api: ApiClient, owner: Actor, *members: Actor, visibility: str = "public") -> str:
    community = await ok(
        api, "POST", "/communities", owner, 201, json={"name": f"C {uuid.uuid4().hex[:10]}", "visibility": visibility}
    )
    for member in members:
        await ok(api, "POST", f"/communities/{community['id']}/members", owner, 201, json={"user_id": member.id})
    return str(community["id"])


class Tab:
    """One real Socket.IO client (a browser tab) with queues of the events it received."""

    def __init__(self, client: socketio.AsyncClient) -> None:
        self.client = client
        self.presence: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.archived: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        client.on("room:presence", self.presence.put)
        client.on("room:archived", self.archived.put)

    async def call(self, event: str, data: Any) -> dict[str, Any]:
        ack: dict[str, Any] = await self.client.call(event, data, timeout=WAIT)
        return ack

    async def join(self, room_id: str) -> dict[str, Any]:
        ack = await self.call("room:join", {"room_id": room_id})
        assert ack["ok"] is True, ack
        return ack

    async def next_presence(self) -> tuple[str, str]:
        event = await asyncio.wait_for(self.presence.get(), timeout=WAIT)
        return event["user"]["display_name"], event["state"]


async def open_tab(url: str, actor: Actor) -> Tab:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, auth={"token": actor.token}, transports=["websocket"], wait_timeout=WAIT)
    return Tab(client)


@pytest.fixture
async def tabs(api: ApiClient) -> AsyncIterator[Any]:
    opened: list[Tab] = []

    async def make(actor: Actor) -> Tab:
        tab = await open_tab(str(api.http.make_url("/")).rstrip("/"), actor)
        opened.append(tab)
        return tab

    yield make
    for tab in opened:
        if tab.client.connected:
            await tab.client.disconnect()


# --- REST ----------------------------------------------------------------------------------------


async def test_creator_hosts_and_community_and_course_rooms_follow_the_rules(api: ApiClient) -> None:
    alice, bob, teacher = await api.user(name="Alice"), await api.user(), await api.user("instructor")
    room = await new_room(api, alice)
    assert room["my_role"] == "host" and room["member_count"] == 1 and room["archived_at"] is None

    status, body = await api.call(
        "POST", "/rooms", alice, json={"name": "x", "kind": "study", "visibility": "community"}
    )
    assert status == 400 and "community_id" in body["error"]["message"]
    public_c = await new_community(api, bob)
    private_c = await new_community(api, bob, visibility="private")
    for community, expected in ((public_c, 403), (private_c, 404), (str(uuid.uuid4()), 404)):
        status, _ = await api.call(
            "POST",
            "/rooms",
            alice,
            json={"name": "x", "kind": "study", "visibility": "community", "community_id": community},
        )
        assert status == expected, community
    assert (await new_room(api, bob, "community", community_id=private_c))["community_id"] == private_c

    draft = await ok(api, "POST", "/courses", teacher, 201, json={"title": "Draft"})
    status, _ = await api.call(
        "POST", "/rooms", alice, json={"name": "x", "kind": "watch", "visibility": "public", "course_id": draft["id"]}
    )
    assert status == 404  # a course alice cannot see does not exist for her
    assert (await new_room(api, teacher, course_id=draft["id"]))["course_id"] == draft["id"]

    for bad in (
        {"name": "x", "kind": "party", "visibility": "public"},
        {"name": "x" * 121, "kind": "study", "visibility": "public"},
        {"name": "   ", "kind": "study", "visibility": "public"},
        {"name": "x", "kind": "study", "visibility": "public", "owner": alice.id},
    ):
        status, body = await api.call("POST", "/rooms", alice, json=bad)
        assert status == 400 and body["error"]["code"] == "invalid_input", bad


async def test_who_sees_which_room(api: ApiClient) -> None:
    host, member, stranger, admin = await api.user(), await api.user(), await api.user(), await api.user("admin")
    community = await new_community(api, host, member)
    # All three belong to one fresh community, so listing by it shows just these (the database is shared).
    public = await new_room(api, host, community_id=community)
    in_community = await new_room(api, host, "community", community_id=community)
    private = await new_room(api, host, "private", community_id=community)

    async def listed(actor: Actor) -> set[str]:
        page = await ok(api, "GET", f"/rooms?community_id={community}", actor)
        return {r["id"] for r in page["items"]}

    everything = {public["id"], in_community["id"], private["id"]}
    assert await listed(host) == everything == await listed(admin)
    assert await listed(member) == {public["id"], in_community["id"]}
    assert await listed(stranger) == {public["id"]}
    for room, sees in ((public, True), (in_community, False), (private, False)):
        for path in (f"/rooms/{room['id']}", f"/rooms/{room['id']}/members"):
            status, body = await api.call("GET", path, stranger)
            assert status == (200 if sees else 404), (path, body)
    assert (await ok(api, "GET", f"/rooms/{in_community['id']}", member))["my_role"] is None

    await ok(api, "POST", f"/rooms/{private['id']}/invite", host, 201, json={"user_id": stranger.id})
    assert (await ok(api, "GET", f"/rooms/{private['id']}", stranger))["my_role"] == "member"
    assert await listed(stranger) == {public["id"], private["id"]}
    status, _ = await api.call("GET", "/rooms?community_id=nope", member)
    assert status == 400


async def test_room_list_pages_and_filters(api: ApiClient) -> None:
    host = await api.user()
    community = await new_community(api, host)
    made = [await new_room(api, host, "community", community_id=community) for _ in range(3)]
    watch = await ok(
        api,
        "POST",
        "/rooms",
        host,
        201,
        json={"name": "Film", "kind": "watch", "visibility": "community", "community_id": community},
    )
    first = await ok(api, "GET", f"/rooms?community_id={community}&limit=2", host)
    second = await ok(api, "GET", f"/rooms?community_id={community}&limit=2&cursor={first['next_cursor']}", host)
    assert [r["id"] for r in first["items"] + second["items"]] == [r["id"] for r in [*made, watch]]
    assert second["next_cursor"] is None
    kinds = await ok(api, "GET", f"/rooms?community_id={community}&kind=watch", host)
    assert [r["id"] for r in kinds["items"]] == [watch["id"]]

    await ok(api, "POST", f"/rooms/{made[0]['id']}/archive", host)
    default = await ok(api, "GET", f"/rooms?community_id={community}", host)
    everything = await ok(api, "GET", f"/rooms?community_id={community}&include_archived=true", host)
    assert made[0]["id"] not in {r["id"] for r in default["items"]}
    assert made[0]["id"] in {r["id"] for r in everything["items"]}


async def test_mine_lists_only_the_rooms_one_is_a_member_of(api: ApiClient) -> None:
    """On a busy server the rooms one belongs to must not hide behind everyone's public rooms (the web app's
    "Your rooms")."""
    alice, bob = await api.user(), await api.user()
    public = await new_room(api, alice)
    private = await new_room(api, alice, "private")
    bobs = await new_room(api, bob)
    for _ in range(3):
        await new_room(api, await api.user())  # other people's public rooms, visible to both
    await ok(api, "POST", f"/rooms/{private['id']}/invite", alice, 201, json={"user_id": bob.id})

    mine = await ok(api, "GET", "/rooms?mine=true&limit=100", bob)
    assert [r["id"] for r in mine["items"]] == [private["id"], bobs["id"]]
    assert all(r["my_role"] is not None for r in mine["items"])
    theirs = await ok(api, "GET", "/rooms?mine=true&limit=100", alice)
    assert [r["id"] for r in theirs["items"]] == [public["id"], private["id"]]
    everything = await ok(api, "GET", "/rooms?limit=100", bob)
    assert public["id"] in {r["id"] for r in everything["items"]}
    status, _ = await api.call("GET", "/rooms?mine=perhaps", bob)
    assert status == 400


async def test_invites_roles_and_handing_over_the_host(api: ApiClient) -> None:
    host, mod, member, guest, other = [await api.user() for _ in range(5)]
    room = await new_room(api, host, "private")
    rid = room["id"]

    invited = await ok(api, "POST", f"/rooms/{rid}/invite", host, 201, json={"user_id": mod.id, "role": "moderator"})
    assert invited["role"] == "moderator" and invited["user_id"] == mod.id
    await ok(api, "POST", f"/rooms/{rid}/invite", mod, 201, json={"user_id": member.id})
    status, _ = await api.call("POST", f"/rooms/{rid}/invite", mod, json={"user_id": guest.id, "role": "moderator"})
    assert status == 403  # moderators invite members only
    status, _ = await api.call("POST", f"/rooms/{rid}/invite", member, json={"user_id": guest.id})
    assert status == 403
    status, _ = await api.call("POST", f"/rooms/{rid}/invite", other, json={"user_id": guest.id})
    assert status == 404  # a private room does not exist for outsiders
    status, _ = await api.call("POST", f"/rooms/{rid}/invite", host, json={"user_id": member.id})
    assert status == 409
    status, _ = await api.call("POST", f"/rooms/{rid}/invite", host, json={"user_id": str(uuid.uuid4())})
    assert status == 404

    # By email (any case), as the web app invites: the same rules.
    invitee = await api.user()
    by_email = await ok(api, "POST", f"/rooms/{rid}/invite", mod, 201, json={"email": invitee.email.upper()})
    assert by_email["user_id"] == invitee.id and by_email["role"] == "member"
    status, body = await api.call("POST", f"/rooms/{rid}/invite", mod, json={"email": invitee.email})
    assert status == 409, body
    status, body = await api.call("POST", f"/rooms/{rid}/invite", host, json={"email": "nobody@example.com"})
    assert status == 404 and body["error"]["message"] == "no account has this email"
    status, _ = await api.call("POST", f"/rooms/{rid}/invite", member, json={"email": other.email})
    assert status == 403
    for bad in ({}, {"user_id": other.id, "email": other.email}, {"email": ""}, {"email": 5}, {"email": "x" * 300}):
        status, body = await api.call("POST", f"/rooms/{rid}/invite", host, json=bad)
        assert status == 400 and body["error"]["code"] == "invalid_input", (bad, body)

    notes = await ok(api, "GET", "/me/notifications", member)
    invite = next(n for n in notes["items"] if n["kind"] == "room_invite")
    assert invite["payload"]["room_id"] == rid and invite["payload"]["invited_by"] == mod.id

    status, _ = await api.call("PUT", f"/rooms/{rid}/members/{member.id}", mod, json={"role": "moderator"})
    assert status == 403  # only the host changes roles
    changed = await ok(api, "PUT", f"/rooms/{rid}/members/{member.id}", host, json={"role": "moderator"})
    assert changed["role"] == "moderator"
    status, _ = await api.call("PUT", f"/rooms/{rid}/members/{host.id}", host, json={"role": "member"})
    assert status == 409  # a room always has a host
    status, _ = await api.call("PUT", f"/rooms/{rid}/members/{guest.id}", host, json={"role": "member"})
    assert status == 404  # not a member

    await ok(api, "PUT", f"/rooms/{rid}/members/{mod.id}", host, json={"role": "host"})
    members = await ok(api, "GET", f"/rooms/{rid}/members", mod)
    roles = {m["user_id"]: m["role"] for m in members["items"]}
    assert roles == {host.id: "moderator", mod.id: "host", member.id: "moderator", invitee.id: "member"}
    status, _ = await api.call("PUT", f"/rooms/{rid}/members/{member.id}", host, json={"role": "member"})
    assert status == 403  # the former host no longer decides
    await ok(api, "PUT", f"/rooms/{rid}/members/{member.id}", mod, json={"role": "member"})


async def test_archive_is_for_the_host_or_an_admin_and_reaches_connected_members(api: ApiClient, tabs: Any) -> None:
    host, mod, member, admin = await api.user(), await api.user(), await api.user(), await api.user("admin")
    room = await new_room(api, host)
    rid = room["id"]
    await ok(api, "POST", f"/rooms/{rid}/invite", host, 201, json={"user_id": mod.id, "role": "moderator"})
    listener = await tabs(member)
    await listener.join(rid)
    for who in (member, mod):
        status, _ = await api.call("POST", f"/rooms/{rid}/archive", who)
        assert status == 403

    archived = await ok(api, "POST", f"/rooms/{rid}/archive", host)
    assert archived["archived_at"] is not None
    assert await asyncio.wait_for(listener.archived.get(), timeout=WAIT) == {"room_id": rid}
    again = await ok(api, "POST", f"/rooms/{rid}/archive", host)
    assert again["archived_at"] == archived["archived_at"]
    actions = await api.app[CORE].pool.fetch("SELECT action FROM audit_log WHERE target_id = $1", rid)
    assert [a["action"] for a in actions] == ["room.archived"]

    late = await tabs(await api.user())
    ack = await late.call("room:join", {"room_id": rid})
    assert ack["ok"] is False and ack["error"]["code"] == "conflict"
    status, _ = await api.call("POST", f"/rooms/{rid}/invite", host, json={"user_id": admin.id})
    assert status == 409
    assert (await ok(api, "GET", f"/rooms/{rid}", member))["archived_at"] is not None  # still readable

    other = await new_room(api, host)
    assert (await ok(api, "POST", f"/rooms/{other['id']}/archive", admin))["archived_at"] is not None


# --- Socket.IO -----------------------------------------------------------------------------------


async def add_messages(api: ApiClient, room_id: str, author: Actor, count: int) -> None:
    """Chat history written straight into the tables (chat:send belongs to the chat module's tests)."""
    async with api.app[CORE].pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO chat_messages (id, room_id, seq, author_id, client_msg_id, body)
               SELECT gen_random_uuid(), $1, s, $2, 'c' || s, 'message ' || s FROM generate_series(1, $3) s""",
            uuid.UUID(room_id),
            uuid.UUID(author.id),
            count,
        )
        await conn.execute("UPDATE rooms SET last_seq = $2 WHERE id = $1", uuid.UUID(room_id), count)
        await conn.execute(
            "UPDATE chat_messages SET body = 'edited', edited_at = now() WHERE room_id = $1 AND seq = $2",
            uuid.UUID(room_id),
            count - 1,
        )
        await conn.execute(
            "UPDATE chat_messages SET deleted_at = now() WHERE room_id = $1 AND seq = $2", uuid.UUID(room_id), count
        )


async def test_join_ack_carries_the_room_who_is_here_and_the_last_50_messages(api: ApiClient, tabs: Any) -> None:
    host, guest = await api.user(name="Hana"), await api.user(name="Gus")
    room = await new_room(api, host)
    await add_messages(api, room["id"], host, 55)
    await (await tabs(host)).join(room["id"])

    ack = await (await tabs(guest)).join(room["id"])
    assert ack["room"]["id"] == room["id"] and ack["room"]["my_role"] == "member"
    assert ack["members"] == [{"id": guest.id, "display_name": "Gus"}, {"id": host.id, "display_name": "Hana"}]
    messages = ack["messages"]
    assert [m["seq"] for m in messages] == list(range(6, 56))
    first = messages[0]
    assert set(first) >= {
        "id",
        "room_id",
        "seq",
        "author",
        "body",
        "created_at",
        "edited_at",
        "deleted",
        "reactions",
        "rev",
    }
    assert first["author"] == {"id": host.id, "display_name": "Hana"} and first["body"] == "message 6"
    assert messages[-2]["body"] == "edited" and messages[-2]["edited_at"] is not None
    assert messages[-1]["body"] == "" and messages[-1]["deleted"] is True
    # Joining made the guest a member.
    members = await ok(api, "GET", f"/rooms/{room['id']}/members", host)
    assert {m["user_id"]: m["role"] for m in members["items"]} == {host.id: "host", guest.id: "member"}


async def test_presence_announces_a_user_once_across_tabs_and_disconnect_leaves(api: ApiClient, tabs: Any) -> None:
    host, ann, marker = await api.user(name="Host"), await api.user(name="Ann"), await api.user(name="Marker")
    rid = (await new_room(api, host))["id"]
    observer = await tabs(host)
    await observer.join(rid)

    first, second = await tabs(ann), await tabs(ann)
    await first.join(rid)
    assert await observer.next_presence() == ("Ann", "joined")
    ack = await second.join(rid)
    assert [m["display_name"] for m in ack["members"]] == ["Ann", "Host"]
    assert (await first.call("room:join", {"room_id": rid}))["ok"] is True  # rejoining from a tab: no news
    marking = await tabs(marker)
    await marking.join(rid)
    assert await observer.next_presence() == ("Marker", "joined")  # no second "Ann joined" before it

    assert await first.call("room:leave", {"room_id": rid}) == {"ok": True}
    await marking.call("room:leave", {"room_id": rid})
    assert await observer.next_presence() == ("Marker", "left")  # Ann is still here in her second tab
    await second.call("room:leave", {"room_id": rid})
    assert await observer.next_presence() == ("Ann", "left")

    await first.join(rid)
    await second.join(rid)
    assert await observer.next_presence() == ("Ann", "joined")
    await first.client.disconnect()
    await marking.join(rid)
    assert await observer.next_presence() == ("Marker", "joined")
    await second.client.disconnect()
    assert await observer.next_presence() == ("Ann", "left")


async def test_private_rooms_do_not_exist_for_strangers_over_rest_or_socket(api: ApiClient, tabs: Any) -> None:
    host, stranger = await api.user(), await api.user()
    private = await new_room(api, host, "private")
    community = await new_community(api, host)
    in_community = await new_room(api, host, "community", community_id=community)
    tab = await tabs(stranger)
    for room_id in (private["id"], in_community["id"], str(uuid.uuid4())):
        status, body = await api.call("GET", f"/rooms/{room_id}", stranger)
        assert status == 404 and body["error"]["code"] == "not_found"
        for event in ("room:join", "room:leave"):
            ack = await tab.call(event, {"room_id": room_id})
            assert ack == {"ok": False, "error": {"code": "not_found", "message": "room not found"}}, (event, ack)
    for bad in ({"room_id": "not-a-uuid"}, {}, {"room_id": 5}, "x", {"room_id": private["id"], "extra": 1}):
        ack = await tab.call("room:join", bad)
        assert ack["ok"] is False and ack["error"]["code"] == "invalid_input", bad
    assert tab.client.connected
    # An invitation opens the door.
    await ok(api, "POST", f"/rooms/{private['id']}/invite", host, 201, json={"user_id": stranger.id})
    assert (await tab.join(private["id"]))["room"]["my_role"] == "member"


async def test_banned_users_cannot_join(api: ApiClient, tabs: Any) -> None:
    host, rowdy = await api.user(), await api.user()
    rid = (await new_room(api, host))["id"]
    tab = await tabs(rowdy)
    await tab.join(rid)
    await tab.call("room:leave", {"room_id": rid})
    await api.app[CORE].pool.execute(
        "UPDATE room_members SET banned_at = now() WHERE room_id = $1 AND user_id = $2",
        uuid.UUID(rid),
        uuid.UUID(rowdy.id),
    )
    ack = await tab.call("room:join", {"room_id": rid})
    assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
    room = await ok(api, "GET", f"/rooms/{rid}", rowdy)
    assert room["my_role"] is None and room["member_count"] == 1
    members = await ok(api, "GET", f"/rooms/{rid}/members", host)
    assert [m["user_id"] for m in members["items"]] == [host.id]


def test_presence_heartbeat_must_be_shorter_than_its_ttl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STUDYHALL_REDIS_URL", raising=False)  # else the missing JWT secret is reported first
    with pytest.raises(ConfigError, match="STUDYHALL_PRESENCE_HEARTBEAT_S"):
        load_settings(data_dir=tmp_path, presence_ttl_s=2, presence_heartbeat_s=2, redis_url=None)


# --- presence backends ---------------------------------------------------------------------------


async def _redis_url() -> str:
    url = os.environ.get("STUDYHALL_REDIS_URL") or "redis://127.0.0.1:6379/15"
    client = aioredis.Redis.from_url(url)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        pytest.skip(f"the Redis presence tests need a Redis server: {url} is unreachable ({exc})")
    finally:
        await client.aclose()
    return url


@pytest.fixture
async def redis_url() -> str:
    return await _redis_url()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


def _prefix() -> str:
    return f"studyhall-test:{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["local", "redis"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Presence, Presence]]:
    """Two nodes' views of presence: one shared LocalPresence, or two RedisPresence nodes."""
    if request.param == "local":
        local = LocalPresence()
        yield local, local
        return
    client = aioredis.Redis.from_url(await _redis_url(), decode_responses=True)
    prefix = _prefix()
    nodes = (RedisPresence(client, "a", ttl_s=10, prefix=prefix), RedisPresence(client, "b", ttl_s=10, prefix=prefix))
    yield nodes
    for node in nodes:
        await node.close()
    await client.aclose()


ANN, BO = PresentUser("u-ann", "Ann"), PresentUser("u-bo", "Bo")


async def test_presence_counts_users_not_connections(pair: tuple[Presence, Presence]) -> None:
    a, b = pair
    assert await a.enter("r1", "s1", ANN) == 1  # the user's first connection: the room's revision 1
    assert await b.enter("r1", "s2", ANN) is None  # the same user on another node
    assert await a.enter("r1", "s1", ANN) is None  # the same connection again
    assert await b.enter("r1", "s3", BO) == 2
    assert await a.enter("r2", "s1", ANN) == 1  # rooms are separate, with revisions of their own
    assert await a.members("r1") == [ANN, BO] == await b.members("r1")
    assert await a.snapshot("r1") == PresenceSnapshot(2, [ANN, BO]) == await b.snapshot("r1")
    assert await a.leave("r1", "s1") is None
    assert await b.leave("r1", "s2") == PresenceChange("r1", ANN, "left", 3)
    assert await b.leave("r1", "s2") is None
    assert await a.snapshot("r1") == PresenceSnapshot(3, [BO])
    assert await a.leave("r1", "nobody") is None
    assert await b.leave("r1", "s3") == PresenceChange("r1", BO, "left", 4)
    assert await b.snapshot("r1") == PresenceSnapshot(4, [])  # empty: the revision is kept
    assert await b.enter("r1", "s4", BO) == 5  # and never goes back


async def test_removing_a_user_drops_all_their_connections(pair: tuple[Presence, Presence]) -> None:
    a, b = pair
    await a.enter("r", "s1", ANN)
    await b.enter("r", "s2", ANN)
    await b.enter("r", "s3", BO)
    gone, sids = await b.remove_user("r", ANN.id)  # kicked, wherever her tabs are
    assert gone == PresenceChange("r", ANN, "left", 3)
    assert sorted(sids) == ["s1", "s2"]
    assert await a.remove_user("r", ANN.id) == (None, [])
    assert await a.members("r") == [BO]
    assert await a.leave("r", "s1") is None  # her tab's own leave later announces nothing
    assert await a.enter("r", "s1", ANN) == 4  # and she may come back


async def test_a_rename_on_one_node_is_what_the_other_lists_and_enters_nobody(pair: tuple[Presence, Presence]) -> None:
    a, b = pair
    assert await a.enter("r", "s1", ANN) == 1
    rev, listed = await b.enter_and_snapshot("r", "s2", BO)  # a join enters and lists in one step
    assert rev == 2 and listed == PresenceSnapshot(2, [ANN, BO])
    countess = PresentUser(ANN.id, "Zoe")
    assert await a.rename("r", countess) is True
    assert await b.snapshot("r") == PresenceSnapshot(2, [BO, countess])  # the new name, ordered by it; no new rev
    assert (await b.enter_and_snapshot("r", "s3", BO))[1].users == [BO, countess]
    assert await b.rename("elsewhere", countess) is False  # not present there: nothing is entered
    assert await a.snapshot("elsewhere") == PresenceSnapshot(0, [])
    assert await a.leave("r", "s1") == PresenceChange("r", countess, "left", 3)  # leaves under the new name
    assert await b.rename("r", PresentUser(ANN.id, "Ghost")) is False
    assert await b.snapshot("r") == PresenceSnapshot(3, [BO])


async def test_a_node_forgets_rooms_it_has_left(redis_client: aioredis.Redis) -> None:
    prefix = _prefix()
    node = RedisPresence(redis_client, "n", ttl_s=10, prefix=prefix)
    try:
        await node.enter("kept", "s1", ANN)
        await node.enter("left", "s1", ANN)
        await node.leave("left", "s1")
        await node.upkeep()
        assert await redis_client.smembers(f"{prefix}:node:n:rooms") == {"kept"}  # type: ignore[misc]
        # Entering it again indexes it again (each node remembers which rooms it indexed: not this one any more),
        # so a sweep after this node's death would find the connection.
        await node.enter_and_snapshot("left", "s2", BO)
        assert await redis_client.smembers(f"{prefix}:node:n:rooms") == {"kept", "left"}  # type: ignore[misc]
    finally:
        await node.close()


async def wait_for_changes(presence: Presence) -> list[PresenceChange]:
    """Beat until a beat reports something (the dead node's heartbeat expires in Redis on its own)."""
    async with asyncio.timeout(WAIT):
        while True:
            changes = await presence.upkeep()
            if changes:
                return changes
            await asyncio.sleep(0.05)


async def test_users_of_a_dead_node_vanish_once(redis_client: aioredis.Redis) -> None:
    prefix = _prefix()
    live = RedisPresence(redis_client, "live", ttl_s=10, prefix=prefix)
    dead = RedisPresence(redis_client, "dead", ttl_s=0.3, prefix=prefix)
    watcher = RedisPresence(redis_client, "watcher", ttl_s=10, prefix=prefix)
    try:
        await dead.upkeep()  # its heartbeat, then it "dies": nobody refreshes it again
        await dead.enter("r", "d1", ANN)
        await dead.enter("r", "d2", BO)
        await live.enter("r", "l1", BO)  # Bo is also on a live node: he stays
        assert await live.upkeep() == []  # the dead node's heartbeat has not expired yet
        assert await wait_for_changes(live) == [PresenceChange("r", ANN, "left", 3)]
        assert await live.members("r") == [BO]
        assert await watcher.upkeep() == []  # a second sweeper finds nothing left to announce
        assert not await redis_client.sismember(f"{prefix}:nodes", "dead")  # type: ignore[misc]  # redis-py's sync|async stubs
    finally:
        await live.close()
        await watcher.close()


async def test_a_node_taken_for_dead_enters_its_connections_again(redis_client: aioredis.Redis) -> None:
    prefix = _prefix()
    slow = RedisPresence(redis_client, "slow", ttl_s=10, prefix=prefix)
    other = RedisPresence(redis_client, "other", ttl_s=10, prefix=prefix)
    try:
        await slow.upkeep()
        await slow.enter("r", "s1", ANN)
        await redis_client.delete(f"{prefix}:node:slow:alive")  # it stalled past its TTL
        assert await other.upkeep() == [PresenceChange("r", ANN, "left", 2)]
        assert await slow.upkeep() == [PresenceChange("r", ANN, "joined", 3)]
        assert await other.members("r") == [ANN]
    finally:
        await slow.close()
        await other.close()


async def test_a_member_whose_node_died_leaves_the_room_for_clients(
    database_url: str, tmp_path: Path, redis_url: str, aiohttp_client: Any
) -> None:
    settings = make_settings(database_url, tmp_path, redis_url=redis_url, presence_ttl_s=1.0, presence_heartbeat_s=0.1)
    client = await aiohttp_client(TestServer(create_app(settings)))
    api = ApiClient(client)
    host = await api.user(name="Host")
    rid = (await new_room(api, host))["id"]
    # A node that died: its entry is in Redis, its heartbeat expires by itself.
    ghost_node = RedisPresence.from_url(redis_url, "ghostnode", ttl_s=2.0)
    try:
        await ghost_node.upkeep()
        await ghost_node.enter(rid, "g1", PresentUser(str(uuid.uuid4()), "Ghost"))
        tab = await open_tab(str(client.make_url("/")).rstrip("/"), host)
        try:
            ack = await tab.join(rid)
            assert [m["display_name"] for m in ack["members"]] == ["Ghost", "Host"]
            assert await tab.next_presence() == ("Ghost", "left")
            members = (await tab.join(rid))["members"]
            assert [m["display_name"] for m in members] == ["Host"]
        finally:
            await tab.client.disconnect()
    finally:
        await ghost_node.close()
