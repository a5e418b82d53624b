"""One workspace edited through two real ``studyhall serve`` nodes sharing Postgres and Redis.

Updates and awareness relay between the nodes (Redis pub/sub); editors on both converge. Then a node
is SIGKILLed mid-session: its editors (a Python client and the official JS client) reconnect to the
other node and keep typing; every keystroke anyone made is in the final document, and in Postgres
once the surviving node has unloaded the document — written by it, then it too is SIGKILLed before the
database is read.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from collab_ide.protocol import AwarenessEntry, encode_awareness
from collab_ide.store import DocumentLog, files_of
from tests.collab_helpers import JsEditor, create_workspace, require_node, until_unloaded, ws_base
from tests.nodes import Node, cluster, redis_url, register, rest
from tests.yclient import YClient

FILE = "notes.txt"
NODE_ENV = {"STUDYHALL_COLLAB_UNLOAD_DELAY_S": "0.5", "STUDYHALL_COLLAB_COMPACT_IDLE_S": "1"}


@pytest.fixture(scope="module")
def redis() -> Iterator[str]:
    with redis_url() as url:
        yield url


@pytest.fixture
def nodes(database_url: str, redis: str) -> Iterator[list[Node]]:
    with cluster(database_url, redis, ("a", "b"), NODE_ENV) as started:
        yield started


@pytest.fixture
async def editors() -> AsyncIterator[list[Any]]:
    made: list[Any] = []
    yield made
    for editor in made:
        await editor.close()


async def py_editor(editors: list[Any], node: Node, workspace_id: str, token: str) -> YClient:
    client = YClient()
    editors.append(client)
    await client.connect(node.url, workspace_id, token)
    return await client.wait_synced()


async def js_editor(editors: list[Any], node_bin: str, node: Node, workspace_id: str, token: str) -> JsEditor:
    editor = await JsEditor.start(node_bin)
    editors.append(editor)
    await editor.connect(node.url, workspace_id, token)
    await editor.wait_for("synced")
    return editor


async def type_tokens(client: YClient, prefix: str, count: int, pause: float = 0.002) -> None:
    for i in range(count):
        client.type_token(FILE, f"{prefix}{i}.", i * 13)
        await asyncio.sleep(pause)  # a typist's pace, so that the other node's edits interleave


def tokens(prefix: str, count: int) -> set[str]:
    return {f"{prefix}{i}." for i in range(count)}


async def stored_text(database_url: str, workspace_id: str) -> str:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        loaded = await DocumentLog(pool).load(uuid.UUID(workspace_id))
    finally:
        await pool.close()
    assert loaded is not None
    return files_of(loaded.doc)[FILE]


async def test_editors_on_two_nodes_converge(nodes: list[Node], editors: list[Any]) -> None:
    node_bin = require_node()
    a, b = nodes
    user = await register(a.url)
    ws = await create_workspace(a.url, user, files={FILE: ""}, entry=FILE)
    py_a = await py_editor(editors, a, ws["id"], user.token)
    py_b = await py_editor(editors, b, ws["id"], user.token)
    js_b = await js_editor(editors, node_bin, b, ws["id"], user.token)
    js_b.send("type", file=FILE, prefix="JB", count=100, every_ms=2)
    await asyncio.gather(type_tokens(py_a, "PA", 100), type_tokens(py_b, "PB", 100))
    await js_b.wait_for("typed")
    everyone = tokens("PA", 100) | tokens("PB", 100) | tokens("JB", 100)
    size = sum(map(len, everyone))
    await py_a.wait_until(lambda: len(py_a.text(FILE)) == size, within=60)
    final = py_a.text(FILE)
    assert all(t in final for t in everyone)
    await py_b.wait_until(lambda: py_b.text(FILE) == final)
    assert await js_b.text_becomes(FILE, final) == final
    # Awareness crosses nodes too.
    py_a.set_awareness(777, 1, '{"user":{"name":"on a"}}')
    await py_b.wait_until(lambda: 777 in py_b.awareness)


async def test_awareness_belongs_to_its_connection_on_every_node(nodes: list[Node], editors: list[Any]) -> None:
    """A member on node B can neither write nor remove the state of a client on node A; states go,
    on both nodes, with the connection that owns them."""
    a, b = nodes
    owner, other = await register(a.url), await register(a.url)
    ws = await create_workspace(a.url, owner, files={FILE: ""}, entry=FILE)
    status, _ = await rest(a.url, "PUT", f"/workspaces/{ws['id']}/members/{other.id}", owner, json={"access": "read"})
    assert status == 200
    victim = await py_editor(editors, a, ws["id"], owner.token)
    watcher_a = await py_editor(editors, a, ws["id"], owner.token)
    watcher_b = await py_editor(editors, b, ws["id"], owner.token)
    victim.set_awareness(1001, 1, '{"user":{"name":"victim"}}')
    await watcher_b.wait_until(lambda: 1001 in watcher_b.awareness)
    attacker = await py_editor(editors, b, ws["id"], other.token)
    attacker.set_awareness(1001, 99, '{"user":{"name":"evil"}}')
    attacker.send_raw(encode_awareness([AwarenessEntry(1001, 100, b"null")]))
    attacker.set_awareness(2002, 1, '{"user":{"name":"attacker"}}')  # after the forgeries, in order
    await watcher_a.wait_until(lambda: 2002 in watcher_a.awareness)
    for watcher in (watcher_a, watcher_b, victim):
        assert watcher.awareness.get(1001) == b'{"user":{"name":"victim"}}', watcher.awareness
    await attacker.close()
    await watcher_a.wait_until(lambda: 2002 not in watcher_a.awareness)
    await victim.close()
    await watcher_b.wait_until(lambda: 1001 not in watcher_b.awareness)
    assert watcher_b.awareness == {} and 1001 not in watcher_a.awareness


async def test_a_killed_nodes_editors_reconnect_elsewhere_and_nothing_is_lost(
    nodes: list[Node], editors: list[Any], database_url: str
) -> None:
    node_bin = require_node()
    a, b = nodes
    user = await register(a.url)
    ws = await create_workspace(a.url, user, files={FILE: ""}, entry=FILE)
    wid = ws["id"]
    py_a = await py_editor(editors, a, wid, user.token)
    js_a = await js_editor(editors, node_bin, a, wid, user.token)
    py_b = await py_editor(editors, b, wid, user.token)
    js_a.send("type", file=FILE, prefix="JA", count=300, every_ms=3)
    typing = [
        asyncio.create_task(type_tokens(py_a, "PA", 300, pause=0.003)),
        asyncio.create_task(type_tokens(py_b, "PB", 300, pause=0.003)),
    ]
    # Mid-session (some of A's keystrokes still in its unwritten batch), A dies without a word.
    await py_b.wait_until(lambda: py_b.text(FILE).count("PA") >= 60 and py_b.text(FILE).count("JA") >= 30)
    js_a.send("switch", url=ws_base(b.url))  # where its automatic reconnection will go (a load balancer's job)
    a.kill()
    await py_a.wait_closed()
    await py_a.connect(b.url, wid, user.token)
    await py_a.wait_synced()
    await asyncio.gather(*typing)
    await js_a.wait_for("typed", within=60)
    everyone = tokens("PA", 300) | tokens("PB", 300) | tokens("JA", 300)
    size = sum(map(len, everyone))
    await py_b.wait_until(lambda: len(py_b.text(FILE)) == size, within=60)
    final = py_b.text(FILE)
    assert all(t in final for t in everyone), "an edit was lost"
    await py_a.wait_until(lambda: py_a.text(FILE) == final)
    assert await js_a.text_becomes(FILE, final) == final
    # Everyone leaves; B writes the document and unloads it; then B dies too. Postgres has it all.
    for editor in list(editors):
        await editor.close()
    await until_unloaded(b)
    b.kill()
    assert await stored_text(database_url, wid) == final
