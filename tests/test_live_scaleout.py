"""Live sessions on two real ``studyhall serve`` processes sharing one Postgres and one Redis.

A session is owned by the node where it was first joined; ``live:*`` signalling reaching the other node is
forwarded to the owner over Redis (live/routing.py), and what the owner pushes reaches clients on either
node. Media flows between each aiortc peer and the owner directly.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiohttp
import pytest
import redis.asyncio as aioredis

from core_api.settings import load_settings
from realtime.bus import CHANNEL_PREFIX, bus_channel
from tests.chat_helpers import Tab
from tests.conftest import TEST_JWT_SECRET
from tests.live_helpers import WAIT_S, Publisher, Viewer
from tests.nodes import METRICS_TOKEN, Client, Node, User, cluster, connect, redis_url, register, rest, wait_fanout

FORWARD_TIMEOUT_S = 4
TASKS = "studyhall_asyncio_tasks"
ENV = {
    "STUDYHALL_LIVE_OWNER_TTL_S": "3",
    "STUDYHALL_LIVE_FORWARD_TIMEOUT_S": str(FORWARD_TIMEOUT_S),
    "STUDYHALL_LIVE_NEGOTIATION_TIMEOUT_S": "3",
    "STUDYHALL_LIVE_SIGNAL_RATE_COUNT": "1000",
    "STUDYHALL_LIVE_MAX_VIEWERS_PER_NODE": "2",
    # python-engineio's ping timer of a closed socket sleeps out its interval: short, so task counts settle.
    "STUDYHALL_PING_INTERVAL_S": "2",
}


@pytest.fixture(scope="module")
def nodes(database_url: str) -> Iterator[tuple[Node, Node, str, str]]:
    with redis_url() as redis, cluster(database_url, redis, ("a", "b"), extra_env=ENV) as (a, b):

        async def warm_up() -> None:
            await asyncio.gather(wait_fanout(a, redis), wait_fanout(b, redis))

        asyncio.run(warm_up())
        yield a, b, redis, database_url


class NodeTab:
    """A node client as tests/live_helpers.py's peers use a tab: ``ok`` asserts the ack succeeded."""

    def __init__(self, client: Client) -> None:
        self.sio = client

    async def call(self, event: str, data: Any) -> dict[str, Any]:
        ack: dict[str, Any] = await self.sio.call(event, data, timeout=WAIT_S)
        return ack

    async def ok(self, event: str, data: Any) -> dict[str, Any]:
        ack = await self.call(event, data)
        assert ack["ok"] is True, f"{event} {str(data)[:200]} → {ack!r}"
        return ack


def tab(client: Client) -> Tab:
    return cast(Tab, NodeTab(client))


async def live_session(base: str, host: User, *members: User) -> str:
    """A private room (``host`` its host, ``members`` invited) with a session the host scheduled, over REST."""
    status, room = await rest(
        base, "POST", "/rooms", host, json={"name": "live", "kind": "study", "visibility": "private"}
    )
    assert status == 201, room
    for m in members:
        status, body = await rest(base, "POST", f"/rooms/{room['id']}/invite", host, json={"user_id": m.id})
        assert status == 201, body
    starts = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    status, session = await rest(base, "POST", f"/rooms/{room['id']}/live-sessions", host,
                                 json={"title": "Live", "starts_at": starts})  # fmt: skip
    assert status == 201, session
    return str(session["id"])


def namespace(database_url: str, redis: str) -> str:
    settings = load_settings(database_url=database_url, redis_url=redis, jwt_secret=TEST_JWT_SECRET)
    return "studyhall:live:" + bus_channel(settings).removeprefix(CHANNEL_PREFIX) + ":"


async def metrics(node: Node) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    async with aiohttp.ClientSession() as session, session.get(node.url + "/metrics", headers=headers) as resp:
        text = await resp.text()
    return {m[1]: float(m[2]) for m in re.finditer(r"^(studyhall_(?:live_\w+|asyncio_tasks)) (\S+)$", text, re.M)}


async def close(*things: Any) -> None:
    for thing in things:
        if isinstance(thing, Client):
            if thing.connected:
                await thing.disconnect()
        else:
            await thing.close()


async def test_a_viewer_on_node_b_watches_a_host_on_node_a(nodes: tuple[Node, Node, str, str]) -> None:
    a, b, redis, database_url = nodes
    host, learner = await register(a.url, "Host"), await register(b.url, "Learner")
    session_id = await live_session(a.url, host, learner)
    ref = {"session_id": session_id}
    on_a, on_b = await connect(a.url, host), await connect(b.url, learner)
    publisher, viewer = Publisher(tab(on_a), session_id), Viewer(tab(on_b), session_id)
    try:
        await tab(on_a).ok("live:join", ref)
        await tab(on_a).ok("live:start", ref)
        await publisher.publish()
        # The session is A's: B carries nothing of it and forwards every event.
        store = aioredis.Redis.from_url(redis)
        try:
            owner = await store.get(namespace(database_url, redis) + f"owner:{session_id}")
            assert owner is not None
        finally:
            await store.aclose()
        joined = await tab(on_b).ok("live:join", ref)
        assert joined["state"]["status"] == "live" and joined["may_run"] is False
        assert [p["user"]["id"] for p in joined["state"]["publishers"]] == [host.id]
        ack = await viewer.subscribe()
        assert {(t["kind"], t["source"]) for t in ack["tracks"]} == {("video", "camera"), ("audio", "microphone")}
        first = await viewer.frame("video")
        assert (first.width, first.height) == (320, 240)
        later = [await viewer.frame("video") for _ in range(5)]
        assert len({f.pts for f in later}) == 5
        assert (await viewer.frame("audio")).sample_rate == 48000

        # Raise hand on B reaches the host on A; the host's invitation reaches the learner on B.
        await tab(on_b).ok("live:hand", ref)
        state = await on_a.inbox.wait_for("live:state", lambda s: [u["id"] for u in s["hands"]] == [learner.id])
        assert state["viewers"] == 1
        await tab(on_a).ok("live:invite", {**ref, "user_id": learner.id})
        invited = await on_b.inbox.wait_for("live:invited")
        assert invited == {"session_id": session_id, "by": {"id": host.id, "display_name": "Host"}}
        await on_b.inbox.wait_for("live:state", lambda s: s["speakers"] == [learner.id] and not s["hands"])

        # The learner leaves on B: the owner on A hears it; disconnecting from B lets go of the rest.
        await tab(on_b).ok("live:leave", ref)
        await on_a.inbox.wait_for("live:state", lambda s: s["viewers"] == 0)
        await tab(on_b).ok("live:join", ref)
        assert (await metrics(a))["studyhall_live_remote_connections"] == 1
        await on_b.disconnect()
        # The owner lets go of B's connection once B has forwarded the disconnect.
        remote = 1.0
        for _ in range(100):
            remote = (await metrics(a))["studyhall_live_remote_connections"]
            if remote == 0:
                break
            await asyncio.sleep(0.05)
        assert remote == 0
    finally:
        await close(viewer, publisher, on_a, on_b)


async def test_a_sessions_viewers_count_against_its_owners_capacity(nodes: tuple[Node, Node, str, str]) -> None:
    """The owner carries every viewer's peer, wherever its signalling arrives: past the owner's
    STUDYHALL_LIVE_MAX_VIEWERS_PER_NODE (2 here) a viewer on B is refused, though B carries none."""
    a, b, _, _ = nodes
    host = await register(a.url)
    learners = [await register(b.url) for _ in range(3)]
    session_id = await live_session(a.url, host, *learners)
    ref = {"session_id": session_id}
    on_a = await connect(a.url, host)
    clients = [await connect(b.url, who) for who in learners]
    viewers = [Viewer(tab(c), session_id, kinds=("video",)) for c in clients]
    try:
        await tab(on_a).ok("live:join", ref)
        await tab(on_a).ok("live:start", ref)
        for c in clients:
            await tab(c).ok("live:join", ref)
        for v in viewers[:2]:
            await v.subscribe()
        v = viewers[2]
        v.pc.addTransceiver("video", direction="recvonly")
        await v.pc.setLocalDescription(await v.pc.createOffer())
        ack = await tab(clients[2]).call("live:subscribe", {**ref, "sdp": v.pc.localDescription.sdp})
        assert ack == {"ok": False, "error": {"code": "unavailable",
                       "message": "this server carries as many viewers as it can; try again later"}}  # fmt: skip
        state = (await tab(on_a).ok("live:hand", {**ref, "raised": False}))["state"]
        assert state["viewers"] == 2
    finally:
        await close(*viewers, on_a, *clients)


async def test_refusals_forwarded_are_those_given_locally(nodes: tuple[Node, Node, str, str]) -> None:
    a, b, _, _ = nodes
    host, alice = await register(a.url), await register(a.url)
    bob, stranger = await register(b.url), await register(b.url)
    session_id = await live_session(a.url, host, alice, bob)
    ref = {"session_id": session_id}
    on_a, alice_a, bob_b, stranger_b = (await connect(a.url, host), await connect(a.url, alice),
                                        await connect(b.url, bob), await connect(b.url, stranger))  # fmt: skip
    try:
        await tab(on_a).ok("live:join", ref)  # A owns the session
        garbage = {**ref, "sdp": "v=0\r\nthis is not sdp"}
        checks: list[tuple[str, dict[str, Any]]] = [
            ("live:subscribe", garbage),  # before joining: join first
            ("live:hand", ref),
        ]
        for event, data in checks:
            local, forwarded = await tab(alice_a).call(event, data), await tab(bob_b).call(event, data)
            assert local["ok"] is False and local == forwarded, (event, local, forwarded)
        await tab(alice_a).ok("live:join", ref)
        await tab(bob_b).ok("live:join", ref)
        checks = [
            ("live:start", ref),  # only a runner
            ("live:publish", {**ref, "sdp": "v=0\r\nthis is not sdp"}),  # garbage SDP
            ("live:subscribe", {**ref, "sdp": "v=0\r\n"}),  # no media
            ("live:stop", ref),  # only a runner ends the session
            ("live:invite", {**ref, "user_id": host.id}),
            ("live:mute", {**ref, "user_id": host.id}),
        ]
        for event, data in checks:
            local, forwarded = await tab(alice_a).call(event, data), await tab(bob_b).call(event, data)
            assert local["ok"] is False and local == forwarded, (event, local, forwarded)
        codes = [(await tab(bob_b).call(e, d))["error"]["code"] for e, d in checks]
        assert codes == ["forbidden", "invalid_input", "invalid_input", "forbidden", "forbidden", "forbidden"]
        # Someone who cannot see the room: not found, the same through either node.
        stranger_a = await connect(a.url, stranger)
        try:
            local = await tab(stranger_a).call("live:join", ref)
            forwarded = await tab(stranger_b).call("live:join", ref)
        finally:
            await stranger_a.disconnect()
        assert local == forwarded and local["error"]["code"] == "not_found", (local, forwarded)
        # Garbage payloads are refused where they arrive, before any forwarding.
        ack = await tab(bob_b).call("live:hand", {"session_id": "nope"})
        assert ack["ok"] is False and ack["error"]["code"] == "invalid_input"
    finally:
        await close(on_a, alice_a, bob_b, stranger_b)


async def test_an_owner_that_never_answers_times_out_with_a_clear_error(nodes: tuple[Node, Node, str, str]) -> None:
    _, b, redis, database_url = nodes
    user = await register(b.url)
    client = await connect(b.url, user)
    prefix = namespace(database_url, redis)
    ghost, session_id = "ghost" + uuid.uuid4().hex[:7], str(uuid.uuid4())
    store = aioredis.Redis.from_url(redis)
    listener = store.pubsub()
    try:
        # A node that holds the claim and listens, but never answers (hung).
        await listener.subscribe(prefix + f"node:{ghost}")
        await store.set(prefix + f"owner:{session_id}", ghost, px=60_000)
        started = time.monotonic()
        ack = await tab(client).call("live:join", {"session_id": session_id})
        took = time.monotonic() - started
        assert ack["ok"] is False and ack["error"]["code"] == "unavailable", ack
        assert "did not answer within" in ack["error"]["message"]
        assert FORWARD_TIMEOUT_S - 0.5 < took < FORWARD_TIMEOUT_S + 3
        # The hung node's subscription drops (as a killed node's does): B takes the session over at once and
        # answers itself (this session does not exist).
        await listener.unsubscribe()
        await listener.aclose()
        await asyncio.sleep(0.2)
        started = time.monotonic()
        ack = await tab(client).call("live:join", {"session_id": session_id})
        assert ack["ok"] is False and ack["error"]["code"] == "not_found", ack
        assert time.monotonic() - started < 2
        assert await store.get(prefix + f"owner:{session_id}") is None  # released: B carries nothing of it
    finally:
        await store.delete(prefix + f"owner:{session_id}")
        await store.aclose()
        await client.disconnect()


async def test_fifty_forwarded_round_trips_leave_no_task_behind(nodes: tuple[Node, Node, str, str]) -> None:
    a, b, _, _ = nodes
    host, learner = await register(a.url), await register(b.url)
    session_id = await live_session(a.url, host, learner)
    ref = {"session_id": session_id}
    on_a = await connect(a.url, host)
    try:
        await tab(on_a).ok("live:join", ref)
        await tab(on_a).ok("live:start", ref)
        before_a, before_b = await metrics(a), await metrics(b)
        local_s, forwarded_s = [], []
        for i in range(50):
            on_b = await connect(b.url, learner)
            try:
                started = time.perf_counter()
                await tab(on_b).ok("live:join", ref)
                forwarded_s.append(time.perf_counter() - started)
                await tab(on_b).ok("live:hand", {**ref, "raised": i % 2 == 0})
                if i % 2:
                    await tab(on_b).ok("live:leave", ref)
            finally:
                await on_b.disconnect()  # half leave first, half only disconnect
            started = time.perf_counter()
            await tab(on_a).ok("live:hand", {**ref, "raised": False})
            local_s.append(time.perf_counter() - started)
        after_a, after_b = {}, {}
        for _ in range(100):
            after_a, after_b = await metrics(a), await metrics(b)
            pairs = ((before_a, after_a), (before_b, after_b))
            settled = all(after[TASKS] <= before[TASKS] + 5 for before, after in pairs)
            if after_a["studyhall_live_remote_connections"] == 0 and settled:
                break
            await asyncio.sleep(0.1)
        assert after_a["studyhall_live_remote_connections"] == 0
        for m in (after_a, after_b):
            assert m["studyhall_live_forwards_waiting"] == 0 and m["studyhall_live_forwarded_serving"] == 0
        # Once the closed sockets' ping timers have run out (2 s here), no task is left of the 50 round trips.
        assert after_a["studyhall_asyncio_tasks"] <= before_a["studyhall_asyncio_tasks"] + 5, (before_a, after_a)
        assert after_b["studyhall_asyncio_tasks"] <= before_b["studyhall_asyncio_tasks"] + 5, (before_b, after_b)
        state = (await tab(on_a).ok("live:hand", {**ref, "raised": False}))["state"]
        assert state["hands"] == [] and state["viewers"] == 0
        forwarded_ms, local_ms = sorted(forwarded_s)[25] * 1000, sorted(local_s)[25] * 1000
        print(f"\nlive:join via B p50 {forwarded_ms:.1f} ms; live:hand on A p50 {local_ms:.1f} ms")
    finally:
        await close(on_a)


async def test_killing_the_owner_ends_the_session_for_viewers_on_the_other_node(
    nodes: tuple[Node, Node, str, str],
) -> None:
    _, b, redis, database_url = nodes
    with cluster(database_url, redis, ("c",), extra_env=ENV) as (c,):
        await wait_fanout(c, redis)
        host, learner = await register(c.url), await register(b.url)
        session_id = await live_session(c.url, host, learner)
        ref = {"session_id": session_id}
        on_c, on_b = await connect(c.url, host), await connect(b.url, learner)
        publisher, viewer = Publisher(tab(on_c), session_id), Viewer(tab(on_b), session_id)
        try:
            await tab(on_c).ok("live:join", ref)
            await tab(on_c).ok("live:start", ref)
            await publisher.publish()
            await tab(on_b).ok("live:join", ref)
            await viewer.subscribe()
            await viewer.frame("video")
            c.kill()  # no handler runs on C
            ended = await on_b.inbox.wait_for("live:ended", within=10)
            assert ended["session_id"] == session_id and ended["reason"] == "server_lost"
            assert "join it again" in ended["message"]
            # Joining again starts the session on a node that lives (B): it is still live, nobody publishes.
            rejoined = await tab(on_b).ok("live:join", ref)
            assert rejoined["state"]["status"] == "live" and rejoined["state"]["publishers"] == []
            await tab(on_b).ok("live:leave", ref)
        finally:
            await close(viewer, publisher, on_b)
            if on_c.connected:
                with_timeout = asyncio.wait_for(on_c.disconnect(), 5)
                await asyncio.gather(with_timeout, return_exceptions=True)


async def test_an_owner_shutting_down_gives_its_sessions_up(nodes: tuple[Node, Node, str, str]) -> None:
    _, b, redis, database_url = nodes
    with cluster(database_url, redis, ("d",), extra_env=ENV) as (d,):
        await wait_fanout(d, redis)
        host, learner = await register(d.url), await register(b.url)
        session_id = await live_session(d.url, host, learner)
        ref = {"session_id": session_id}
        on_d, on_b = await connect(d.url, host), await connect(b.url, learner)
        store = aioredis.Redis.from_url(redis)
        key = namespace(database_url, redis) + f"owner:{session_id}"
        try:
            await tab(on_d).ok("live:join", ref)
            await tab(on_b).ok("live:join", ref)
            assert await store.get(key) is not None
            assert d.stop() == 0  # SIGTERM: the node closes its sessions and deletes its claims
            assert await store.get(key) is None
            ended = await on_b.inbox.wait_for("live:ended", within=10)
            assert ended["session_id"] == session_id and ended["reason"] == "server_lost"
        finally:
            await store.aclose()
            await close(on_b)
            if on_d.connected:
                await asyncio.gather(asyncio.wait_for(on_d.disconnect(), 5), return_exceptions=True)


async def test_a_member_on_node_b_banned_on_node_a_loses_the_session(nodes: tuple[Node, Node, str, str]) -> None:
    a, b, _, _ = nodes
    host, learner = await register(a.url), await register(b.url)
    session_id = await live_session(a.url, host, learner)
    status, session = await rest(a.url, "GET", f"/live-sessions/{session_id}", host)
    assert status == 200, session
    ref = {"session_id": session_id}
    on_a, on_b = await connect(a.url, host), await connect(b.url, learner)
    viewer = Viewer(tab(on_b), session_id, kinds=("video",))
    try:
        await tab(on_a).ok("live:join", ref)
        await tab(on_a).ok("live:start", ref)
        await tab(on_b).ok("live:join", ref)
        await viewer.subscribe()
        assert (await tab(on_a).ok("live:hand", {**ref, "raised": False}))["state"]["viewers"] == 1
        await tab(on_a).ok("room:join", {"room_id": session["room_id"]})
        seen = len(on_a.inbox.of("live:state"))
        await tab(on_a).ok("chat:ban", {"room_id": session["room_id"], "user_id": learner.id, "on": True})
        # B hears of the rights change (through Redis) and has the owner on A let the learner go.
        await on_a.inbox.until(lambda: any(s["viewers"] == 0 for s in on_a.inbox.of("live:state")[seen:]))
        assert (await tab(on_a).ok("live:hand", {**ref, "raised": False}))["state"]["viewers"] == 0
        ack = await tab(on_b).call("live:join", ref)
        assert ack["ok"] is False and ack["error"]["code"] == "forbidden", ack
    finally:
        await close(viewer, on_a, on_b)


async def test_a_host_on_node_b_publishes_to_a_session_a_learner_opened_on_node_a(
    nodes: tuple[Node, Node, str, str],
) -> None:
    """The session lands where it is first joined (the lobby, before the host goes live): here a learner on A,
    so the host's go-live and publish on B are forwarded to A, and A forwards the host's media."""
    a, b, redis, database_url = nodes
    host, learner = await register(b.url), await register(a.url)
    session_id = await live_session(b.url, host, learner)
    ref = {"session_id": session_id}
    on_a, on_b = await connect(a.url, learner), await connect(b.url, host)
    publisher, viewer = Publisher(tab(on_b), session_id), Viewer(tab(on_a), session_id)
    try:
        lobby = await tab(on_a).ok("live:join", ref)
        assert lobby["state"]["status"] == "scheduled"
        await tab(on_a).ok("live:hand", ref)
        joined = await tab(on_b).ok("live:join", ref)
        assert joined["may_run"] is True and [u["id"] for u in joined["state"]["hands"]] == [learner.id]
        await tab(on_b).ok("live:start", ref)
        await on_a.inbox.wait_for("live:state", lambda s: s["status"] == "live")
        await publisher.publish()
        await on_a.inbox.wait_for("live:state", lambda s: [p["user"]["id"] for p in s["publishers"]] == [host.id])
        await viewer.subscribe()
        picture = await viewer.frame("video")
        assert (picture.width, picture.height) == (320, 240)
        ended = await tab(on_b).ok("live:stop", ref)
        assert ended["state"]["status"] == "ended"
        await on_a.inbox.wait_for("live:state", lambda s: s["status"] == "ended")
        store = aioredis.Redis.from_url(redis)
        try:  # A carries nothing of the ended session any more, so it gave up its claim
            assert await store.get(namespace(database_url, redis) + f"owner:{session_id}") is None
        finally:
            await store.aclose()
    finally:
        await close(viewer, publisher, on_a, on_b)
