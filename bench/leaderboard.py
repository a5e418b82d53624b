"""Leaderboard benchmark: board reads at 100,000 members, and verdict → ``leaderboard:update`` at 500 subscribers.

Usage::

    STUDYHALL_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test [STUDYHALL_REDIS_URL=redis://...] \\
        .venv/bin/python -m bench.leaderboard [--seconds 20] [--rate 200] [--subscribers 500]

Part 1 (board reads): 100,000 members in 1,000 communities written to the in-process board and (with
``STUDYHALL_REDIS_URL``) to Redis sorted sets; then 5,000 rank reads of random members and 5,000 top-100
reads, one after another, each timed.

Part 2 (live pushes): the whole app (``create_app``, real Postgres, Socket.IO on 127.0.0.1) runs in this
process with 500 Socket.IO subscribers (:mod:`bench.lightclient`, raw websockets) to one contest of 1,000
communities and 100,000 members. Verdicts arrive at ``--rate`` per second for ``--seconds``. **Simulated**:
the sandbox. Two cores cannot judge 200 programs a second (a sandboxed Python run costs ~36 ms), so each
verdict is stored exactly as the judge's completion does (``store.record_verdict`` then the coalescer's
``touch``) without running a program. Everything after that is the real path: standings recomputed from
Postgres, boards rewritten, one push per 500 ms fanned out to every subscriber. Clients and server share
this process and its two cores, so the latencies are an upper bound.

Reported: (a) from a verdict being stored to a subscriber receiving the first push that includes it (the
500 ms coalescing is part of this by design), (b) from the moment the coalescing allowed a push
(500 ms after the previous one) to each subscriber receiving it: what the server adds to the window, (c) from a push
being emitted to each subscriber receiving it (fan-out), (d) REST ``GET /contests/{id}/board?limit=100``
and ``/board/me`` through the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
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
from bench.rest import _admin_sql
from core_api.auth import AUTH
from core_api.context import CORE
from core_api.settings import load_settings
from leaderboards import store
from leaderboards.board import Board, LocalBoard, RedisBoard
from leaderboards.core import board_score
from leaderboards.handlers import CONTESTS
from realtime.app import create_app

MEMBERS, COMMUNITIES = 100_000, 1_000


def pct(data: list[float], q: float) -> float:
    ordered = sorted(data)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def row(label: str, data: list[float]) -> str:
    ms = [d * 1000 for d in data]
    return f"| {label} | {len(ms):,} | {pct(ms, 0.5):.2f} | {pct(ms, 0.99):.2f} | {max(ms):.2f} |"


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


async def populate(pool: asyncpg.Pool, admin: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID, list[uuid.UUID]]:
    """100k users in 1k communities and a running contest between them; returns contest, problem, users."""
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
        contest, problem = uuid.uuid4(), uuid.uuid4()
        now = datetime.now(UTC)
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
    return contest, problem, users


async def live(args: argparse.Namespace, database_url: str) -> list[str]:
    settings = load_settings(
        database_url=database_url, data_dir=Path("/tmp/studyhall-bench-lb"), jwt_secret="bench-" + "x" * 40,
        sandbox_executor="local", contest_cycle_s=0, db_pool_max=10, log_level="WARNING",
    )  # fmt: skip
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    lines: list[str] = []
    try:
        pool, contests = app[CORE].pool, app[CONTESTS]
        admin = uuid.uuid4()
        await pool.execute(
            "INSERT INTO users (id, email, display_name, password_hash, role) VALUES ($1, 'a@b.c', 'A', 'x', 'admin')",
            admin,
        )
        contest_id, problem_id, users = await populate(pool, admin)
        contest = await store.contest_row(pool, contest_id)
        assert contest is not None
        refresh_starts: list[float] = []
        emits: list[float] = []
        inner_refresh, inner_emit = contests.live.refresh, contests.transport.emit

        async def refresh(cid: uuid.UUID, ready: Any) -> None:
            refresh_starts.append(time.perf_counter())
            await inner_refresh(cid, ready)

        async def emit(event: str, data: Any, *, to: str | list[str], skip_sid: str | list[str] | None = None) -> None:
            if to == f"contest:{contest_id}":
                emits.append(time.perf_counter())
            await inner_emit(event, data, to=to, skip_sid=skip_sid)

        contests.live.refresh = refresh
        contests.transport.emit = emit  # type: ignore[method-assign]
        received: list[list[float]] = [[] for _ in range(args.subscribers)]
        clients: list[LightClient] = []
        tokens = app[AUTH].tokens
        for i in range(args.subscribers):

            def on_event(raw: bytes, mine: list[float] = received[i]) -> None:
                if b"leaderboard:update" in raw[:40]:
                    mine.append(time.perf_counter())

            client = await connect("127.0.0.1", port, tokens.issue(users[i], "student"), on_event=on_event)
            await client.call("contest:subscribe", {"contest_id": str(contest_id)})
            clients.append(client)
        for r in received:
            r.clear()
        emits.clear()
        refresh_starts.clear()
        # Verdicts at the rate, each stored as the judge's completion stores it.
        rng = random.Random(2)
        verdict_times: list[float] = []
        interval = 1 / args.rate
        started = time.perf_counter()
        for n in range(int(args.rate * args.seconds)):
            due = started + n * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            user = users[rng.randrange(MEMBERS)]
            sub = uuid.uuid4()
            await pool.execute(
                "INSERT INTO contest_submissions (id, contest_id, problem_id, user_id, community_id, language, source,"
                " submitted_at) SELECT $1, $2, $3, $4, community_id, 'python', 'x', now() FROM community_members"
                " WHERE user_id = $4",
                sub, contest_id, problem_id, user,
            )  # fmt: skip
            await store.record_verdict(pool, sub, rng.choice(["accepted", "wrong_answer"]), 1, 1)
            verdict_times.append(time.perf_counter())
            contests.live.touch(contest_id)
        await contests.live.idle()
        deadline = time.perf_counter() + 10
        # Polling is fine here: a benchmark waiting for its last deliveries, not a test synchronising.
        while time.perf_counter() < deadline and any(len(r) < len(emits) for r in received):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        fanout = [r[k] - emits[k] for r in received for k in range(min(len(r), len(emits)))]
        to_push: list[float] = []
        for t in verdict_times:
            k = next((i for i, s in enumerate(refresh_starts) if s >= t), None)
            if k is not None:
                to_push.extend(r[k] - t for r in received if len(r) > k)
        # The part of a verdict's wait that is not the coalescing: from the moment the interval allowed a
        # push (500 ms after the previous one) to a subscriber receiving it.
        window_to_push = [
            r[k] - (emits[k - 1] + contests.live.interval_s)
            for r in received
            for k in range(1, min(len(r), len(emits)))
        ]
        lines.append(row(f"verdict → push received ({args.subscribers} subscribers)", to_push))
        lines.append(row("push allowed (previous push + 500 ms) → received", window_to_push))
        lines.append(row("push emitted → received (fan-out)", fanout))
        spent = sum(e - s for s, e in zip(refresh_starts, emits, strict=False)) / max(1, len(emits))
        lines.append(
            f"\npushes: {len(emits)} in {args.seconds} s ({len(verdict_times):,} verdicts); refresh"
            f" (one Postgres read, the public view computed, then waiting for the interval) mean"
            f" {spent * 1000:.1f} ms from its start to the public emit"
        )
        for c in clients:
            c.close()
        # REST reads through the server (auth, the contest row, then the board).
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {tokens.issue(users[0], 'student')}"}
            base = f"http://127.0.0.1:{port}/api/v1/contests/{contest_id}"

            async def get(path: str) -> None:
                async with http.get(base + path, headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
                    await resp.read()

            lines.append(row("REST GET /board?limit=100", await timed(lambda: get("/board?limit=100"), 2000)))
            lines.append(row("REST GET /board/me", await timed(lambda: get("/board/me"), 2000)))
    finally:
        await runner.cleanup()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--subscribers", type=int, default=500)
    args = parser.parse_args()
    server_url = os.environ["STUDYHALL_DATABASE_URL"]
    print(f"# studyhall leaderboard benchmark — {platform.node()}, {os.cpu_count()} CPUs,"
          f" {time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    print("\n| measure | samples | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: |")
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
