"""Browser tests: the built web app (web/dist) in Debian's Chromium, driven by Playwright, against a real server.

- ``web_server``: a studyhall app serving the built app and the API on 127.0.0.1 (its own port), on the
  session's test database; ``start_server`` makes more (the restart test makes its own).
- ``open_page(...)``: a new browser context (its own storage, so its own user) and a page in it, at desktop
  or phone size; ``signed_in_page(...)`` also registers a user over REST and logs in through the form.
- Screenshots go to ``tests/browser/screenshots/`` (gitignored); the tests save them at each screen.

Chromium comes from Debian (``apt-get install chromium``; scripts/test installs it when missing): Playwright's own
browser download is not reachable here. Without Chromium or a built app these tests skip, saying why — except
with ``STUDYHALL_TEST_REQUIRE_BROWSER=1`` (set by .ci/run), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, expect

from core_api.auth import AUTH, RegisterIn, register
from core_api.context import CORE
from core_api.settings import Settings
from tests.conftest import make_settings
from tests.live import LiveServer

ROOT = Path(__file__).resolve().parents[2]
WEB_DIST = ROOT / "web" / "dist"
CHROMIUM = Path(os.environ.get("STUDYHALL_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
PASSWORD = "correct horse battery staple"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 360, "height": 740}
# How long a step may take before the test fails (the machine is small and shared; nothing waits this long
# when things work).
expect.set_options(timeout=15_000)


def _unavailable(reason: str) -> None:
    if os.environ.get("STUDYHALL_TEST_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (STUDYHALL_TEST_REQUIRE_BROWSER=1: the browser tests must run)")
    pytest.skip(reason)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last: Playwright's sync API keeps an event loop running in the main thread from
    its first use to the end of the session, and the asyncio tests (pytest-asyncio) cannot start theirs
    beside it. ``trylast``: after pytest's own reordering by parametrized fixtures, which would otherwise
    pull browser tests next to any other test that shares a session-scoped parameter."""
    here = Path(__file__).resolve().parent
    items.sort(key=lambda item: here in Path(str(item.path)).resolve().parents)


@pytest.fixture(scope="session", autouse=True)
def _database_before_playwright(database_url: str) -> str:
    """The test database is created (with asyncio.run) before Playwright's loop starts, and dropped after."""
    return database_url


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's launch arguments, with Debian's Chromium instead of Playwright's download."""
    if not CHROMIUM.exists():
        _unavailable(f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium` (scripts/test does)")
    if not (WEB_DIST / "index.html").exists():
        _unavailable(f"the web app is not built ({WEB_DIST}): run scripts/setup")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM)}


class WebServer(LiveServer):
    """A real studyhall app on 127.0.0.1 in a thread; ``port`` fixed to restart one in the same place."""

    def __init__(self, settings: Settings, port: int = 0) -> None:
        super().__init__(settings)
        self.port = port

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()
        self.port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"

    def user(self, name: str | None = None, role: str = "student") -> User:
        """A new account, created directly by the server's service (as tests/conftest.py's ApiClient does)."""
        email = f"web-{uuid.uuid4().hex[:12]}@example.com"
        display = name or f"Learner {email[4:10]}"

        async def create() -> str:
            body = RegisterIn(email=email, password=PASSWORD, display_name=display)
            row = await register(self.app[CORE], self.app[AUTH], body, role=role)  # type: ignore[arg-type]
            return str(row["id"])

        return User(self.run(create()), email, display, self)


@dataclass
class User:
    id: str
    email: str
    display_name: str
    server: WebServer

    def token(self) -> str:
        status, body = rest(self.server.url, "POST", "/auth/login", {"email": self.email, "password": PASSWORD})
        assert status == 200, body
        token: str = body["access_token"]
        return token


def rest(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """One REST call from the test itself (not the browser)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + "/api/v1" + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def start_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., WebServer]]:
    """Starts web servers on the test database (``port=`` to take a stopped one's place); stops them after."""
    servers: list[WebServer] = []

    def start(port: int = 0, **overrides: Any) -> WebServer:
        data_dir = tmp_path_factory.mktemp("web")
        settings = make_settings(database_url, data_dir, web_dir=WEB_DIST, **overrides)
        server = WebServer(settings, port)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.loop.is_running():
            server.stop()


@pytest.fixture(scope="module")
def web_server(start_server: Callable[..., WebServer]) -> WebServer:
    return start_server()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS


OpenPage = Callable[..., Page]


@pytest.fixture
def open_page(browser: Browser, web_server: WebServer) -> Iterator[OpenPage]:
    """``open_page(server=None, phone=False)``: a page in a new browser context (separate storage and user)."""
    contexts: list[BrowserContext] = []

    def open_(server: WebServer | None = None, phone: bool = False) -> Page:
        context = browser.new_context(
            base_url=(server or web_server).url,
            viewport=PHONE if phone else DESKTOP,
            is_mobile=phone,
            has_touch=phone,
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    yield open_
    for context in contexts:
        context.close()


def fits_phone(page: Page) -> None:
    """The page is no wider than a phone's screen: nothing on it scrolls sideways."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} is {width} px wide on a {PHONE['width']} px phone"


def log_in(page: Page, user: User) -> None:
    """Signs ``user`` in through the login form and waits for the main navigation."""
    page.goto("/login")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()


SignedInPage = Callable[..., tuple[Page, User]]


@pytest.fixture
def signed_in_page(open_page: OpenPage, web_server: WebServer) -> SignedInPage:
    """``signed_in_page(phone=False)``: a new user (over REST) signed in through the form in a new context."""

    def make(phone: bool = False, server: WebServer | None = None, name: str | None = None) -> tuple[Page, User]:
        server = server or web_server
        user = server.user(name)
        page = open_page(server=server, phone=phone)
        log_in(page, user)
        return page, user

    return make


def ffmpeg() -> str:
    """ffmpeg, installed with apt-get when missing and allowed (root on Debian), as scripts/test installs it."""
    found = shutil.which("ffmpeg")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):

        def apt(*args: str) -> int:
            done = subprocess.run(["apt-get", *args], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return done.returncode

        if apt("install", "-y", "-qq", "ffmpeg") != 0:
            apt("update", "-qq")
            apt("install", "-y", "-qq", "ffmpeg")
        found = shutil.which("ffmpeg")
    if found is None:
        _unavailable("no ffmpeg to make the test videos: install it with `apt-get install -y ffmpeg`")
    assert found is not None
    return found


def media_server(database_url: str, tmp_path_factory: pytest.TempPathFactory, media: Path) -> WebServer:
    """A started studyhall app that also serves the files under ``media`` at ``/test-media/``, from its own
    origin (the app's CSP plays media only from there) and with byte ranges (``FileResponse``), as media hosts
    do: Chromium cannot seek in a file served without them."""
    settings = make_settings(database_url, tmp_path_factory.mktemp("web"), web_dir=WEB_DIST)
    app_server = WebServer(settings)

    @web.middleware
    async def test_media(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/test-media/"):
            path = (media / request.path.removeprefix("/test-media/")).resolve()
            if media in path.parents and path.is_file():
                return web.FileResponse(path)
        return await handler(request)

    app_server.app.middlewares.append(test_media)
    app_server.start()
    return app_server
