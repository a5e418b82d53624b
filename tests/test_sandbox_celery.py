"""Executions in scaled mode: two ``studyhall serve`` nodes and a ``studyhall worker`` process (Celery)
sharing Postgres and Redis, as in docker-compose.yml.

Jobs wait in Redis while no worker runs (and past the queue limit the nodes answer ``rate_limited``);
a worker started later runs them in its sandbox, stores the results and pushes ``execution:finished``
to the requester through the write-only Socket.IO manager, reaching them on whichever node they are
connected to; ``?wait=true`` gets the result through the result channel.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from sandbox.distributed import QUEUE
from tests.nodes import ROOT, Node, WorkerProcess, connect, node_env, redis_url, register, rest, stop_pid, wait_fanout
from tests.yclient import YClient

pytestmark = pytest.mark.usefixtures("sandbox_machine")

SANDBOX_ENV = {
    "STUDYHALL_SANDBOX_QUEUE": "2",
    "STUDYHALL_SANDBOX_WORKERS": "2",
    "STUDYHALL_SANDBOX_CPU_MS": "2000",
    "STUDYHALL_SANDBOX_WALL_MS": "4000",
}


@pytest.fixture(scope="module")
def scaled(database_url: str) -> Iterator[tuple[list[Node], dict[str, str], str, Path]]:
    with redis_url() as broker, ExitStack() as stack:
        client = redis.Redis.from_url(broker)
        client.delete(QUEUE)  # nothing left over from an earlier run
        client.close()
        log_dir = Path(tempfile.mkdtemp(prefix="studyhall-celery-"))
        stack.callback(shutil.rmtree, log_dir, True)
        nodes = []
        for name in ("a", "b"):
            env = node_env(database_url, broker, log_dir / name) | SANDBOX_ENV
            node = Node(name, env, log_dir)
            stack.callback(node.stop)
            nodes.append(node)
        for node in nodes:
            node.wait_ready()
        worker_env = node_env(database_url, broker, log_dir / "worker") | SANDBOX_ENV
        yield nodes, worker_env, broker, log_dir


async def test_jobs_wait_for_a_worker_then_results_reach_the_requester(
    scaled: tuple[list[Node], dict[str, str], str, Path],
) -> None:
    (a, b), worker_env, broker, log_dir = scaled
    await wait_fanout(a, broker)
    users = [await register(b.url) for _ in range(3)]
    client = await connect(a.url, users[0])  # connected to node a; the jobs are sent through node b
    try:
        body = {"language": "python", "source": "print(input() * 2)", "stdin": "ab"}
        status, first = await rest(b.url, "POST", "/executions", users[0], json=body)
        assert status == 202 and first["state"] == "queued", first
        status, second = await rest(b.url, "POST", "/executions", users[1], json=body)
        assert status == 202, second
        status, refused = await rest(a.url, "POST", "/executions", users[2], json=body)
        assert status == 429 and refused["error"]["code"] == "rate_limited", refused  # two wait already

        worker = WorkerProcess(["--concurrency", "2"], worker_env, log_dir / "worker.log")
        try:
            await asyncio.to_thread(worker.wait_ready)  # the client keeps answering pings meanwhile
            pushed = await client.inbox.wait_for("execution:finished", lambda e: e["id"] == first["id"], within=30)
            assert (pushed["status"], pushed["stdout"], pushed["state"]) == ("ok", "abab\n", "finished")
            status, stored = await rest(a.url, "GET", f"/executions/{first['id']}", users[0])
            assert status == 200 and stored == pushed

            judged = {
                "language": "c",
                "source": '#include <stdio.h>\nint main(void){int n; scanf("%d", &n); printf("%d\\n", n * n);}',
                "tests": [{"stdin": "3", "expected_output": "9"}, {"stdin": "5", "expected_output": "25"}],
            }
            status, verdict = await rest(a.url, "POST", "/executions?wait=true", users[2], json=judged)
            assert status == 200, verdict
            assert (verdict["judge"]["verdict"], verdict["judge"]["passed"]) == ("accepted", 2)

            status, slow = await rest(
                b.url, "POST", "/executions?wait=true", users[1],
                json={"language": "python", "source": "while True: pass", "limits": {"cpu_ms": 300}},
            )  # fmt: skip
            assert (status, slow["status"]) == (200, "time_limit_exceeded")

            # A workspace's Run on a worker: its output streams from the worker to the runner's connection.
            status, ws = await rest(b.url, "POST", "/workspaces", users[0], json={"name": "W", "language": "python"})
            assert status == 201, ws
            status, run = await rest(b.url, "POST", f"/workspaces/{ws['id']}/runs?wait=true", users[0], json={})
            assert status == 200 and run["execution"]["status"] == "ok", run
            out = await client.inbox.wait_for("run:output", lambda e: e["run_id"] == run["id"], within=30)
            assert (out["stream"], out["text"]) == ("stdout", run["execution"]["stdout"])
            done = await client.inbox.wait_for("run:finished", lambda e: e["run_id"] == run["id"], within=30)
            assert done["execution"]["stdout"] == run["execution"]["stdout"]

            # An interactive Run on a worker: its first line arrives while it waits for input, and what is
            # typed through node a (the run was started through node b) reaches it over Redis.
            editor = YClient()
            try:
                await editor.connect(b.url, ws["id"], users[0].token)
                await editor.wait_synced()
                program = "print('name?')\nprint('hello', input())\n"
                editor.edit("main.py", 0, delete=len(editor.text("main.py")), insert=program)
                size = len(program.encode())
                for _ in range(200):  # until the server holds the edit
                    status, listed = await rest(b.url, "GET", f"/workspaces/{ws['id']}/files", users[0])
                    if {"path": "main.py", "size": size} in listed["items"]:
                        break
                    await asyncio.sleep(0.05)
            finally:
                await editor.close()
            status, console = await rest(
                b.url, "POST", f"/workspaces/{ws['id']}/runs", users[0], json={"interactive": True}
            )  # fmt: skip
            assert status == 202, console
            first = await client.inbox.wait_for("run:output", lambda e: e["run_id"] == console["id"], within=30)
            assert first["text"] == "name?\n"
            assert not [e for e in client.inbox.of("run:finished") if e["run_id"] == console["id"]]
            ack = await client.ask("run:input", {"workspace_id": ws["id"], "run_id": console["id"], "data": "ada\n"})
            assert ack == {"ok": True}, ack
            done = await client.inbox.wait_for("run:finished", lambda e: e["run_id"] == console["id"], within=30)
            assert (done["execution"]["status"], done["execution"]["stdout"]) == ("ok", "name?\nhello ada\n"), done
            ack = await client.ask("run:input", {"workspace_id": ws["id"], "run_id": console["id"], "data": "x"})
            assert (ack["ok"], ack["error"]["code"]) == (False, "conflict")
        finally:
            assert stop_pid(worker.proc, signal.SIGTERM) == 0, worker.log.read_text()[-3000:]
    finally:
        await client.disconnect()


def test_the_worker_refuses_to_start_without_redis(tmp_path: Path, database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDYHALL_")}
    env.update(STUDYHALL_DATABASE_URL=database_url, STUDYHALL_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "realtime.cli", "worker"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "STUDYHALL_REDIS_URL" in done.stderr


async def test_contest_judging_on_workers_goes_by_turns_between_users(
    scaled: tuple[list[Node], dict[str, str], str, Path],
) -> None:
    """Issue 12: one user's queued submissions do not keep another's, in another contest, waiting behind them."""
    (a, _), worker_env, _, log_dir = scaled
    flooder, other = await register(a.url, "flooder"), await register(a.url, "other")
    contests = []
    for who in (flooder, other):
        status, community = await rest(a.url, "POST", "/communities", who, json={"name": f"C {uuid.uuid4().hex[:8]}"})
        assert status == 201, community
        now = datetime.now(UTC)
        status, contest = await rest(a.url, "POST", "/contests", who, json={
            "title": "On workers", "organizer_id": community["id"], "communities": [community["id"]],
            "problems": [{"title": "Three", "tests": [{"stdin": "", "expected_output": "3"}]}],
            "starts_at": (now - timedelta(minutes=1)).isoformat(), "ends_at": (now + timedelta(hours=1)).isoformat(),
        })  # fmt: skip
        assert status == 201, contest
        contests.append(f"/contests/{contest['id']}/problems/{contest['problems'][0]['id']}/submissions")
    worker = WorkerProcess(["--concurrency", "2"], worker_env, log_dir / "worker-contests.log")
    try:
        await asyncio.to_thread(worker.wait_ready)
        sleeper = {"language": "python", "source": "import time\ntime.sleep(2)\nprint(3)\n"}
        # Two workers: two of the four run, two wait; then another user's submission arrives, through the same node.
        for _ in range(4):
            status, sub = await rest(a.url, "POST", contests[0], flooder, json=sleeper)
            assert status == 202, sub
        status, judged = await rest(a.url, "POST", contests[1] + "?wait=true", other,
                                    json={"language": "python", "source": "print(3)"})  # fmt: skip
        assert (status, judged["verdict"]) == (200, "accepted"), judged
        status, mine = await rest(a.url, "GET", contests[0].rsplit("/problems", 1)[0] + "/submissions", flooder)
        assert status == 200 and len(mine["items"]) == 4
        assert len([s for s in mine["items"] if s["verdict"] is None]) >= 1, mine  # judged before the last two
    finally:
        assert stop_pid(worker.proc, signal.SIGTERM) == 0, worker.log.read_text()[-3000:]
