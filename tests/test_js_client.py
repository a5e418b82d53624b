"""The official JavaScript client, ``socket.io-client`` from npm, against a live server.

``tests/js/socketio_check.mjs`` runs under Node.js and prints one JSON line with what it checked.
``scripts/setup`` installs ``tests/js`` with ``npm ci`` (and so does the fixture below when the
installed modules do not match ``package-lock.json``); without Node.js and npm the tests skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core_api.auth import AUTH, RegisterIn, register
from core_api.context import CORE
from tests.conftest import make_settings
from tests.live import LiveServer
from tests.nodes import QuietLiveServer, User, rest

JS = Path(__file__).resolve().parent / "js"
STAMP = JS / "node_modules" / ".studyhall-lock-sha256"  # written by scripts/setup after `npm ci`


def lock_digest() -> str:
    return hashlib.sha256((JS / "package-lock.json").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, with tests/js/node_modules installed as package-lock.json says."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are not installed: the socket.io-client tests need them (see scripts/setup)")
    if not STAMP.exists() or STAMP.read_text().strip() != lock_digest():
        result = subprocess.run(
            [npm, "ci", "--prefix", str(JS), "--no-audit", "--no-fund", "--loglevel=error"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
        STAMP.write_text(lock_digest() + "\n")
    return node


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = QuietLiveServer(make_settings(database_url, tmp_path_factory.mktemp("js-client"))).start()
    try:
        yield live
    finally:
        live.stop()


def new_user(server: LiveServer) -> User:
    app = server.app
    email = f"js-{uuid.uuid4().hex[:10]}@example.com"
    body = RegisterIn(email=email, password="correct horse battery staple", display_name="JS client")
    row = server.run(register(app[CORE], app[AUTH], body, role="student"))
    return User(str(row["id"]), email, "JS client", app[AUTH].tokens.issue(row["id"], "student"))


def run_check(node: str, mode: str, **env: str) -> dict[str, Any]:
    result = subprocess.run(
        [node, str(JS / "socketio_check.mjs"), mode],
        cwd=JS,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stdout.strip().splitlines()
    assert lines, f"the node script printed nothing (exit {result.returncode}):\n{result.stderr}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert report["ok"] is True, report.get("error")
    assert result.returncode == 0, result.stderr
    return report


def test_handshake_and_error_acks_with_socket_io_client(node: str, server: LiveServer) -> None:
    user = new_user(server)
    report = run_check(node, "handshake", STUDYHALL_URL=server.url, STUDYHALL_TOKEN=user.token)
    checks = report["checks"]
    for case in ("forged token", "empty token", "no token"):
        assert checks[case] == {"code": "unauthorized"}
    assert checks["unknown event (websocket)"] == checks["unknown event (polling,websocket)"] == "invalid_input"
    assert checks["transports (websocket)"] == ["websocket", "websocket"]
    assert checks["transports (polling,websocket)"] == ["polling", "websocket"]  # long-polling, then the upgrade


def test_chat_with_socket_io_client(node: str, server: LiveServer) -> None:
    from realtime.app import EVENTS

    missing = [e for e in ("room:join", "chat:send", "chat:history") if e not in EVENTS.specs]
    if missing:
        pytest.skip(f"{', '.join(missing)}: lands with rooms/chat (not in realtime.app.EVENTS yet)")
    user = new_user(server)
    body = {"name": "js chat", "kind": "study", "visibility": "public"}
    status, room = server.run(rest(server.url, "POST", "/rooms", user, json=body))
    assert status == 201, room
    report = run_check(node, "chat", STUDYHALL_URL=server.url, STUDYHALL_TOKEN=user.token, STUDYHALL_ROOM_ID=room["id"])
    assert report["checks"]["seq"] == 1
    assert report["checks"]["history"] == 1
    # The ws package under socket.io-client offers per-message deflate; the server takes it without
    # context takeover, and a 3 KB message went both ways compressed and came back whole.
    assert report["checks"]["long"] > 3000
    for extensions in report["checks"]["extensions"]:
        assert extensions == ["client_no_context_takeover", "server_no_context_takeover"]


def test_a_watch_party_with_socket_io_client(node: str, server: LiveServer) -> None:
    user = new_user(server)
    body = {"name": "js watch", "kind": "watch", "visibility": "private"}
    status, room = server.run(rest(server.url, "POST", "/rooms", user, json=body))
    assert status == 201, room
    report = run_check(
        node, "watch", STUDYHALL_URL=server.url, STUDYHALL_TOKEN=user.token, STUDYHALL_ROOM_ID=room["id"]
    )
    assert report["checks"]["version"] == 2  # load, then play
    assert abs(report["checks"]["offset"]) < 0.05  # one machine, one clock
