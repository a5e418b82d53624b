"""The official JavaScript editor (``yjs`` + ``y-websocket`` from npm, ``disableBc: true``) against a live server.

Real editing traces are replayed keystroke by keystroke (one Yjs transaction per recorded txn) through
one JS editor; a Python client that watched, and fresh JS and Python clients after the server
restarted, must all end with exactly the trace's ``endContent``. Also: the close codes as the official
client sees them (it stops reconnecting on 44xx), read-only refusal, and JS and Python editors typing at
once converging.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from core_api.auth import AUTH, RegisterIn, register
from core_api.context import CORE
from tests.collab_helpers import TRACES, JsEditor, create_workspace, load_trace, require_node
from tests.conftest import make_settings
from tests.live import LiveServer
from tests.nodes import QuietLiveServer, User, rest
from tests.yclient import YClient

TRACE_FILES = {"rustcode": "src/skiplist.rs", "sveltecomponent": "src/App.svelte"}


@pytest.fixture(scope="module")
def node() -> str:
    return require_node()


class Servers:
    """A live server that can be restarted on the same database."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.settings = make_settings(database_url, data_dir)
        self.live: LiveServer = QuietLiveServer(self.settings).start()

    @property
    def url(self) -> str:
        return self.live.url

    def restart(self) -> None:
        self.live.stop()
        self.live = QuietLiveServer(self.settings).start()

    def user(self) -> User:
        app = self.live.app
        email = f"yjs-{uuid.uuid4().hex[:10]}@example.com"
        body = RegisterIn(email=email, password="correct horse battery staple", display_name="Y")
        row = self.live.run(register(app[CORE], app[AUTH], body, role="student"))
        return User(str(row["id"]), email, "Y", app[AUTH].tokens.issue(row["id"], "student"))


@pytest.fixture
def servers(database_url: str, tmp_path: Path) -> Iterator[Servers]:
    made = Servers(database_url, tmp_path)
    try:
        yield made
    finally:
        made.live.stop()


@pytest.fixture
async def editors() -> AsyncIterator[list[Any]]:
    made: list[Any] = []
    yield made
    for editor in made:
        await editor.close()


async def js_editor(node: str, editors: list[Any], base: str, workspace_id: str, token: str | None) -> JsEditor:
    editor = await JsEditor.start(node)
    editors.append(editor)
    await editor.connect(base, workspace_id, token)
    return editor


async def py_client(editors: list[Any], base: str, workspace_id: str, token: str) -> YClient:
    client = YClient()
    editors.append(client)
    await client.connect(base, workspace_id, token)
    return await client.wait_synced()


@pytest.mark.parametrize("trace_name", sorted(TRACE_FILES))
async def test_a_replayed_trace_reaches_every_client_and_survives_a_restart(
    node: str, servers: Servers, editors: list[Any], trace_name: str
) -> None:
    assert (TRACES / f"{trace_name}.json.gz").exists(), "tests/data/editing-traces holds the traces"
    trace = load_trace(trace_name)
    path = TRACE_FILES[trace_name]
    user = servers.user()
    ws = await create_workspace(servers.url, user, files={path: trace["startContent"]}, entry=path)
    writer = await js_editor(node, editors, servers.url, ws["id"], user.token)
    await writer.wait_for("synced")
    watcher = await py_client(editors, servers.url, ws["id"], user.token)
    writer.send("replay", trace=str(TRACES / f"{trace_name}.json.gz"), file=path)
    assert (await writer.wait_for("replayed", within=120))["txns"] == len(trace["txns"])
    await watcher.wait_until(lambda: watcher.text(path) == trace["endContent"], within=120)
    # The server's copy is the same (what a run or a download would use).
    status, files = await rest(servers.url, "GET", f"/workspaces/{ws['id']}/files", user)
    assert status == 200 and {"path": path, "size": len(trace["endContent"].encode())} in files["items"]
    for editor in list(editors):
        await editor.close()
        editors.remove(editor)
    servers.restart()
    fresh_js = await js_editor(node, editors, servers.url, ws["id"], user.token)
    await fresh_js.wait_for("synced")
    assert await fresh_js.text_becomes(path, trace["endContent"]) == trace["endContent"]
    fresh_py = await py_client(editors, servers.url, ws["id"], user.token)
    assert fresh_py.text(path) == trace["endContent"]


async def test_the_official_client_sees_the_close_codes_and_stops_reconnecting(
    node: str, servers: Servers, editors: list[Any]
) -> None:
    owner, stranger = servers.user(), servers.user()
    ws = await create_workspace(servers.url, owner)
    cases = [(None, 4401), ("forged", 4401), (stranger.token, 4404)]
    for token, code in cases:
        editor = await js_editor(node, editors, servers.url, ws["id"], token)
        closed = await editor.wait_for("closed")
        assert closed["code"] == code and closed["reason"], closed
        report = await editor.report("main.py")
        assert report["text"] is None and not report["connected"]
    missing = await js_editor(node, editors, servers.url, str(uuid.uuid4()), owner.token)
    assert (await missing.wait_for("closed"))["code"] == 4404


async def test_a_read_only_js_editor_is_told_and_its_edit_goes_nowhere(
    node: str, servers: Servers, editors: list[Any]
) -> None:
    owner, reader = servers.user(), servers.user()
    ws = await create_workspace(servers.url, owner)
    status, _ = await rest(
        servers.url, "PUT", f"/workspaces/{ws['id']}/members/{reader.id}", owner, json={"access": "read"}
    )
    assert status == 200
    watcher = await py_client(editors, servers.url, ws["id"], owner.token)
    editor = await js_editor(node, editors, servers.url, ws["id"], reader.token)
    await editor.wait_for("synced")
    before = watcher.text("main.py")
    assert (await editor.report("main.py"))["text"] == before  # it got the document
    editor.send("insert", file="main.py", pos=0, text="EVIL ")
    denied = await editor.wait_for("denied")
    assert "read-only" in denied["reason"]
    watcher.edit("main.py", 0, insert="# marker\n")
    await editor.text_becomes("main.py", "EVIL # marker\n" + before)
    assert watcher.text("main.py") == "# marker\n" + before  # the marker arrived, the refused edit never did


async def test_js_and_python_editors_typing_at_once_converge(node: str, servers: Servers, editors: list[Any]) -> None:
    owner = servers.user()
    ws = await create_workspace(servers.url, owner, files={"notes.txt": ""}, entry="notes.txt")
    js = [await js_editor(node, editors, servers.url, ws["id"], owner.token) for _ in range(2)]
    for editor in js:
        await editor.wait_for("synced")
    py = await py_client(editors, servers.url, ws["id"], owner.token)
    for n, editor in enumerate(js):
        editor.send("type", file="notes.txt", prefix=f"J{n}-", count=150, every_ms=1)
    for i in range(150):
        py.type_token("notes.txt", f"P{i}.", i * 7)
    for editor in js:
        await editor.wait_for("typed")
    tokens = {f"J{n}-{i}." for n in range(2) for i in range(150)} | {f"P{i}." for i in range(150)}
    total = sum(len(t) for t in tokens)
    await py.wait_until(lambda: len(py.text("notes.txt")) == total, within=60)
    final = py.text("notes.txt")
    for editor in js:
        assert await editor.text_becomes("notes.txt", final) == final
    assert all(token in final for token in tokens)


async def test_offline_edits_reach_everyone_when_the_official_client_reconnects(
    node: str, servers: Servers, editors: list[Any]
) -> None:
    """Edits made offline, and typing that goes out while the client reconnects (before its sync step 2
    brings the offline ones), all arrive: the server holds what comes early instead of refusing it."""
    owner = servers.user()
    ws = await create_workspace(servers.url, owner, files={"notes.txt": ""}, entry="notes.txt")
    js = await js_editor(node, editors, servers.url, ws["id"], owner.token)
    await js.wait_for("synced")
    py = await py_client(editors, servers.url, ws["id"], owner.token)
    js.send("offline")
    await js.wait_for("offline")
    js.send("type", file="notes.txt", prefix="OFF-", count=40, every_ms=0)
    await js.wait_for("typed")
    for i in range(20):
        py.type_token("notes.txt", f"P{i}.", i * 3)
    mark = len(js.events)
    js.send("online")
    js.send("type", file="notes.txt", prefix="ON-", count=40, every_ms=1)  # at once, while it reconnects
    await js.wait_for("typed", after=mark)
    tokens = {f"OFF-{i}." for i in range(40)} | {f"ON-{i}." for i in range(40)} | {f"P{i}." for i in range(20)}
    total = sum(len(t) for t in tokens)
    await py.wait_until(lambda: len(py.text("notes.txt")) == total, within=60)
    final = py.text("notes.txt")
    assert all(token in final for token in tokens)
    assert await js.text_becomes("notes.txt", final) == final
    assert js.of("connection_close") == [], "the server closed the official client"
