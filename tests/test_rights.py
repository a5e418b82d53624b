"""Rights re-checked on open connections (issue 12, items 3 and 4), attacked through the public interface.

Each test opens real connections first (python-socketio clients, y-websocket clients on ``/yjs``), then
changes the user's rights over REST or Socket.IO, and checks what the user (turned attacker) can still
do on the connections they kept open: demoted admins, kicked and banned room members, community admins
who lost the role, members who left or were removed from a community. Two nodes: test_rights_scaleout.py.

On one node the change is applied to the user's sessions before the REST call that made it answers, so
the attacks right after it are refused; the announcements (``me:changed``, ``room:removed``,
``contest:downgraded``, a ``/yjs`` close) are awaited with timeouts.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from collab_ide.protocol import sync_step1
from core_api.context import CORE, RESYNC_TOPIC
from core_api.db import bundled_migrations, migrate
from leaderboards.handlers import CONTESTS
from realtime.app import create_app
from tests.conftest import Actor, ApiClient, _with_database, make_settings
from tests.contest_helpers import at, community_with, contest_body
from tests.nodes import Client
from tests.yclient import YClient

WAIT = 10.0


async def ok(api: ApiClient, method: str, path: str, actor: Actor, status: int = 200, **kw: Any) -> Any:
    got, body = await api.call(method, path, actor, **kw)
    assert got == status, (method, path, got, body)
    return body


def base_of(api: ApiClient) -> str:
    return str(api.http.make_url("")).rstrip("/")


Connect = Callable[[Actor], Awaitable[Client]]
Edit = Callable[[Actor, str], Awaitable[YClient]]


@pytest.fixture
async def connect(api: ApiClient) -> AsyncIterator[Connect]:
    """Opens Socket.IO connections that record every event, and closes them after the test."""
    opened: list[Client] = []

    async def open_one(actor: Actor) -> Client:
        client = Client()
        await client.connect(base_of(api), auth={"token": actor.token}, transports=["websocket"], wait_timeout=10)
        opened.append(client)
        return client

    yield open_one
    for client in opened:
        if client.connected:
            await client.disconnect()


@pytest.fixture
async def editor(api: ApiClient) -> AsyncIterator[Edit]:
    """Opens synced y-websocket connections to a workspace, and closes them after the test."""
    opened: list[YClient] = []

    async def open_one(actor: Actor, workspace_id: str) -> YClient:
        client = YClient()
        opened.append(client)
        await client.connect(base_of(api), workspace_id, actor.token)
        return await client.wait_synced()

    yield open_one
    for client in opened:
        await client.close()


async def refused(client: Client, event: str, data: dict[str, Any], *codes: str) -> None:
    ack = await client.ask(event, data)
    assert ack["ok"] is False, f"{event} {data} was allowed: {ack}"
    assert ack["error"]["code"] in codes, ack


async def joined(client: Client, room_id: str) -> dict[str, Any]:
    ack: dict[str, Any] = await client.ask("room:join", {"room_id": room_id})
    assert ack["ok"] is True, ack
    return ack


async def new_room(api: ApiClient, host: Actor, visibility: str, **extra: Any) -> str:
    body = {"name": f"Room {uuid.uuid4().hex[:6]}", "kind": "study", "visibility": visibility, **extra}
    room: dict[str, Any] = await ok(api, "POST", "/rooms", host, 201, json=body)
    return str(room["id"])


async def room_workspace(api: ApiClient, host: Actor, room_id: str) -> str:
    body = {"name": "pair", "language": "python", "room_id": room_id, "room_access": "edit"}
    workspace: dict[str, Any] = await ok(api, "POST", "/workspaces", host, 201, json=body)
    return str(workspace["id"])


async def still_edits(writer: YClient, reader: YClient, marker: str) -> None:
    """``writer``'s edit reaches ``reader``: its connection is one that may edit."""
    writer.edit("main.py", 0, insert=marker)
    await reader.wait_until(lambda: marker in reader.text("main.py"), within=WAIT)


# --- item 3: a platform role lost ----------------------------------------------------------------


async def test_an_admin_demoted_while_connected_loses_admin_powers_on_the_open_connection(
    api: ApiClient, connect: Connect
) -> None:
    host, admin, other_admin = await api.user(), await api.user("admin"), await api.user("admin")
    room, entered, invited = [await new_room(api, host, "private") for _ in range(3)]
    host_tab = await connect(host)
    await joined(host_tab, room)
    await host_tab.ask("chat:send", {"room_id": room, "body": "secret plans", "client_msg_id": "m1"})
    await ok(api, "POST", f"/rooms/{invited}/invite", host, 201, json={"user_id": admin.id})
    attacker = await connect(admin)
    await joined(attacker, entered)  # as an admin may: a membership nobody invited them to
    await joined(attacker, invited)

    await ok(api, "PUT", f"/users/{admin.id}/role", other_admin, json={"role": "student"})

    # What the demoted admin tries on the connection opened while they were admin: all refused.
    await refused(attacker, "room:join", {"room_id": room}, "not_found")
    await refused(attacker, "chat:history", {"room_id": room}, "not_found")
    await refused(attacker, "chat:ban", {"room_id": room, "user_id": host.id, "on": True}, "not_found")
    await refused(attacker, "chat:send", {"room_id": room, "body": "hi", "client_msg_id": "x"}, "not_found")
    room_now = await ok(api, "GET", f"/rooms/{room}", host)
    assert room_now["my_role"] == "host" and room_now["member_count"] == 1
    # The connection is told its new role; REST never trusted the (still valid) token's role claim.
    changed = await attacker.inbox.wait_for("me:changed", within=WAIT)
    assert changed == {"id": admin.id, "email": admin.email, "display_name": changed["display_name"], "role": "student"}
    status, _ = await api.call("GET", "/users", admin)
    assert status == 403
    # The private room they entered as an admin goes with the role; the one they were invited to stays.
    removed = await attacker.inbox.wait_for("room:removed", within=WAIT)
    assert removed["room_id"] == entered
    status, _ = await api.call("GET", f"/rooms/{entered}", admin)
    assert status == 404
    await refused(attacker, "chat:history", {"room_id": entered}, "not_found")
    assert (await attacker.ask("chat:history", {"room_id": invited}))["ok"] is True
    assert attacker.connected


async def test_a_role_changed_outside_the_api_reaches_open_connections_within_the_recheck_interval(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    """The safety net: a role changed by the CLI or in SQL (no event) is picked up by the periodic sweep,
    and so is an account deleted in SQL: its connections are closed."""
    api = ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, rights_recheck_s=1))))
    host, admin, deleted = await api.user(), await api.user("admin"), await api.user()
    room = await new_room(api, host, "private")
    attacker, ghost = Client(), Client()
    gone = asyncio.Event()
    ghost.on("disconnect", gone.set)
    for client, actor in ((attacker, admin), (ghost, deleted)):
        await client.connect(base_of(api), auth={"token": actor.token}, transports=["websocket"], wait_timeout=10)
    try:
        await api.app[CORE].pool.execute("UPDATE users SET role = 'student' WHERE id = $1", uuid.UUID(admin.id))
        await api.app[CORE].pool.execute("DELETE FROM users WHERE id = $1", uuid.UUID(deleted.id))
        changed = await attacker.inbox.wait_for("me:changed", within=WAIT)
        assert changed["role"] == "student"
        await refused(attacker, "room:join", {"room_id": room}, "not_found")
        await asyncio.wait_for(gone.wait(), timeout=WAIT)
    finally:
        for client in (attacker, ghost):
            if client.connected:
                await client.disconnect()


# --- item 3: a room kick and ban reach the workspace editor --------------------------------------


async def test_a_member_kicked_then_banned_from_a_room_loses_its_workspace_editor_at_once(
    api: ApiClient, connect: Connect, editor: Edit
) -> None:
    host, member = await api.user(), await api.user()
    room = await new_room(api, host, "public")
    host_tab, member_tab = await connect(host), await connect(member)
    await joined(host_tab, room)
    await joined(member_tab, room)
    workspace = await room_workspace(api, host, room)
    watcher, attacker = await editor(host, workspace), await editor(member, workspace)
    await still_edits(attacker, watcher, "# before\n")

    assert (await host_tab.ask("chat:kick", {"room_id": room, "user_id": member.id}))["ok"] is True
    code, reason = await attacker.wait_closed(within=WAIT)
    assert code == 4403 and "withdrawn" in reason
    # A kick is not a ban: joining the room again gives the workspace back.
    await joined(member_tab, room)
    attacker = await editor(member, workspace)
    await still_edits(attacker, watcher, "# back\n")

    assert (await host_tab.ask("chat:ban", {"room_id": room, "user_id": member.id, "on": True}))["ok"] is True
    code, _ = await attacker.wait_closed(within=WAIT)
    assert code == 4403
    again = YClient()
    try:
        await again.connect(base_of(api), workspace, member.token)
        assert (await again.wait_closed(within=WAIT))[0] == 4404
    finally:
        await again.close()
    await refused(member_tab, "room:join", {"room_id": room}, "forbidden")
    files = await ok(api, "GET", f"/workspaces/{workspace}/files", host)
    assert {f["path"] for f in files["items"]} >= {"main.py"}


# --- item 3: the jury view of a contest during the freeze ----------------------------------------


async def test_a_community_admin_who_loses_the_role_stops_receiving_the_jury_view(
    api: ApiClient, connect: Connect
) -> None:
    owner, judge, player = await api.user(), await api.user(), await api.user()
    organizer = await community_with(api, owner, "Org", [judge, player])
    await ok(api, "PUT", f"/communities/{organizer}/members/{judge.id}", owner, json={"role": "admin"})
    contest = await ok(api, "POST", "/contests", judge, 201, json=contest_body([organizer], organizer=organizer))
    contests = api.app[CONTESTS]
    contests.clock = lambda: at(250)  # between freeze_at (4 h) and ends_at (5 h): the public board is frozen
    attacker = await connect(judge)
    ack = await attacker.ask("contest:subscribe", {"contest_id": contest["id"], "view": "jury"})
    assert ack["ok"] is True and ack["standings"]["view"] == "jury"

    await ok(api, "PUT", f"/communities/{organizer}/members/{judge.id}", owner, json={"role": "member"})

    downgraded = await attacker.inbox.wait_for("contest:downgraded", within=WAIT)
    assert downgraded["contest_id"] == contest["id"] and downgraded["view"] == "public"
    assert downgraded["standings"]["view"] == "public" and downgraded["standings"]["frozen"] is True
    # The next push of the standings reaches the former judge as the public (frozen) board only.
    await contests.refresh(uuid.UUID(contest["id"]))
    update = await attacker.inbox.wait_for("leaderboard:update", within=WAIT)
    assert update["view"] == "public"
    await refused(attacker, "contest:subscribe", {"contest_id": contest["id"], "view": "jury"}, "forbidden")
    await attacker.ask("no:such", {})  # a round trip: anything sent before its answer has arrived
    assert [u["view"] for u in attacker.inbox.of("leaderboard:update")] == ["public"]


# --- item 4: leaving or being removed from a community -------------------------------------------


@pytest.mark.parametrize("how", ["leaves", "is removed"])
async def test_a_member_who_leaves_or_is_removed_from_a_community_loses_its_rooms(
    api: ApiClient, connect: Connect, editor: Edit, how: str
) -> None:
    owner, member = await api.user(), await api.user()
    community = await community_with(api, owner, "C", [member])
    room = await new_room(api, owner, "community", community_id=community)
    owner_tab, member_tab = await connect(owner), await connect(member)
    await joined(owner_tab, room)
    await joined(member_tab, room)
    await member_tab.ask("chat:send", {"room_id": room, "body": "hello", "client_msg_id": "m1"})
    workspace = await room_workspace(api, owner, room)
    watcher, attacker = await editor(owner, workspace), await editor(member, workspace)
    await still_edits(attacker, watcher, "# mine\n")

    if how == "leaves":
        await ok(api, "POST", f"/communities/{community}/leave", member, 204)
    else:
        await ok(api, "DELETE", f"/communities/{community}/members/{member.id}", owner, 204)

    # REST, room:join, history and send: none of them lets the former member back in.
    status, _ = await api.call("GET", f"/rooms/{room}", member)
    assert status == 404
    listed = await ok(api, "GET", f"/rooms?community_id={community}", member)
    assert room not in {r["id"] for r in listed["items"]}
    await refused(member_tab, "room:join", {"room_id": room}, "not_found")
    await refused(member_tab, "chat:history", {"room_id": room}, "not_found")
    await refused(member_tab, "chat:send", {"room_id": room, "body": "still here?", "client_msg_id": "m2"}, "not_found")
    # The open connections: out of the room (the others see them leave) and out of its workspace.
    removed = await member_tab.inbox.wait_for("room:removed", within=WAIT)
    assert removed["room_id"] == room and removed["reason"] == "access"
    await owner_tab.inbox.wait_for(
        "room:presence", lambda p: p["user"]["id"] == member.id and p["state"] == "left", within=WAIT
    )
    assert (await attacker.wait_closed(within=WAIT))[0] == 4403
    assert (await owner_tab.ask("chat:send", {"room_id": room, "body": "bye", "client_msg_id": "m3"}))["ok"]
    await owner_tab.inbox.wait_for("chat:message", lambda m: m["body"] == "bye", within=WAIT)
    await member_tab.ask("no:such", {})  # a round trip: anything sent to it before has arrived
    assert [m["body"] for m in member_tab.inbox.of("chat:message")] == ["hello"]
    members = await ok(api, "GET", f"/rooms/{room}/members", owner)
    assert [m["user_id"] for m in members["items"]] == [owner.id]


async def test_archiving_a_room_makes_the_open_editors_of_its_workspaces_read_only(
    api: ApiClient, connect: Connect, editor: Edit
) -> None:
    host, member = await api.user(), await api.user()
    room = await new_room(api, host, "public")
    await joined(await connect(member), room)
    workspace = await room_workspace(api, host, room)
    watcher, attacker = await editor(host, workspace), await editor(member, workspace)
    await still_edits(attacker, watcher, "# before\n")

    await ok(api, "POST", f"/rooms/{room}/archive", host)

    await attacker.wait_until(lambda: bool(attacker.denied), within=WAIT)
    assert "read-only" in attacker.denied[0]
    attacker.edit("main.py", 0, insert="EVIL ")
    attacker.synced.clear()
    attacker.send_raw(sync_step1(attacker.doc.get_state()))  # answered once the edit before it was handled
    await attacker.wait_synced(within=WAIT)
    probe = await editor(host, workspace)
    assert "EVIL" not in probe.text("main.py") and probe.text("main.py").startswith("# before\n")


async def test_the_migration_ends_memberships_left_behind_by_members_who_had_left_their_community(
    server_url: str,
) -> None:
    """Rows of former members that the old code left behind lose the room when 0011 is applied."""
    name = f"studyhall_test_{uuid.uuid4().hex[:10]}"
    admin_conn = await asyncpg.connect(server_url)
    await admin_conn.execute(f'CREATE DATABASE "{name}"')
    dsn = _with_database(server_url, name)
    try:
        await migrate(dsn, [m for m in bundled_migrations() if m.version < 11])
        owner, gone, invitee, admin = (uuid.uuid4() for _ in range(4))
        community, room = uuid.uuid4(), uuid.uuid4()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.executemany(
                "INSERT INTO users (id, email, display_name, password_hash, role) VALUES ($1, $2, 'x', 'x', $3)",
                [(u, f"{u}@example.com", r) for u, r in ((owner, "student"), (gone, "student"),
                                                         (invitee, "student"), (admin, "admin"))],
            )  # fmt: skip
            await conn.execute("INSERT INTO communities (id, name, created_by) VALUES ($1, 'c', $2)", community, owner)
            await conn.execute(
                "INSERT INTO community_members (community_id, user_id, role) VALUES ($1, $2, 'owner')", community, owner
            )
            await conn.execute(
                "INSERT INTO rooms (id, name, kind, visibility, community_id, created_by)"
                " VALUES ($1, 'r', 'study', 'community', $2, $3)",
                room,
                community,
                owner,
            )
            await conn.executemany(
                "INSERT INTO room_members (room_id, user_id, role, invited_by) VALUES ($1, $2, $3, $4)",
                [(room, owner, "host", None), (room, gone, "member", None), (room, invitee, "member", owner),
                 (room, admin, "member", None)],
            )  # fmt: skip
        finally:
            await conn.close()
        assert "0011_room_access_follows_rights" in await migrate(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            left = {r["user_id"] for r in await conn.fetch("SELECT user_id FROM room_members WHERE room_id = $1", room)}
        finally:
            await conn.close()
        assert left == {owner, invitee, admin}
    finally:
        await admin_conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin_conn.close()


async def test_after_a_lost_bus_subscription_the_node_rechecks_every_connection_it_holds(
    api: ApiClient, connect: Connect
) -> None:
    """A change whose event was lost (here: made in SQL) still reaches the open connection once the relay
    resubscribes and tells its node to re-check everything (:data:`RESYNC_TOPIC`)."""
    owner, member = await api.user(), await api.user()
    community = await community_with(api, owner, "C", [member])
    room = await new_room(api, owner, "community", community_id=community)
    tab = await connect(member)
    await joined(tab, room)
    await api.app[CORE].pool.execute(
        "DELETE FROM community_members WHERE community_id = $1 AND user_id = $2",
        uuid.UUID(community),
        uuid.UUID(member.id),
    )
    await api.app[CORE].bus.deliver(RESYNC_TOPIC, {})
    removed = await tab.inbox.wait_for("room:removed", within=WAIT)
    assert removed["room_id"] == room
