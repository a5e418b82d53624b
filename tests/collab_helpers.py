"""Helpers of the collaborative-editing tests: the official JS editor as a process, traces, workspaces.

``JsEditor`` runs ``tests/js/yjs_client.mjs`` (``yjs`` + ``y-websocket`` from npm, ``disableBc: true``)
and talks to it in JSON lines; ``require_node()`` skips when Node.js and npm are missing and installs
``tests/js`` with ``npm ci`` when its modules do not match ``package-lock.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.nodes import METRICS_TOKEN, Node, User, rest

JS = Path(__file__).resolve().parent / "js"
STAMP = JS / "node_modules" / ".studyhall-lock-sha256"  # written by scripts/setup after `npm ci`
TRACES = Path(__file__).resolve().parent / "data" / "editing-traces"


def require_node() -> str:
    """The node executable with tests/js installed; skips the test (saying why) without Node.js."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are not installed: the yjs + y-websocket tests need them (see scripts/setup)")
    digest = hashlib.sha256((JS / "package-lock.json").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text().strip() != digest:
        result = subprocess.run(
            [npm, "ci", "--prefix", str(JS), "--no-audit", "--no-fund", "--loglevel=error"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
        STAMP.write_text(digest + "\n")
    return node


def load_trace(name: str) -> dict[str, Any]:
    path = TRACES / f"{name}.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        trace: dict[str, Any] = json.load(fh)
    return trace


def ws_base(http_base: str) -> str:
    return http_base.replace("http://", "ws://", 1) + "/yjs"


async def create_workspace(base: str, user: User, **body: Any) -> dict[str, Any]:
    payload = {"name": "pair programming", "language": "python", **body}
    status, created = await rest(base, "POST", "/workspaces", user, json=payload)
    assert status == 201, created
    return dict(created)


async def loaded_documents(node: Node) -> float:
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    async with aiohttp.ClientSession() as session, session.get(node.url + "/metrics", headers=headers) as resp:
        text = await resp.text()
    match = re.search(r"^studyhall_yjs_documents_loaded (\S+)$", text, re.M)
    assert match, "the node exports studyhall_yjs_documents_loaded"
    return float(match.group(1))


async def until_unloaded(node: Node, within: float = 30) -> None:
    """Poll the node's metrics (another process: there is nothing to wait on) until it holds no document."""
    for _ in range(int(within * 10)):
        if await loaded_documents(node) == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"node {node.name} still holds documents after {within}s")


class JsEditor:
    """One ``yjs_client.mjs`` process; ``events`` keeps every JSON line it printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, node: str) -> JsEditor:
        proc = await asyncio.create_subprocess_exec(
            node,
            str(JS / "yjs_client.mjs"),
            cwd=JS,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.events.append(json.loads(line))
                self._changed.set()
        self._changed.set()

    def send(self, cmd: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    async def wait_for(
        self, event: str, check: Callable[[dict[str, Any]], bool] | None = None, within: float = 30, after: int = 0
    ) -> dict[str, Any]:
        """The first ``event`` (from index ``after`` on) passing ``check``; errors fail at once."""
        async with asyncio.timeout(within):
            while True:
                for e in self.events[after:]:
                    if e.get("event") == "error":
                        raise AssertionError(f"the JS editor failed: {e['message']}")
                    if e.get("event") == event and (check is None or check(e)):
                        return e
                if self.proc.returncode is not None and self._reader.done():
                    raise AssertionError(f"the JS editor exited ({self.proc.returncode}) before {event}")
                self._changed.clear()
                await self._changed.wait()

    async def connect(self, http_base: str, workspace_id: str, token: str | None) -> None:
        args: dict[str, Any] = {"url": ws_base(http_base), "room": workspace_id}
        if token is not None:
            args["token"] = token
        self.send("connect", **args)

    async def report(self, file: str, within: float = 30) -> dict[str, Any]:
        mark = len(self.events)
        self.send("report", file=file)
        return await self.wait_for("report", within=within, after=mark)

    async def text_becomes(self, file: str, expected: str, within: float = 60) -> str:
        """Wait until the editor's text equals ``expected`` (it checks on every update); the text it has."""
        mark = len(self.events)
        self.send("expect", file=file, text=expected, within_ms=int(within * 1000))
        answer = await self.wait_for("answer", within=within + 10, after=mark)
        return expected if answer["matched"] else str(answer.get("text"))

    async def awareness(self) -> dict[str, Any]:
        """``{client_id, states}``: the editor's own awareness client id and every state its awareness holds."""
        mark = len(self.events)
        self.send("awareness")
        return await self.wait_for("awareness", after=mark)

    async def awareness_until(self, expect: dict[int, str | None], within: float = 30) -> dict[str, Any]:
        """Wait until each listed client's ``user.name`` is the one given (``None``: it has no state);
        ``{matched, states}`` (``matched`` false after ``within`` seconds)."""
        mark = len(self.events)
        self.send("awareness_until", expect={str(k): v for k, v in expect.items()}, within_ms=int(within * 1000))
        return await self.wait_for("awareness_matched", within=within + 10, after=mark)

    async def kill(self) -> None:
        """End the editor without a word (its connection drops as if the machine had died)."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                self.send("exit")
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def stderr(self) -> str:
        if self.proc.stderr is None or self.proc.returncode is None:
            return ""
        return (await self.proc.stderr.read()).decode(errors="replace")
