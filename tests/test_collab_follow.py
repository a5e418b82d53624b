"""Following a workspace's runs (``run:follow``): every member who has a workspace open hears a run anyone
starts, the workspace outside any room included, on one node and across two nodes sharing Redis; nobody
else can listen in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from realtime.app import create_app
from tests.chat_helpers import WAIT_S, Tab, open_tab
from tests.conftest import ApiClient, make_settings
from tests.nodes import Node, cluster, connect, redis_url, register, rest, wait_fanout

RUN_EVENTS = ("run:output", "run:finished", "run:unfollowed")
PROGRAM = "print('hello from the run')\n"


@pytest.fixture
async def fapi(aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None) -> ApiClient:
    settings = make_settings(
        database_url, tmp_path, sandbox_workers=2, sandbox_wall_ms=6000, sandbox_cpu_ms=3000, run_follow_max=2
    )
    return ApiClient(await aiohttp_client(create_app(settings)))


async def run_tab(api: ApiClient, actor: Any) -> Tab:
    tab = await open_tab(api, actor)
    for name in RUN_EVENTS:
        tab.inbox[name] = asyncio.Queue()
        tab.sio.on(name, tab.inbox[name].put)
    return tab


async def workspace(api: ApiClient, owner: Any, name: str = "Solo") -> dict[str, Any]:
    body = {"name": name, "language": "python", "files": {"main.py": PROGRAM}, "entry": "main.py"}
    status, ws = await api.call("POST", "/workspaces", owner, json=body)
    assert status == 201, ws
    return ws  # type: ignore[no-any-return]


async def test_every_member_with_the_workspace_open_hears_a_run_and_outsiders_cannot_follow(fapi: ApiClient) -> None:
    owner, reader, stranger = await fapi.user(), await fapi.user(), await fapi.user()
    ws = await workspace(fapi, owner)  # outside any room
    status, _ = await fapi.call("PUT", f"/workspaces/{ws['id']}/members/{reader.id}", owner, json={"access": "read"})
    assert status == 200
    owners_tab, readers_tab, strangers_tab = [await run_tab(fapi, who) for who in (owner, reader, stranger)]
    try:
        ack = await owners_tab.ok("run:follow", {"workspace_id": ws["id"]})
        assert ack["access"] == "edit"
        ack = await readers_tab.ok("run:follow", {"workspace_id": ws["id"]})
        assert ack["access"] == "read"
        # Someone without access to the workspace cannot listen to its runs (nor learn that it exists).
        await strangers_tab.fails("run:follow", {"workspace_id": ws["id"]}, "not_found")
        await strangers_tab.fails("run:follow", {"workspace_id": "not-a-uuid"}, "invalid_input")
        await strangers_tab.fails("run:follow", {}, "invalid_input")

        status, run = await fapi.call("POST", f"/workspaces/{ws['id']}/runs?wait=true", owner, json={})
        assert status == 200 and run["execution"]["status"] == "ok", run
        for tab in (owners_tab, readers_tab):
            out = await tab.next("run:output")
            assert (out["run_id"], out["stream"], out["text"]) == (run["id"], "stdout", "hello from the run\n")
            done = await tab.next("run:finished")
            assert (done["run_id"], done["execution"]["status"]) == (run["id"], "ok")
            # The runner's tab is in the channel and in its personal room: it hears each event once.
            assert await tab.nothing_pending("run:output") and tab.inbox["run:finished"].empty()
        assert await strangers_tab.nothing_pending("run:output") and strangers_tab.inbox["run:finished"].empty()

        # The reader's access is taken away: their tab leaves the channel at once and hears no more runs.
        status, _ = await fapi.call("DELETE", f"/workspaces/{ws['id']}/members/{reader.id}", owner)
        assert status == 204
        gone = await readers_tab.next("run:unfollowed")
        assert (gone["workspace_id"], gone["reason"]) == (ws["id"], "access")
        status, second = await fapi.call("POST", f"/workspaces/{ws['id']}/runs?wait=true", owner, json={})
        assert status == 200, second
        done = await owners_tab.next("run:finished")
        assert done["run_id"] == second["id"]
        assert await readers_tab.nothing_pending("run:finished") and readers_tab.inbox["run:output"].empty()

        # After run:unfollow the owner's tab hears runs only as their runner (personal room), once.
        await owners_tab.ok("run:unfollow", {"workspace_id": ws["id"]})
        await owners_tab.next("run:output")  # the second run's output (it was also in the queue)
        status, third = await fapi.call("POST", f"/workspaces/{ws['id']}/runs?wait=true", owner, json={})
        assert status == 200, third
        assert (await owners_tab.next("run:finished"))["run_id"] == third["id"]
    finally:
        for tab in (owners_tab, readers_tab, strangers_tab):
            await tab.close()


async def test_a_connection_follows_a_bounded_number_of_workspaces(fapi: ApiClient) -> None:
    owner = await fapi.user()
    spaces = [await workspace(fapi, owner, f"W{i}") for i in range(3)]
    tab = await run_tab(fapi, owner)
    try:
        await tab.ok("run:follow", {"workspace_id": spaces[0]["id"]})
        await tab.ok("run:follow", {"workspace_id": spaces[1]["id"]})
        await tab.ok("run:follow", {"workspace_id": spaces[1]["id"]})  # again: no more room taken
        message = await tab.fails("run:follow", {"workspace_id": spaces[2]["id"]}, "rate_limited")
        assert "at most 2 workspaces" in message
        await tab.ok("run:unfollow", {"workspace_id": spaces[0]["id"]})
        await tab.ok("run:follow", {"workspace_id": spaces[2]["id"]})
    finally:
        await tab.close()


async def test_run_follow_is_rate_limited_per_connection(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, run_follow_per_s=1.0)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    owner = await api.user()
    ws = await workspace(api, owner)
    tab = await run_tab(api, owner)
    try:
        await tab.ok("run:follow", {"workspace_id": ws["id"]})
        # A burst of one a second: the next, sent at once, is refused (an event loop does not take a second).
        await tab.fails("run:follow", {"workspace_id": ws["id"]}, "rate_limited")
    finally:
        await tab.close()


# --- two nodes ---------------------------------------------------------------------------------------

# Each node runs programs in its own pool (with Redis set they would wait for Celery workers).
NODE_SANDBOX = {
    "STUDYHALL_SANDBOX_EXECUTOR": "local",
    "STUDYHALL_SANDBOX_WORKERS": "1",
    "STUDYHALL_SANDBOX_WALL_MS": "6000",
}


@pytest.fixture
def nodes(database_url: str, sandbox_machine: None) -> Iterator[tuple[list[Node], str]]:
    with redis_url() as redis, cluster(database_url, redis, ("a", "b"), NODE_SANDBOX) as started:
        yield started, redis


async def test_a_run_started_through_one_node_reaches_members_following_on_the_other(
    nodes: tuple[list[Node], str],
) -> None:
    (a, b), redis = nodes
    await wait_fanout(b, redis)  # b hears what is published to Redis
    owner, member, stranger = await register(a.url), await register(a.url), await register(a.url)
    body = {"name": "Across", "language": "python", "files": {"main.py": PROGRAM}, "entry": "main.py"}
    status, ws = await rest(a.url, "POST", "/workspaces", owner, json=body)
    assert status == 201, ws
    status, _ = await rest(a.url, "PUT", f"/workspaces/{ws['id']}/members/{member.id}", owner, json={"access": "edit"})
    assert status == 200
    on_b = await connect(b.url, member)
    outsider = await connect(b.url, stranger)
    try:
        assert (await on_b.ask("run:follow", {"workspace_id": ws["id"]}))["ok"] is True
        refused = await outsider.ask("run:follow", {"workspace_id": ws["id"]})
        assert (refused["ok"], refused["error"]["code"]) == (False, "not_found")
        # The owner runs it through node a (its sandbox runs it); the member, connected to b, hears it.
        status, run = await rest(a.url, "POST", f"/workspaces/{ws['id']}/runs", owner, json={})
        assert status == 202, run
        out = await on_b.inbox.wait_for("run:output", lambda e: e["run_id"] == run["id"], within=WAIT_S * 3)
        assert (out["stream"], out["text"]) == ("stdout", "hello from the run\n")
        done = await on_b.inbox.wait_for("run:finished", lambda e: e["run_id"] == run["id"], within=WAIT_S * 3)
        assert done["execution"]["status"] == "ok" and done["user_id"] == owner.id
        assert not outsider.inbox.of("run:output") and not outsider.inbox.of("run:finished")
    finally:
        await on_b.disconnect()
        await outsider.disconnect()
