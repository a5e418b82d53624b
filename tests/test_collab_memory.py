"""Memory stays bounded by what is open: 200 workspaces opened, edited and closed in a real server
process, whose resident memory returns near its baseline once their documents are unloaded."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.collab_helpers import create_workspace, until_unloaded
from tests.nodes import Node, node_env, register
from tests.yclient import YClient

WORKSPACES = 200
FILE_CHARS = 100_000  # 200 × 100 kB of text: the open documents take tens of MB, far above the noise


@pytest.fixture
def server(database_url: str) -> Iterator[Node]:
    logs = Path(tempfile.mkdtemp(prefix="studyhall-memory-"))
    env = node_env(database_url, "", logs / "data")
    env.pop("STUDYHALL_REDIS_URL")
    env.update(STUDYHALL_COLLAB_UNLOAD_DELAY_S="0.2", STUDYHALL_COLLAB_COMPACT_IDLE_S="0.5", STUDYHALL_DB_POOL_MAX="10")
    node = Node("memory", env, logs)
    try:
        node.wait_ready()
        yield node
    finally:
        node.stop()
        shutil.rmtree(logs, ignore_errors=True)


def rss_mib(node: Node) -> float:
    return psutil.Process(node.proc.pid).memory_info().rss / 2**20


async def open_edit_close(node: Node, workspace_ids: list[str], token: str) -> None:
    """Open every workspace at once, type into each, then close them all."""
    clients = [YClient() for _ in workspace_ids]
    try:
        await asyncio.gather(*(c.connect(node.url, w, token) for c, w in zip(clients, workspace_ids, strict=True)))
        await asyncio.gather(*(c.wait_synced(within=60) for c in clients))
        for c in clients:
            for i in range(20):
                c.edit("big.txt", i, insert="x")
        probe = clients[-1]
        await probe.wait_until(lambda: probe.text("big.txt").startswith("x" * 20))
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_rss_returns_near_baseline_after_200_workspaces_are_opened_and_closed(server: Node) -> None:
    user = await register(server.url)
    ids = []
    for n in range(WORKSPACES):
        body = (f"workspace {n} " * (FILE_CHARS // 12))[:FILE_CHARS]
        ws = await create_workspace(server.url, user, files={"big.txt": body}, entry="big.txt")
        ids.append(ws["id"])
    # Warm up every code path (and the allocator) on a few, then take the baseline with nothing loaded.
    await open_edit_close(server, ids[:20], user.token)
    await until_unloaded(server)
    baseline = rss_mib(server)
    clients_task = asyncio.create_task(open_edit_close(server, ids, user.token))
    peak = baseline
    while not clients_task.done():
        peak = max(peak, rss_mib(server))
        await asyncio.wait({clients_task}, timeout=0.05)
    await clients_task
    await until_unloaded(server, within=60)
    after = rss_mib(server)
    # Again: a leak would add up round after round.
    await open_edit_close(server, ids, user.token)
    await until_unloaded(server, within=60)
    again = rss_mib(server)
    print(f"RSS: baseline {baseline:.1f} MiB, {WORKSPACES} open {peak:.1f}, unloaded {after:.1f}, again {again:.1f}")
    assert peak - baseline > 15, "the open documents should have cost memory, or this test shows nothing"
    near = max(10.0, 0.3 * (peak - baseline))
    assert after - baseline < near and again - baseline < near, (baseline, peak, after, again)
