"""REST benchmark: requests/s and p50/p99 latency for login, course list and progress update.

Usage::

    .venv/bin/python -m bench.rest                      # starts its own `studyhall serve`, pinned to CPU 0
    BENCH_ADMIN_EMAIL=... BENCH_ADMIN_PASSWORD=... .venv/bin/python -m bench.rest --url http://127.0.0.1:8080

Each scenario runs twice with 50 concurrent clients: closed loop (as fast as the server answers) and
open loop at a fixed offered rate (default 500 requests/s; latency is measured from the moment a
request was due, so queueing delay counts). Login is offered at ``--login-rate`` (default 30/s)
instead: each login costs an argon2id hash, tens of milliseconds of CPU by design, so one core cannot
do 500/s. Without ``--url`` the server gets Postgres from ``STUDYHALL_DATABASE_URL`` (a fresh database
is created and dropped) or else the embedded one. The ``healthz`` row is the floor: the same HTTP
stack with no database and no auth.

``--analytics`` (needs ``STUDYHALL_DATABASE_URL``) runs the analytics benchmark instead (:func:`analytics_main`):
it writes 10,000 learners, 200 courses of 10 lectures, 50,000 enrollments and the progress rows 1,000,000 heartbeats
leave behind straight into Postgres (SQL with generate_series, the rollup triggers off, then the rollups built by
``analytics_rebuild()``), then measures the course dashboard of the 10,000-learner course and the platform view
(closed loop, and open loop at ``--rate``, default 100/s for this mode), and what the rollup triggers cost per
progress heartbeat: single heartbeat statements with and without the trigger, and ``PUT /lectures/{id}/progress``
at ``--rate`` with and without it::

    STUDYHALL_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python -m bench.rest --analytics
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

VIDEO = "https://example.com/lecture.mp4"
Request = Callable[[aiohttp.ClientSession, int], Awaitable[int]]


@dataclass
class Result:
    scenario: str
    mode: str
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))]


async def closed_loop(session: aiohttp.ClientSession, request: Request, clients: int, seconds: float) -> Result:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client(n: int) -> None:
        nonlocal errors
        i = 0
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            status = await request(session, n * 1_000_000 + i)
            latencies.append((time.perf_counter() - started) * 1000)
            errors += status >= 400
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return Result("", "closed", len(latencies), errors, time.perf_counter() - started, latencies)


async def open_loop(
    session: aiohttp.ClientSession, request: Request, clients: int, seconds: float, rate: float
) -> Result:
    """Offer ``rate`` requests/s spread over ``clients`` workers; latency counts from each request's due time."""
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    t0 = time.perf_counter() + 0.05
    due = [t0 + i / rate for i in range(total)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def client() -> None:
        nonlocal errors
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            wait = due[i] - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            status = await request(session, i)
            latencies.append((time.perf_counter() - due[i]) * 1000)
            errors += status >= 400

    await asyncio.gather(*(client() for _ in range(clients)))
    return Result("", f"open {rate:.0f}/s", len(latencies), errors, time.perf_counter() - t0, latencies)


# --- the server under test -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`studyhall serve` in a child process pinned to CPU 0 (the load generator takes CPU 1)."""

    def __init__(self, database_url: str | None, extra_env: dict[str, str] | None = None, *, pin: bool = True) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="studyhall-bench-")
        # Traversable by the embedded PostgreSQL's own user (the server refuses a data dir it cannot reach;
        # mkdtemp makes the directory private). The data dir inside keeps its own permissions.
        os.chmod(self.tmp.name, 0o755)
        self.extra_env = extra_env or {}
        self.log = Path(self.tmp.name) / "server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.db_name: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.pin = pin  # False: the server (and the ffmpeg it runs) may use every core

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STUDYHALL_")}
        env.update(STUDYHALL_DATA_DIR=str(Path(self.tmp.name) / "data"), STUDYHALL_LOG_LEVEL="WARNING")
        # Every simulated learner registers from 127.0.0.1: lift the per-address registration limit.
        env.update(STUDYHALL_REGISTER_MAX_PER_ADDRESS="1000000")
        if self.database_url:
            self.db_name = f"studyhall_bench_{uuid.uuid4().hex[:8]}"
            asyncio.run(_admin_sql(self.database_url, f'CREATE DATABASE "{self.db_name}"'))
            env["STUDYHALL_DATABASE_URL"] = self.database_url.rsplit("/", 1)[0] + "/" + self.db_name
        env.update(self.extra_env)
        self.env = env
        cmd = [sys.executable, "-m", "realtime.cli", "serve", "--port", str(self.port)]
        if self.pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            cmd = ["taskset", "-c", "0", *cmd]
        with self.log.open("wb") as log:  # a file, not a pipe nobody reads: a chatty server must not block
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.log.read_text(errors="replace")
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{err}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready within 60 s")

    def create_admin(self, email: str, password: str) -> None:
        cli = [sys.executable, "-m", "realtime.cli", "create-admin", "--email", email, "--password", password]
        subprocess.run(cli, env=self.env, check=True, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.db_name and self.database_url:
            asyncio.run(_admin_sql(self.database_url, f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
        self.tmp.cleanup()


async def _admin_sql(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# --- data and scenarios ----------------------------------------------------------------------


@dataclass
class World:
    url: str
    student_tokens: list[str]
    students: list[tuple[str, str]]
    lecture_ids: list[str]


async def call(session: aiohttp.ClientSession, method: str, url: str, token: str | None = None, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, headers=headers, **kw) as resp:
        body = await resp.json()
        if resp.status >= 400:
            raise RuntimeError(f"{method} {url} -> {resp.status} {body}")
        return body


async def seed(session: aiohttp.ClientSession, url: str, students: int) -> World:
    """An instructor's published course with 10 lectures and ``students`` enrolled learners, over HTTP.

    Granting the instructor role needs an admin: ``BENCH_ADMIN_EMAIL``/``BENCH_ADMIN_PASSWORD`` (made
    with ``studyhall create-admin`` by ``main`` when the bench starts the server itself).
    """
    api = url + "/api/v1"
    tag = uuid.uuid4().hex[:6]
    admin_email = os.environ["BENCH_ADMIN_EMAIL"]
    admin_password = os.environ["BENCH_ADMIN_PASSWORD"]
    admin = await call(session, "POST", api + "/auth/login", json={"email": admin_email, "password": admin_password})
    teacher_email = f"teacher-{tag}@bench.example"
    teacher = await call(
        session,
        "POST",
        api + "/auth/register",
        json={"email": teacher_email, "password": "bench-password", "display_name": "Teacher"},
    )
    await call(session, "PUT", f"{api}/users/{teacher['id']}/role", admin["access_token"], json={"role": "instructor"})
    t = await call(session, "POST", api + "/auth/login", json={"email": teacher_email, "password": "bench-password"})
    course = await call(session, "POST", api + "/courses", t["access_token"], json={"title": "Bench course"})
    lectures = []
    for i in range(10):
        lec = await call(
            session,
            "POST",
            f"{api}/courses/{course['id']}/lectures",
            t["access_token"],
            json={
                "title": f"L{i}",
                "media_kind": "video",
                "media_url": "https://example.com/v.mp4",
                "duration_s": 600.0,
            },
        )
        lectures.append(lec["id"])
    await call(session, "POST", f"{api}/courses/{course['id']}/publish", t["access_token"])
    for i in range(5):  # a few more published courses so the list has something to page
        c = await call(session, "POST", api + "/courses", t["access_token"], json={"title": f"Extra {i}"})
        await call(
            session,
            "POST",
            f"{api}/courses/{c['id']}/lectures",
            t["access_token"],
            json={"title": "Intro", "media_kind": "hls", "media_url": "https://example.com/x.m3u8", "duration_s": 60.0},
        )
        await call(session, "POST", f"{api}/courses/{c['id']}/publish", t["access_token"])
    tokens, creds = [], []
    for i in range(students):
        email = f"learner-{tag}-{i}@bench.example"
        await call(
            session,
            "POST",
            api + "/auth/register",
            json={"email": email, "password": "bench-password", "display_name": f"Learner {i}"},
        )
        pair = await call(session, "POST", api + "/auth/login", json={"email": email, "password": "bench-password"})
        await call(session, "POST", f"{api}/courses/{course['id']}/enroll", pair["access_token"])
        tokens.append(pair["access_token"])
        creds.append((email, "bench-password"))
    return World(url, tokens, creds, lectures)


def scenarios(world: World) -> dict[str, Request]:
    api = world.url + "/api/v1"

    async def healthz(session: aiohttp.ClientSession, i: int) -> int:
        async with session.get(world.url + "/healthz") as resp:
            await resp.read()
            return resp.status

    async def login(session: aiohttp.ClientSession, i: int) -> int:
        email, password = world.students[i % len(world.students)]
        async with session.post(api + "/auth/login", json={"email": email, "password": password}) as resp:
            await resp.read()
            return resp.status

    async def course_list(session: aiohttp.ClientSession, i: int) -> int:
        token = world.student_tokens[i % len(world.student_tokens)]
        async with session.get(api + "/courses?limit=20", headers={"Authorization": f"Bearer {token}"}) as resp:
            await resp.read()
            return resp.status

    async def progress(session: aiohttp.ClientSession, i: int) -> int:
        token = world.student_tokens[i % len(world.student_tokens)]
        lecture = world.lecture_ids[(i // 7) % len(world.lecture_ids)]
        body = {"position_s": float(i % 590), "completed": False}
        async with session.put(
            f"{api}/lectures/{lecture}/progress", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            await resp.read()
            return resp.status

    return {"healthz": healthz, "login": login, "course list": course_list, "progress update": progress}


async def run(args: argparse.Namespace, url: str) -> list[Result]:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    results: list[Result] = []
    connector = aiohttp.TCPConnector(limit=args.clients)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            world = await seed(session, url, args.students)
            for name, request in scenarios(world).items():
                if args.only and name not in args.only:
                    continue
                await closed_loop(session, request, args.clients, 1.0)  # warm-up
                for res in (
                    await closed_loop(session, request, args.clients, args.seconds),
                    await open_loop(
                        session, request, args.clients, args.seconds, args.login_rate if name == "login" else args.rate
                    ),
                ):
                    res.scenario = name
                    results.append(res)
                    print_row(res)
    finally:
        await connector.close()
    return results


HEADER = f"{'scenario':<16} {'mode':<12} {'requests':>9} {'errors':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"


def print_row(r: Result) -> None:
    counts = f"{r.requests:>9} {r.errors:>7} {r.rps:>8.0f}"
    print(f"{r.scenario:<16} {r.mode:<12} {counts} {r.pct(0.5):>8.1f} {r.pct(0.99):>8.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="benchmark this running server (needs BENCH_ADMIN_EMAIL/PASSWORD)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=500.0, help="offered load of the open-loop runs")
    parser.add_argument(
        "--login-rate", type=float, default=30.0, help="offered login rate (argon2 costs ~25 ms of CPU per login)"
    )
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--analytics", action="store_true", help="the analytics benchmark (see the module's doc)")
    parser.add_argument("--events", type=int, default=1_000_000, help="analytics: progress heartbeats generated")
    parser.add_argument("--learners", type=int, default=10_000, help="analytics: learners (all in the big course)")
    parser.add_argument("--courses", type=int, default=200, help="analytics: courses")
    parser.add_argument("--statements", type=int, default=10_000, help="analytics: heartbeat statements timed per side")
    args = parser.parse_args()
    if args.analytics:
        analytics_main(args)
        return
    print(f"# studyhall REST benchmark — {platform.node()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}")
    print(
        f"# {args.clients} clients, {args.seconds:.0f} s per run; open loop offers {args.rate:.0f} req/s"
        f" ({args.login_rate:.0f} req/s for login); server pinned to CPU 0, load generator to CPU 1"
    )
    print(HEADER)
    server: Server | None = None
    url = args.url
    if url is None:
        server = Server(os.environ.get("STUDYHALL_DATABASE_URL"))
        server.start()
        url = server.url
        os.environ.setdefault("BENCH_ADMIN_EMAIL", "bench-admin@bench.example")
        os.environ.setdefault("BENCH_ADMIN_PASSWORD", "bench-admin-password")
        server.create_admin(os.environ["BENCH_ADMIN_EMAIL"], os.environ["BENCH_ADMIN_PASSWORD"])
    try:
        results = asyncio.run(run(args, url))
    finally:
        if server is not None:
            server.stop()
    slow = [r for r in results if r.mode.startswith("open") and r.scenario in ("course list", "progress update")]
    if slow:
        worst = max(r.pct(0.99) for r in slow)
        verdict = "met" if worst < 50 else "NOT met"
        target = f"p99 < 50 ms at {args.rate:.0f} req/s for reads and progress writes"
        print(f"# target {target}: {verdict} (worst {worst:.1f} ms)")


# --- analytics -------------------------------------------------------------------------------------------------


@dataclass
class AnalyticsWorld:
    course_id: str
    fresh_lectures: list[str]
    """Lectures of the big course no learner below has opened (the heartbeat runs start them)."""
    tokens: list[str]
    admin_token: str
    events: int


async def analytics_generate(db_url: str, args: argparse.Namespace) -> tuple[uuid.UUID, list[uuid.UUID], int, float]:
    """Write the data straight into Postgres; answers the big course, its lectures, the heartbeats and the seconds
    it took. Course 0 has every learner; each learner is also in up to 4 of the other courses. A learner watches
    the first n lectures of a course (n skewed low: a funnel) and each (learner, lecture) got a number of 40 s
    heartbeats drawn so that they add up to about ``args.events``; the row holds what those heartbeats leave
    behind (watched from 0, completed at 90 %, the last one at a random time since the enrollment)."""
    import argon2
    import asyncpg

    started = time.perf_counter()
    conn = await asyncpg.connect(db_url)
    try:
        pw = argon2.PasswordHasher().hash("bench-password")
        learners = [uuid.uuid4() for _ in range(args.learners)]
        owner = uuid.uuid4()
        courses = [uuid.uuid4() for _ in range(args.courses)]
        lectures = [[uuid.uuid4() for _ in range(10)] for _ in courses]
        await conn.execute("ALTER TABLE enrollments DISABLE TRIGGER analytics_enrollments")
        await conn.execute("ALTER TABLE lecture_progress DISABLE TRIGGER analytics_progress")
        await conn.execute(
            "INSERT INTO users (id, email, display_name, password_hash, role)"
            " SELECT id, 'bench-' || id || '@bench.example', 'Learner ' || n, $2, 'student'"
            " FROM unnest($1::uuid[]) WITH ORDINALITY AS u(id, n)",
            learners, pw,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO users (id, email, display_name, password_hash, role)"
            " VALUES ($1::uuid, 'owner-' || $1::text || '@bench.example', 'Bench owner', $2, 'instructor')",
            owner, pw,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO courses (id, owner_id, title, status, published_at)"
            " SELECT id, $2, 'Bench course ' || n, 'published', now() FROM unnest($1::uuid[]) WITH ORDINALITY c(id, n)",
            courses, owner,
        )  # fmt: skip
        await conn.executemany(
            "INSERT INTO lectures (id, course_id, position, title, media_kind, media_url, duration_s)"
            " SELECT id, $1, n - 1, 'Lecture ' || n, 'video', 'https://example.com/v.mp4', 600"
            " FROM unnest($2::uuid[]) WITH ORDINALITY l(id, n)",
            [(c, ls) for c, ls in zip(courses, lectures, strict=True)],
        )
        await conn.execute(
            """INSERT INTO enrollments (id, user_id, course_id, created_at)
               SELECT gen_random_uuid(), u.id, c.id, now() - random() * interval '90 days'
               FROM unnest($1::uuid[]) WITH ORDINALITY u(id, n)
               JOIN unnest($2::uuid[]) WITH ORDINALITY c(id, m)
                 ON c.m = 1 OR c.m - 2 IN ((u.n * 7) % ($3 - 1), (u.n * 11 + 1) % ($3 - 1),
                                            (u.n * 13 + 5) % ($3 - 1), (u.n * 29 + 11) % ($3 - 1))
               ON CONFLICT DO NOTHING""",
            learners, courses, len(courses),
        )  # fmt: skip
        # The pairs each learner watched, then heartbeats per pair scaled to the wanted total.
        await conn.execute(
            """CREATE TEMP TABLE bench_reached AS
               SELECT user_id, course_id, created_at, 1 + floor(10 * random() ^ 2)::int AS n FROM enrollments"""
        )
        await conn.execute(
            """CREATE TEMP TABLE bench_pairs AS
               SELECT e.user_id, l.id AS lecture_id, e.course_id, e.created_at, random() AS r
               FROM bench_reached e JOIN lectures l ON l.course_id = e.course_id AND l.position < e.n"""
        )
        pairs = await conn.fetchval("SELECT count(*) FROM bench_pairs")
        mean = args.events / pairs
        await conn.execute("ALTER TABLE bench_pairs ADD COLUMN beats int")
        await conn.execute("UPDATE bench_pairs SET beats = 1 + floor(r * (2 * $1::float8 - 1))::int", mean)
        events = int(await conn.fetchval("SELECT sum(beats) FROM bench_pairs"))
        await conn.execute(
            """INSERT INTO lecture_progress (user_id, lecture_id, course_id, position_s, completed, watched, watched_s,
                                             updated_at)
               SELECT user_id, lecture_id, course_id, least(600, beats * 40), least(600, beats * 40) >= 540,
                      ARRAY[0, least(600, beats * 40)]::float8[], least(600, beats * 40),
                      created_at + random() * (now() - created_at)
               FROM bench_pairs"""
        )
        await conn.execute("SELECT analytics_rebuild()")
        await conn.execute("ALTER TABLE enrollments ENABLE TRIGGER analytics_enrollments")
        await conn.execute("ALTER TABLE lecture_progress ENABLE TRIGGER analytics_progress")
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return courses[0], lectures[0], events, time.perf_counter() - started


async def heartbeat_statements(db_url: str, lecture_ids: list[uuid.UUID], n: int) -> dict[str, list[float]]:
    """The cost of the rollup trigger per heartbeat, in the database: ``n`` single heartbeat writes (as
    core_api/progress.py upserts them: one row, a new watched interval, a new timestamp) with the trigger and ``n``
    without, interleaved in blocks of 500 so that both see the same machine. Each block is one transaction, so the
    commit's WAL flush (the same with or without the trigger) is left out of the statements' times.
    """
    import asyncpg

    conn = await asyncpg.connect(db_url)
    out: dict[str, list[float]] = {"with rollups": [], "without rollups": []}
    try:
        rows = await conn.fetch(
            "SELECT user_id, lecture_id, watched_s FROM lecture_progress WHERE lecture_id = ANY($1::uuid[])"
            " ORDER BY random() LIMIT $2",
            lecture_ids, 2 * n,
        )  # fmt: skip
        sql = """INSERT INTO lecture_progress (user_id, lecture_id, course_id, position_s, completed, watched,
                                               watched_s, updated_at)
                 SELECT $1, $2, l.course_id, $3, false, ARRAY[0, $3]::float8[], $3, now()
                 FROM lectures l WHERE l.id = $2
                 ON CONFLICT (user_id, lecture_id) DO UPDATE
                   SET position_s = EXCLUDED.position_s, watched = EXCLUDED.watched, watched_s = EXCLUDED.watched_s,
                       updated_at = EXCLUDED.updated_at"""
        stmt = await conn.prepare(sql)
        block = 500
        for start in range(0, len(rows), 2 * block):
            for side, enabled in (("with rollups", True), ("without rollups", False)):
                action = "ENABLE" if enabled else "DISABLE"
                await conn.execute(f"ALTER TABLE lecture_progress {action} TRIGGER analytics_progress")
                part = rows[start : start + 2 * block][(0 if enabled else block) :][:block]
                async with conn.transaction():  # one commit per block: the WAL flush is not what is measured
                    for r in part:
                        t0 = time.perf_counter()
                        await stmt.fetch(r["user_id"], r["lecture_id"], min(600.0, float(r["watched_s"]) + 3.0))
                        out[side].append((time.perf_counter() - t0) * 1000)
        await conn.execute("ALTER TABLE lecture_progress ENABLE TRIGGER analytics_progress")
    finally:
        await conn.close()
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU the processes have used so far (Linux /proc), in seconds; gone processes count 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


async def database_pids(db_url: str) -> list[int]:
    """The Postgres backends serving the bench's database (the server's pool), to read their CPU."""
    import asyncpg

    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [r["pid"] for r in rows]


async def set_rollup_trigger(db_url: str, enabled: bool) -> None:
    await _admin_sql(
        db_url, f"ALTER TABLE lecture_progress {'ENABLE' if enabled else 'DISABLE'} TRIGGER analytics_progress"
    )


async def analytics_run(args: argparse.Namespace, server: Server) -> list[Result]:
    import asyncpg

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    db_url = server.env["STUDYHALL_DATABASE_URL"]
    course, lectures, events, took = await analytics_generate(db_url, args)
    print(
        f"# generated {args.learners} learners, {args.courses} courses, {events:,} heartbeats in {took:.0f} s",
        flush=True,
    )
    results: list[Result] = []
    connector = aiohttp.TCPConnector(limit=args.clients)
    api = server.url + "/api/v1"
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            admin = await call(
                session, "POST", api + "/auth/login",
                json={"email": os.environ["BENCH_ADMIN_EMAIL"], "password": os.environ["BENCH_ADMIN_PASSWORD"]},
            )  # fmt: skip
            headers = {"Authorization": f"Bearer {admin['access_token']}"}
            first = await call(session, "GET", f"{api}/courses/{course}/analytics", admin["access_token"])
            assert first["totals"]["enrolled"] == args.learners, first["totals"]
            print(
                f"# the big course: {first['totals']['enrolled']} enrolled, {first['totals']['completed']} completed,"
                f" lecture 1 opened by {first['lectures'][0]['viewers']},"
                f" lecture 10 by {first['lectures'][9]['viewers']}",
                flush=True,
            )

            def getter(path: str) -> Request:
                async def get(session: aiohttp.ClientSession, i: int) -> int:
                    async with session.get(api + path, headers=headers) as resp:
                        await resp.read()
                        return resp.status

                return get

            dashboards = {
                "course dashboard": getter(f"/courses/{course}/analytics?days=30"),
                "platform view": getter("/admin/analytics?days=30"),
            }
            assert server.proc is not None
            for name, request in dashboards.items():
                await closed_loop(session, request, 10, 1.0)  # warm-up
                for open_rate in (None, args.rate):  # closed loop (10 clients), then open loop
                    pids = await database_pids(db_url)
                    before = cpu_seconds([server.proc.pid]), cpu_seconds(pids)
                    if open_rate is None:
                        res = await closed_loop(session, request, 10, args.seconds)
                    else:
                        res = await open_loop(session, request, args.clients, args.seconds, open_rate)
                    app_cpu = (cpu_seconds([server.proc.pid]) - before[0]) * 1000 / max(1, res.requests)
                    db_cpu = (cpu_seconds(pids) - before[1]) * 1000 / max(1, res.requests)
                    res.scenario = name
                    results.append(res)
                    print_row(res)
                    print(f"#   CPU per request: server {app_cpu:.2f} ms, Postgres {db_cpu:.2f} ms", flush=True)

            # Heartbeats over HTTP: learners of the big course who never opened lectures 9 and 10 report their
            # position there, one second further each time (credited, so every report moves the rollups).
            conn = await asyncpg.connect(db_url)
            try:
                learners = await conn.fetch(
                    """SELECT u.email FROM enrollments e JOIN users u ON u.id = e.user_id
                       WHERE e.course_id = $1 AND NOT EXISTS (SELECT 1 FROM lecture_progress p
                             WHERE p.user_id = e.user_id AND p.lecture_id = ANY($2::uuid[])) LIMIT 50""",
                    course, lectures[8:],
                )  # fmt: skip
            finally:
                await conn.close()
            tokens = []
            for r in learners:
                pair = await call(
                    session, "POST", api + "/auth/login", json={"email": r["email"], "password": "bench-password"}
                )
                tokens.append(pair["access_token"])

            counters = {lectures[8]: itertools.count(), lectures[9]: itertools.count()}

            def heartbeat(lecture: uuid.UUID) -> Request:
                async def put(session: aiohttp.ClientSession, i: int) -> int:
                    # Each learner one second further than their previous report on this lecture, across runs.
                    n = next(counters[lecture])
                    body = {"position_s": float(n // len(tokens)) % 600}
                    async with session.put(
                        f"{api}/lectures/{lecture}/progress", json=body,
                        headers={"Authorization": f"Bearer {tokens[n % len(tokens)]}"},
                    ) as resp:  # fmt: skip
                        await resp.read()
                        return resp.status

                return put

            for name, lecture, enabled in (
                ("heartbeat, no rollups", lectures[8], False),
                ("heartbeat + rollups", lectures[9], True),
            ) * 2:  # twice, alternating, to see the machine's noise
                await set_rollup_trigger(db_url, enabled)
                await open_loop(session, heartbeat(lecture), args.clients, 2.0, args.rate)  # warm-up
                res = await open_loop(session, heartbeat(lecture), args.clients, args.seconds, args.rate)
                res.scenario = name
                results.append(res)
                print_row(res)
            await set_rollup_trigger(db_url, True)
    finally:
        await connector.close()

    # The rollups equal the raw rows (but for lecture 9 of the big course, written without them above).
    conn = await asyncpg.connect(db_url)
    try:
        mismatched = await conn.fetchval(
            """SELECT count(*) FROM (SELECT lecture_id, count(*) AS v, count(*) FILTER (WHERE completed) AS c,
                                            sum(watched_s) AS w FROM lecture_progress GROUP BY 1) raw
               FULL JOIN (SELECT lecture_id, sum(viewers) AS v, sum(completions) AS c, sum(watched_s) AS w
                          FROM analytics_lecture_stats GROUP BY 1) kept USING (lecture_id)
               WHERE lecture_id <> $1 AND (raw.v IS DISTINCT FROM kept.v OR raw.c IS DISTINCT FROM kept.c
                  OR abs(coalesce(raw.w, 0) - coalesce(kept.w, 0)) > 0.01)""",
            lectures[8],
        )
        lectures_total = await conn.fetchval("SELECT count(*) FROM lectures")
    finally:
        await conn.close()
    print(f"# lectures whose rollups differ from the raw rows: {mismatched} of {lectures_total - 1}", flush=True)

    t0 = time.perf_counter()
    await _admin_sql(db_url, "SELECT analytics_rebuild()")  # the no-rollups run left lecture 9 behind
    print(f"# analytics_rebuild() over everything: {time.perf_counter() - t0:.1f} s", flush=True)
    costs = await heartbeat_statements(db_url, lectures, args.statements)
    print(f"{'heartbeat statement':<24} {'n':>7} {'mean ms':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for side, ms in costs.items():
        data = sorted(ms)
        mean = sum(data) / len(data)
        print(
            f"{side:<24} {len(data):>7} {mean:>8.3f} {data[len(data) // 2]:>8.3f} {data[int(0.99 * len(data))]:>8.3f}"
        )
    return results


def analytics_main(args: argparse.Namespace) -> None:
    database_url = os.environ.get("STUDYHALL_DATABASE_URL")
    if not database_url:
        raise SystemExit("--analytics needs STUDYHALL_DATABASE_URL (a Postgres server to make a database on)")
    if args.rate == 500.0:
        args.rate = 100.0  # the rate for the dashboard
    print(
        f"# studyhall analytics benchmark — {platform.node()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    server = Server(database_url, {"STUDYHALL_PROGRESS_MAX_RATE": "1000"})
    server.start()
    os.environ.setdefault("BENCH_ADMIN_EMAIL", "bench-admin@bench.example")
    os.environ.setdefault("BENCH_ADMIN_PASSWORD", "bench-admin-password")
    server.create_admin(os.environ["BENCH_ADMIN_EMAIL"], os.environ["BENCH_ADMIN_PASSWORD"])
    print(HEADER)
    try:
        results = asyncio.run(analytics_run(args, server))
    finally:
        server.stop()
    dash = [r for r in results if r.mode.startswith("open") and r.scenario == "course dashboard"]
    if dash:
        worst = dash[0].pct(0.99)
        verdict = "met" if worst < 100 and not dash[0].errors else "NOT met"
        print(f"# target course dashboard p99 < 100 ms at {args.rate:.0f} req/s: {verdict} ({worst:.1f} ms)")


if __name__ == "__main__":
    main()
