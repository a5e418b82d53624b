"""Leaderboard benchmark: board reads at 100,000 members, and verdict → ``leaderboard:update`` at 500 subscribers.

Usage::

    STUDYHALL_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test [STUDYHALL_REDIS_URL=redis://...] \\
        .venv/bin/python -m bench.leaderboard [--seconds 20] [--rate 200] [--subscribers 500] \\
        [--modes full,incremental] [--offers deflate,plain] [--reads 500] [--no-gc-freeze]

Bounded: about 2 × ``--seconds`` plus two minutes of setup, refreshes alone and reads.

Part 1 (board reads): 100,000 members in 1,000 communities written to the in-process board and (with
``STUDYHALL_REDIS_URL``) to Redis sorted sets; then 5,000 rank reads of random members and 5,000 top-100
reads, one after another, each timed.

Part 2 (the server's work for one push, alone): an app in this process with nothing else in its event
loop; a contest already holding N judged attempts gets the 100 verdicts 200/s brings in 500 ms, then one
refresh is timed; 40 times, for the old full recompute (:func:`full_refresh`) and the incremental one.

Part 3 (live pushes, as a deployment sees them): three processes. The server (``bench.pushlive server``:
``create_app``, real Postgres, Socket.IO on 127.0.0.1) alone in its process and event loop; ``--subscribers``
Socket.IO clients (:mod:`bench.lightclient`, raw websockets) in this process, subscribed to a contest of
1,000 communities and 100,000 members; verdicts at ``--rate`` per second for ``--seconds`` from a third
process (``bench.pushlive generator``: it stores the submission, as the submit request does, and hands
it to the server, which completes it as the judge does: ``store.record_verdict`` then the coalescer's
``touch``). **Simulated**: the sandbox's run (two cores cannot judge 200 programs a second; a sandboxed
Python run costs ~36 ms). Once per mode, each with a fresh server and contest: ``full`` pushes as main
did before issue 13, ``incremental`` as now; and per ``--offers``: subscribers that offer per-message deflate
as browsers do (``deflate``: the server then writes one shared compressed frame to them; the subscribers inflate
only the first 64 bytes of each push, enough to see its name, as a stand-in for clients on other machines) or
that offer nothing (``plain``: the uncompressed frame).

Reported per mode, with the machine's load average: (a) **server-added**, per push, taken inside the
server by the hook behind ``studyhall_leaderboard_push_added_seconds``: from the moment the coalescing
allowed the push (500 ms after the previous one, or the verdict itself after a quiet interval: the
coalescer's ``allowed_at``) to the public push handed to Socket.IO (written to this node's sockets, or
published to Redis when scaled); (b) the same to each subscriber receiving it; (c) from the hand-over to
each subscriber receiving it (fan-out); (d) from a verdict being stored to a subscriber receiving the first
push that includes it (the 500 ms coalescing is part of this by design); the CPU of the server's loop
for each refresh; garbage collections (``gc.callbacks``) inside (a), and all of them. All processes time
on ``CLOCK_MONOTONIC``. Then REST ``GET /contests/{id}/board?limit=100`` and ``/board/me`` through the
server. The server settles its heap as deployed (``gc.freeze()`` after start-up and after a standings build,
core_api/heap.py); ``--no-gc-freeze`` runs it with ``STUDYHALL_GC_FREEZE=false`` for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import platform
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from bench.lightclient import LightClient, connect
from bench.pushlive import METRICS_TOKEN, server_settings
from bench.rest import _admin_sql
from core_api.auth import Tokens
from core_api.context import CORE
from core_api.db import migrate
from leaderboards.board import Board, LocalBoard, RedisBoard
from leaderboards.core import board_score
from leaderboards.handlers import CONTESTS
from leaderboards.live import Ready
from leaderboards.service import UPDATE_EVENT, Contests, contest_room
from leaderboards.standings import Computed, board_key, person_member, push_payload
from realtime.app import create_app

MEMBERS, COMMUNITIES = 100_000, 1_000


def pct(data: list[float], q: float) -> float:
    ordered = sorted(data)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def row(label: str, data: list[float]) -> str:
    ms = [d * 1000 for d in data]
    if not ms:
        return f"| {label} | 0 | | | | |"
    return f"| {label} | {len(ms):,} | {pct(ms, 0.5):.2f} | {pct(ms, 0.95):.2f} | {pct(ms, 0.99):.2f} | {max(ms):.2f} |"


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


def rank_of(board: Board, key: str, names: list[str]) -> Callable[[], Awaitable[Any]]:
    rng = random.Random(3)
    return lambda: board.rank(key, rng.choice(names))


def top_of(board: Board, key: str) -> Callable[[], Awaitable[Any]]:
    return lambda: board.top(key, 100)


async def board_reads(redis_url: str | None) -> list[str]:
    rng = random.Random(1)
    members = {uuid.UUID(int=rng.getrandbits(128)).hex: board_score(rng.randint(0, 8), rng.randint(0, 3000))
               for _ in range(MEMBERS)}  # fmt: skip
    groups = {f"c{i}": board_score(rng.randint(0, 800), rng.randint(0, 100_000)) for i in range(COMMUNITIES)}
    names = list(members)
    boards: list[tuple[str, Board]] = [("in-process", LocalBoard())]
    if redis_url:
        boards.append(("Redis", RedisBoard(redis_url)))
    lines = []
    for label, board in boards:
        key = f"bench:{uuid.uuid4().hex}"
        await board.replace(key + ":users", members)
        await board.replace(key + ":communities", groups)
        lines.append(row(f"{label}: rank of a member (100k)", await timed(rank_of(board, key + ":users", names), 5000)))
        lines.append(row(f"{label}: top-100 members", await timed(top_of(board, key + ":users"), 5000)))
        lines.append(row(f"{label}: top-100 communities (1k)", await timed(top_of(board, key + ":communities"), 5000)))
        if isinstance(board, RedisBoard):
            await board.redis.delete(f"studyhall:board:{key}:users", f"studyhall:board:{key}:communities")
        await board.close()
    return lines


async def populate(pool: asyncpg.Pool, admin: uuid.UUID) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """100k users in 1k communities (each user in one); returns the users and the communities."""
    users = [uuid.uuid4() for _ in range(MEMBERS)]
    communities = [uuid.uuid4() for _ in range(COMMUNITIES)]
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "users", records=[(u, f"m{i}@bench.example", f"Member {i}", "x") for i, u in enumerate(users)],
            columns=["id", "email", "display_name", "password_hash"],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "communities", records=[(c, f"Community {i}", admin) for i, c in enumerate(communities)],
            columns=["id", "name", "created_by"],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "community_members", records=[(communities[i % COMMUNITIES], u, "member") for i, u in enumerate(users)],
            columns=["community_id", "user_id", "role"],
        )  # fmt: skip
    return users, communities


async def new_contest(
    pool: asyncpg.Pool, admin: uuid.UUID, communities: list[uuid.UUID]
) -> tuple[uuid.UUID, uuid.UUID]:
    """A running contest between all the communities, with one problem; returns the contest and the problem."""
    contest, problem = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO contests (id, title, created_by, starts_at, ends_at) VALUES ($1, 'Bench war', $2, $3, $4)",
            contest, admin, now - timedelta(minutes=1), now + timedelta(hours=2),
        )  # fmt: skip
        await conn.copy_records_to_table(
            "contest_communities", records=[(contest, c) for c in communities], columns=["contest_id", "community_id"]
        )
        await conn.execute(
            "INSERT INTO contest_problems (id, contest_id, ordinal, label, title, tests, cpu_ms, memory_kb)"
            " VALUES ($1, $2, 0, 'A', 'A', '[]'::jsonb, 1000, 65536)",
            problem, contest,
        )  # fmt: skip
    return contest, problem


async def full_refresh(contests: Contests, contest_id: uuid.UUID, ready: Ready | None = None) -> None:
    """The refresh of main before issue 13: every attempt read from Postgres and scored again for each push
    (``core.standings``, the full recompute), both boards of both views replaced whole."""
    compute = await contests._reader(await contests.contest(contest_id))
    done: list[Computed] = []
    for view in ("public", "jury"):
        computed = compute(view)
        payload = push_payload(computed)
        if ready is not None and not done:
            await ready()
        await contests.transport.emit(UPDATE_EVENT, payload, to=contest_room(contest_id, view))
        if ready is not None and not done:
            contests.live.pushed(contest_id)
        done.append(computed)
    for computed in done:
        await contests.board.replace(
            board_key(contest_id, "users", computed.view),
            {person_member(p): board_score(p.score, p.penalty) for p in computed.people},
        )
        await contests.board.replace(
            board_key(contest_id, "communities", computed.view),
            {g.id: board_score(g.score, g.penalty) for g in computed.groups},
        )


class Server:
    """``python -m bench.pushlive server``: the app alone in a process of its own (see there)."""

    def __init__(self, database_url: str, mode: str, gc_freeze: bool) -> None:
        self.args = ["--database-url", database_url, "--mode", mode] + ([] if gc_freeze else ["--no-gc-freeze"])
        self.proc: asyncio.subprocess.Process | None = None
        self.port = self.control_port = 0

    async def __aenter__(self) -> Server:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.pushlive", "server", *self.args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 120)).decode().split()
        assert line and line[0] == "READY", line
        self.port, self.control_port = int(line[1]), int(line[2])
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.control_port, limit=1 << 26)
        return self

    async def ask(self, what: str) -> bytes:
        self.writer.write(what.encode() + b"\n")
        await self.writer.drain()
        return await self.reader.readline()

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def scrape_push_added(port: int) -> str:
    """The server's own histogram, ``studyhall_leaderboard_push_added_seconds``: its count and sum."""
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        async with http.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as resp:
            text = await resp.text()
    found = {}
    for line in text.splitlines():
        for part in ("count", "sum"):
            if line.startswith(f"studyhall_leaderboard_push_added_seconds_{part} "):
                found[part] = float(line.split()[1])
    return f"count {found.get('count', 0):.0f}, sum {found.get('sum', 0):.3f} s"


async def verdicts_and_pushes(
    args: argparse.Namespace,
    database_url: str,
    tokens: Tokens,
    contest_id: uuid.UUID,
    problem_id: uuid.UUID,
    users: list[uuid.UUID],
    mode: str,
    offer: str = "deflate",
) -> list[str]:
    """The server alone in its process (``mode``: ``full``, the old full recompute, or ``incremental``),
    ``--subscribers`` Socket.IO clients in this process, verdicts at ``--rate`` for ``--seconds`` from a
    third process. Returns the table's rows."""
    received: list[list[float]] = [[] for _ in range(args.subscribers)]
    async with Server(database_url, mode, not args.no_gc_freeze) as server:
        clients: list[LightClient] = []
        for i in range(args.subscribers):

            def on_event(raw: bytes, mine: list[float] = received[i]) -> None:
                if b"leaderboard:update" in raw[:40]:
                    mine.append(time.monotonic())

            token = tokens.issue(users[i], "student")
            deflate = offer == "deflate"
            client = await connect("127.0.0.1", server.port, token, on_event=on_event, deflate=deflate, inflate_head=64)
            assert client.deflate_accepted == deflate
            clients.append(client)
        for client in clients:
            ack = await client.call("contest:subscribe", {"contest_id": str(contest_id)})
            assert ack.get("ok"), ack
        await asyncio.sleep(1)  # the snapshot's build done, the first answers delivered
        for r in received:
            r.clear()
        if args.nice:  # the subscribers (this process) and the verdicts (a child) yield the CPU to the server
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        load_before = os.getloadavg()
        generator = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.pushlive", "generator", "--database-url", database_url,
            "--control-port", str(server.control_port), "--contest", str(contest_id), "--problem", str(problem_id),
            "--rate", str(args.rate), "--seconds", str(args.seconds), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await generator.communicate()
        sent = json.loads(out)
        if args.nice:  # back to 0 (root may) for the next mode's server, which would inherit it
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        assert await server.ask("IDLE") == b"OK\n"
        load_after = os.getloadavg()
        data = json.loads(await server.ask("DUMP"))
        if args.raw:
            Path(args.raw, f"{mode}.json").write_text(json.dumps(data))  # noqa: ASYNC240 (a bench, once)
        deadline = time.monotonic() + 10
        # Polling is fine here: a benchmark waiting for its last deliveries, not a test synchronising.
        while time.monotonic() < deadline and any(len(r) < len(data["pushes"]) for r in received):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        histogram = await scrape_push_added(server.port)
        reads = await rest_reads(server.port, tokens.issue(users[0], "student"), contest_id, args.reads)
        for client in clients:
            client.close()
    pushes: list[tuple[float, float]] = data["pushes"]
    allowed, emitted = [a for a, _ in pushes], [e for _, e in pushes]
    added = [e - a for a, e in pushes]
    starts = data["refresh_starts"]
    fanout = [r[k] - emitted[k] for r in received for k in range(min(len(r), len(emitted)))]
    allowed_to_received = [r[k] - allowed[k] for r in received for k in range(min(len(r), len(allowed)))]
    to_push: list[float] = []
    for t in data["stored"]:
        k = bisect.bisect_left(starts, t)
        if k < len(starts):
            to_push.extend(r[k] - t for r in received if len(r) > k)
    # Where the server-added time goes: the push ready after the interval allowed it (its refresh started too
    # late for how long it took), the wait past the allowed moment (the event loop busy; the Redis gate), the
    # hand-over itself (the public payload written to every socket, or published to Redis).
    late = [max(0.0, c - a) for (c, _), a in zip(data["ready"], allowed, strict=False)]
    overshoot = [r - max(c, a) for (c, r), a in zip(data["ready"], allowed, strict=False)]
    handover = [e - r for (_, r), e in zip(data["ready"], emitted, strict=False)]
    # The hand-over's parts: the frame written to this node's sockets (wall and CPU), and the Redis publish (from
    # sending it to Redis's reply, the event loop serving others meanwhile): the first of each inside it.
    windows = [(r, e) for (_, r), e in zip(data["ready"], emitted, strict=False)]
    local_wall = [b - a for r, e in windows for a, b, _ in data["local"] if r <= a <= e][: len(windows)]
    local_cpu = [c for r, e in windows for a, _, c in data["local"] if r <= a <= e][: len(windows)]
    publish = [b - a for r, e in windows for a, b in data["published"] if r <= a <= e][: len(windows)]
    # Garbage collections that paused the server between a push being allowed and its emit.
    in_push = [d for s, d, _ in data["gcs"] for a, e in pushes if a <= s <= e]
    label = "full recompute (before)" if mode == "full" else "incremental (now)"
    label += ", subscribers offer deflate" if offer == "deflate" else ", subscribers offer no deflate"
    if args.no_gc_freeze:
        label += ", STUDYHALL_GC_FREEZE=false"
    if args.nice:
        label += f", load generators at nice {args.nice}"
    lines = [
        row(f"{label}: push allowed → public push handed to Socket.IO (server-added, per push)", added),
        row(f"{label}: … of which the push was ready after the interval allowed it", late),
        row(f"{label}: … of which past the allowed moment (or ready) until ready() returned (loop, gate)", overshoot),
        row(f"{label}: … of which the hand-over to Socket.IO (emit)", handover),
        row(f"{label}: … … the frame written to this node's {args.subscribers} sockets (wall)", local_wall),
        row(f"{label}: … … the frame written to this node's {args.subscribers} sockets (CPU)", local_cpu),
        row(f"{label}: … … the Redis publish, sent → Redis replied", publish),
        row(f"{label}: push allowed → received (per subscriber)", allowed_to_received),
        row(f"{label}: public push handed to Socket.IO → received (fan-out)", fanout),
        row(f"{label}: verdict stored → push received", to_push),
        row(f"{label}: refresh start → push ready, CPU of the server's event loop", data["work_cpu"]),
        row(f"{label}: garbage collections inside allowed → emitted", in_push),
        row(f"{label}: every garbage collection of the server", [d for _, d, _ in data["gcs"]]),
        f"| {label}: {len(pushes)} pushes, {sent['sent']:,} verdicts in {sent['took']:.1f} s"
        f" ({sent['sent'] / sent['took']:.0f}/s, asked {args.rate:g}/s); server's histogram {histogram};"
        f" standings builds {data['builds']}, heap settles {data['settles']}; load average (1, 5, 15 min)"
        f" {' '.join(f'{x:.1f}' for x in load_before)} → {' '.join(f'{x:.1f}' for x in load_after)}"
        " | | | | | |",
    ]
    return lines + [row(f"{label}: {what}", data) for what, data in reads]


async def rest_reads(port: int, token: str, contest_id: uuid.UUID, n: int) -> list[tuple[str, list[float]]]:
    """REST reads through the server (auth, the contest row, then the board), after the verdicts."""
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{port}/api/v1/contests/{contest_id}"

        async def get(path: str) -> None:
            async with http.get(base + path, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()

        return [
            ("REST GET /board?limit=100", await timed(lambda: get("/board?limit=100"), n)),
            ("REST GET /board/me", await timed(lambda: get("/board/me"), n)),
        ]


async def refresh_alone(
    app: web.Application, admin: uuid.UUID, users: list[uuid.UUID], communities: list[uuid.UUID], preload: int
) -> list[str]:
    """The server's work for one push, alone on the event loop (no subscribers, no load generator in the
    loop): a contest already holding ``preload`` judged attempts gets the 100 verdicts that 200/s brings in
    500 ms, then one refresh is timed (read, score, both views' pushes, boards); 40 times per mode."""
    pool, contests = app[CORE].pool, app[CONTESTS]
    rng = random.Random(5)
    lines = []
    for mode in ("full", "incremental"):
        contest_id, problem_id = await new_contest(pool, admin, communities)
        when = datetime.now(UTC)

        def batch(
            n: int, contest_id: uuid.UUID = contest_id, problem_id: uuid.UUID = problem_id, when: datetime = when
        ) -> list[Any]:
            picked = [rng.randrange(MEMBERS) for _ in range(n)]
            return [(uuid.uuid4(), contest_id, problem_id, users[i], communities[i % COMMUNITIES], "python", "x",
                     when, rng.choice(["accepted", "wrong_answer"]), 1, 1, when) for i in picked]  # fmt: skip

        columns = ["id", "contest_id", "problem_id", "user_id", "community_id", "language", "source",
                   "submitted_at", "verdict", "passed", "total", "judged_at"]  # fmt: skip
        await pool.copy_records_to_table("contest_submissions", records=batch(preload), columns=columns)
        contest = await contests.contest(contest_id)
        await contests.snapshot(contest, "public")  # the node's standings built, as a subscriber's arrival does
        await contests.standings_live.write_boards(contest_id)
        wall, cpu = [], []
        for _ in range(40):
            await pool.copy_records_to_table("contest_submissions", records=batch(100), columns=columns)
            start, start_cpu = time.perf_counter(), time.thread_time()
            if mode == "full":
                await full_refresh(contests, contest_id)
            else:
                await contests.refresh(contest_id)
            wall.append(time.perf_counter() - start)
            cpu.append(time.thread_time() - start_cpu)
        label = "full recompute (before)" if mode == "full" else "incremental (now)"
        lines.append(row(f"{label}: one refresh alone, {preload:,} attempts + 100 new, wall", wall))
        lines.append(row(f"{label}: the same, CPU time", cpu))
        contests.standings_live.forget(contest_id)
    return lines


async def live(args: argparse.Namespace, database_url: str) -> list[str]:
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    lines: list[str] = []
    try:
        admin = uuid.uuid4()
        await pool.execute(
            "INSERT INTO users (id, email, display_name, password_hash, role) VALUES ($1, 'a@b.c', 'A', 'x', 'admin')",
            admin,
        )
        users, communities = await populate(pool, admin)
        if args.preload:
            # The refresh alone: an app in this process (no subscribers, nothing else in its loop).
            app = create_app(server_settings(database_url), run_migrations=False)
            runner = web.AppRunner(app)
            await runner.setup()
            try:
                for preload in args.preload:
                    lines += await refresh_alone(app, admin, users, communities, preload)
            finally:
                await runner.cleanup()
        tokens = Tokens(server_settings(database_url).jwt_key(), 3600)
        for mode in args.modes.split(","):
            for offer in args.offers.split(","):
                contest_id, problem_id = await new_contest(pool, admin, communities)
                lines += await verdicts_and_pushes(
                    args, database_url, tokens, contest_id, problem_id, users, mode, offer
                )
    finally:
        await pool.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--modes", default="full,incremental", help="pushes made by: full (before), incremental")
    parser.add_argument("--offers", default="deflate,plain",
                        help="subscribers offer: deflate (as browsers do), plain (nothing); a run each")  # fmt: skip
    parser.add_argument("--reads", type=int, default=500, help="REST reads of each kind, per mode")
    parser.add_argument("--raw", help="a directory to write each mode's server measurements to (JSON)")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness the subscribers and the verdict generator take once connected (the server"
                        " keeps 0), as if they ran on other machines")  # fmt: skip
    parser.add_argument("--no-gc-freeze", action="store_true", help="the server without gc.freeze() (core_api/heap.py)")
    parser.add_argument("--preload", type=int, nargs="*", default=[4000, 40000],
                        help="attempts already in the contest for the refresh-alone measures")  # fmt: skip
    args = parser.parse_args()
    server_url = os.environ["STUDYHALL_DATABASE_URL"]
    print(f"# studyhall leaderboard benchmark — {platform.node()}, {os.cpu_count()} CPUs,"
          f" {time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    print(f"load average (1, 5, 15 min) at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n| measure | samples | p50 ms | p95 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for line in asyncio.run(board_reads(os.environ.get("STUDYHALL_REDIS_URL"))):
        print(line)
    name = f"studyhall_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin_sql(server_url, f'CREATE DATABASE "{name}"'))
    try:
        for line in asyncio.run(live(args, server_url.rsplit("/", 1)[0] + "/" + name)):
            print(line)
    finally:
        asyncio.run(_admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
