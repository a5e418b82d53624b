"""Search benchmark: p50/p99 of ``GET /search`` over generated chat, forum posts, courses and lectures, and the
cost of the search column on chat writes.

Usage::

    STUDYHALL_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python -m bench.search
    ... -m bench.search --messages 100000 --seconds 5          # a smaller, quicker run

Starts its own ``studyhall serve`` (pinned to CPU 0, bench.rest's ``Server``) on a fresh database, then writes
the data straight to Postgres with COPY: ``--messages`` chat messages (default 1,000,000) in ``--rooms`` rooms,
``--courses`` published courses (default 200) with 10 lectures each, ``--searchers`` users each a member of
``--rooms-per-searcher`` rooms; ``--posts`` forum posts (default 50,000) in topics of ``--posts-per-topic``
posts (an opening post and replies), on the boards of ``--communities`` communities (every other one private)
and of the courses, each searcher a member of ``--boards-per-searcher`` communities and enrolled in as many
courses. Texts are drawn from a Zipf-distributed vocabulary of made-up words plus some
programming terms, so some words are in a few messages and some in many. The search indexes are built after
the COPY (as a restore would), and the table vacuumed and analysed (as autovacuum would).

Each request is a signed-in searcher's default search (courses, lectures, messages and posts, ``limit=10``)
for one or two words, whole or the first letters of a longer one. Runs: closed loop (``--clients`` at once, as
fast as answered) and open loop at ``--rate`` requests/s (default 100; latency counted from each request's due
time). Target: p99 < 50 ms at 100 requests/s.

Write cost: single-row inserts into two scratch copies of ``chat_messages``, one without and one with the
generated search column and its GIN index (fastupdate on, as in migration 0027), ``--write-rows`` each,
timed per statement.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import asyncpg

from bench.rest import Request, Result, Server, call, closed_loop, open_loop, print_row

TERMS = [
    "algorithm",
    "graph",
    "python",
    "matrix",
    "vector",
    "kernel",
    "lambda",
    "tensor",
    "recursion",
    "pointer",
    "compiler",
    "database",
    "index",
    "query",
    "network",
    "socket",
    "thread",
    "process",
    "memory",
    "cache",
    "sorting",
    "hashing",
    "binary",
    "search",
    "tree",
    "heap",
    "stack",
    "queue",
    "function",
    "variable",
    "closure",
    "iterator",
    "generator",
    "exception",
    "module",
    "package",
    "testing",
    "debugging",
    "deploy",
    "container",
    "cluster",
    ").split(",
]
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def vocabulary(rng: random.Random, size: int) -> list[str]:
    words = set(TERMS)
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    ordered = sorted(words)
    rng.shuffle(ordered)
    return ordered


@dataclass
class Data:
    words: list[str]
    tokens: list[str]


async def generate(args: argparse.Namespace, server: Server, session: aiohttp.ClientSession) -> Data:
    rng = random.Random(18)
    words = vocabulary(rng, args.vocabulary)
    weights = [1 / (i + 1) ** 1.1 for i in range(len(words))]  # Zipf: the first words are in many texts
    cum: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        cum.append(total)

    def text(n: int) -> str:
        return " ".join(rng.choices(words, cum_weights=cum, k=n))

    api = server.url + "/api/v1"
    tokens, user_ids = [], []
    for i in range(args.searchers):
        email = f"searcher-{i}-{uuid.uuid4().hex[:6]}@bench.example"
        body = {"email": email, "password": "bench-password", "display_name": f"Searcher {i}"}
        user = await call(session, "POST", api + "/auth/register", json=body)
        pair = await call(session, "POST", api + "/auth/login", json={"email": email, "password": "bench-password"})
        tokens.append(pair["access_token"])
        user_ids.append(uuid.UUID(user["id"]))

    conn = await asyncpg.connect(server.env["STUDYHALL_DATABASE_URL"])
    try:
        started = time.perf_counter()
        await conn.execute(
            "DROP INDEX chat_messages_search; DROP INDEX chat_messages_room_search; DROP INDEX courses_search;"
            " DROP INDEX lectures_search; DROP INDEX forum_posts_search; DROP INDEX forum_topics_search"
        )
        rooms = [uuid.uuid4() for _ in range(args.rooms)]
        await conn.copy_records_to_table(
            "rooms",
            columns=["id", "name", "kind", "visibility", "created_by", "last_seq"],
            records=[
                (r, f"Room {i}", "study", "private", user_ids[i % len(user_ids)], -(-args.messages // len(rooms)))
                for i, r in enumerate(rooms)
            ],
        )
        members = set()
        for u in user_ids:
            for r in rng.sample(rooms, args.rooms_per_searcher):
                members.add((r, u))
        await conn.copy_records_to_table(
            "room_members", columns=["room_id", "user_id", "role"], records=[(r, u, "member") for r, u in members]
        )
        batch = 100_000
        for start in range(0, args.messages, batch):
            records = []
            for i in range(start, min(args.messages, start + batch)):
                mid = uuid.uuid4()
                room = rooms[i % len(rooms)]
                author = user_ids[i % len(user_ids)]
                records.append((mid, room, i // len(rooms) + 1, author, mid.hex, text(rng.randint(3, 20))))
            await conn.copy_records_to_table(
                "chat_messages", columns=["id", "room_id", "seq", "author_id", "client_msg_id", "body"], records=records
            )
        owner = user_ids[0]
        courses, lectures = [], []
        for _ in range(args.courses):
            cid = uuid.uuid4()
            courses.append((cid, owner, text(rng.randint(2, 6)).title(), text(rng.randint(30, 120)), "published"))
            lectures += [
                (uuid.uuid4(), cid, p, text(rng.randint(2, 6)).title(), "video", "https://example.com/v.mp4", 600.0)
                for p in range(10)
            ]
        await conn.copy_records_to_table(
            "courses", columns=["id", "owner_id", "title", "description", "status"], records=courses
        )
        await conn.copy_records_to_table(
            "lectures",
            columns=["id", "course_id", "position", "title", "media_kind", "media_url", "duration_s"],
            records=lectures,
        )
        topics = await _forums(conn, args, rng, text, user_ids, [c[0] for c in courses])
        copied = time.perf_counter() - started
        await conn.execute(
            "CREATE INDEX chat_messages_search ON chat_messages USING gin (search) WHERE deleted_at IS NULL;"
            " CREATE INDEX chat_messages_room_search ON chat_messages (room_id) INCLUDE (id, search)"
            " WHERE deleted_at IS NULL;"
            " CREATE INDEX courses_search ON courses USING gin (search);"
            " CREATE INDEX lectures_search ON lectures USING gin (search);"
            " CREATE INDEX forum_posts_search ON forum_posts USING gin (search) WHERE deleted_at IS NULL;"
            " CREATE INDEX forum_topics_search ON forum_topics USING gin (search)"
        )
        # As autovacuum would after the load: statistics, and the visibility map index-only scans rely on.
        await conn.execute("VACUUM ANALYZE chat_messages")
        await conn.execute("VACUUM ANALYZE forum_posts")
        await conn.execute("ANALYZE")
        indexed = time.perf_counter() - started - copied
        size = await conn.fetchval("SELECT pg_size_pretty(pg_relation_size('chat_messages_search'))")
        print(f"# data: {args.messages:,} messages in {args.rooms:,} rooms, {args.courses} courses, "
              f"{len(lectures):,} lectures, {args.posts:,} forum posts in {topics:,} topics; "
              f"COPY {copied:.1f} s, indexes + VACUUM ANALYZE {indexed:.1f} s; "
              f"chat index {size}", flush=True)  # fmt: skip
    finally:
        await conn.close()
    # Queries: a mid-frequency word (ranks 20..2000 of the vocabulary), sometimes two, sometimes a prefix.
    return Data(words=words, tokens=tokens)


async def _forums(
    conn: asyncpg.Connection,
    args: argparse.Namespace,
    rng: random.Random,
    text: Callable[[int], str],
    user_ids: list[uuid.UUID],
    courses: list[uuid.UUID],
) -> int:
    """COPY the communities, memberships, enrollments, topics and posts; answers how many topics."""
    communities = [uuid.uuid4() for _ in range(args.communities)]
    await conn.copy_records_to_table(
        "communities",
        columns=["id", "name", "visibility", "created_by"],
        records=[
            (c, f"Bench community {c.hex}", "private" if i % 2 else "public", user_ids[0])
            for i, c in enumerate(communities)
        ],
    )
    members = {
        (c, u) for u in user_ids for c in rng.sample(communities, min(args.boards_per_searcher, len(communities)))
    }
    await conn.copy_records_to_table(
        "community_members", columns=["community_id", "user_id", "role"], records=[(c, u, "member") for c, u in members]
    )
    enrolled = {(c, u) for u in user_ids for c in rng.sample(courses, min(args.boards_per_searcher, len(courses)))}
    await conn.copy_records_to_table(
        "enrollments", columns=["id", "course_id", "user_id"], records=[(uuid.uuid4(), c, u) for c, u in enrolled]
    )
    topics: list[tuple[uuid.UUID, uuid.UUID | None, uuid.UUID | None, uuid.UUID, str]] = []
    posts: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID | None, uuid.UUID, int, str]] = []
    for i in range(-(-args.posts // args.posts_per_topic)):
        tid = uuid.uuid4()
        community = rng.choice(communities) if i % 10 < 7 and communities else None  # 70 % on community boards
        course = None if community is not None else rng.choice(courses)
        topics.append((tid, community, course, rng.choice(user_ids), text(rng.randint(3, 8)).capitalize()))
        opening = uuid.uuid4()
        for j in range(min(args.posts_per_topic, args.posts - len(posts))):
            pid = opening if j == 0 else uuid.uuid4()
            parent = None if j == 0 else opening
            posts.append((pid, tid, parent, rng.choice(user_ids), 0 if j == 0 else 1, text(rng.randint(10, 60))))
    await conn.copy_records_to_table(
        "forum_topics", columns=["id", "community_id", "course_id", "author_id", "title"], records=topics
    )
    await conn.copy_records_to_table(
        "forum_posts", columns=["id", "topic_id", "parent_id", "author_id", "depth", "body"], records=posts
    )
    return len(topics)


def queries(data: Data, n: int) -> list[str]:
    rng = random.Random(7)
    pool = data.words[20:2000] + TERMS
    out = []
    for _ in range(n):
        picked = rng.sample(pool, rng.choice([1, 1, 2]))
        out.append(" ".join(w[: max(4, len(w) - 2)] if rng.random() < 0.3 else w for w in picked))
    return out


def scenario(url: str, data: Data) -> Request:
    api = url + "/api/v1/search"
    qs = queries(data, 10_000)
    failures: list[str] = []

    async def search(session: aiohttp.ClientSession, i: int) -> int:
        token = data.tokens[i % len(data.tokens)]
        params = {"q": qs[i % len(qs)], "limit": "10"}
        async with session.get(api, params=params, headers={"Authorization": f"Bearer {token}"}) as resp:
            body = await resp.read()
            if resp.status >= 400 and not failures:
                failures.append(f"{resp.status} {body[:300]!r}")
                print(f"# first error: {failures[0]}", flush=True)
            return resp.status

    return search


async def write_cost(url: str, rows: int) -> list[tuple[str, float, float, float]]:
    """Per-insert latency (mean, p50, p99 ms) into chat_messages-shaped tables without and with search."""
    conn = await asyncpg.connect(url)
    out = []
    try:
        await conn.execute(
            """CREATE TABLE bench_chat_plain (id uuid PRIMARY KEY, room_id uuid NOT NULL, seq bigint NOT NULL,
                   author_id uuid NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
                   deleted_at timestamptz, UNIQUE (room_id, seq));
               CREATE TABLE bench_chat_search (LIKE bench_chat_plain INCLUDING ALL,
                   search tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, body)) STORED);
               CREATE INDEX ON bench_chat_search USING gin (search) WHERE deleted_at IS NULL;
               CREATE INDEX ON bench_chat_search (room_id) INCLUDE (id, search) WHERE deleted_at IS NULL;"""
        )
        bodies = await conn.fetch("SELECT body FROM chat_messages LIMIT $1", rows)
        room = uuid.uuid4()
        tables = {"bench_chat_plain": "without search column", "bench_chat_search": "with search column + indexes"}
        times: dict[str, list[float]] = {t: [] for t in tables}
        for seq, r in enumerate(bodies):
            for table in tables if seq % 2 else reversed(tables):  # alternate, so neither goes first always
                t = time.perf_counter()
                await conn.execute(
                    f"INSERT INTO {table} (id, room_id, seq, author_id, body) VALUES ($1, $2, $3, $4, $5)",
                    uuid.uuid4(), room, seq, room, r["body"],
                )  # fmt: skip
                times[table].append((time.perf_counter() - t) * 1000)
        for table, label in tables.items():
            ts = sorted(times[table])
            out.append((label, sum(ts) / len(ts), ts[len(ts) // 2], ts[int(len(ts) * 0.99)]))
    finally:
        await conn.execute("DROP TABLE IF EXISTS bench_chat_plain, bench_chat_search")
        await conn.close()
    return out


async def run(args: argparse.Namespace, server: Server) -> list[Result]:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    results: list[Result] = []
    connector = aiohttp.TCPConnector(limit=args.clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        data = await generate(args, server, session)
        request = scenario(server.url, data)
        await closed_loop(session, request, args.clients, 1.0)  # warm-up
        print(f"{'scenario':<16} {'mode':<12} {'requests':>9} {'errors':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for res in (
            await closed_loop(session, request, args.clients, args.seconds),
            await open_loop(session, request, args.clients, args.seconds, args.rate),
        ):
            res.scenario = "search"
            results.append(res)
            print_row(res)
    if args.write_rows:
        print(f"{'chat insert':<28} {'mean ms':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for label, mean, p50, p99 in await write_cost(server.env["STUDYHALL_DATABASE_URL"], args.write_rows):
            print(f"{label:<28} {mean:>8.2f} {p50:>8.2f} {p99:>8.2f}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=2000)
    parser.add_argument("--courses", type=int, default=200)
    parser.add_argument("--posts", type=int, default=50_000, help="forum posts")
    parser.add_argument("--posts-per-topic", type=int, default=10)
    parser.add_argument("--communities", type=int, default=100, help="communities with boards (every other private)")
    parser.add_argument("--boards-per-searcher", type=int, default=5, help="communities joined, courses enrolled in")
    parser.add_argument("--searchers", type=int, default=20)
    parser.add_argument("--rooms-per-searcher", type=int, default=20)
    parser.add_argument("--vocabulary", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="offered load of the open-loop run")
    parser.add_argument("--keep", action="store_true", help="keep the generated database (its URL is printed)")
    parser.add_argument("--write-rows", type=int, default=2000, help="inserts per table for the write cost (0: skip)")
    args = parser.parse_args()
    database_url = os.environ.get("STUDYHALL_DATABASE_URL")
    if not database_url:
        parser.error("set STUDYHALL_DATABASE_URL (a Postgres server the benchmark may create a database on)")
    load = os.getloadavg()[0]
    print(f"# studyhall search benchmark — {platform.node()}, {os.cpu_count()} CPUs, load {load:.1f}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    print(f"# {args.clients} clients, {args.seconds:.0f} s per run; open loop offers {args.rate:.0f} req/s; "
          "server pinned to CPU 0, load generator to CPU 1, Postgres unpinned")  # fmt: skip
    server = Server(
        database_url, {"STUDYHALL_SEARCH_RATE_COUNT": "100000", "STUDYHALL_REGISTER_MAX_PER_ADDRESS": "1000000"}
    )
    server.start()
    try:
        results = asyncio.run(run(args, server))
    finally:
        if args.keep:
            print(f"# kept the database: {server.env['STUDYHALL_DATABASE_URL']}")
            server.db_name = None
        server.stop()
    worst = max((r.pct(0.99) for r in results if r.mode.startswith("open")), default=float("nan"))
    verdict = "met" if worst < 50 else "NOT met"
    print(
        f"# target p99 < 50 ms at {args.rate:.0f} req/s: {verdict} ({worst:.1f} ms); load now {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
