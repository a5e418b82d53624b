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


async def start_interactive(api: ApiClient, workspace_id: str, actor: Actor, **body: Any) -> dict[str, Any]:
    run: dict[str, Any] = await ok(
        api, "POST", f"/workspaces/{workspace_id}/runs", actor, 202, json={"interactive": True, **body}
    )
    return run


async def test_output_arrives_as_printed_and_the_program_reads_what_is_typed(
    rapi: ApiClient, editors: list[YClient]
) -> None:
    """A ticker (Python with plain print, no flush; C++ with std::cout) prints each line after reading one
    line typed into its console: each line reaches the room while the program still runs, before the next
    is typed, and the run ends only at EOF."""
    host, member = await rapi.user(), await rapi.user()
    room = await make_room(rapi, host, member)
    python = await ok(rapi, "POST", "/workspaces", host, 201, json={"name": "P", "language": "python", "room_id": room})
    cpp = await ok(rapi, "POST", "/workspaces", host, 201, json={"name": "C", "language": "cpp", "room_id": room})
    watcher = await open_tab(rapi, member)
    outputs: asyncio.Queue[Any] = asyncio.Queue()
    finished: asyncio.Queue[Any] = asyncio.Queue()
    watcher.sio.on("run:output", outputs.put)
    watcher.sio.on("run:finished", finished.put)
    ticker = {
        python["id"]: (
            "main.py",
            "import sys\nprint('tick 0')\nfor line in sys.stdin:\n    print('tick', line.strip())\n",
        ),
        cpp["id"]: (
            "main.cpp",
            '#include <iostream>\n#include <string>\nint main() {\n  std::cout << "tick 0\\n";\n'
            '  std::string line;\n  while (std::getline(std::cin, line)) std::cout << "tick " << line << "\\n";\n}\n',
        ),
    }
    try:
        await watcher.join(room)
        for workspace_id, (path, source) in ticker.items():
            await edit_to(rapi, editors, workspace_id, host, path, source)
            run = await start_interactive(rapi, workspace_id, member)
            got = ""
            for n in range(1, 4):
                while f"tick {n - 1}\n" not in got:
                    out = await asyncio.wait_for(outputs.get(), WAIT_S)
                    assert out["run_id"] == run["id"] and out["stream"] == "stdout", out
                    got += out["text"]
                assert finished.empty()  # still running, waiting for the next line
                now = await ok(rapi, "GET", f"/workspaces/{workspace_id}/runs/{run['id']}", host)
                assert now["execution"]["state"] == "running"
                await watcher.ok("run:input", {"workspace_id": workspace_id, "run_id": run["id"], "data": f"{n}\n"})
            await watcher.ok("run:input", {"workspace_id": workspace_id, "run_id": run["id"], "eof": True})
            done = await asyncio.wait_for(finished.get(), WAIT_S)
            assert done["run_id"] == run["id"]
            assert done["execution"]["status"] == "ok", done
            assert done["execution"]["stdout"] == "tick 0\ntick 1\ntick 2\ntick 3\n"
            while not outputs.empty():
                got += outputs.get_nowait()["text"]
            assert got == done["execution"]["stdout"]
    finally:
        await watcher.close()


@pytest.fixture
async def console_api(aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None) -> ApiClient:
    """Runs that last (wall 20 s) and a rate limit no quick test sequence reaches."""
    settings = make_settings(
        database_url, tmp_path, sandbox_workers=2, sandbox_wall_ms=20000, sandbox_cpu_ms=3000, run_input_per_s=1000
    )
    return ApiClient(await aiohttp_client(create_app(settings)))


async def test_who_may_type_into_a_run_and_what_is_refused(console_api: ApiClient, editors: list[YClient]) -> None:
    rapi = console_api
    owner, reader, stranger = await rapi.user(), await rapi.user(), await rapi.user()
    ws = await ok(rapi, "POST", "/workspaces", owner, 201, json={"name": "P", "language": "python"})
    other = await ok(rapi, "POST", "/workspaces", owner, 201, json={"name": "Q", "language": "python"})
    await ok(rapi, "PUT", f"/workspaces/{ws['id']}/members/{reader.id}", owner, json={"access": "read"})
    await edit_to(rapi, editors, ws["id"], owner, "main.py", "import sys\nprint(len(sys.stdin.read()))\n")
    tabs = {who.id: await open_tab(rapi, who) for who in (owner, reader, stranger)}
    try:
        run = await start_interactive(rapi, ws["id"], owner)
        ref = {"workspace_id": ws["id"], "run_id": run["id"]}
        await tabs[reader.id].fails("run:input", {**ref, "data": "x"}, "forbidden")
        await tabs[stranger.id].fails("run:input", {**ref, "data": "x"}, "not_found")
        await tabs[owner.id].fails("run:input", {**ref, "workspace_id": other["id"], "data": "x"}, "not_found")
        await tabs[owner.id].fails("run:input", {**ref, "data": "x" * 4097}, "payload_too_large")
        await tabs[owner.id].fails("run:input", {**ref, "data": 5}, "invalid_input")
        await tabs[owner.id].fails("run:input", {"run_id": run["id"]}, "invalid_input")
        # At most run_input_total_bytes (here 64 KiB) in all.
        for _ in range(16):
            await tabs[owner.id].ok("run:input", {**ref, "data": "y" * 4096})
        message = await tabs[owner.id].fails("run:input", {**ref, "data": "z"}, "payload_too_large")
        assert "in all" in message
        await tabs[owner.id].ok("run:input", {**ref, "eof": True})
        await tabs[owner.id].fails("run:input", {**ref, "data": ""}, "conflict")  # closed
        for _ in range(WAIT_S * 20):
            now = await ok(rapi, "GET", f"/workspaces/{ws['id']}/runs/{run['id']}", owner)
            if now["execution"]["state"] == "finished":
                break
            await asyncio.sleep(0.05)
        assert (now["execution"]["status"], now["execution"]["stdout"]) == ("ok", "65536\n"), now
        message = await tabs[owner.id].fails("run:input", {**ref, "data": "late\n"}, "conflict")
        assert "finished" in message
    finally:
        for tab in tabs.values():
            await tab.close()


async def test_run_input_is_rate_limited_per_connection(
    aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None
) -> None:
    settings = make_settings(database_url, tmp_path, sandbox_workers=1, run_input_per_s=0.001)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    owner = await api.user()
    ws = await ok(api, "POST", "/workspaces", owner, 201, json={"name": "P", "language": "python"})
    tab = await open_tab(api, owner)
    try:
        run = await ok(api, "POST", f"/workspaces/{ws['id']}/runs?wait=true", owner, json={})
        ref = {"workspace_id": ws["id"], "run_id": run["id"]}
        await tab.fails("run:input", {**ref, "data": "x"}, "conflict")  # the one event allowed: too late
        await tab.fails("run:input", {**ref, "data": "x"}, "rate_limited")
    finally:
        await tab.close()


async def test_a_cpp_workspace_is_created_and_runs(rapi: ApiClient) -> None:
    owner = await rapi.user()
    templates = await ok(rapi, "GET", "/workspaces/templates", owner)
    assert "cpp" in [t["language"] for t in templates["items"]]
    ws = await ok(rapi, "POST", "/workspaces", owner, 201, json={"name": "C++", "language": "cpp"})
    assert ws["language"] == "cpp" and ws["entry"] == "main.cpp"
    run = await ok(rapi, "POST", f"/workspaces/{ws['id']}/runs?wait=true", owner, json={})
    assert run["execution"]["status"] == "ok", run
    assert run["execution"]["stdout"] == "Hello, studyhall!\n"


async def test_a_syntax_error_in_a_workspace_run_is_a_compile_error(rapi: ApiClient, editors: list[YClient]) -> None:
    owner = await rapi.user()
    ws = await ok(rapi, "POST", "/workspaces", owner, 201, json={"name": "P", "language": "python"})
    await edit_to(rapi, editors, ws["id"], owner, "main.py", "print('never')\nprint(\n")
    run = await ok(rapi, "POST", f"/workspaces/{ws['id']}/runs?wait=true", owner, json={})
    execution = run["execution"]
    assert execution["status"] == "compile_error", execution
    assert execution["stdout"] == ""  # nothing ran
    assert "SyntaxError" in execution["compile"]["stderr"] and "main.py" in execution["compile"]["stderr"]


async def test_a_workspace_run_stopped_by_a_limit_keeps_what_it_printed(
    rapi: ApiClient, editors: list[YClient]
) -> None:
    owner = await rapi.user()
    ws = await ok(rapi, "POST", "/workspaces", owner, 201, json={"name": "P", "language": "python"})
    tab = await open_tab(rapi, owner)
    outputs: asyncio.Queue[Any] = asyncio.Queue()
    tab.sio.on("run:output", outputs.put)
    try:
        await edit_to(rapi, editors, ws["id"], owner, "main.py", "print('start')\nwhile True: pass\n")
        run = await ok(rapi, "POST", f"/workspaces/{ws['id']}/runs?wait=true", owner, json={})
        execution = run["execution"]
        assert (execution["status"], execution["stdout"]) == ("time_limit_exceeded", "start\n"), execution
        out = await asyncio.wait_for(outputs.get(), WAIT_S)
        assert (out["run_id"], out["stream"], out["text"]) == (run["id"], "stdout", "start\n")
    finally:
        await tab.close()
