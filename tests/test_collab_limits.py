"""How large a workspace may grow, and downloading a large one while others are served.

The attack: editors could grow a document without bound (40 and 60 MB were accepted), and its zip
download was compressed on the event loop, stalling everyone. Now an update that would take a file or
the document past its cap (``STUDYHALL_COLLAB_MAX_FILE_BYTES``, ``STUDYHALL_COLLAB_MAX_DOCUMENT_BYTES``)
is refused whole — not applied, forwarded or stored — and its connection is closed with 4413; the
archive is built in a worker thread.
"""

from __future__ import annotations

import asyncio
import io
import random
import string
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Text

from collab_ide.handlers import DOCUMENTS
from collab_ide.store import DocumentLog, files_of
from core_api.context import CORE
from realtime.app import create_app
from tests.conftest import Actor, ApiClient, make_settings
from tests.yclient import YClient

KIB = 1024
FILE_CAP = 64 * KIB
DOCUMENT_CAP = 256 * KIB


@pytest.fixture
async def small(aiohttp_client: Any, database_url: str, tmp_path: Path) -> ApiClient:
    """An app with small caps: 64 KiB per file, 256 KiB per workspace."""
    settings = make_settings(
        database_url, tmp_path, collab_max_file_bytes=FILE_CAP, collab_max_document_bytes=DOCUMENT_CAP
    )
    return ApiClient(await aiohttp_client(create_app(settings)))


@pytest.fixture
async def clients() -> AsyncIterator[list[YClient]]:
    made: list[YClient] = []
    yield made
    for client in made:
        await client.close()


def base_of(api: ApiClient) -> str:
    return str(api.http.make_url("")).rstrip("/")


async def join(clients: list[YClient], api: ApiClient, workspace_id: str, actor: Actor) -> YClient:
    client = YClient()
    clients.append(client)
    await client.connect(base_of(api), workspace_id, actor.token)
    return await client.wait_synced()


async def workspace(api: ApiClient, owner: Actor, **files: str) -> str:
    body: dict[str, Any] = {"name": "W", "language": "python"}
    if files:
        body.update(files=files, entry=next(iter(files)))
    status, ws = await api.call("POST", "/workspaces", owner, json=body)
    assert status == 201, ws
    return str(ws["id"])


def noise(size: int, seed: int = 0) -> str:
    """Text that does not compress much (like real content, unlike one repeated letter)."""
    return "".join(random.Random(seed).choices(string.ascii_letters + string.digits + "\n", k=size))


async def stored_files(api: ApiClient, workspace_id: str) -> dict[str, str]:
    await api.app[DOCUMENTS].flush()
    loaded = await DocumentLog(api.app[CORE].pool).load(uuid.UUID(workspace_id))
    assert loaded is not None
    return files_of(loaded.doc)


async def refused(client: YClient) -> str:
    code, reason = await client.wait_closed()
    assert code == 4413, (code, reason)
    return reason


async def test_an_update_that_would_pass_the_file_cap_is_refused_whole(
    small: ApiClient, clients: list[YClient]
) -> None:
    owner = await small.user()
    wid = await workspace(small, owner)
    watcher = await join(clients, small, wid, owner)
    writer = await join(clients, small, wid, owner)
    original = writer.text("main.py")
    # One paste past the cap, together with a change to another file in the same update.
    with writer.doc.transaction():
        writer.files["greet.py"].insert(0, "# harmless\n")
        writer.files["main.py"].insert(0, noise(FILE_CAP + 1))
    reason = await refused(writer)
    assert "main.py" in reason and "64 KiB" in reason
    # Nothing of it reached anyone or was stored; the others carry on.
    probe = await join(clients, small, wid, owner)
    assert probe.text("main.py") == original and not probe.text("greet.py").startswith("# harmless")
    assert (await stored_files(small, wid))["main.py"] == original
    watcher.edit("main.py", 0, insert="# still fine\n")
    await probe.wait_until(lambda: probe.text("main.py").startswith("# still fine\n"))
    assert watcher.text("greet.py") == probe.text("greet.py") and watcher.close_code is None


async def test_a_file_grows_to_its_cap_and_no_further_while_other_files_still_can(
    small: ApiClient, clients: list[YClient]
) -> None:
    owner = await small.user()
    wid = await workspace(small, owner, **{"big.txt": "", "small.py": ""})
    watcher = await join(clients, small, wid, owner)
    writer = await join(clients, small, wid, owner)
    step = 6 * KIB
    accepted = 0
    for i in range(20):
        writer.edit("big.txt", len(writer.text("big.txt")), insert=noise(step, seed=i))
        if accepted + step > FILE_CAP:
            break
        accepted += step
        await watcher.wait_until(lambda: len(watcher.text("big.txt")) == accepted)  # noqa: B023
    assert "big.txt" in await refused(writer)
    assert FILE_CAP - step < accepted <= FILE_CAP
    # The full file keeps everyone else's typing elsewhere going (the check is per file, exactly)...
    other = await join(clients, small, wid, owner)
    for i in range(5):
        other.edit("small.py", 0, insert=f"# line {i}\n")
    other.files["new.py"] = Text(noise(40 * KIB, seed=99))  # a large paste into a new file too
    await watcher.wait_until(lambda: len(watcher.text("new.py")) == 40 * KIB and "# line 4" in watcher.text("small.py"))
    # ... one more character in it is refused, and deleting from it always works.
    typo = await join(clients, small, wid, owner)
    typo.edit("big.txt", accepted, insert="x" * (FILE_CAP - accepted + 1))
    await refused(typo)
    trimmer = await join(clients, small, wid, owner)
    trimmer.edit("big.txt", 0, delete=step)
    await watcher.wait_until(lambda: len(watcher.text("big.txt")) == accepted - step)
    trimmer.edit("big.txt", 0, insert="y" * step)  # and there is room again
    await watcher.wait_until(lambda: watcher.text("big.txt").startswith("y" * step))
    assert trimmer.close_code is None and other.close_code is None
    assert len((await stored_files(small, wid))["big.txt"]) == accepted


async def test_a_document_grows_to_its_cap_and_no_further(small: ApiClient, clients: list[YClient]) -> None:
    owner = await small.user()
    wid = await workspace(small, owner)
    writer = await join(clients, small, wid, owner)
    watcher = await join(clients, small, wid, owner)
    size = 48 * KIB
    added = 0
    for i in range(10):
        writer.files[f"part{i}.txt"] = Text(noise(size, seed=i))
        if writer.close_code is None:
            try:
                await watcher.wait_until(lambda: f"part{i}.txt" in watcher.files, within=5)  # noqa: B023
                added += 1
                continue
            except TimeoutError:
                pass
        break
    assert "workspace" in await refused(writer)
    assert (DOCUMENT_CAP - DOCUMENT_CAP // 16) // size - 1 <= added <= DOCUMENT_CAP // size
    stored = await stored_files(small, wid)
    assert sorted(p for p in stored if p.startswith("part")) == [f"part{i}.txt" for i in range(added)]


async def test_creating_a_workspace_past_a_cap_is_refused(small: ApiClient) -> None:
    owner = await small.user()
    status, answer = await small.call(
        "POST", "/workspaces", owner, json={"name": "W", "language": "python", "files": {"a.py": "x" * (FILE_CAP + 1)}}
    )
    assert status == 413 and answer["error"]["code"] == "payload_too_large", answer
    files = {f"f{i}.py": noise(60 * KIB, seed=i) for i in range(5)}
    status, answer = await small.call("POST", "/workspaces", owner, json={"name": "W", "language": "python",
                                                                         "files": files})  # fmt: skip
    assert status in (413, 400), answer  # the workspace cap, or the request body limit first


async def test_with_the_default_caps_a_workspace_cannot_reach_tens_of_megabytes(
    api: ApiClient, clients: list[YClient]
) -> None:
    owner = await api.user()
    wid = await workspace(api, owner)
    writer = await join(clients, api, wid, owner)
    for i in range(8):  # 900 KB per update, each a new file: the 5th cannot fit in 4 MiB
        writer.files[f"blob{i}.txt"] = Text(noise(900 * KIB, seed=i))
        if writer.closed.is_set():
            break
    assert "4 MiB" in await refused(writer)
    stored = await stored_files(api, wid)
    assert sum(len(c) for c in stored.values()) < 4 * 1024 * KIB


async def test_the_archive_of_a_large_workspace_is_built_while_the_server_keeps_answering(
    api: ApiClient, clients: list[YClient]
) -> None:
    owner = await api.user()
    wid = await workspace(api, owner)
    writer = await join(clients, api, wid, owner)
    contents = {f"data{i}.txt": noise(900 * KIB, seed=i) for i in range(4)}
    for path, text in contents.items():
        writer.files[path] = Text(text)
    probe = await join(clients, api, wid, owner)
    await probe.wait_until(lambda: all(len(probe.text(p)) == len(t) for p, t in contents.items()), within=30)

    # How many /healthz answers come back while a request is being served: first one that does the same
    # work but the compression (the file listing reads the same files), then the archive.
    listing, _ = await answered_during(api, owner, f"/api/v1/workspaces/{wid}/files")
    building, body = await answered_during(api, owner, f"/api/v1/workspaces/{wid}/archive")
    print(f"/healthz answered while listing: {listing}, while archiving: {building}")
    assert building > 2 * listing + 20, (listing, building)
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert {n: zf.read(n).decode() for n in contents} == contents


async def answered_during(api: ApiClient, owner: Actor, path: str) -> tuple[int, bytes]:
    """Ask for ``path``, and meanwhile /healthz again and again: how many of those were answered first."""
    answered = 0
    done = asyncio.Event()

    async def keep_asking() -> None:
        nonlocal answered
        async with aiohttp.ClientSession() as session:
            while not done.is_set():
                async with session.get(base_of(api) + "/healthz") as resp:
                    assert resp.status == 200
                    answered += 1

    async def ask() -> tuple[int, bytes]:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(base_of(api) + path, headers=owner.headers) as resp,
            ):
                assert resp.status == 200
                during = answered
                return during, await resp.read()
        finally:
            done.set()

    asking = asyncio.create_task(ask())
    asker = asyncio.create_task(keep_asking())
    result = await asking
    await asker
    return result
