"""Awareness (cursors, user names) on ``/yjs``: a member, read-only or not, speaks only for itself.

The attack: any member could send 1 MB awareness messages of ~200,000 entries (the server kept them
all, sent them to everyone, and to every newcomer after), write another client's cursor and name, and
remove it. Now an oversized message is ignored unread, a connection's entries count only for the client
ids it owns, and a client's state goes, for everyone, when its connection does. Raw frames for the
attack; the official ``yjs`` + ``y-websocket`` (y-protocols awareness) as the victim and the watcher.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from collab_ide.protocol import AwarenessEntry, encode_awareness
from tests.collab_helpers import JsEditor, require_node
from tests.conftest import Actor, ApiClient
from tests.yclient import YClient


def base_of(api: ApiClient) -> str:
    return str(api.http.make_url("")).rstrip("/")


def named(name: str) -> bytes:
    return json.dumps({"user": {"name": name}}).encode()


@pytest.fixture
async def clients() -> AsyncIterator[list[Any]]:
    made: list[Any] = []
    yield made
    for client in made:
        await client.close()


async def join(clients: list[Any], api: ApiClient, workspace_id: str, actor: Actor) -> YClient:
    client = YClient()
    clients.append(client)
    await client.connect(base_of(api), workspace_id, actor.token)
    return await client.wait_synced()


async def workspace_with_a_reader(api: ApiClient) -> tuple[str, Actor, Actor]:
    owner, reader = await api.user(), await api.user()
    status, ws = await api.call("POST", "/workspaces", owner, json={"name": "W", "language": "python"})
    assert status == 201, ws
    status, _ = await api.call("PUT", f"/workspaces/{ws['id']}/members/{reader.id}", owner, json={"access": "read"})
    assert status == 200
    return str(ws["id"]), owner, reader


def attacks(victim_id: int) -> list[bytes]:
    """What a hostile member sends: a ~1 MB flood, a forged state and removal, too many entries."""
    flood = encode_awareness([AwarenessEntry(1_000_000 + i, 1, b"0") for i in range(160_000)])
    assert 900_000 < len(flood) < 1024 * 1024  # under the message limit: only the awareness caps stop it
    return [
        flood,
        encode_awareness([AwarenessEntry(victim_id, 10**6, named("evil"))]),
        encode_awareness([AwarenessEntry(victim_id, 10**6 + 1, b"null")]),
        encode_awareness([AwarenessEntry(2_000_000 + i, 1, named("junk")) for i in range(17)]),
    ]


async def test_a_readers_flood_and_forgeries_reach_nobody_and_leave_with_it(api: ApiClient, clients: list[Any]) -> None:
    wid, owner, reader = await workspace_with_a_reader(api)
    victim = await join(clients, api, wid, owner)
    watcher = await join(clients, api, wid, owner)
    victim.set_awareness(1001, 1, named("victim").decode())
    await watcher.wait_until(lambda: watcher.awareness.get(1001) == named("victim"))

    attacker = await join(clients, api, wid, reader)
    for frame in attacks(1001):
        attacker.send_raw(frame)
    for i in range(6):  # its own ids: the first four are its own
        attacker.set_awareness(900 + i, 1, named("reader").decode())
    attacker.set_awareness(900, 2, named("reader, done").decode())  # after everything above, in order
    await watcher.wait_until(lambda: watcher.awareness.get(900) == named("reader, done"))

    expected = {1001: named("victim"), 900: named("reader, done"), 901: named("reader"), 902: named("reader"),
                903: named("reader")}  # fmt: skip
    assert watcher.awareness == expected
    assert victim.awareness == expected  # the victim's own state was not touched either
    assert attacker.close_code is None  # ignored, not fatal: the official client echoes others' states

    # A newcomer gets what is kept, nothing of the flood; an awareness query answers the same.
    newcomer = await join(clients, api, wid, owner)
    await newcomer.wait_until(lambda: 1001 in newcomer.awareness)
    assert newcomer.awareness == expected
    newcomer.awareness.clear()
    newcomer.send_raw(bytes([3]))
    await newcomer.wait_until(lambda: 1001 in newcomer.awareness)
    assert newcomer.awareness == expected

    # The attacker leaving takes its own states, not the victim's; the victim leaving takes its own.
    await attacker.close()
    await watcher.wait_until(lambda: 900 not in watcher.awareness)
    assert watcher.awareness == {1001: named("victim")}
    await victim.close()
    await watcher.wait_until(lambda: 1001 not in watcher.awareness)
    assert watcher.awareness == {}


async def test_official_clients_keep_their_own_state_and_lose_a_dead_clients(
    api: ApiClient, clients: list[Any]
) -> None:
    node = require_node()
    wid, owner, reader = await workspace_with_a_reader(api)
    victim = await JsEditor.start(node)
    clients.append(victim)
    await victim.connect(base_of(api), wid, owner.token)
    await victim.wait_for("synced")
    victim_id = (await victim.awareness())["client_id"]
    watcher = await JsEditor.start(node)
    clients.append(watcher)
    await watcher.connect(base_of(api), wid, owner.token)
    await watcher.wait_for("synced")
    watcher_id = (await watcher.awareness())["client_id"]
    assert (await watcher.awareness_until({victim_id: "js editor"}))["matched"]

    attacker = await join(clients, api, wid, reader)
    for frame in attacks(victim_id):
        attacker.send_raw(frame)
    attacker.set_awareness(4242, 1, named("attacker").decode())
    seen = await watcher.awareness_until({4242: "attacker", victim_id: "js editor"}, within=15)
    assert seen["matched"], seen["states"]
    assert set(seen["states"]) == {str(watcher_id), str(victim_id), "4242"}
    mine = await victim.awareness_until({4242: "attacker", victim_id: "js editor"}, within=15)
    assert mine["matched"], mine["states"]  # y-protocols would have taken the forged state for its own

    # The victim's machine dies without a word: the server removes its state for everyone.
    await victim.kill()
    gone = await watcher.awareness_until({victim_id: None, 4242: "attacker"}, within=15)
    assert gone["matched"], gone["states"]
