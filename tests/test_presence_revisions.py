"""Presence revisions: a client that applies the documented merge rule ends with the right list of who is
present, even when announcements race its own ``room:join`` answer (two real nodes, hundreds of clients
joining and leaving at once).

The race: a connection enters the room, then its join reads the list of who is present. A user who joins
a moment later is announced (on this node, or through Redis from the other) and that announcement can
reach the client before the join's answer, whose list does not have the user yet. A client that replaces
its list with the answer loses the user; one that also applies changes in arrival order can let an older
change of one user undo a newer one. The rule (docs/rooms-and-chat.md): keep the answer's
``presence_rev``; apply a change only if its ``rev`` is above it and above the last change applied for
that user; changes that arrive before the answer wait for it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.nodes import Client, Node, User, cluster, connect, redis_url, register, rest, wait_fanout

CLIENTS = 200
LEAVERS = 40  # leave again right after their join answer
WAIT_S = 120


@dataclass
class RoomView:
    """One client's list of who is present, kept by the merge rule, and the naive list beside it."""

    room_id: str
    rev: int | None = None
    members: dict[str, str] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    early: list[tuple[str, str, str, int]] = field(default_factory=list)
    naive: dict[str, str] = field(default_factory=dict)
    raced: int = 0
    """Changes newer than the list that arrived before the join's answer."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def answer(self, ack: dict[str, Any]) -> None:
        assert "presence_rev" in ack, f"room:join answers no presence revision: {sorted(ack)}"
        self.rev = int(ack["presence_rev"])
        self.members = {m["id"]: m["display_name"] for m in ack["members"]}
        self.naive = dict(self.members)  # what a client without revisions did: the answer replaces the list
        for change in self.early:
            if change[3] > self.rev:
                self.raced += 1
            self._apply(*change)
        self.early.clear()
        self.changed.set()

    def change(self, user_id: str, name: str, state: str, rev: int) -> None:
        if state == "joined":  # the naive client applies everything in arrival order
            self.naive[user_id] = name
        else:
            self.naive.pop(user_id, None)
        if self.rev is None:
            self.early.append((user_id, name, state, rev))
        else:
            self._apply(user_id, name, state, rev)
        self.changed.set()

    def _apply(self, user_id: str, name: str, state: str, rev: int) -> None:
        assert self.rev is not None
        if rev <= self.rev or rev <= self.last.get(user_id, 0):
            return  # already in the list the answer gave, or older than what we know of this user
        self.last[user_id] = rev
        if state == "joined":
            self.members[user_id] = name
        else:
            self.members.pop(user_id, None)

    def on_presence(self, event: dict[str, Any]) -> None:
        if event["room_id"] == self.room_id:
            user = event["user"]
            self.change(user["id"], user["display_name"], event["state"], event["rev"])

    def on_batch(self, batch: dict[str, Any]) -> None:
        if batch["room_id"] == self.room_id:
            for state in ("joined", "left"):
                for user in batch[state]:
                    self.change(user["id"], user["display_name"], state, user["rev"])


@pytest.fixture(scope="module")
def redis() -> Iterator[str]:
    with redis_url() as url:
        yield url


async def many_users(node: Node, count: int) -> list[User]:
    gate = asyncio.Semaphore(16)

    async def one(n: int) -> User:
        async with gate:
            return await register(node.url, f"presence {n:04d}")

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def test_joins_racing_presence_events_end_with_the_right_list_on_both_nodes(
    database_url: str, redis: str
) -> None:
    with cluster(database_url, redis, ("a", "b")) as (a, b):
        await asyncio.gather(wait_fanout(a, redis), wait_fanout(b, redis))
        users = await many_users(a, CLIENTS)
        status, room = await rest(
            a.url, "POST", "/rooms", users[0], json={"name": f"race {uuid.uuid4().hex[:6]}", "kind": "study",
                                                     "visibility": "public"},
        )  # fmt: skip
        assert status == 201, room
        room_id = room["id"]
        homes = [(a, b)[n % 2] for n in range(CLIENTS)]
        gate = asyncio.Semaphore(32)

        async def connected(node: Node, user: User) -> Client:
            async with gate:
                return await connect(node.url, user)

        clients = list(await asyncio.gather(*(connected(n, u) for n, u in zip(homes, users, strict=True))))
        views = [RoomView(room_id) for _ in clients]
        for client, view in zip(clients, views, strict=True):
            client.on("room:presence", view.on_presence)
            client.on("room:presence_batch", view.on_batch)
        leavers = set(range(1, CLIENTS, CLIENTS // LEAVERS))
        try:

            async def join(n: int) -> None:
                ack = await clients[n].ask("room:join", {"room_id": room_id}, within=WAIT_S)
                assert ack["ok"] is True, ack
                views[n].answer(ack)
                if n in leavers:
                    assert (await clients[n].ask("room:leave", {"room_id": room_id}, within=WAIT_S))["ok"]

            await asyncio.gather(*(join(n) for n in range(CLIENTS)))  # every join at once, on both nodes

            truth = {users[n].id for n in range(CLIENTS) if n not in leavers}
            staying = [n for n in range(CLIENTS) if n not in leavers]

            async def settled(n: int) -> None:
                view = views[n]
                async with asyncio.timeout(WAIT_S):
                    while set(view.members) != truth:
                        view.changed.clear()
                        await view.changed.wait()

            results = await asyncio.gather(*(settled(n) for n in staying), return_exceptions=True)
            wrong = [
                (n, sorted(truth - set(views[n].members))[:3], sorted(set(views[n].members) - truth)[:3])
                for n, result in zip(staying, results, strict=True)
                if isinstance(result, BaseException)
            ]
            assert not wrong, f"{len(wrong)} clients applying the rule ended with a wrong list: {wrong[:5]}"
            naive_wrong = sum(1 for n in staying if set(views[n].naive) != truth)
            raced = sum(1 for n in staying if views[n].raced)
            # How often the race happened in this run (not asserted: it depends on timing).
            print(f"\n{len(staying)} clients: {raced} heard a newer change before their join answer; "
                  f"{naive_wrong} would have a wrong list without revisions")  # fmt: skip
        finally:
            await asyncio.gather(*(c.disconnect() for c in clients if c.connected), return_exceptions=True)
