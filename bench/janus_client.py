"""Janus WebRTC server for ``bench/live.py``'s anchor: start Debian's ``janus`` with a minimal config (the
VideoRoom plugin and the HTTP transport on 127.0.0.1 only, no STUN, host candidates, half-trickle), and a
small client for its HTTP API (aiohttp): sessions, handles, plugin messages, events long-polled with GET.

Janus is installed with ``apt-get install -y janus`` when ``/usr/bin/janus`` is missing (this needs root);
the benchmark starts it and stops it by PID, nothing else runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout

JANUS = "/usr/bin/janus"
MODULES = Path("/usr/lib/x86_64-linux-gnu/janus")


def ensure_installed() -> None:
    """Installs Debian's ``janus`` package if ``/usr/bin/janus`` is missing (as root)."""
    if Path(JANUS).exists():
        return
    if os.geteuid() != 0:
        raise SystemExit("bench/live.py --janus needs Debian's janus package: apt-get install -y janus (as root)")
    subprocess.run(["apt-get", "install", "-y", "janus"], check=True, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_interface() -> str:
    """The interface aiortc's host candidates are on (aioice leaves out loopback): the default route's."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                return fields[0]
    return "lo"


def write_config(folder: Path, port: int) -> None:
    """janus.jcfg with its own plugin and transport folders, each holding one symlink: the VideoRoom
    plugin, the HTTP transport (no WebSockets, no event handlers, no loggers)."""
    for sub, module in [("plugins", "plugins/libjanus_videoroom.so"), ("transports", "transports/libjanus_http.so")]:
        (folder / sub).mkdir()
        (folder / sub / Path(module).name).symlink_to(MODULES / module)
    for sub in ("events", "loggers"):
        (folder / sub).mkdir()
    (folder / "janus.jcfg").write_text(f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{folder}/plugins"
    transports_folder = "{folder}/transports"
    events_folder = "{folder}/events"
    loggers_folder = "{folder}/loggers"
    debug_level = 3
    session_timeout = 60
}}
media: {{
    ipv6 = false
}}
nat: {{
    nice_debug = false
    full_trickle = false
    ice_enforce_list = "{default_interface()}"
    ignore_mdns = true
}}
events: {{
    broadcast = false
}}
""")
    (folder / "janus.transport.http.jcfg").write_text(f"""general: {{
    json = "plain"
    base_path = "/janus"
    http = true
    port = {port}
    ip = "127.0.0.1"
    https = false
}}
admin: {{
    admin_http = false
    admin_https = false
}}
""")
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")  # no rooms: the bench creates one


class Janus:
    """A Janus process of the bench's own, stopped by PID."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="studyhall-bench-janus-"))
        self.log = self.folder / "janus.log"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/janus"

    async def start(self) -> None:
        write_config(self.folder, self.port)
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                JANUS, "-F", str(self.folder), "-C", str(self.folder / "janus.jcfg"), "-o",
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.folder,
            )  # fmt: skip
            # (its working directory is its temp folder: a core file Janus may leave when stopped lands there)
        if self.pin:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.process.pid, {0})  # threads it starts from now on inherit it
        deadline = time.monotonic() + 20
        async with ClientSession() as http:
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"janus exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
                with contextlib.suppress(OSError):
                    async with http.get(self.url + "/info") as resp:
                        if resp.status == 200:
                            self.pin_threads()
                            return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"janus did not answer on {self.url}: {self.log.read_text()[-2000:]}")
                await asyncio.sleep(0.2)

    def pin_threads(self) -> None:
        """Every thread Janus started before it was pinned goes to CPU 0 too (later ones inherit it)."""
        assert self.process is not None
        if not self.pin:
            return
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), {0})

    def cpu_s(self) -> float:
        """User + system CPU seconds of the Janus process, all its threads (/proc/PID/stat)."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


class JanusError(RuntimeError):
    pass


class Session:
    """One Janus API session: handles attached to the VideoRoom plugin, their events long-polled."""

    def __init__(self, http: ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.id: int | None = None
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.poller: asyncio.Task[None] | None = None

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": secrets.token_hex(8)}
        async with self.http.post(self.url + path, json=body) as resp:
            reply: dict[str, Any] = await resp.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(f"{body['janus']}: {reply['error']}")
        return reply

    async def create(self) -> None:
        self.id = (await self.post("", {"janus": "create"}))["data"]["id"]
        self.poller = asyncio.create_task(self.poll())

    async def poll(self) -> None:
        timeout = ClientTimeout(total=60)
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                async with self.http.get(f"{self.url}/{self.id}?maxev=10", timeout=timeout) as resp:
                    events = await resp.json(content_type=None)
                for event in events if isinstance(events, list) else [events]:
                    future = self.waiting.pop(event.get("transaction", ""), None)
                    if future is not None and not future.done() and event.get("janus") != "ack":
                        future.set_result(event)

    async def attach(self) -> int:
        reply = await self.post(f"/{self.id}", {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        return int(reply["data"]["id"])

    async def message(self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> dict[str, Any]:
        """A plugin request; an asynchronous one (acked) waits for its event, by transaction."""
        transaction = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[transaction] = future
        request: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            request["jsep"] = jsep
        async with self.http.post(f"{self.url}/{self.id}/{handle}", json=request) as resp:
            reply: dict[str, Any] = await resp.json(content_type=None)
        if reply.get("janus") == "ack":
            reply = await asyncio.wait_for(future, timeout=30)
        else:
            self.waiting.pop(transaction, None)
        if reply.get("janus") == "error":
            raise JanusError(f"{body.get('request')}: {reply['error']}")
        data = reply.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data['error']}")
        return reply

    async def destroy(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.poller
        if self.id is not None:
            with contextlib.suppress(Exception):
                await self.post(f"/{self.id}", {"janus": "destroy"})
