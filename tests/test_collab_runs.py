"""A workspace's Run: the server's copy of the files, run in the real sandbox, output pushed to the room."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from realtime.app import create_app
from tests.chat_helpers import WAIT_S, make_room, open_tab
from tests.conftest import Actor, ApiClient, make_settings
from tests.yclient import YClient


@pytest.fixture
async def rapi(aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None) -> ApiClient:
    """An app whose programs run in its own sandbox pool."""
    settings = make_settings(database_url, tmp_path, sandbox_workers=2, sandbox_wall_ms=6000, sandbox_cpu_ms=3000)
    return ApiClient(await aiohttp_client(create_app(settings)))


@pytest.fixture
async def editors() -> AsyncIterator[list[YClient]]:
    made: list[YClient] = []
    yield made
    for client in made:
        await client.close()


async def ok(api: ApiClient, method: str, path: str, actor: Actor, status: int = 200, **kw: Any) -> Any:
    got, body = await api.call(method, path, actor, **kw)
    assert got == status, (method, path, got, body)
    return body


async def edit_to(
    api: ApiClient, editors: list[YClient], workspace_id: str, actor: Actor, path: str, text: str
) -> None:
    """Replace a file's text through a real y-websocket client, and wait until the server has it."""
    client = YClient()
    editors.append(client)
    await client.connect(str(api.http.make_url("")).rstrip("/"), workspace_id, actor.token)
    await client.wait_synced()
    client.edit(path, 0, delete=len(client.text(path)), insert=text)
    for _ in range(WAIT_S * 20):
        files = await ok(api, "GET", f"/workspaces/{workspace_id}/archive", actor)
        if isinstance(files, bytes):
            with zipfile.ZipFile(io.BytesIO(files)) as zf:
                if zf.read(path).decode() == text:
                    return
        await asyncio.sleep(0.05)
    raise AssertionError("the server never had the edit")


async def test_a_run_executes_the_servers_copy_and_the_room_sees_its_output(
    rapi: ApiClient, editors: list[YClient]
) -> None:
    host, member = await rapi.user(), await rapi.user()
    room = await make_room(rapi, host, member)
    ws = await ok(rapi, "POST", "/workspaces", host, 201, json={"name": "W", "language": "python", "room_id": room})
    watcher = await open_tab(rapi, member)
    outputs: asyncio.Queue[Any] = asyncio.Queue()
    finished: asyncio.Queue[Any] = asyncio.Queue()
    watcher.sio.on("run:output", outputs.put)
    watcher.sio.on("run:finished", finished.put)
    try:
        await watcher.join(room)
        await edit_to(rapi, editors, ws["id"], host, "main.py", "import sys\nprint(sys.stdin.read()[::-1])\n")

        # Only the run's own fields are accepted: a client cannot slip in files of its own.
        await ok(rapi, "POST", f"/workspaces/{ws['id']}/runs", member, 400, json={"files": [{"path": "x.py"}]})
        run = await ok(rapi, "POST", f"/workspaces/{ws['id']}/runs?wait=true", member, json={"stdin": "abc"})
        assert run["entry"] == "main.py"
        assert run["execution"]["status"] == "ok"
        assert run["execution"]["stdout"] == "cba\n"

        out = await asyncio.wait_for(outputs.get(), WAIT_S)
        assert out == {"run_id": run["id"], "workspace_id": ws["id"], "stream": "stdout", "text": "cba\n"}
        done = await asyncio.wait_for(finished.get(), WAIT_S)
        assert done["run_id"] == run["id"] and done["execution"]["stdout"] == "cba\n"

        # Another entry point, and a failing program: its stderr reaches the room too.
        await edit_to(rapi, editors, ws["id"], host, "greet.py", "raise SystemExit('nope')\n")
        failed = await ok(rapi, "POST", f"/workspaces/{ws['id']}/runs?wait=true", host, json={"entry": "greet.py"})
        assert failed["execution"]["status"] == "runtime_error" and failed["execution"]["exit_code"] == 1
        err = await asyncio.wait_for(outputs.get(), WAIT_S)
        assert err["stream"] == "stderr" and "nope" in err["text"]

        await asyncio.wait_for(finished.get(), WAIT_S)

        # Output goes out while the program runs, in the pieces it was written in, then run:finished.
        slow = "import time\nprint('first', flush=True)\ntime.sleep(1)\nprint('second')\n"
        await edit_to(rapi, editors, ws["id"], host, "main.py", slow)
        streamed = await ok(rapi, "POST", f"/workspaces/{ws['id']}/runs", host, 202, json={})
        pieces = [await asyncio.wait_for(outputs.get(), WAIT_S) for _ in range(2)]
        assert [(p["stream"], p["text"]) for p in pieces] == [("stdout", "first\n"), ("stdout", "second\n")]
        assert all(p["run_id"] == streamed["id"] for p in pieces)
        done = await asyncio.wait_for(finished.get(), WAIT_S)
        assert done["run_id"] == streamed["id"] and done["execution"]["stdout"] == "first\nsecond\n"
        assert outputs.empty()  # nothing sent twice

        history = await ok(rapi, "GET", f"/workspaces/{ws['id']}/runs?limit=1", member)
        assert [r["id"] for r in history["items"]] == [streamed["id"]]  # newest first
        older = await ok(rapi, "GET", f"/workspaces/{ws['id']}/runs?cursor={history['next_cursor']}", member)
        assert [r["id"] for r in older["items"]] == [failed["id"], run["id"]] and older["next_cursor"] is None
        again = await ok(rapi, "GET", f"/workspaces/{ws['id']}/runs/{run['id']}", host)
        assert again["execution"]["stdout"] == "cba\n"
    finally:
        await watcher.close()


async def test_who_may_run_and_what_is_refused(rapi: ApiClient) -> None:
    owner, reader, stranger = await rapi.user(), await rapi.user(), await rapi.user()
    ws = await ok(rapi, "POST", "/workspaces", owner, 201, json={"name": "C", "language": "c"})
    await ok(rapi, "PUT", f"/workspaces/{ws['id']}/members/{reader.id}", owner, json={"access": "read"})
    await ok(rapi, "POST", f"/workspaces/{ws['id']}/runs", reader, 403, json={})
    await ok(rapi, "GET", f"/workspaces/{ws['id']}/runs", reader)  # but may see the history
    await ok(rapi, "POST", f"/workspaces/{ws['id']}/runs", stranger, 404, json={})
    await ok(rapi, "POST", f"/workspaces/{ws['id']}/runs", owner, 400, json={"entry": "missing.c"})

    # A workspace outside any room: the output goes to whoever ran it.
    tab = await open_tab(rapi, owner)
    finished: asyncio.Queue[Any] = asyncio.Queue()
    tab.sio.on("run:finished", finished.put)
    try:
        run = await ok(rapi, "POST", f"/workspaces/{ws['id']}/runs?wait=true", owner, json={})
        assert run["execution"]["status"] == "ok", run  # the C template compiles and runs
        done = await asyncio.wait_for(finished.get(), WAIT_S)
        assert done["run_id"] == run["id"]
    finally:
        await tab.close()
