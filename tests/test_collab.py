"""Workspaces and their documents against a real server and Postgres, with Python y-websocket clients.

REST (templates, creation alone or in a room, access, files, archive), the y-websocket endpoint (sync,
updates, awareness, close codes for unauthenticated and unauthorised connections, read-only members),
durability (batched log, compaction, reload after a restart, unloading) and bad input. The official
JavaScript clients are in test_collab_js.py; two nodes in test_collab_scaleout.py.
"""

from __future__ import annotations

import asyncio
import io
import uuid
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from pycrdt import Text

from collab_ide.handlers import DOCUMENTS
from collab_ide.protocol import AwarenessEntry, encode_awareness, sync_step1, update_message
from collab_ide.store import DocumentLog, files_of
from core_api.context import CORE
from core_api.settings import Settings
from realtime.app import create_app
from tests.conftest import Actor, ApiClient, make_settings
from tests.yclient import YClient

PYTHON_STARTER = {"main.py", "greet.py"}


async def ok(api: ApiClient, method: str, path: str, actor: Actor | None, status: int = 200, **kw: Any) -> Any:
    got, body = await api.call(method, path, actor, **kw)
    assert got == status, (method, path, got, body)
    return body


def base_of(api: ApiClient) -> str:
    return str(api.http.make_url("")).rstrip("/")


@pytest.fixture
async def clients() -> AsyncIterator[list[YClient]]:
    made: list[YClient] = []
    yield made
    for client in made:
        await client.close()


async def join(
    clients: list[YClient], api: ApiClient, workspace_id: str, actor: Actor | None, sync: bool = True
) -> YClient:
    client = YClient()
    clients.append(client)
    await client.connect(base_of(api), workspace_id, actor.token if actor else None)
    if sync:
        await client.wait_synced()
    return client


# --- REST --------------------------------------------------------------------------------------------


async def test_a_workspace_starts_with_its_templates_files_written_by_the_server(api: ApiClient) -> None:
    alice = await api.user()
    templates = await ok(api, "GET", "/workspaces/templates", alice)
    python = next(t for t in templates["items"] if t["language"] == "python")
    ws = await ok(api, "POST", "/workspaces", alice, 201, json={"name": "Mine", "language": "python"})
    assert ws["my_access"] == "edit" and ws["can_manage"] and ws["entry"] == "main.py" and ws["room_id"] is None
    assert ws["editor_path"] == f"/yjs/{ws['id']}"
    files = await ok(api, "GET", f"/workspaces/{ws['id']}/files", alice)
    assert {f["path"] for f in files["items"]} == PYTHON_STARTER
    archive = await api.http.get(f"/api/v1/workspaces/{ws['id']}/archive", headers=alice.headers)
    assert archive.status == 200 and archive.content_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(await archive.read())) as zf:
        assert {n: zf.read(n).decode() for n in zf.namelist()} == python["files"]
    listed = await ok(api, "GET", "/workspaces", alice)
    assert [w["id"] for w in listed["items"]] == [ws["id"]]
    stranger = await api.user()
    await ok(api, "GET", f"/workspaces/{ws['id']}", stranger, 404)
    assert (await ok(api, "GET", "/workspaces", stranger))["items"] == []


async def test_custom_starter_files_and_path_rules(api: ApiClient) -> None:
    alice = await api.user()
    body = {
        "name": "C",
        "language": "c",
        "files": {"src/main.c": "int main(){}", "README.md": "# hi"},
        "entry": "src/main.c",
    }
    ws = await ok(api, "POST", "/workspaces", alice, 201, json=body)
    assert ws["entry"] == "src/main.c"
    files = await ok(api, "GET", f"/workspaces/{ws['id']}/files", alice)
    assert files["items"] == [{"path": "README.md", "size": 4}, {"path": "src/main.c", "size": 12}]
    for bad in ("../etc/passwd", "/abs", "a//b", "sp ace.py", ""):
        status, answer = await api.call("POST", "/workspaces", alice, json={**body, "files": {bad: "x"}, "entry": None})
        assert status == 400, (bad, answer)
    status, _ = await api.call("POST", "/workspaces", alice, json={**body, "entry": "missing.c"})
    assert status == 400


async def test_a_room_workspace_gives_room_members_the_rooms_access(api: ApiClient) -> None:
    host, member, outsider = await api.user(), await api.user(), await api.user()
    room = await ok(api, "POST", "/rooms", host, 201, json={"name": "R", "kind": "ide", "visibility": "private"})
    await ok(api, "POST", f"/rooms/{room['id']}/invite", host, 201, json={"user_id": member.id})
    # Only members open workspaces in a room (a private room is invisible to others: 404).
    await ok(api, "POST", "/workspaces", outsider, 404, json={"name": "W", "language": "python", "room_id": room["id"]})
    ws = await ok(
        api, "POST", "/workspaces", member, 201,
        json={"name": "W", "language": "python", "room_id": room["id"], "room_access": "read"},
    )  # fmt: skip
    assert (await ok(api, "GET", f"/workspaces/{ws['id']}", host))["can_manage"] is True  # the room's host
    seen = await ok(api, "GET", f"/workspaces?room_id={room['id']}", host)
    assert [w["id"] for w in seen["items"]] == [ws["id"]]
    await ok(api, "GET", f"/workspaces/{ws['id']}", outsider, 404)
    # A plain room member gets room_access ("read"); an explicit grant overrides it.
    other = await api.user()
    await ok(api, "POST", f"/rooms/{room['id']}/invite", host, 201, json={"user_id": other.id})
    assert (await ok(api, "GET", f"/workspaces/{ws['id']}", other))["my_access"] == "read"
    await ok(api, "PUT", f"/workspaces/{ws['id']}/members/{other.id}", host, json={"access": "edit"})
    assert (await ok(api, "GET", f"/workspaces/{ws['id']}", other))["my_access"] == "edit"
    members = await ok(api, "GET", f"/workspaces/{ws['id']}/members", other)
    assert [(m["user_id"], m["access"]) for m in members["items"]] == [(other.id, "edit")]
    await ok(api, "PUT", f"/workspaces/{ws['id']}/members/{host.id}", other, 403, json={"access": "read"})
    # Archiving the room makes everyone read-only.
    await ok(api, "POST", f"/rooms/{room['id']}/archive", host)
    assert (await ok(api, "GET", f"/workspaces/{ws['id']}", other))["my_access"] == "read"
    await ok(api, "POST", "/workspaces", host, 409, json={"name": "W2", "language": "python", "room_id": room["id"]})


# --- the document endpoint ---------------------------------------------------------------------------


async def test_two_editors_converge_and_rest_sees_the_live_files(api: ApiClient, clients: list[YClient]) -> None:
    alice, bob = await api.user(), await api.user()
    ws = await ok(api, "POST", "/workspaces", alice, 201, json={"name": "W", "language": "python"})
    await ok(api, "PUT", f"/workspaces/{ws['id']}/members/{bob.id}", alice, json={"access": "edit"})
    a = await join(clients, api, ws["id"], alice)
    b = await join(clients, api, ws["id"], bob)
    assert a.text("main.py") == b.text("main.py") and "greeting" in a.text("main.py")
    a.edit("main.py", 0, insert="# alice\n")
    b.edit("greet.py", 0, insert="# bob\n")
    await b.wait_until(lambda: b.text("main.py").startswith("# alice\n"))
    await a.wait_until(lambda: a.text("greet.py").startswith("# bob\n"))
    assert files_of(a.doc) == files_of(b.doc)
    # An editor may put any key into the map; only safe paths are files for downloads (and runs).
    a.files["../escape.py"] = Text("import os")
    a.files["lib/util.py"] = Text("x = 1\n")
    await b.wait_until(lambda: "lib/util.py" in b.files)
    listed = await ok(api, "GET", f"/workspaces/{ws['id']}/files", bob)
    assert [f["path"] for f in listed["items"]] == ["greet.py", "lib/util.py", "main.py"]
    archive = await api.http.get(f"/api/v1/workspaces/{ws['id']}/archive", headers=bob.headers)
    with zipfile.ZipFile(io.BytesIO(await archive.read())) as zf:
        assert zf.read("main.py").decode() == a.text("main.py")
        assert zf.read("greet.py").decode() == a.text("greet.py")
        assert sorted(zf.namelist()) == ["greet.py", "lib/util.py", "main.py"]


async def test_awareness_is_relayed_queried_and_removed_when_a_client_leaves(
    api: ApiClient, clients: list[YClient]
) -> None:
    alice = await api.user()
    ws = await ok(api, "POST", "/workspaces", alice, 201, json={"name": "W", "language": "python"})
    a = await join(clients, api, ws["id"], alice)
    b = await join(clients, api, ws["id"], alice)
    a.set_awareness(4242, 1, '{"user":{"name":"alice"},"cursor":3}')
    await b.wait_until(lambda: 4242 in b.awareness)
    # A newcomer gets everyone's awareness, and an awareness query answers with it too.
    c = await join(clients, api, ws["id"], alice)
    await c.wait_until(lambda: c.awareness.get(4242) == b'{"user":{"name":"alice"},"cursor":3}')
    c.awareness.clear()
    c.send_raw(bytes([3]))
    await c.wait_until(lambda: 4242 in c.awareness)
    await a.close()
    await b.wait_until(lambda: 4242 not in b.awareness)


async def test_unauthenticated_and_unauthorised_connections_are_closed_with_a_code(
    api: ApiClient, clients: list[YClient]
) -> None:
    alice, stranger = await api.user(), await api.user()
    ws = await ok(api, "POST", "/workspaces", alice, 201, json={"name": "W", "language": "python"})
    cases = [
        (ws["id"], None, 4401),
        (ws["id"], "not-a-token", 4401),
        (ws["id"], stranger.token, 4404),
        (str(uuid.uuid4()), alice.token, 4404),
        ("not-a-uuid", alice.token, 4404),
    ]
    for workspace_id, token, code in cases:
        client = YClient()
        clients.append(client)
        await client.connect(base_of(api), workspace_id, token)
        got, reason = await client.wait_closed()
        assert (got, bool(reason)) == (code, True), (workspace_id, token, got, reason)
        assert not client.synced.is_set() and files_of(client.doc) == {}


async def test_a_read_only_member_gets_the_document_but_its_updates_are_refused_and_never_stored(
    api: ApiClient, clients: list[YClient], database_url: str
) -> None:
    alice, reader = await api.user(), await api.user()
    ws = await ok(api, "POST", "/workspaces", alice, 201, json={"name": "W", "language": "python"})
    await ok(api, "PUT", f"/workspaces/{ws['id']}/members/{reader.id}", alice, json={"access": "read"})
    a = await join(clients, api, ws["id"], alice)
    r = await join(clients, api, ws["id"], reader)
    assert files_of(r.doc) == files_of(a.doc)
    r.edit("main.py", 0, insert="EVIL ")
    await r.wait_until(lambda: bool(r.denied))
    assert "read-only" in r.denied[0]
    # Its cursor still reaches others; its edit never does (the marker edit after it arrives alone).
    a.edit("main.py", 0, insert="# ok\n")
    await r.wait_until(lambda: r.text("main.py").startswith("EVIL # ok\n") or r.text("main.py").startswith("# ok\n"))
    probe = await join(clients, api, ws["id"], alice)
    assert "EVIL" not in probe.text("main.py") and probe.text("main.py").startswith("# ok\n")
    await api.app[DOCUMENTS].flush()
    stored = await DocumentLog(api.app[CORE].pool).load(uuid.UUID(ws["id"]))
    assert stored is not None and "EVIL" not in files_of(stored.doc)["main.py"]
    # Live changes of access: read → edit lets updates through. The reader's next update continues
    # from its refused edit, which the server does not have: the connection holds it and asks the
    # client for what it lacks (sync step 1); the answer brings it (the member's text to keep now).
    await ok(api, "PUT", f"/workspaces/{ws['id']}/members/{reader.id}", alice, json={"access": "edit"})
    r.edit("greet.py", 0, insert="# now allowed\n")
    await a.wait_until(lambda: a.text("greet.py").startswith("# now allowed\n"))
    r.edit("greet.py", 0, insert="# and more\n")
    await a.wait_until(lambda: a.text("greet.py").startswith("# and more\n# now allowed\n"))
    # Withdrawn access closes with 4403.
    await ok(api, "DELETE", f"/workspaces/{ws['id']}/members/{reader.id}", alice, 204)
    assert (await r.wait_closed())[0] == 4403


# --- durability ----------------------------------------------------------------------------------


@pytest.fixture
def quick_settings(database_url: str, tmp_path: Any) -> Settings:
    """Small batches, early compaction and unloading, so the tests see them happen."""
    return make_settings(
        database_url,
        tmp_path,
        collab_compact_after_updates=40,
        collab_compact_idle_s=0.3,
        collab_unload_delay_s=0.2,
        collab_flush_interval_s=0.02,
        collab_max_message_bytes=64 * 1024,
    )


async def test_edits_survive_a_restart_compaction_folds_the_log_and_idle_documents_unload(
    aiohttp_client: Any, quick_settings: Settings, database_url: str, clients: list[YClient]
) -> None:
    api = ApiClient(await aiohttp_client(create_app(quick_settings)))
    alice = await api.user()
    ws = await ok(api, "POST", "/workspaces", alice, 201, json={"name": "W", "language": "python"})
    wid = uuid.UUID(ws["id"])
    a = await join(clients, api, ws["id"], alice)
    for i in range(100):  # one update per keystroke
        a.edit("main.py", len(a.text("main.py")), insert=f"{i % 10}")
    expected = a.text("main.py")
    probe = await join(clients, api, ws["id"], alice)
    await probe.wait_until(lambda: probe.text("main.py") == expected)
    docs = api.app[DOCUMENTS]
    unloaded = asyncio.Event()
    docs.on_unload.append(lambda w: unloaded.set() if w == wid else None)
    await a.close()
    await probe.close()
    # Once nobody has it open, the document is written, compacted and unloaded.
    async with asyncio.timeout(20):
        await unloaded.wait()
    assert wid not in docs.docs
    conn = await asyncpg.connect(database_url)
    try:
        log_rows = await conn.fetchval("SELECT count(*) FROM yjs_updates WHERE workspace_id = $1", wid)
        version = await conn.fetchval("SELECT version FROM yjs_snapshots WHERE workspace_id = $1", wid)
    finally:
        await conn.close()
    assert log_rows == 0 and version >= 2  # the log was folded into the snapshot
    # A new server on the same database loads snapshot + log.
    other = ApiClient(await aiohttp_client(create_app(quick_settings)))
    fresh = await join(clients, other, ws["id"], alice)
    assert fresh.text("main.py") == expected


async def test_a_document_loads_from_its_snapshot_plus_the_log_not_yet_compacted(
    aiohttp_client: Any, database_url: str, tmp_path: Any, clients: list[YClient]
) -> None:
    lazy = make_settings(database_url, tmp_path, collab_compact_after_updates=100_000, collab_compact_idle_s=3600)
    api = ApiClient(await aiohttp_client(create_app(lazy)))
    alice = await api.user()
    ws = await ok(api, "POST", "/workspaces", alice, 201, json={"name": "W", "language": "python"})
    a = await join(clients, api, ws["id"], alice)
    for i in range(30):
        a.edit("greet.py", 0, insert=chr(ord("a") + i % 26))
    expected = a.text("greet.py")
    probe = await join(clients, api, ws["id"], alice)
    await probe.wait_until(lambda: probe.text("greet.py") == expected)
    await api.app[DOCUMENTS].flush()
    conn = await asyncpg.connect(database_url)
    try:
        wid = uuid.UUID(ws["id"])
        assert await conn.fetchval("SELECT version FROM yjs_snapshots WHERE workspace_id = $1", wid) == 1
        assert await conn.fetchval("SELECT count(*) FROM yjs_updates WHERE workspace_id = $1", wid) >= 1
    finally:
        await conn.close()
    other = ApiClient(await aiohttp_client(create_app(lazy)))  # a second node, say: loads from Postgres
    fresh = await join(clients, other, ws["id"], alice)
    assert fresh.text("greet.py") == expected


async def test_a_flush_returns_only_once_the_writers_flush_under_way_is_in_the_log(
    aiohttp_client: Any, database_url: str, tmp_path: Any, clients: list[YClient]
) -> None:
    # Slow writer interval, so only the two flushes below write.
    lazy = make_settings(database_url, tmp_path, collab_flush_interval_s=10, collab_compact_idle_s=3600)
    api = ApiClient(await aiohttp_client(create_app(lazy)))
    alice = await api.user()
    ws = await ok(api, "POST", "/workspaces", alice, 201, json={"name": "W", "language": "python"})
    a = await join(clients, api, ws["id"], alice)
    a.edit("main.py", 0, insert="typed\n")
    docs = api.app[DOCUMENTS]
    wid = uuid.UUID(ws["id"])
    probe = await join(clients, api, ws["id"], alice)
    await probe.wait_until(lambda: probe.text("main.py").startswith("typed"))
    assert docs.docs[wid].pending, "the keystroke waits for the writer"
    writer = asyncio.ensure_future(docs.flush())  # the writer's flush: it takes the batch and awaits Postgres
    await asyncio.sleep(0)
    await docs.flush()  # a caller who needs everything so far in the log (a test, shutdown, a download)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM yjs_updates WHERE workspace_id = $1", wid) >= 1
    finally:
        await conn.close()
    await writer


async def test_an_idle_document_is_compacted_while_still_open(
    aiohttp_client: Any, quick_settings: Settings, database_url: str, clients: list[YClient]
) -> None:
    api = ApiClient(await aiohttp_client(create_app(quick_settings.model_copy(update={"collab_unload_delay_s": 3600}))))
    alice = await api.user()
    ws = await ok(api, "POST", "/workspaces", alice, 201, json={"name": "W", "language": "python"})
    a = await join(clients, api, ws["id"], alice)
    a.edit("main.py", 0, insert="# one keystroke\n")
    conn = await asyncpg.connect(database_url)
    try:
        wid = uuid.UUID(ws["id"])
        for _ in range(200):  # compact_idle_s is 0.3: poll the database, bounded (no event crosses into it)
            version = await conn.fetchval("SELECT version FROM yjs_snapshots WHERE workspace_id = $1", wid)
            rows = await conn.fetchval("SELECT count(*) FROM yjs_updates WHERE workspace_id = $1", wid)
            if version > 1 and rows == 0:
                break
            await asyncio.sleep(0.05)
        assert (version, rows) == (2, 0) and wid in api.app[DOCUMENTS].docs
    finally:
        await conn.close()


# --- bad input ---------------------------------------------------------------------------------------

BAD_FRAMES = [
    (b"", 1002),
    (b"\x00", 1002),  # sync without a sub-type
    (b"\x00\x02", 1002),  # update without its length
    (b"\x00\x02\x05abc", 1002),  # truncated payload
    (b"\x00\x02\x01\x00\x00", 1002),  # trailing bytes
    (b"\x00\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff", 1002),  # an integer that never ends
    (update_message(b"\x07\x07garbage"), 1002),  # an update the CRDT cannot decode
    (sync_step1(b"\xff\xff"), 1002),  # a state vector that cannot be decoded
    (b"\x01\x03\x01\x01", 1002),  # awareness entries cut short
    (b"\x00\x09\x00", 1003),  # unknown sync message type
    (b"\x07", 1003),  # unknown message type
    (b"\x02\x00\x00", 1003),  # auth messages go from server to client only
]


async def test_malformed_frames_close_that_connection_and_nothing_else(
    aiohttp_client: Any, quick_settings: Settings, clients: list[YClient]
) -> None:
    api = ApiClient(await aiohttp_client(create_app(quick_settings)))
    alice = await api.user()
    ws = await ok(api, "POST", "/workspaces", alice, 201, json={"name": "W", "language": "python"})
    other = await ok(api, "POST", "/workspaces", alice, 201, json={"name": "Other", "language": "python"})
    steady = await join(clients, api, ws["id"], alice)
    elsewhere = await join(clients, api, other["id"], alice)
    for frame, code in [*BAD_FRAMES, (update_message(b"\x00" * (64 * 1024)), 1009)]:
        bad = await join(clients, api, ws["id"], alice)
        bad.send_raw(frame)
        got, reason = await bad.wait_closed()
        assert got == code, (frame[:20], got, reason)
    # A text frame is refused too.
    async with aiohttp.ClientSession() as session:
        url = base_of(api).replace("http", "ws") + f"/yjs/{ws['id']}"
        async with session.ws_connect(url, params={"token": alice.token}) as raw:
            await raw.send_str("hello")
            msg = await raw.receive()
            while msg.type is aiohttp.WSMsgType.BINARY:
                msg = await raw.receive()
            assert raw.close_code == 1003
    # The node and both documents carry on.
    steady.edit("main.py", 0, insert="# still here\n")
    late = await join(clients, api, ws["id"], alice)
    await late.wait_until(lambda: late.text("main.py").startswith("# still here\n"))
    elsewhere.edit("greet.py", 0, insert="# fine\n")
    await elsewhere.wait_until(lambda: elsewhere.text("greet.py").startswith("# fine\n"))
    assert steady.close_code is None and elsewhere.close_code is None


async def test_awareness_of_any_size_within_the_limit_and_an_empty_update_are_accepted(
    api: ApiClient, clients: list[YClient]
) -> None:
    alice = await api.user()
    ws = await ok(api, "POST", "/workspaces", alice, 201, json={"name": "W", "language": "python"})
    a = await join(clients, api, ws["id"], alice)
    b = await join(clients, api, ws["id"], alice)
    a.send_raw(update_message(b"\x00\x00"))
    a.send_raw(encode_awareness([AwarenessEntry(7, 1, b'{"name":"' + b"x" * 10_000 + b'"}')]))
    await b.wait_until(lambda: 7 in b.awareness)
    assert a.close_code is None
