"""Real server nodes for scale-out tests: the docker-compose topology, on 127.0.0.1.

``cluster(...)`` starts N ``studyhall serve`` processes that share one Postgres database and one Redis
and sign tokens with one ``STUDYHALL_JWT_SECRET``, exactly as the app services of docker-compose.yml
do (tests/test_compose.py checks that the two name the same settings). Processes are started on port 0
(the printed URL gives the real port), waited for with ``/readyz``, and stopped by PID: SIGTERM, then
SIGKILL if they do not exit. ``redis_url()`` finds a Redis to use or skips with the reason.

The async helpers (``register``, ``connect``, ``Inbox``) are what the scale-out, fuzz and JS-client
tests drive the nodes with: real REST calls and real ``socketio.AsyncClient`` connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis
import socketio

from tests.conftest import TEST_JWT_SECRET
from tests.live import LiveServer

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery staple"
METRICS_TOKEN = "nodes-metrics-" + "n" * 24
# A Redis database of its own on a shared server (Socket.IO pub/sub channels are server-wide anyway,
# but every name the tests create is unique, so concurrent runs do not disturb each other).
TEST_REDIS_DB = 11
# The settings every app node of docker-compose.yml gets too (tests/test_compose.py compares them).
NODE_SETTINGS = ("STUDYHALL_DATABASE_URL", "STUDYHALL_REDIS_URL", "STUDYHALL_JWT_SECRET")


# --- Redis -----------------------------------------------------------------------------------------


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return client.ping() is True
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A throw-away ``redis-server`` on a free port, keeping nothing on disk; stopped by PID."""

    def __init__(self, executable: str) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="studyhall-redis-"))
        self.proc = subprocess.Popen(
            [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while not redis_answers(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_pid(self.proc, signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def redis_url() -> Iterator[str]:
    """The Redis the nodes share: ``STUDYHALL_REDIS_URL``, else this machine's on 6379, else our own."""
    configured = os.environ.get("STUDYHALL_REDIS_URL")
    if configured:
        yield configured
        return
    local = f"redis://127.0.0.1:6379/{TEST_REDIS_DB}"
    if redis_answers(local):
        yield local
        return
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip(
            "no Redis for the scale-out tests: set STUDYHALL_REDIS_URL, run Redis on 127.0.0.1:6379, "
            "or put redis-server on PATH"
        )
    server = RedisServer(executable)
    try:
        yield server.url
    finally:
        server.stop()


# --- server processes ------------------------------------------------------------------------------


def stop_pid(proc: subprocess.Popen[Any], sig: signal.Signals, timeout: float = 20) -> int:
    """Signal one child process by its PID and reap it; SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=timeout)


def node_env(database_url: str, redis: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDYHALL_")}
    env.update(
        PYTHONUNBUFFERED="1",
        STUDYHALL_DATABASE_URL=database_url,
        STUDYHALL_REDIS_URL=redis,
        STUDYHALL_JWT_SECRET=TEST_JWT_SECRET,
        STUDYHALL_DATA_DIR=str(data_dir),
        STUDYHALL_ARGON2_TIME_COST="1",
        STUDYHALL_ARGON2_MEMORY_KIB="8192",
        STUDYHALL_DB_POOL_MIN="1",
        STUDYHALL_DB_POOL_MAX="5",
        STUDYHALL_LOG_LEVEL="WARNING",
        # A killed node's users leave presence after the TTL: keep it short so the test is quick, but
        # well above the beat so that a busy CI machine does not take live nodes for dead.
        STUDYHALL_PRESENCE_TTL_S="4",
        STUDYHALL_PRESENCE_HEARTBEAT_S="1",
        # Every test client registers from 127.0.0.1.
        STUDYHALL_REGISTER_MAX_PER_ADDRESS="1000000",
        STUDYHALL_METRICS_TOKEN=METRICS_TOKEN,  # /metrics is served only with a token (or on its own port)
    )
    return env


class WorkerProcess:
    """One ``studyhall worker`` process (``args`` after ``worker``); :meth:`wait_ready` returns once Celery
    consumes its queue, and :attr:`ready_line` is what the worker printed then."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "realtime.cli", "worker", *args],
                env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
            )  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.ready_line = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if "studyhall worker ready" in line:
                self.ready_line = line.strip()
                return
        raise AssertionError(f"the worker did not get ready:\n{self.log.read_text(errors='replace')[-3000:]}")


class Node:
    """One ``studyhall serve`` process; ``url`` is its base URL once :meth:`wait_ready` returned."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.url = ""
        self.log = log_dir / f"{name}.log"
        with self.log.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "realtime.cli", "serve", "--host", "127.0.0.1", "--port", "0"],
                env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
            )  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _fail(self, why: str) -> AssertionError:
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        return AssertionError(f"node {self.name}: {why}\n--- its stderr ---\n{tail}")

    def wait_ready(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while not self.url:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise self._fail(f"did not listen within {timeout}s") from None
            if line is None:
                raise self._fail(f"exited with {self.proc.wait()} before listening")
            match = re.search(r"studyhall listening on (http://\S+)", line)
            if match:
                self.url = match.group(1)
        while not self.ready():
            if self.proc.poll() is not None:
                raise self._fail(f"exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise self._fail(f"/readyz did not answer 200 within {timeout}s")
            time.sleep(0.05)
        return self.url

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as resp:
                status: int = resp.status
                return status == 200
        except (OSError, urllib.error.URLError):
            return False

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        return stop_pid(self.proc, signal.SIGTERM)

    def kill(self) -> int:
        """Die at once, the way a crashed machine does: no disconnect handlers run."""
        return stop_pid(self.proc, signal.SIGKILL)


@contextmanager
def cluster(
    database_url: str, redis: str, names: tuple[str, ...] = ("a", "b"), extra_env: dict[str, str] | None = None
) -> Iterator[list[Node]]:
    """Start the nodes in parallel, wait until each is ready, stop them all by PID on the way out.

    ``extra_env`` adds settings for every node (``{"STUDYHALL_COLLAB_UNLOAD_DELAY_S": "1"}``). Every second node
    runs on uvloop (``STUDYHALL_EVENT_LOOP``), the others on asyncio's loop, unless ``extra_env`` says otherwise.
    """
    log_dir = Path(tempfile.mkdtemp(prefix="studyhall-nodes-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, log_dir, True)
        nodes: list[Node] = []
        for i, name in enumerate(names):
            env = {**node_env(database_url, redis, log_dir / name), **(extra_env or {})}
            if i % 2 and "STUDYHALL_EVENT_LOOP" not in env:  # every second node on uvloop: both loops tested together
                env["STUDYHALL_EVENT_LOOP"] = "uvloop"
            node = Node(name, env, log_dir)
            stack.callback(node.stop)
            nodes.append(node)
        for node in nodes:
            node.wait_ready()
        yield nodes


# --- clients -----------------------------------------------------------------------------------------


@dataclass
class User:
    id: str
    email: str
    display_name: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def rest(base: str, method: str, path: str, user: User | None = None, json: Any = None) -> tuple[int, Any]:
    """One REST call to ``base + /api/v1 + path``; the JSON body (or text) with the status."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base + "/api/v1" + path, json=json, headers=user.headers if user else None) as resp,
    ):
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def register(base: str, name: str | None = None) -> User:
    """A new student account, registered and logged in over REST."""
    email = f"node-{uuid.uuid4().hex[:12]}@example.com"
    display_name = name or f"user {email[5:11]}"
    body = {"email": email, "password": PASSWORD, "display_name": display_name}
    status, created = await rest(base, "POST", "/auth/register", json=body)
    assert status == 201, created
    status, tokens = await rest(base, "POST", "/auth/login", json={"email": email, "password": PASSWORD})
    assert status == 200, tokens
    return User(created["id"], email, display_name, tokens["access_token"])


async def set_role(database_url: str, user: User, role: str) -> None:
    """Grant a platform role directly in the database (roles are read per request, so tokens keep working)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE users SET role = $1 WHERE id = $2", role, uuid.UUID(user.id))
    finally:
        await conn.close()


@dataclass
class Inbox:
    """Every server→client event one client received, in order, and a way to wait for them."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, event: str, *args: Any) -> None:
        self.events.append((event, args[0] if len(args) == 1 else list(args)))
        self._changed.set()

    def of(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def wait_for(self, event: str, check: Any = None, within: float = 10) -> Any:
        """The first ``event`` whose data passes ``check`` (received before or after the call)."""
        async with asyncio.timeout(within):
            seen = 0
            while True:
                for name, data in self.events[seen:]:
                    if name == event and (check is None or check(data)):
                        return data
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()

    async def until(self, condition: Callable[[], bool], within: float = 10) -> None:
        """Wait until ``condition()`` holds, re-checking it whenever an event arrives."""
        async with asyncio.timeout(within):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


class Client(socketio.AsyncClient):  # type: ignore[misc]
    """A ``socketio.AsyncClient`` that keeps every event it receives in ``inbox``."""

    def __init__(self, user: User | None = None) -> None:
        super().__init__(reconnection=False)
        self.user = user
        self.inbox = Inbox()
        self.on("*", self.inbox.record)

    async def ask(self, event: str, data: Any = None, within: float = 10) -> Any:
        return await self.call(event, data, timeout=within)


async def connect(base: str, user: User, transports: list[str] | None = None) -> Client:
    client = Client(user)
    await client.connect(base, auth={"token": user.token}, transports=transports or ["websocket"], wait_timeout=10)
    return client


async def wait_fanout(node: Node, redis: str, within: float = 15) -> None:
    """Return once ``node`` receives emits published to Redis.

    A node subscribes to the Socket.IO channel only when its first client connects, and Redis pub/sub
    drops what is published before the subscription: so connect a client, then emit to it from outside
    (the write-only manager the workers will use) until it arrives.
    """
    from core_api.settings import load_settings
    from realtime.sockets import external_emitter

    user = await register(node.url)
    client = await connect(node.url, user)
    emitter = external_emitter(load_settings(redis_url=redis, jwt_secret=TEST_JWT_SECRET))
    try:
        async with asyncio.timeout(within):
            while not client.inbox.of("test:fanout"):
                await emitter.emit("test:fanout", {"node": node.name}, room=f"user:{user.id}")
                with contextlib.suppress(TimeoutError):
                    await client.inbox.wait_for("test:fanout", within=0.2)
    finally:
        await client.disconnect()
        await close_emitter(emitter)


async def close_emitter(emitter: Any) -> None:
    """Close a write-only manager's Redis connection (python-socketio has no close of its own)."""
    if getattr(emitter, "redis", None) is not None:
        await emitter.redis.aclose()


class QuietLiveServer(LiveServer):
    """A :class:`LiveServer` that, once the app is cleaned up, also ends the tasks python-engineio
    leaves behind (each closed socket's ping timer sleeps on for 25 s), instead of letting asyncio
    report every one as "Task was destroyed but it is pending" when the loop closes."""

    def stop(self) -> None:
        self.runner = _CleanupThenCancel(self.runner)  # type: ignore[assignment]
        super().stop()


@dataclass
class _CleanupThenCancel:
    runner: Any

    async def cleanup(self) -> None:
        await self.runner.cleanup()
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
