"""Leaderboard benchmark: board reads at 100,000 members, and verdict → ``leaderboard:update`` at 500 subscribers.

Usage::

    STUDYHALL_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test [STUDYHALL_REDIS_URL=redis://...] \\
        .venv/bin/python -m bench.leaderboard [--seconds 20] [--rate 200] [--subscribers 500] \\
        [--modes full,incremental] [--reads 2000]

Bounded: about 2 × ``--seconds`` plus a minute of setup and reads.

Part 1 (board reads): 100,000 members in 1,000 communities written to the in-process board and (with
``STUDYHALL_REDIS_URL``) to Redis sorted sets; then 5,000 rank reads of random members and 5,000 top-100
reads, one after another, each timed.

Part 2 (live pushes): the whole app (``create_app``, real Postgres, Socket.IO on 127.0.0.1) runs in this
process with 500 Socket.IO subscribers (:mod:`bench.lightclient`, raw websockets) to a contest of 1,000
communities and 100,000 members. Verdicts arrive at ``--rate`` per second for ``--seconds``, once per mode,
each into a fresh contest, in the same run: ``full`` pushes as main did before issue 13 (every attempt
read and scored again for each push, boards replaced whole: :func:`full_refresh`), ``incremental`` as
now (this node's standings updated from the submissions changed since its last read, boards changed
member by member). **Simulated**: the sandbox. Two cores cannot judge 200 programs a second (a sandboxed
Python run costs ~36 ms), so each verdict is stored exactly as the judge's completion does
(``store.record_verdict`` then the coalescer's ``touch``) without running a program. Everything after
that is the real path. Clients and server share this process and its two cores, so the latencies are an
upper bound.

Reported per mode: (a) server-added, per push: from the moment the coalescing allowed the push (500 ms
after the previous one, or the verdict itself after a quiet interval: the coalescer's ``allowed_at``) to
the public push having been emitted (handed to Socket.IO: written to this node's sockets, or published
to Redis when scaled); (b) the same to each subscriber
receiving it; (c) from the emit to each subscriber receiving it (fan-out); (d) from a verdict being stored
to a subscriber receiving the first push that includes it (the 500 ms coalescing is part of this by
design). Then REST ``GET /contests/{id}/board?limit=100`` and ``/board/me`` through the server.
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


async def verdicts_and_pushes(
    args: argparse.Namespace,
    app: web.Application,
    clients: list[LightClient],
    received: list[list[float]],
    contest_id: uuid.UUID,
    problem_id: uuid.UUID,
    users: list[uuid.UUID],
    mode: str,
) -> list[str]:
    """Verdicts at ``--rate`` for ``--seconds`` into one contest whose subscribers are ``clients``; the
    contest's pushes made by ``mode`` (``full``: the old full recompute; ``incremental``: this node's
    standings brought up to date from the submissions changed since). Returns the table's rows."""
    pool, contests = app[CORE].pool, app[CONTESTS]
    refresh_starts: list[float] = []
    emits: list[float] = []  # public push handed to Socket.IO (its emit called)
    emitted: list[float] = []  # ... and returned (handed to Socket.IO; with Redis: published)
    allowed: list[float] = []  # when the interval allowed that push (the coalescer's clock is perf_counter)
    work: list[float] = []  # refresh start → public payload ready (read, score, build the push)
    work_cpu: list[float] = []  # the event loop's CPU time meanwhile (this refresh's, and any task run between)
    inner_emit, original = contests.transport.emit, contests.live.refresh
    inner_refresh = (lambda cid, ready: full_refresh(contests, cid, ready)) if mode == "full" else original

    async def refresh(cid: uuid.UUID, ready: Any) -> None:
        start, cpu = time.perf_counter(), time.thread_time()
        refresh_starts.append(start)

        async def timed_ready() -> None:
            work.append(time.perf_counter() - start)
            work_cpu.append(time.thread_time() - cpu)
            await ready()

        await inner_refresh(cid, timed_ready)

    async def emit(event: str, data: Any, *, to: str | list[str], skip_sid: str | list[str] | None = None) -> None:
        public = to == f"contest:{contest_id}"
        if public:
            emits.append(time.perf_counter())
            allowed.append(contests.live.allowed_at[contest_id])
        await inner_emit(event, data, to=to, skip_sid=skip_sid)
        if public:
            emitted.append(time.perf_counter())

    contests.live.refresh = refresh
    contests.live.clock = time.perf_counter
    contests.transport.emit = emit  # type: ignore[method-assign]
    for client in clients:
        ack = await client.call("contest:subscribe", {"contest_id": str(contest_id)})
        assert ack.get("ok"), ack
    for r in received:
        r.clear()
    rng = random.Random(2)
    verdict_times: list[float] = []
    interval = 1 / args.rate
    load_before = os.getloadavg()[0]
    try:
        started = time.perf_counter()
        for n in range(int(args.rate * args.seconds)):
            due = started + n * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            user = users[rng.randrange(MEMBERS)]
            sub = uuid.uuid4()
            await pool.execute(
                "INSERT INTO contest_submissions (id, contest_id, problem_id, user_id, community_id, language,"
                " source, submitted_at) SELECT $1, $2, $3, $4, community_id, 'python', 'x', now()"
                " FROM community_members WHERE user_id = $4",
                sub, contest_id, problem_id, user,
            )  # fmt: skip
            await store.record_verdict(pool, sub, rng.choice(["accepted", "wrong_answer"]), 1, 1)
            verdict_times.append(time.perf_counter())
            contests.live.touch(contest_id)
        took = time.perf_counter() - started
        await contests.live.idle()
        deadline = time.perf_counter() + 10
        # Polling is fine here: a benchmark waiting for its last deliveries, not a test synchronising.
        while time.perf_counter() < deadline and any(len(r) < len(emits) for r in received):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:
        contests.transport.emit = inner_emit  # type: ignore[method-assign]
        contests.live.refresh = original
        for client in clients:
            await client.call("contest:unsubscribe", {"contest_id": str(contest_id)})
    fanout = [r[k] - emits[k] for r in received for k in range(min(len(r), len(emits)))]
    to_push: list[float] = []
    for t in verdict_times:
        k = next((i for i, s in enumerate(refresh_starts) if s >= t), None)
        if k is not None:
            to_push.extend(r[k] - t for r in received if len(r) > k)
    added = [e - a for e, a in zip(emitted, allowed, strict=True)]
    allowed_to_received = [r[k] - allowed[k] for r in received for k in range(min(len(r), len(allowed)))]
    label = "full recompute (before)" if mode == "full" else "incremental (now)"
    lines = [
        row(f"{label}: push allowed → public push emitted (server-added, per push)", added),
        row(f"{label}: push allowed → received (per subscriber)", allowed_to_received),
        row(f"{label}: push emitted → received (fan-out)", fanout),
        row(f"{label}: verdict stored → push received", to_push),
        row(f"{label}: refresh work before the push (read, score, build the public push)", work),
        row(f"{label}: the same, CPU time of the event loop", work_cpu),
    ]
    spent = sum(e - s for s, e in zip(refresh_starts, emits, strict=False)) / max(1, len(emits))
    lines.append(
        f"| {label}: {len(emits)} pushes for {len(verdict_times):,} verdicts in {took:.1f} s"
        f" ({len(verdict_times) / took:.0f}/s, asked {args.rate:g}/s); refresh start →"
        f" public emit (including the wait for the interval) mean {spent * 1000:.1f} ms; load average"
        f" {load_before:.1f} → {os.getloadavg()[0]:.1f} | | | | |"
    )
    return lines


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
        pool = app[CORE].pool
        admin = uuid.uuid4()
        await pool.execute(
            "INSERT INTO users (id, email, display_name, password_hash, role) VALUES ($1, 'a@b.c', 'A', 'x', 'admin')",
            admin,
        )
        users, communities = await populate(pool, admin)
        for preload in args.preload:
            lines += await refresh_alone(app, admin, users, communities, preload)
        received: list[list[float]] = [[] for _ in range(args.subscribers)]
        clients: list[LightClient] = []
        tokens = app[AUTH].tokens
        for i in range(args.subscribers):

            def on_event(raw: bytes, mine: list[float] = received[i]) -> None:
                if b"leaderboard:update" in raw[:40]:
                    mine.append(time.perf_counter())

            clients.append(await connect("127.0.0.1", port, tokens.issue(users[i], "student"), on_event=on_event))
        contest_id = uuid.uuid4()
        for mode in args.modes.split(","):
            contest_id, problem_id = await new_contest(pool, admin, communities)
            lines += await verdicts_and_pushes(args, app, clients, received, contest_id, problem_id, users, mode)
        for c in clients:
            c.close()
        # REST reads through the server (auth, the contest row, then the board), of the last contest.
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {tokens.issue(users[0], 'student')}"}
            base = f"http://127.0.0.1:{port}/api/v1/contests/{contest_id}"

            async def get(path: str) -> None:
                async with http.get(base + path, headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
                    await resp.read()

            lines.append(row("REST GET /board?limit=100", await timed(lambda: get("/board?limit=100"), args.reads)))
            lines.append(row("REST GET /board/me", await timed(lambda: get("/board/me"), args.reads)))
    finally:
        await runner.cleanup()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--modes", default="full,incremental", help="pushes made by: full (before), incremental")
    parser.add_argument("--reads", type=int, default=2000, help="REST reads of each kind")
    parser.add_argument("--preload", type=int, nargs="*", default=[4000, 40000],
                        help="attempts already in the contest for the refresh-alone measures")  # fmt: skip
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
