"""Two real ``studyhall serve`` processes sharing one Postgres and one Redis, as in docker-compose.yml.

What one node does must reach clients connected to the other: live notifications caused by REST calls,
emits from out-of-process code (the write-only manager), room presence and chat. The room and chat
tests need ``room:join`` / ``chat:send`` (rooms/handlers.py, rooms/chat.py); until those events are in
``realtime.app.EVENTS`` they skip, and they run as soon as the events exist.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

from core_api.settings import load_settings
from realtime.sockets import external_emitter
from tests.conftest import TEST_JWT_SECRET
from tests.nodes import (
    Client,
    Node,
    User,
    close_emitter,
    cluster,
    connect,
    redis_url,
    register,
    rest,
    set_role,
    wait_fanout,
)

ROOM_EVENTS = ("room:join", "room:leave")
CHAT_EVENTS = ("room:join", "chat:send", "chat:history")


def require_events(*names: str) -> None:
    """Skip (at run time) while the events these tests drive are not declared yet."""
    from realtime.app import EVENTS

    missing = [name for name in names if name not in EVENTS.specs]
    if missing:
        pytest.skip(f"{', '.join(missing)}: lands with rooms/chat (not in realtime.app.EVENTS yet)")


@dataclass
class Cluster:
    a: Node
    b: Node
    redis: str
    database_url: str


@pytest.fixture(scope="module")
def redis() -> Iterator[str]:
    with redis_url() as url:
        yield url


@pytest.fixture(scope="module")
def nodes(database_url: str, redis: str) -> Iterator[Cluster]:
    with cluster(database_url, redis, ("a", "b")) as (a, b):

        async def warm_up() -> None:
            await asyncio.gather(wait_fanout(a, redis), wait_fanout(b, redis))

        asyncio.run(warm_up())
        yield Cluster(a, b, redis, database_url)


def user_id(value: Any) -> str | None:
    """The user id in a presence or member entry: ``{"user": {...}}``, ``{"user_id"}``, ``{"id"}`` or an id."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("user"), dict | str):
            return user_id(value["user"])
        for key in ("user_id", "id"):
            if isinstance(value.get(key), str):
                return str(value[key])
    return None


async def create_room(base: str, owner: User) -> str:
    name = f"scale-out {uuid.uuid4().hex[:6]}"
    status, room = await rest(
        base, "POST", "/rooms", owner, json={"name": name, "kind": "study", "visibility": "public"}
    )
    assert status == 201, room
    room_id: str = room["id"]
    return room_id


async def join(client: Client, room_id: str) -> dict[str, Any]:
    ack: dict[str, Any] = await client.ask("room:join", {"room_id": room_id})
    assert ack["ok"] is True, ack
    return ack


def chat_view(client: Client, room_id: str, own: list[dict[str, Any]]) -> dict[int, tuple[Any, ...]]:
    """seq → (id, body, author id) of the room's messages a client received, plus its own acked ones."""
    got = [m for m in client.inbox.of("chat:message") if m.get("room_id") == room_id] + own
    return {m["seq"]: (m["id"], m["body"], user_id(m["author"])) for m in got}


def sees_all(client: Client, room_id: str, own: list[dict[str, Any]], total: int) -> bool:
    return len(chat_view(client, room_id, own)) >= total


def presence(room_id: str, user: User, state: str) -> Any:
    def check(data: Any) -> bool:
        return bool(
            data.get("room_id") == room_id and user_id(data.get("user")) == user.id and data.get("state") == state
        )

    return check


async def disconnect_all(*clients: Client) -> None:
    await asyncio.gather(*(c.disconnect() for c in clients if c.connected))


# --- without rooms: the personal room and the write-only manager ----------------------------------


async def test_a_rest_call_on_node_b_notifies_a_user_connected_to_node_a(nodes: Cluster) -> None:
    admin, user = await register(nodes.b.url), await register(nodes.a.url)
    await set_role(nodes.database_url, admin, "admin")
    client = await connect(nodes.a.url, user)
    try:
        status, body = await rest(nodes.b.url, "PUT", f"/users/{user.id}/role", admin, json={"role": "instructor"})
        assert status == 200, body
        note = await client.inbox.wait_for("notification:new", within=10)
        assert note["kind"] == "role_changed"
        assert note["payload"]["role"] == "instructor"
    finally:
        await client.disconnect()


async def test_the_write_only_emitter_reaches_clients_on_every_node(nodes: Cluster) -> None:
    user = await register(nodes.a.url)
    on_a, on_b = await connect(nodes.a.url, user), await connect(nodes.b.url, user)
    emitter = external_emitter(load_settings(redis_url=nodes.redis, jwt_secret=TEST_JWT_SECRET))
    try:
        payload = {"run_id": uuid.uuid4().hex, "line": "hello from a worker"}
        await emitter.emit("run:output", payload, room=f"user:{user.id}")
        for client in (on_a, on_b):
            assert await client.inbox.wait_for("run:output", within=10) == payload
    finally:
        await disconnect_all(on_a, on_b)
        await close_emitter(emitter)


async def test_external_emitter_needs_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STUDYHALL_REDIS_URL", raising=False)  # the settings must come without Redis
    with pytest.raises(ValueError, match="STUDYHALL_REDIS_URL"):
        external_emitter(load_settings(jwt_secret=TEST_JWT_SECRET, redis_url=None))


# --- rooms and chat across nodes -------------------------------------------------------------------


async def test_presence_is_the_same_on_both_nodes(nodes: Cluster) -> None:
    require_events(*ROOM_EVENTS)
    u1, u2, u3 = await register(nodes.a.url), await register(nodes.b.url), await register(nodes.a.url)
    room_id = await create_room(nodes.a.url, u1)
    c1, c2, c3 = await connect(nodes.a.url, u1), await connect(nodes.b.url, u2), await connect(nodes.a.url, u3)
    clients = [c1, c2, c3]
    try:
        await join(c1, room_id)
        ack = await join(c2, room_id)  # on B: sees u1, who joined on A
        assert u1.id in {user_id(m) for m in ack["members"]}, ack["members"]
        await c1.inbox.wait_for("room:presence", presence(room_id, u2, "joined"))  # B → A
        await join(c3, room_id)
        await c2.inbox.wait_for("room:presence", presence(room_id, u3, "joined"))  # A → B

        # Late joiners on A and on B see the same people in the room.
        u4, u5 = await register(nodes.a.url), await register(nodes.b.url)
        c4, c5 = await connect(nodes.a.url, u4), await connect(nodes.b.url, u5)
        clients += [c4, c5]
        seen_on_a = {user_id(m) for m in (await join(c4, room_id))["members"]} - {u4.id, u5.id}
        seen_on_b = {user_id(m) for m in (await join(c5, room_id))["members"]} - {u4.id, u5.id}
        assert seen_on_a == seen_on_b
        assert {u1.id, u2.id, u3.id} <= seen_on_a

        # Leaving on B is seen on A; a client disconnecting on A is seen on B.
        assert (await c2.ask("room:leave", {"room_id": room_id}))["ok"] is True
        await c1.inbox.wait_for("room:presence", presence(room_id, u2, "left"))
        await c3.inbox.wait_for("room:presence", presence(room_id, u2, "left"))
        await c3.disconnect()
        await c5.inbox.wait_for("room:presence", presence(room_id, u3, "left"))
    finally:
        await disconnect_all(*clients)


async def test_chat_across_nodes_has_one_gap_free_order(nodes: Cluster) -> None:
    require_events(*CHAT_EVENTS)
    homes = (nodes.a, nodes.b, nodes.a, nodes.b)
    users = [await register(node.url) for node in homes]
    room_id = await create_room(nodes.a.url, users[0])
    clients = [await connect(node.url, user) for node, user in zip(homes, users, strict=True)]
    per_client = 5
    total = per_client * len(clients)
    try:
        for client in clients:
            await join(client, room_id)

        async def send_all(client: Client, n: int) -> list[dict[str, Any]]:
            acks = []
            for i in range(per_client):
                body = {"room_id": room_id, "body": f"client {n} message {i}", "client_msg_id": f"c{n}-m{i}"}
                ack = await client.ask("chat:send", body)
                assert ack["ok"] is True, ack
                acks.append(ack["message"])
            return acks

        sent = await asyncio.gather(*(send_all(c, n) for n, c in enumerate(clients)))  # concurrent, both nodes
        acked = {m["seq"]: m for acks in sent for m in acks}
        assert len(acked) == total, "two acks carry the same seq"
        first = min(acked)
        assert sorted(acked) == list(range(first, first + total)), "seq has gaps"
        truth = chat_view(Client(), room_id, list(acked.values()))

        # Every client, on either node, ends up with the same messages under the same seqs (a client
        # may or may not get its own messages echoed; its acks count).
        for n, client in enumerate(clients):
            await client.inbox.until(partial(sees_all, client, room_id, sent[n], total))
            assert chat_view(client, room_id, sent[n]) == truth, f"client {n} sees another order"
            seqs = [m["seq"] for m in client.inbox.of("chat:message") if m.get("room_id") == room_id]
            assert len(seqs) == len(set(seqs)), f"client {n} got a message twice"

        # Resending a client_msg_id, from the same user's connection on the other node, returns the first.
        again = await connect(nodes.b.url, users[0])
        clients.append(again)
        await join(again, room_id)
        ack = await again.ask("chat:send", {"room_id": room_id, "body": "client 0 message 0", "client_msg_id": "c0-m0"})
        assert ack["ok"] is True, ack
        assert (ack["message"]["id"], ack["message"]["seq"]) == (sent[0][0]["id"], sent[0][0]["seq"])

        # History read on B is the same order, without the duplicate.
        ack = await clients[1].ask("chat:history", {"room_id": room_id, "after_seq": first - 1, "limit": 100})
        assert ack["ok"] is True, ack
        history = [(m["seq"], m["id"]) for m in ack["messages"]]
        assert history == [(seq, truth[seq][0]) for seq in sorted(truth)]
    finally:
        await disconnect_all(*clients)


async def test_users_of_a_killed_node_leave_presence_within_seconds(nodes: Cluster) -> None:
    require_events(*ROOM_EVENTS)
    with cluster(nodes.database_url, nodes.redis, ("c",)) as (c,):
        await wait_fanout(c, nodes.redis)
        watcher, doomed = await register(nodes.a.url), await register(c.url)
        room_id = await create_room(nodes.a.url, watcher)
        on_a, on_c = await connect(nodes.a.url, watcher), await connect(c.url, doomed)
        try:
            await join(on_a, room_id)
            await join(on_c, room_id)
            await on_a.inbox.wait_for("room:presence", presence(room_id, doomed, "joined"))
            c.kill()  # SIGKILL: no disconnect handler runs on C
            await on_a.inbox.wait_for("room:presence", presence(room_id, doomed, "left"), within=20)
            late = await connect(nodes.b.url, await register(nodes.b.url))
            try:
                members = (await join(late, room_id))["members"]
                # The member list of a join is the people present (entries may also say so with "online").
                still = [m for m in members if user_id(m) == doomed.id and m.get("online", True)]
                assert not still, members
            finally:
                await late.disconnect()
        finally:
            await disconnect_all(on_a, on_c)
