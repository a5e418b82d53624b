"""Chat is delivered in ``seq`` order, exactly once, on every node: bursts from several senders whose acks
are not awaited, on one server and on two real nodes, a node killed mid-burst, and clients joining while
messages are in flight.

A receiver is a real ``socketio.AsyncClient``; what it must see is every committed message of the room
(read back from Postgres), each once, ``seq`` strictly increasing by one. A client that joins gets the
``room:join`` history and then the live messages: the two together must be that same gap-free run.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import socketio

from core_api.context import CORE
from realtime.app import create_app
from tests.chat_helpers import make_room, server_url
from tests.conftest import ApiClient, make_settings
from tests.nodes import Client, Node, User, cluster, connect, redis_url, register, rest, wait_fanout

WAIT_S = 30
BURST = 40
# Senders fire bursts far above the default per-user rate limit (10 per 10 s).
FAST_CHAT = {"chat_rate_count": 1000}
FAST_CHAT_ENV = {"STUDYHALL_CHAT_RATE_COUNT": "1000"}


class Receiver:
    """A connection that joined the room: the history its join answered, then every live chat:message."""

    def __init__(self, sio: socketio.AsyncClient, room_id: str) -> None:
        self.sio = sio
        self.room_id = room_id
        self.history: list[int] = []
        self.live: list[int] = []
        self.changed = asyncio.Event()
        sio.on("chat:message", self._message)

    def _message(self, message: dict[str, Any]) -> None:
        if message["room_id"] == self.room_id:
            self.live.append(message["seq"])
            self.changed.set()

    async def join(self) -> None:
        ack = await self.sio.call("room:join", {"room_id": self.room_id}, timeout=WAIT_S)
        assert ack["ok"] is True, ack
        self.history = [m["seq"] for m in ack["messages"]]

    def seen(self) -> list[int]:
        """What the user sees: the join's history, then the live messages, in arrival order."""
        return self.history + self.live

    async def until_seen(self, last: int, within: float = WAIT_S) -> None:
        async with asyncio.timeout(within):
            while max(self.seen(), default=0) < last:
                self.changed.clear()
                await self.changed.wait()


def inversions(seqs: list[int]) -> int:
    return sum(1 for a, b in itertools.pairwise(seqs) if b <= a)


def assert_exact(receiver: Receiver, expected: list[int], who: str) -> None:
    got = receiver.seen()
    assert got == expected, (
        f"{who}: {inversions(got)} inversions, {len(got) - len(set(got))} duplicates, "
        f"missing {sorted(set(expected) - set(got))[:20]}, first {got[:10]}"
    )


async def fire(sio: socketio.AsyncClient, room_id: str, count: int, tag: str) -> list[dict[str, Any]]:
    """``count`` chat:send without waiting for each ack before the next (all in flight at once)."""
    sends = [
        sio.call("chat:send", {"room_id": room_id, "body": f"{tag} {i}", "client_msg_id": f"{tag}-{i}"}, timeout=WAIT_S)
        for i in range(count)
    ]
    acks = await asyncio.gather(*sends)
    assert all(a["ok"] for a in acks), [a for a in acks if not a["ok"]][:3]
    return [a["message"] for a in acks]


async def committed(database_url: str, room_id: str) -> list[int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT seq FROM chat_messages WHERE room_id = $1 ORDER BY seq", uuid.UUID(room_id))
        return [r["seq"] for r in rows]
    finally:
        await conn.close()


# --- one server ------------------------------------------------------------------------------------


@pytest.fixture
async def fast_api(aiohttp_client: Any, database_url: str, tmp_path: Path) -> ApiClient:
    return ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, **FAST_CHAT))))


async def test_bursts_from_several_senders_arrive_in_seq_order_once(fast_api: ApiClient) -> None:
    api = fast_api
    senders = [await api.user() for _ in range(3)]
    watchers = [await api.user() for _ in range(2)]
    room_id = await make_room(api, senders[0], *senders[1:], *watchers)
    url = server_url(api)
    clients: list[socketio.AsyncClient] = []
    receivers: list[Receiver] = []
    try:
        for actor in [*senders, *watchers]:
            sio = socketio.AsyncClient(reconnection=False)
            receiver = Receiver(sio, room_id)
            await sio.connect(url, auth={"token": actor.token}, transports=["websocket"], wait_timeout=5)
            await receiver.join()
            clients.append(sio)
            receivers.append(receiver)
        for burst in range(10):
            await asyncio.gather(
                *(fire(sio, room_id, BURST, f"s{n}b{burst}") for n, sio in enumerate(clients[: len(senders)]))
            )
        total = 10 * BURST * len(senders)
        async with api.app[CORE].pool.acquire() as conn:
            assert await conn.fetchval("SELECT last_seq FROM rooms WHERE id = $1", uuid.UUID(room_id)) == total
        for n, receiver in enumerate(receivers):
            await receiver.until_seen(total)
            assert_exact(receiver, list(range(1, total + 1)), f"receiver {n}")
    finally:
        for sio in clients:
            await sio.disconnect()


async def test_a_client_joining_mid_burst_gets_history_then_live_without_gap_or_repeat(fast_api: ApiClient) -> None:
    api = fast_api
    sender, *late_users = [await api.user() for _ in range(6)]
    room_id = await make_room(api, sender, *late_users)
    url = server_url(api)
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(url, auth={"token": sender.token}, transports=["websocket"], wait_timeout=5)
    late: list[socketio.AsyncClient] = []
    receivers: list[Receiver] = []
    try:
        assert (await sio.call("room:join", {"room_id": room_id}, timeout=WAIT_S))["ok"]
        for actor in late_users:
            client = socketio.AsyncClient(reconnection=False)
            receivers.append(Receiver(client, room_id))
            await client.connect(url, auth={"token": actor.token}, transports=["websocket"], wait_timeout=5)
            late.append(client)

        async def join_soon(receiver: Receiver, after: int) -> None:
            for _ in range(after):
                await asyncio.sleep(0)  # joins spread over the burst, not a timing assertion
            await receiver.join()

        bursts = [fire(sio, room_id, BURST, f"b{b}") for b in range(5)]
        joins = [join_soon(r, 20 * n) for n, r in enumerate(receivers)]
        await asyncio.gather(*bursts, *joins)
        total = 5 * BURST
        for n, receiver in enumerate(receivers):
            await receiver.until_seen(total)
            start = receiver.history[0] if receiver.history else (receiver.live or [1])[0]
            assert receiver.seen() == list(range(start, total + 1)), f"late joiner {n}"
    finally:
        for client in [sio, *late]:
            await client.disconnect()


async def metric(api: ApiClient, name: str) -> float:
    """One sample of the server's /metrics (served with the test's metrics token)."""
    resp = await api.http.get("/metrics", headers={"Authorization": f"Bearer {METRICS}"})
    text = await resp.text()
    assert resp.status == 200, text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


METRICS = "chat-order-metrics-" + "m" * 24


@pytest.fixture
async def quick_api(aiohttp_client: Any, database_url: str, tmp_path: Path) -> ApiClient:
    settings = make_settings(
        database_url, tmp_path, chat_gap_wait_s=0.05, chat_position_check_s=0.2, metrics_token=METRICS, **FAST_CHAT
    )
    return ApiClient(await aiohttp_client(create_app(settings)))


async def commit_without_broadcast(api: ApiClient, room_id: str, author_id: str, body: str) -> int:
    """What a node that died between a send's commit and its broadcast leaves behind: a committed message
    (through the same ``chat_post`` a send uses) that no node was told of."""
    async with api.app[CORE].pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT seq FROM chat_post($1, $2, $3, $4, $5, 10, 1000, false)",
            uuid.UUID(room_id),
            uuid.uuid4(),
            uuid.UUID(author_id),
            uuid.uuid4().hex,
            body,
        )
    seq: int = row["seq"]
    return seq


async def test_a_message_committed_but_never_broadcast_is_delivered_in_its_place(quick_api: ApiClient) -> None:
    api = quick_api
    sender, watcher = await api.user(), await api.user()
    room_id = await make_room(api, sender, watcher)
    url = server_url(api)
    clients = []
    try:
        receivers = []
        for actor in (sender, watcher):
            sio = socketio.AsyncClient(reconnection=False)
            receivers.append(Receiver(sio, room_id))
            await sio.connect(url, auth={"token": actor.token}, transports=["websocket"], wait_timeout=5)
            clients.append(sio)
            await receivers[-1].join()
        await fire(clients[0], room_id, 1, "first")
        assert await commit_without_broadcast(api, room_id, sender.id, "orphan") == 2
        await fire(clients[0], room_id, 1, "third")  # seq 3 arrives; 2 never will: read from Postgres
        for receiver in receivers:
            await receiver.until_seen(3)
            assert receiver.seen() == [1, 2, 3]
        # The last message of a quiet room: no later one shows the gap; the position check finds it.
        assert await commit_without_broadcast(api, room_id, watcher.id, "orphan at the end") == 4
        for receiver in receivers:
            await receiver.until_seen(4)
            assert receiver.seen() == [1, 2, 3, 4]
        assert await metric(api, "studyhall_chat_order_filled_total") == 2  # read once for both receivers
    finally:
        for sio in clients:
            await sio.disconnect()


async def test_a_room_nobody_on_the_node_follows_is_forgotten(quick_api: ApiClient) -> None:
    api = quick_api
    sender, watcher = await api.user(), await api.user()
    room_id = await make_room(api, sender, watcher)
    url = server_url(api)
    clients = []
    try:
        for actor in (sender, watcher):
            sio = socketio.AsyncClient(reconnection=False)
            await sio.connect(url, auth={"token": actor.token}, transports=["websocket"], wait_timeout=5)
            clients.append(sio)
            assert (await sio.call("room:join", {"room_id": room_id}, timeout=WAIT_S))["ok"]
        followed = await metric(api, "studyhall_chat_order_rooms")
        assert followed >= 1
        for sio in clients:
            assert (await sio.call("room:leave", {"room_id": room_id}, timeout=WAIT_S))["ok"]
        await fire(clients[0], room_id, 1, "to-nobody")  # a member may still send; nobody here follows
        assert await metric(api, "studyhall_chat_order_rooms") == followed - 1
    finally:
        for sio in clients:
            await sio.disconnect()


# --- real nodes ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis() -> Iterator[str]:
    with redis_url() as url:
        yield url


async def public_room(node: Node, owner: User) -> str:
    body = {"name": f"order {uuid.uuid4().hex[:6]}", "kind": "study", "visibility": "public"}
    status, room = await rest(node.url, "POST", "/rooms", owner, json=body)
    assert status == 201, room
    room_id: str = room["id"]
    return room_id


async def joined(node: Node, user: User, room_id: str) -> tuple[Client, Receiver]:
    client = await connect(node.url, user)
    receiver = Receiver(client, room_id)
    await receiver.join()
    return client, receiver


async def test_bursts_across_two_nodes_arrive_in_seq_order_once(database_url: str, redis: str) -> None:
    with cluster(database_url, redis, ("a", "b"), FAST_CHAT_ENV) as (a, b):
        await asyncio.gather(wait_fanout(a, redis), wait_fanout(b, redis))
        homes = [a, b, a, b, a, b]  # senders 0, 1; receivers 2..5
        users = [await register(node.url) for node in homes]
        room_id = await public_room(a, users[0])
        pairs = [await joined(node, user, room_id) for node, user in zip(homes, users, strict=True)]
        try:
            for burst in range(10):
                await asyncio.gather(*(fire(pairs[n][0], room_id, BURST, f"s{n}b{burst}") for n in (0, 1)))
            expected = await committed(database_url, room_id)
            assert expected == list(range(1, 2 * 10 * BURST + 1))
            for n, (_, receiver) in enumerate(pairs):
                await receiver.until_seen(expected[-1])
                assert_exact(receiver, expected, f"client {n} on node {homes[n].name}")
        finally:
            await asyncio.gather(*(c.disconnect() for c, _ in pairs))


async def test_a_node_killed_mid_burst_loses_no_committed_message_on_the_survivor(
    database_url: str, redis: str
) -> None:
    extra = {**FAST_CHAT_ENV, "STUDYHALL_CHAT_POSITION_CHECK_S": "1"}
    with cluster(database_url, redis, ("a", "doomed"), extra) as (a, doomed):
        await asyncio.gather(wait_fanout(a, redis), wait_fanout(doomed, redis))
        homes = [doomed, doomed, a, a, a]  # senders on both nodes; receivers 2..4 on the survivor
        users = [await register(node.url) for node in homes]
        room_id = await public_room(a, users[0])
        pairs = [await joined(node, user, room_id) for node, user in zip(homes, users, strict=True)]
        try:
            for burst in range(2):  # before the kill
                await asyncio.gather(*(fire(pairs[n][0], room_id, BURST, f"s{n}b{burst}") for n in (0, 1, 2)))

            async def doomed_sender(n: int) -> None:
                sio = pairs[n][0]
                for burst in range(2, 50):
                    sends = [
                        sio.call(
                            "chat:send",
                            {"room_id": room_id, "body": f"s{n}b{burst}.{i}", "client_msg_id": f"s{n}b{burst}-{i}"},
                            timeout=5,
                        )
                        for i in range(BURST)
                    ]
                    await asyncio.gather(*sends, return_exceptions=True)
                    if not sio.connected:
                        return

            async def survivor_sender() -> None:
                for burst in range(2, 8):
                    await fire(pairs[2][0], room_id, BURST, f"s2b{burst}")
                    if burst == 3:
                        doomed.kill()  # SIGKILL mid-burst: commits whose publish never happened

            await asyncio.gather(doomed_sender(0), doomed_sender(1), survivor_sender())
            expected = await committed(database_url, room_id)
            assert expected == list(range(1, len(expected) + 1))
            for n in (2, 3, 4):
                receiver = pairs[n][1]
                await receiver.until_seen(expected[-1])
                assert_exact(receiver, expected, f"client {n} on the surviving node")
        finally:
            await asyncio.gather(*(c.disconnect() for c, _ in pairs if c.connected), return_exceptions=True)


# --- a rejoin ahead of this node -------------------------------------------------------------------


async def test_a_connection_rejoining_ahead_of_the_node_is_not_sent_again_what_it_holds() -> None:
    """A client was on node B, which had delivered up to seq 8, when B died; node A (loaded) had delivered
    only up to 5. The client rejoins on A with ``after_seq`` 8: A answers no history (its position is 5) and
    must not then send 6..8 live to it (found by ``bench/soak.py`` at 1,000 messages/s: duplicates)."""
    from realtime.ordered import OrderedRooms

    room = "room:r"
    members: set[str] = set()
    sent: list[tuple[int, list[str]]] = []

    async def deliver(event: str, room_name: str, payload: Any, skip: list[str]) -> None:
        sent.append((payload["seq"], sorted(skip)))

    def enter(sid: str, room_name: str) -> bool:
        members.add(sid)
        return True

    ordered = OrderedRooms(deliver, lambda r: bool(members), enter, gap_wait_s=60, check_s=60)
    assert ordered.enter("stayed", room, 5) == 5
    assert ordered.enter("moved", room, 5, after=8) == 5  # the answer carries nothing after 8: none held
    assert ordered.enter("fresh", room, 5, after=3) == 5  # behind the node: the answer carries 4..5
    for seq in range(6, 11):
        await ordered.offer(room, {"seq": seq})
    assert sent == [(6, ["moved"]), (7, ["moved"]), (8, ["moved"]), (9, []), (10, [])]
    assert ordered.enter("moved", room, 10, after=10) == 10  # joining again later: nothing to skip
    await ordered.offer(room, {"seq": 11})
    assert sent[-1] == (11, [])
    await ordered.close()
