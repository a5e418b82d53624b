"""Watch parties on two real ``studyhall serve`` processes sharing one Postgres and one Redis.

The authoritative state is the room's row in Postgres, changed only under its row lock, so commands
taken by different nodes apply one after the other; the broadcasts go through Redis to every node's
viewers; heartbeats land on the shared Redis board, so either node's report sees every viewer.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import socketio

from tests.nodes import Client, Node, User, cluster, connect, redis_url, register, rest, set_role, wait_fanout
from tests.watch_helpers import VIDEO, eventually, ok, state_with
from watch_party.client import SocketLink, WatchClient, target_position
from watch_party.sim import SimPlayer


@pytest.fixture(scope="module")
def nodes(database_url: str) -> Iterator[tuple[Node, Node, str, str]]:
    with redis_url() as redis, cluster(database_url, redis, ("a", "b")) as (a, b):

        async def warm_up() -> None:
            await asyncio.gather(wait_fanout(a, redis), wait_fanout(b, redis))

        asyncio.run(warm_up())
        yield a, b, redis, database_url


async def watch_room(base: str, host: User, *members: User) -> str:
    status, room = await rest(
        base, "POST", "/rooms", host, json={"name": "w", "kind": "watch", "visibility": "private"}
    )
    assert status == 201, room
    for m in members:
        status, body = await rest(base, "POST", f"/rooms/{room['id']}/invite", host, json={"user_id": m.id})
        assert status == 201, body
    room_id: str = room["id"]
    return room_id


async def joined(base: str, user: User, room_id: str) -> Client:
    client = await connect(base, user)
    await ok(client, "room:join", {"room_id": room_id})
    return client


def without_cause(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in ("cause", "by")}


async def close(*clients: socketio.AsyncClient) -> None:
    await asyncio.gather(*(c.disconnect() for c in clients if c.connected))


async def test_a_command_on_node_a_reaches_viewers_on_node_b(nodes: tuple[Node, Node, str, str]) -> None:
    a, b, _, _ = nodes
    host, viewer = await register(a.url), await register(b.url)
    room = await watch_room(a.url, host, viewer)
    on_a, on_b = await joined(a.url, host, room), await joined(b.url, viewer, room)
    try:
        await ok(on_a, "watch:load", {"room_id": room, "media": VIDEO})
        seeked = (await ok(on_a, "watch:seek", {"room_id": room, "position": 77.0}))["state"]
        got = await on_b.inbox.wait_for("watch:state", state_with(room, version=seeked["version"]))
        assert got["position"] == 77.0 and got["media"]["url"] == VIDEO["url"]
        on_b_sync = (await ok(on_b, "watch:sync", {"room_id": room}))["state"]
        on_a_sync = (await ok(on_a, "watch:sync", {"room_id": room}))["state"]
        assert on_a_sync == on_b_sync
    finally:
        await close(on_a, on_b)


async def test_concurrent_commands_on_both_nodes_apply_one_after_the_other(
    nodes: tuple[Node, Node, str, str],
) -> None:
    a, b, _, _ = nodes
    host = await register(a.url)
    others = [await register(n.url) for n in (a, b, b)]
    room = await watch_room(a.url, host, *others)
    clients = [await joined(a.url, host, room)] + [
        await joined(n.url, u, room) for n, u in zip((a, b, b), others, strict=True)
    ]
    try:
        start = (await ok(clients[0], "watch:load", {"room_id": room, "media": VIDEO}))["state"]
        await ok(clients[0], "watch:control", {"room_id": room, "mode": "everyone"})
        per_client = 5

        async def seeks(n: int, client: Client) -> list[int]:
            acks = [await ok(client, "watch:seek", {"room_id": room, "position": float(10 * n + i)})
                    for i in range(per_client)]  # fmt: skip
            return [ack["state"]["version"] for ack in acks]

        versions = sorted(v for vs in await asyncio.gather(*(seeks(n, c) for n, c in enumerate(clients))) for v in vs)
        first = start["version"] + 2
        assert versions == list(range(first, first + per_client * len(clients))), "lost or doubled updates"
        final = versions[-1]
        # Whatever order the broadcasts from two nodes arrived in, everyone ends on the same newest state.
        for client in clients:
            newest = await client.inbox.wait_for("watch:state", state_with(room, version=final))
            synced = (await ok(client, "watch:sync", {"room_id": room}))["state"]
            assert without_cause(newest) == without_cause(synced)
    finally:
        await close(*clients)


async def test_the_report_and_the_ready_check_see_viewers_on_both_nodes(nodes: tuple[Node, Node, str, str]) -> None:
    a, b, _, _ = nodes
    host, viewer = await register(a.url), await register(b.url)
    room = await watch_room(a.url, host, viewer)
    on_a, on_b = await joined(a.url, host, room), await joined(b.url, viewer, room)
    try:
        await ok(on_a, "watch:load", {"room_id": room, "media": VIDEO})
        await ok(on_a, "watch:ready_check", {"room_id": room, "mode": "all"})
        waiting = (await ok(on_a, "watch:play", {"room_id": room}))["state"]
        assert waiting["waiting"] is True
        await ok(on_a, "watch:ready", {"room_id": room, "ready": True})
        await ok(on_b, "watch:ready", {"room_id": room, "ready": True})  # the last one, on the other node
        started = await on_a.inbox.wait_for("watch:state", state_with(room, cause="ready"))
        beat = {"room_id": room, "position": 0.0, "playing": False, "client_time": time.time(),
                "version": started["version"], "offset": 0.0}  # fmt: skip
        await ok(on_b, "watch:heartbeat", beat)
        report = await ok(on_a, "watch:report", {"room_id": room})
        assert [row["user"]["id"] for row in report["viewers"]] == [viewer.id]
    finally:
        await close(on_a, on_b)


async def test_reference_clients_on_two_nodes_show_the_same_position(nodes: tuple[Node, Node, str, str]) -> None:
    a, b, _, _ = nodes
    host, left, right = await register(a.url), await register(a.url), await register(b.url)
    room = await watch_room(a.url, host, left, right)
    on_a = await joined(a.url, host, room)
    rng = random.Random(11)
    players: list[SimPlayer] = []
    watchers: list[WatchClient] = []
    sios: list[socketio.AsyncClient] = []
    try:
        await ok(on_a, "watch:load", {"room_id": room, "media": VIDEO})
        for node, user in ((a, left), (b, right)):
            sio = socketio.AsyncClient(reconnection=False)
            await sio.connect(node.url, auth={"token": user.token}, transports=["websocket"])
            sios.append(sio)
            assert (await sio.call("room:join", {"room_id": room}))["ok"]
            player = SimPlayer(rng, rate_error=0.001)
            watcher = WatchClient(SocketLink(sio), room, player)
            await watcher.start()
            players.append(player)
            watchers.append(watcher)
        await ok(on_a, "watch:seek", {"room_id": room, "position": 200.0})
        state = (await ok(on_a, "watch:play", {"room_id": room}))["state"]

        def together() -> bool:
            now = time.time()
            shown = [p.shown(now) for p in players]
            return max(shown) - min(shown) < 0.03 and abs(shown[0] - target_position(state, now)) < 0.03

        await eventually(together)
    finally:
        for watcher in watchers:
            await watcher.stop()
        await close(on_a, *sios)


async def test_a_paid_lectures_url_reaches_only_entitled_viewers_on_either_node(
    nodes: tuple[Node, Node, str, str],
) -> None:
    """The room gets the view without the URL; entitled viewers' connections (on any node, found through
    the shared presence) are skipped there and get their own view."""
    a, b, _, database_url = nodes
    teacher, buyer, outsider_a, outsider_b = [await register(node.url) for node in (a, b, a, b)]
    await set_role(database_url, teacher, "instructor")
    course = (await rest(a.url, "POST", "/courses", teacher, json={"title": "Paid"}))[1]
    paid_url = "https://cdn.example.com/scaled-paid.mp4"
    lecture_body = {"title": "L", "media_kind": "video", "media_url": paid_url, "duration_s": 60.0}
    lecture = (await rest(a.url, "POST", f"/courses/{course['id']}/lectures", teacher, json=lecture_body))[1]
    assert (await rest(a.url, "POST", f"/courses/{course['id']}/publish", teacher))[0] == 200
    assert (await rest(a.url, "PUT", f"/courses/{course['id']}/price", teacher, json={"coins": 5}))[0] == 200
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO wallet_entries (id, user_id, amount, reason, ref, source)"
            " VALUES ($1, $2, 5, 'test', $3, 'test')",
            uuid.uuid4(), uuid.UUID(buyer.id), f"test:{uuid.uuid4()}",
        )  # fmt: skip
    finally:
        await conn.close()
    assert (await rest(b.url, "POST", f"/courses/{course['id']}/buy", buyer))[0] == 201
    room = await watch_room(a.url, teacher, buyer, outsider_a, outsider_b)
    t, bb = await joined(a.url, teacher, room), await joined(b.url, buyer, room)
    oa, ob = await joined(a.url, outsider_a, room), await joined(b.url, outsider_b, room)
    try:
        loaded = (await ok(t, "watch:load", {"room_id": room, "media": {"lecture_id": lecture["id"]}}))["state"]
        version = loaded["version"]
        got = await bb.inbox.wait_for("watch:state", state_with(room, version=version))
        assert got["media"]["url"] == paid_url
        for outsider in (oa, ob):
            got = await outsider.inbox.wait_for("watch:state", state_with(room, version=version))
            assert got["media"]["url"] is None and got["media"]["locked"] is True
        played = (await ok(t, "watch:play", {"room_id": room}))["state"]
        for client in (t, bb, oa, ob):
            await client.inbox.wait_for("watch:state", state_with(room, version=played["version"]))
        assert [len(c.inbox.of("watch:state")) for c in (t, bb, oa, ob)] == [3, 3, 3, 3]  # join, load, play: once each
        assert t.inbox.of("watch:state")[-1]["media"]["url"] == paid_url
        assert all(paid_url not in json.dumps(c.inbox.events) for c in (oa, ob))
    finally:
        await close(t, bb, oa, ob)


async def test_when_the_leaders_node_dies_control_passes_on(nodes: tuple[Node, Node, str, str]) -> None:
    a, _, redis, database_url = nodes
    with cluster(database_url, redis, ("c",)) as (c,):
        await wait_fanout(c, redis)
        host, heir = await register(c.url), await register(a.url)
        room = await watch_room(a.url, host, heir)
        doomed, on_a = await joined(c.url, host, room), await joined(a.url, heir, room)
        try:
            await ok(doomed, "watch:load", {"room_id": room, "media": VIDEO})
            await on_a.inbox.wait_for("watch:state", state_with(room, cause="load"))
            c.kill()  # SIGKILL: no disconnect handler runs; presence sweeps the node, upkeep on A notices
            passed: dict[str, Any] = await on_a.inbox.wait_for("watch:state", state_with(room, cause="leader"), 30)
            assert passed["leader"]["id"] == heir.id
            await ok(on_a, "watch:play", {"room_id": room})
        finally:
            await close(on_a, doomed)
