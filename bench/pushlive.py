"""The processes of ``bench/leaderboard.py``'s live part: the server alone in its process, and the verdicts.

``python -m bench.pushlive server ...`` runs the whole app (``create_app``: Postgres, Socket.IO on
127.0.0.1) alone in this process and event loop, and a control port (lines of text) for the benchmark:

- ``V <contest> <submission> <verdict>``: the judge's completion for a submission already stored, as the
  server does it when the sandbox answers (``store.record_verdict`` then the coalescer's ``touch``), in a
  task of its own; the sandbox's run itself is simulated (two cores cannot judge 200 programs a second);
- ``IDLE``: answers ``OK`` once every pending push has gone out;
- ``DUMP``: answers one JSON line with what this process measured, on its monotonic clock (which is
  ``CLOCK_MONOTONIC``, the same in every process of the machine): per push, when the interval allowed it
  and when the public push was handed to Socket.IO (the production hook behind
  ``studyhall_leaderboard_push_added_seconds``), when its refresh started and the CPU the event loop
  spent until the push was ready; when each verdict was stored; every garbage collection's pause.

``python -m bench.pushlive generator ...`` stores submissions (what the submit request does) at a rate
and hands each to the server's control port as a verdict; it prints one JSON line when done.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from core_api.context import CORE
from core_api.heap import HEAP
from core_api.settings import load_settings
from leaderboards import store
from leaderboards.handlers import CONTESTS
from realtime.app import create_app
from realtime.sockets import SOCKETS

METRICS_TOKEN = "bench-metrics-" + "m" * 40
JWT_SECRET = "bench-" + "x" * 40


def server_settings(database_url: str, gc_freeze: bool = True) -> Any:
    return load_settings(
        database_url=database_url, data_dir=Path("/tmp/studyhall-bench-lb"), jwt_secret=JWT_SECRET,
        sandbox_executor="local", contest_cycle_s=0, db_pool_max=10, log_level="WARNING",
        metrics_token=METRICS_TOKEN, gc_freeze=gc_freeze,
    )  # fmt: skip


class Probe:
    """What the server process records for the benchmark (the production code is not changed by it)."""

    def __init__(self, app: web.Application, mode: str) -> None:
        self.app = app
        self.mode = mode
        self.pushes: list[tuple[float, float]] = []  # (allowed, public push handed to Socket.IO)
        self.refresh_starts: list[float] = []
        self.work_cpu: list[float] = []  # CPU of this thread from the refresh's start to the push being ready
        self.ready: list[tuple[float, float]] = []  # the push ready (ready() called), and allowed (it returned)
        self.stored: list[float] = []
        self.gcs: list[tuple[float, float, int]] = []  # (start, seconds, generation)
        self.local: list[tuple[float, float, float]] = []  # leaderboard emits' local delivery: start, end, CPU
        self.published: list[tuple[float, float]] = []  # their Redis publish: start, end
        self._gc_start = 0.0
        self._judging: set[asyncio.Task[None]] = set()

    def install(self) -> None:
        from bench.leaderboard import full_refresh

        contests = self.app[CONTESTS]
        manager = self.app[SOCKETS].sio.manager
        emit_here, publish = manager.emit_here, getattr(manager, "_publish", None)

        async def timed_emit_here(event: str, *args: Any, **kwargs: Any) -> None:
            start, cpu = time.monotonic(), time.thread_time()
            await emit_here(event, *args, **kwargs)
            if event == "leaderboard:update":
                self.local.append((start, time.monotonic(), time.thread_time() - cpu))

        async def timed_publish(message: Any) -> Any:
            start = time.monotonic()
            try:
                return await publish(message)  # type: ignore[misc]  # set only when the manager has it
            finally:
                if isinstance(message, dict) and message.get("event") == "leaderboard:update":
                    self.published.append((start, time.monotonic()))

        manager.emit_here = timed_emit_here
        if publish is not None:
            manager._publish = timed_publish
        live = contests.live
        metric = live.observe

        def observe(seconds: float) -> None:
            now = time.monotonic()
            self.pushes.append((now - seconds, now))
            if metric is not None:
                metric(seconds)

        live.observe = observe
        inner = (lambda cid, ready: full_refresh(contests, cid, ready)) if self.mode == "full" else live.refresh

        async def refresh(cid: uuid.UUID, ready: Any) -> None:
            start, cpu = time.monotonic(), time.thread_time()

            async def timed_ready() -> None:
                self.refresh_starts.append(start)
                self.work_cpu.append(time.thread_time() - cpu)
                called = time.monotonic()
                await ready()
                self.ready.append((called, time.monotonic()))

            await inner(cid, timed_ready)

        live.refresh = refresh
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.monotonic()
        else:
            self.gcs.append((self._gc_start, time.monotonic() - self._gc_start, info["generation"]))

    async def judged(self, contest_id: uuid.UUID, submission_id: uuid.UUID, verdict: str) -> None:
        contests = self.app[CONTESTS]
        await store.record_verdict(self.app[CORE].pool, submission_id, verdict, 1, 1)
        self.stored.append(time.monotonic())
        contests.live.touch(contest_id)

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            kind, *rest = line.decode().split()
            if kind == "V":
                task = asyncio.create_task(self.judged(uuid.UUID(rest[0]), uuid.UUID(rest[1]), rest[2]))
                self._judging.add(task)
                task.add_done_callback(self._judging.discard)
            elif kind == "IDLE":
                while self._judging:
                    await asyncio.gather(*self._judging, return_exceptions=True)
                await self.app[CONTESTS].live.idle()
                writer.write(b"OK\n")
            elif kind == "DUMP":
                data = {
                    "pushes": self.pushes, "refresh_starts": self.refresh_starts, "work_cpu": self.work_cpu,
                    "ready": self.ready, "stored": self.stored, "gcs": self.gcs, "local": self.local,
                    "published": self.published, "settles": HEAP.stats.settles,
                    "builds": self.app[CONTESTS].standings_live.builds,
                }  # fmt: skip
                writer.write(json.dumps(data).encode() + b"\n")
            await writer.drain()
        writer.close()


async def serve(args: argparse.Namespace) -> None:
    app = create_app(server_settings(args.database_url, not args.no_gc_freeze), run_migrations=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    probe = Probe(app, args.mode)
    probe.install()
    control = await asyncio.start_server(probe.control, "127.0.0.1", 0)
    control_port = control.sockets[0].getsockname()[1]
    print(f"READY {port} {control_port}", flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    try:
        await stdin.read()  # until the benchmark closes our stdin
    finally:
        control.close()
        await runner.cleanup()


async def generate(args: argparse.Namespace) -> None:
    pool = await asyncpg.create_pool(args.database_url, min_size=1, max_size=2)
    users = [r["user_id"] for r in await pool.fetch("SELECT user_id FROM community_members ORDER BY user_id")]
    _, writer = await asyncio.open_connection("127.0.0.1", args.control_port)
    rng = random.Random(2)
    interval, sent = 1 / args.rate, 0
    started = time.perf_counter()
    for n in range(int(args.rate * args.seconds)):
        delay = started + n * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sub = uuid.uuid4()
        await pool.execute(
            "INSERT INTO contest_submissions (id, contest_id, problem_id, user_id, community_id, language,"
            " source, submitted_at) SELECT $1, $2, $3, $4, community_id, 'python', 'x', now()"
            " FROM community_members WHERE user_id = $4",
            sub, uuid.UUID(args.contest), uuid.UUID(args.problem), users[rng.randrange(len(users))],
        )  # fmt: skip
        writer.write(f"V {args.contest} {sub} {rng.choice(['accepted', 'wrong_answer'])}\n".encode())
        await writer.drain()
        sent += 1
    took = time.perf_counter() - started
    writer.close()
    await pool.close()
    print(json.dumps({"sent": sent, "took": took}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    roles = parser.add_subparsers(dest="role", required=True)
    server = roles.add_parser("server")
    server.add_argument("--database-url", required=True)
    server.add_argument("--mode", choices=("full", "incremental"), default="incremental")
    server.add_argument("--no-gc-freeze", action="store_true", help="STUDYHALL_GC_FREEZE=false (core_api/heap.py)")
    gen = roles.add_parser("generator")
    gen.add_argument("--database-url", required=True)
    gen.add_argument("--control-port", type=int, required=True)
    gen.add_argument("--contest", required=True)
    gen.add_argument("--problem", required=True)
    gen.add_argument("--rate", type=float, default=200)
    gen.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    asyncio.run(serve(args) if args.role == "server" else generate(args))


if __name__ == "__main__":
    main()
