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
"""

from __future__ import annotations

import argparse
import asyncio
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

    def __init__(self, database_url: str | None, extra_env: dict[str, str] | None = None) -> None:
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
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
