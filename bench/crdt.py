"""CRDT benchmark: the B4 editing trace through a Yjs server, from one client to another.

Usage::

    STUDYHALL_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python -m bench.crdt

``automerge-paper`` (259,778 single-character inserts and deletes) is encoded first, one Yjs update per
operation, with pycrdt (not timed). Then each server is started pinned to CPU 0 (this script takes
CPU 1) and the same updates are sent as individual y-websocket update messages by a writer client,
with at most ``--window`` of them in flight, while a reader client on the same document applies every
update it receives. Measured:

- end-to-end operations/s: from the first update sent to the last one applied by the reader;
- server CPU per operation (user + system time of the server process over the run); for studyhall
  also the CPU of the Postgres backends serving it (the batched log writes), reported separately;
- RSS the document adds to the server (idle before the run → document loaded after it), and for
  studyhall after a restart, when the document is loaded from Postgres by a new client;
- studyhall only: the time to load the finished document from Postgres (snapshot + log into a pycrdt
  document, as the server does), median of 20, and a fresh client's time to a synced document.

The peer is the y-websocket Node server, npm ``@y/websocket-server`` (installed in ``tests/js`` by
``scripts/setup``), which keeps documents in memory only. Both servers get the same writer and reader.
``BENCH_PROFILE=/tmp/prof`` runs the studyhall server under cProfile (``/tmp/prof.<time>`` per start).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import asyncpg
import psutil
from pycrdt import Doc, Map, Text

from collab_ide import protocol
from collab_ide.store import DocumentLog, files_of

ROOT = Path(__file__).resolve().parents[1]
METRICS_TOKEN = "bench-metrics-" + "m" * 24
TRACE = ROOT.parent / "shared" / "data" / "editing-traces" / "automerge-paper.json.gz"
NODE_SERVER = ROOT / "tests" / "js" / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"
FILE = "paper.tex"


# --- the trace ---------------------------------------------------------------------------------------


def encode_trace(path: Path, limit: int | None) -> tuple[list[bytes], str]:
    """One update message per operation (the first creates ``files[FILE]``), and the expected text."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        trace = json.load(fh)
    doc: Doc[Any] = Doc()
    frames: list[bytes] = []
    doc.observe(lambda event: frames.append(protocol.update_message(event.update)))
    files = doc.get("files", type=Map)
    files[FILE] = Text(trace["startContent"])
    text = files[FILE]
    ops = 0
    for txn in trace["txns"]:
        for pos, delete, insert in txn["patches"]:
            with doc.transaction():
                if delete:
                    del text[pos : pos + delete]
                if insert:
                    text.insert(pos, insert)
            ops += 1
            if limit is not None and ops >= limit:
                return frames, str(text)
    assert str(text) == trace["endContent"]
    return frames, str(text)


# --- servers -----------------------------------------------------------------------------------------


def pinned(cmd: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", "0", *cmd]
    return cmd


def wait_http(url: str, proc: subprocess.Popen[bytes], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {within}s")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Studyhall:
    database_url: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, data_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STUDYHALL_")}
        env.update(
            STUDYHALL_DATABASE_URL=self.database_url,
            STUDYHALL_DATA_DIR=str(data_dir),
            STUDYHALL_LOG_LEVEL="WARNING",
            STUDYHALL_COLLAB_UNLOAD_DELAY_S="1",
            STUDYHALL_METRICS_TOKEN=METRICS_TOKEN,  # /metrics is served only with a token (or its own port)
        )
        env.update(self.extra_env)
        profile = os.environ.get("BENCH_PROFILE")  # a path: profile the server with cProfile into PATH.<time>
        profiler = ["-m", "cProfile", "-o", f"{profile}.{time.time():.0f}"] if profile else []
        cmd = [sys.executable, *profiler, "-m", "realtime.cli", "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen(pinned(cmd), env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        wait_http(self.url + "/readyz", self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


async def rest(session: aiohttp.ClientSession, method: str, url: str, token: str | None = None, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, headers=headers, **kw) as resp:
        body = await resp.json()
        assert resp.status < 300, body
        return body


async def studyhall_workspace(base: str) -> tuple[str, str]:
    """A user and an empty workspace (the writer creates the file, as on the Node server)."""
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    async with aiohttp.ClientSession() as s:
        await rest(s, "POST", base + "/api/v1/auth/register", json={"email": email, "password": "bench-password",
                                                                     "display_name": "bench"})  # fmt: skip
        tokens = await rest(s, "POST", base + "/api/v1/auth/login", json={"email": email, "password": "bench-password"})
        token = tokens["access_token"]
        ws = await rest(s, "POST", base + "/api/v1/workspaces", token, json={"name": "paper", "language": "python",
                                                                               "files": {}})  # fmt: skip
    return ws["id"], token


# --- the replay --------------------------------------------------------------------------------------


@dataclass
class Run:
    server: str
    ops: int
    seconds: float
    server_cpu_s: float
    db_cpu_s: float | None
    rss_before_mib: float
    rss_after_mib: float
    final_ok: bool

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds

    @property
    def cpu_us_per_op(self) -> float:
        return self.server_cpu_s / self.ops * 1e6


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


async def backend_pids(database_url: str) -> list[int]:
    conn = await asyncpg.connect(database_url)
    try:
        name = database_url.rsplit("/", 1)[1]
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        return [r["pid"] for r in rows]
    finally:
        await conn.close()


def total_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):  # a backend that ended meanwhile
            total += cpu_s(pid)
    return total


async def replay(
    url: str, frames: list[bytes], expected: str, pid: int, window: int, database_url: str | None = None
) -> tuple[float, float, float | None, bool]:
    """Writer → server → reader; (seconds, server CPU s, Postgres CPU s, reader's text == expected)."""
    received = 0
    progressed = asyncio.Event()
    done = asyncio.Event()
    reader_doc: Doc[Any] = Doc()
    reader_doc.get("files", type=Map)
    async with aiohttp.ClientSession() as session:
        reader = await session.ws_connect(url, max_msg_size=0, compress=0)
        writer = await session.ws_connect(url, max_msg_size=0, compress=0)
        for ws in (reader, writer):
            await ws.send_bytes(protocol.sync_step1(b"\x00"))

        async def read() -> None:
            nonlocal received
            async for msg in reader:
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    continue
                kind, payload = protocol.decode(msg.data)
                if kind is protocol.Kind.UPDATE:
                    reader_doc.apply_update(payload)
                    received += 1
                    if received % 256 == 0 or received == len(frames):
                        progressed.set()
                    if received == len(frames):
                        done.set()
                elif kind is protocol.Kind.SYNC_STEP2:
                    reader_doc.apply_update(payload)

        async def drain_writer() -> None:
            async for _ in writer:  # the server's step 1 and step 2: nothing to do
                pass

        tasks = [asyncio.create_task(read()), asyncio.create_task(drain_writer())]

        def reader_ended(task: asyncio.Task[None]) -> None:
            progressed.set()  # wake the writer: the check below reports why
            done.set()

        tasks[0].add_done_callback(reader_ended)
        pids = await backend_pids(database_url) if database_url else []
        db_before = total_cpu(pids)
        cpu_before = cpu_s(pid)
        started = time.perf_counter()
        sent = 0
        try:
            async with asyncio.timeout(600):
                for sent, frame in enumerate(frames):
                    while sent - received > window:
                        progressed.clear()
                        if tasks[0].done():
                            break
                        await progressed.wait()
                    await writer.send_bytes(frame)
                await done.wait()
        except TimeoutError:
            raise RuntimeError(f"stalled: {sent + 1:,} updates sent, {received:,} read") from None
        if received != len(frames):
            reason = tasks[0].exception() if tasks[0].done() and not tasks[0].cancelled() else None
            raise RuntimeError(f"the reader stopped after {received:,} of {len(frames):,} updates") from reason
        seconds = time.perf_counter() - started
        await asyncio.sleep(1.5)  # the server's batched writes of the last updates are its CPU too
        server_cpu = cpu_s(pid) - cpu_before
        db_cpu = total_cpu(pids) - db_before if database_url else None
        text = reader_doc.get("files", type=Map).get(FILE)
        ok = str(text) == expected if text is not None else False
        await writer.close()
        await reader.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return seconds, server_cpu, db_cpu, ok


async def sync_time(url: str) -> float:
    """Connect a fresh client and time until its sync step 2 (the server loads the document first)."""
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        ws = await session.ws_connect(url, max_msg_size=0, compress=0)
        await ws.send_bytes(protocol.sync_step1(b"\x00"))
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.BINARY and protocol.decode(msg.data)[0] is protocol.Kind.SYNC_STEP2:
                elapsed = time.perf_counter() - started
                await ws.close()
                return elapsed
    raise RuntimeError("no sync step 2")


async def load_times(database_url: str, workspace_id: str, expected: str, rounds: int = 20) -> list[float]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        store = DocumentLog(pool)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            loaded = await store.load(uuid.UUID(workspace_id))
            times.append(time.perf_counter() - started)
            assert loaded is not None and files_of(loaded.doc)[FILE] == expected
        return times
    finally:
        await pool.close()


async def wait_unloaded(base: str, within: float = 120) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(int(within * 10)):
            async with session.get(base + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as resp:
                if "studyhall_yjs_documents_loaded 0.0" in await resp.text():
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("the document was not unloaded")


# --- live editors: raw y-websocket clients, each operation its own transaction and message ----------
# (Their table splits the server's CPU: "of which system" is the kernel's part, the system calls and the TCP work
# of each receive and send, which no server can skip; the rest is the server's own code.)


TRACES = ("automerge-paper", "rustcode", "sveltecomponent")


def load_ops(name: str) -> list[tuple[int, int, str]]:
    """A trace's operations (position, deleted, inserted) from an empty document, in order."""
    with gzip.open(TRACE.parent / f"{name}.json.gz", "rt", encoding="utf-8") as fh:
        trace = json.load(fh)
    assert not trace["startContent"], name
    return [(pos, delete, insert) for txn in trace["txns"] for pos, delete, insert in txn["patches"]]


def update_key(update: bytes) -> tuple[int, int] | None:
    """(client id, clock) of an update's first new item; None for one that only deletes."""
    clients, pos = protocol.read_var_uint(update, 0)
    if not clients:
        return None
    _, pos = protocol.read_var_uint(update, pos)
    client, pos = protocol.read_var_uint(update, pos)
    clock, _ = protocol.read_var_uint(update, pos)
    return client, clock


class YConn(asyncio.Protocol):
    """One y-websocket connection on a raw socket (the load generator must stay light): answers pings,
    hands each binary message to ``on_message``."""

    def __init__(self, host: str, path: str, on_message: Any) -> None:
        self.host, self.path, self.on_message = host, path, on_message
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's transports do not subclass asyncio's)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                         ).encode())  # fmt: skip

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"closed during the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[: end + 4]
            if " 101 " not in head.split("\r\n", 1)[0] + " ":
                self.upgraded.set_exception(ConnectionError(head.split("\r\n", 1)[0]))
                return
            self.upgraded.set_result(None)
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1] & 0x7F
            start = pos + 2
            if b1 == 126:
                if n - start < 2:
                    break
                b1 = int.from_bytes(buf[start : start + 2], "big")
                start += 2
            elif b1 == 127:
                if n - start < 8:
                    break
                b1 = int.from_bytes(buf[start : start + 8], "big")
                start += 8
            if n - start < b1:
                break
            payload = bytes(buf[start : start + b1])
            pos = start + b1
            opcode = b0 & 0x0F
            if opcode == 2:
                self.on_message(payload)
            elif opcode == 9:
                self.send(payload, 0xA)
            elif opcode == 8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.send(payload[:2], 0x8)
                assert self.transport is not None
                self.transport.close()
                break
        del buf[:pos]

    def send(self, payload: bytes, opcode: int = 0x2) -> None:
        """A masked frame (with a zero mask: the payload goes as it is)."""
        n = len(payload)
        if n < 126:
            header = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(header + b"\0\0\0\0" + payload)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.send(b"\x03\xe8", 0x8)
            self.transport.close()


async def yconnect(port: int, path: str, on_message: Any) -> YConn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: YConn(f"127.0.0.1:{port}", path, on_message), "127.0.0.1", port)
    await asyncio.wait_for(conn.upgraded, 60)
    return conn


@dataclass
class Target:
    """A running server and how to reach a document on it."""

    name: str
    port: int
    pid: int
    paths: list[str]  # one per workspace
    pg_pids: list[int] = field(default_factory=list)


class Editor:
    """An editor: its own pycrdt document, one transaction per operation, each update sent as it is made
    (what the official provider does); it records when each of its updates left."""

    def __init__(self, ops: list[tuple[int, int, str]], file: str, sent_at: dict[tuple[int, int], float]) -> None:
        self.ops, self.sent_at = ops, sent_at
        self.doc: Doc[Any] = Doc()
        self.conn: YConn | None = None
        self.next = 0
        self.sent = 0
        self.doc.observe(self._on_update)
        files = self.doc.get("files", type=Map)
        self.file = file
        self.files = files

    def _on_update(self, event: Any) -> None:
        if self.conn is None:
            return
        update = event.update
        key = update_key(update)
        if key is not None:
            self.sent_at[key] = time.perf_counter()
        self.conn.send(protocol.update_message(update))
        self.sent += 1

    def start(self) -> None:
        self.files[self.file] = Text()

    def step(self) -> bool:
        """One operation of the trace; False once it is played out."""
        if self.next >= len(self.ops):
            return False
        pos, delete, insert = self.ops[self.next]
        self.next += 1
        text = self.files[self.file]
        with self.doc.transaction():
            if delete:
                del text[pos : pos + delete]
            if insert:
                text.insert(pos, insert)
        return True


class Latencies:
    """Edit → other editors: when an update whose first item is known arrives at a connection (updates
    that only delete carry no item and are not timed)."""

    def __init__(self, sent_at: dict[tuple[int, int], float]) -> None:
        self.sent_at = sent_at
        self.samples: list[float] = []
        self.received = 0

    def receiver(self, record: bool, own: int | None = None, count: bool = False) -> Any:
        """The ``on_message`` of a connection: times the updates of others (``own``: the editor's client id,
        whose updates some servers echo back) if ``record``; counts the updates it gets if ``count``."""
        sent_at, samples = self.sent_at, self.samples

        def on_message(data: bytes) -> None:
            if data[:2] != b"\x00\x02":  # only updates are timed (sync and awareness are not edits)
                return
            if count:
                self.received += 1
            if not record:
                return
            update, _ = protocol.read_var_bytes(data, 2)
            key = update_key(update)
            if key is not None and key[0] != own:
                at = sent_at.get(key)
                if at is not None:
                    samples.append(time.perf_counter() - at)

        return on_message


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@dataclass
class LiveResult:
    server: str
    edits: int
    seconds: float
    server_cpu_s: float
    server_system_s: float
    """Of ``server_cpu_s``, the kernel's part (system calls, the TCP work of each send and receive)."""
    db_cpu_s: float | None
    p50_ms: float
    p99_ms: float
    delivered: int
    expected: int
    rss_before_mib: float
    rss_after_mib: float
    loadgen_cpu_pct: float
    idle_cpu_pct: float

    def row(self) -> str:
        db = f"{self.db_cpu_s / self.edits * 1e6:.1f}" if self.db_cpu_s is not None else "—"
        return (f"| {self.server} | {self.edits:,} | {self.edits / self.seconds:,.0f} | "
                f"{self.server_cpu_s / self.edits * 1e6:.1f} | {self.server_system_s / self.edits * 1e6:.1f} | "
                f"{db} | {self.p50_ms:.1f} | {self.p99_ms:.1f} | "
                f"{self.delivered:,}/{self.expected:,} | {self.rss_before_mib:.1f} → {self.rss_after_mib:.1f} | "
                f"{self.loadgen_cpu_pct:.0f} | {self.idle_cpu_pct:.1f} |")  # fmt: skip


LIVE_HEADER = (
    "| server | edits | edits/s | server CPU µs/edit | of which system | Postgres CPU µs/edit | p50 ms | p99 ms "
    "| updates delivered | RSS before → after (MiB) | load-gen CPU % | server CPU % before, nobody typing |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
)


async def synced(conns: list[YConn]) -> None:
    """Send each an empty sync step 1; the server answers with its step 1 and step 2 (ignored here)."""
    for c in conns:
        c.send(protocol.sync_step1(b"\x00"))


async def live_run(target: Target, editors_per_doc: int, readers_per_doc: int, rate: float, duration_s: float,
                   ops_limit: int | None, traces: dict[str, list[tuple[int, int, str]]]) -> LiveResult:  # fmt: skip
    """Editors type their traces into their documents, each operation one transaction and one message,
    at ``rate`` operations/s each (0: as fast as the editor goes, one after the other, yielding between
    them); readers only read. Edit → other editors latency is measured at the editors."""
    sent_at: dict[tuple[int, int], float] = {}
    lat = Latencies(sent_at)
    editors: list[Editor] = []
    conns: list[YConn] = []
    names = list(traces)
    for w, path in enumerate(target.paths):
        for e in range(editors_per_doc):
            name = names[(w + e) % len(names)]
            ops = traces[name][:ops_limit] if ops_limit else traces[name]
            ed = Editor(ops, f"{name}-{e}.txt", sent_at)
            ed.conn = await yconnect(target.port, path, lat.receiver(True, ed.doc.client_id))
            editors.append(ed)
            conns.append(ed.conn)
        for _ in range(readers_per_doc):  # timed too when no other editor is there to time it
            conns.append(await yconnect(target.port, path, lat.receiver(editors_per_doc == 1, count=True)))
    await synced(conns)
    for ed in editors:
        ed.start()  # creates its file: not counted as an edit
    await asyncio.sleep(1.0)
    idle_before = cpu_s(target.pid)
    await asyncio.sleep(3.0)  # the server's own cost with everyone connected and nobody typing
    idle_pct = (cpu_s(target.pid) - idle_before) / 3.0 * 100
    lat.samples.clear()
    rss_before = rss_mib(target.pid)
    me = psutil.Process()
    load_before = me.cpu_times()
    db_before = total_cpu(target.pg_pids) if target.pg_pids else None
    received_before = lat.received
    sent_before = sum(ed.sent for ed in editors)
    server = psutil.Process(target.pid)
    before = server.cpu_times()
    started = time.perf_counter()
    end = started + duration_s
    if rate <= 0:  # one editor as fast as it goes
        for ed in editors:
            while time.perf_counter() < end and ed.step():  # noqa: ASYNC110 -- typing, yielding between keys
                await asyncio.sleep(0)
    else:

        async def type_(ed: Editor) -> None:
            await asyncio.sleep(random.random() / rate)
            due = time.perf_counter()
            while due < end and ed.step():
                due += 1 / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))

        await asyncio.gather(*(type_(ed) for ed in editors))
    seconds = time.perf_counter() - started
    edits = sum(ed.sent for ed in editors) - sent_before
    expected = edits * readers_per_doc  # counted at the readers (the Node server echoes updates to their editor)
    deadline = time.perf_counter() + 10
    while lat.received - received_before < expected and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # the last updates still on their way
    after = server.cpu_times()
    server_cpu = after.user + after.system - before.user - before.system
    server_system = after.system - before.system
    db_cpu = total_cpu(target.pg_pids) - db_before if db_before is not None else None
    load_after = me.cpu_times()
    load_pct = (load_after.user + load_after.system - load_before.user - load_before.system) / seconds * 100
    rss_after = rss_mib(target.pid)
    delivered = lat.received - received_before
    for c in conns:
        c.close()
    ms = [x * 1e3 for x in lat.samples]
    return LiveResult(target.name, edits, seconds, server_cpu, server_system, db_cpu, pct(ms, 0.5), pct(ms, 0.99),
                      delivered, expected, rss_before, rss_after, load_pct, idle_pct)  # fmt: skip


async def idle_run(target: Target, n: int, settle_s: float) -> tuple[float, float]:
    """RSS growth per idle connection (KB): ``n`` connections spread over the documents, which one
    connection each keeps loaded since before the baseline; read ``settle_s`` after they connected."""

    def ignore(data: bytes) -> None:
        pass

    holders = [await yconnect(target.port, path, ignore) for path in target.paths]
    await synced(holders)
    await asyncio.sleep(2.0)
    before = rss_mib(target.pid)
    conns: list[YConn] = []
    for i in range(0, n, 200):
        batch = await asyncio.gather(
            *(yconnect(target.port, target.paths[j % len(target.paths)], ignore) for j in range(i, min(n, i + 200)))
        )
        await synced(list(batch))
        conns += batch
    await asyncio.sleep(settle_s)
    after = rss_mib(target.pid)
    gone = sum(1 for c in conns if c.closed.done())
    if gone:
        print(f"  ({target.name}: {gone} idle connections were closed by the server)")
    for c in conns + holders:
        c.close()
    await asyncio.sleep(1.0)
    return before, (after - before) * 1024 / n


async def studyhall_workspaces(base: str, count: int) -> tuple[list[str], str]:
    ids = []
    workspace_id, token = await studyhall_workspace(base)
    ids.append(workspace_id)
    async with aiohttp.ClientSession() as s:
        for i in range(count - 1):
            ws = await rest(s, "POST", base + "/api/v1/workspaces", token,
                            json={"name": f"w{i}", "language": "python", "files": {}})  # fmt: skip
            ids.append(ws["id"])
    return ids, token


@contextlib.asynccontextmanager
async def studyhall_target(
    database_url: str, workspaces: int, takeover: bool = True, loop: str = "asyncio", engine: str = "c"
) -> Any:
    tmp = Path(tempfile.mkdtemp(prefix="studyhall-bench-crdt-"))
    env = {"STUDYHALL_YJS_TAKEOVER": "true" if takeover else "false", "STUDYHALL_DB_POOL_MAX": "10",
           "STUDYHALL_EVENT_LOOP": loop, "STUDYHALL_YJS_ENGINE": engine}  # fmt: skip
    server = Studyhall(database_url, extra_env=env)
    server.start(tmp / "data")
    try:
        assert server.proc is not None
        ids, token = await studyhall_workspaces(server.url, workspaces)
        name = "studyhall (engine c)" if engine == "c" and takeover else "studyhall (takeover)"
        if not takeover:
            name = "studyhall (aiohttp websocket)"
        if loop != "asyncio":
            name += f", {loop}"
        yield Target(name, server.port, server.proc.pid, [f"/yjs/{w}?token={token}" for w in ids],
                     await backend_pids(database_url))  # fmt: skip
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.asynccontextmanager
async def node_target(workspaces: int) -> Any:
    node = shutil.which("node")
    if node is None or not NODE_SERVER.exists():
        print("(the Node peer is skipped: run scripts/setup with Node.js and npm to install @y/websocket-server)")
        yield None
        return
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port)}
    proc = subprocess.Popen(  # noqa: ASYNC220 -- started once, before anything is measured
        pinned([node, str(NODE_SERVER)]), env=env, cwd=NODE_SERVER.parent, stdout=subprocess.DEVNULL
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc)
        tag = uuid.uuid4().hex[:6]
        yield Target("y-websocket server (@y/websocket-server 0.1.1)", port, proc.pid,
                     [f"/bench-{tag}-{i}" for i in range(workspaces)])  # fmt: skip
    finally:
        stop(proc)


async def bench_live(args: argparse.Namespace, database_url: str) -> None:
    """``--mode live`` (one editor, one reader, as fast as the editor goes) and ``--mode editors``."""
    live = args.mode == "live"
    names = [args.trace.name.removesuffix(".json.gz")] if live else list(TRACES)
    traces = {name: load_ops(name) for name in names}
    workspaces = 1 if live else args.workspaces
    editors = 1 if live else args.editors
    readers = 1 if live else args.readers
    rate = args.rate if not live else 0.0
    duration = args.duration if args.duration else (600.0 if live else 60.0)
    ops = args.ops
    print(f"mode {args.mode}: {workspaces} workspace(s) × {editors} editor(s) + {readers} reader(s), "
          f"{'as fast as the editor goes' if rate <= 0 else f'{rate:g} ops/s each'}, {duration:g} s at most, "
          f"traces {', '.join(names)}")  # fmt: skip
    results: list[LiveResult] = []
    configs: list[Any] = [lambda: studyhall_target(database_url, workspaces, engine=args.engine)]
    if args.compare_engines:
        other = "python" if args.engine == "c" else "c"
        configs.append(lambda: studyhall_target(database_url, workspaces, engine=other))
    if args.compare_loops:
        configs.append(lambda: studyhall_target(database_url, workspaces, loop="uvloop", engine=args.engine))
    if args.compare_aiohttp:
        configs.append(lambda: studyhall_target(database_url, workspaces, takeover=False, engine="python"))
    if not args.skip_node:
        configs.append(lambda: node_target(workspaces))
    for make in configs:
        async with make() as target:
            if target is None:
                continue
            result = await live_run(target, editors, readers, rate, duration, ops, traces)
            print(f"  {result.row()}", file=sys.stderr)
            results.append(result)
    print()
    print(LIVE_HEADER)
    for r in results:
        print(r.row())


async def bench_idle(args: argparse.Namespace, database_url: str) -> None:
    print(f"mode idle: {args.idle} idle /yjs connections over {args.workspaces} documents, RSS read "
          f"{args.idle_settle_s:g} s after they connected")  # fmt: skip
    rows = []
    configs: list[Any] = [lambda: studyhall_target(database_url, args.workspaces, engine=args.engine)]
    if args.compare_engines:
        other = "python" if args.engine == "c" else "c"
        configs.append(lambda: studyhall_target(database_url, args.workspaces, engine=other))
    if args.compare_aiohttp:
        configs.append(lambda: studyhall_target(database_url, args.workspaces, takeover=False, engine="python"))
    if not args.skip_node:
        configs.append(lambda: node_target(args.workspaces))
    for make in configs:
        async with make() as target:
            if target is None:
                continue
            before, kb = await idle_run(target, args.idle, args.idle_settle_s)
            rows.append((target.name, before, kb))
    print()
    print("| server | RSS before (MiB) | KB per idle connection |\n| --- | ---: | ---: |")
    for name, before, kb in rows:
        print(f"| {name} | {before:.1f} | {kb:.1f} |")


# --- main --------------------------------------------------------------------------------------------


async def bench_studyhall(database_url: str, frames: list[bytes], expected: str, window: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="studyhall-bench-crdt-"))
    server = Studyhall(database_url)
    server.start(tmp / "data")
    try:
        assert server.proc is not None
        workspace_id, token = await studyhall_workspace(server.url)
        url = f"ws://127.0.0.1:{server.port}/yjs/{workspace_id}?token={token}"
        before = rss_mib(server.proc.pid)
        seconds, cpu, db_cpu, ok = await replay(url, frames, expected, server.proc.pid, window, database_url)
        after = rss_mib(server.proc.pid)
        run = Run("studyhall (pycrdt, aiohttp)", len(frames), seconds, cpu, db_cpu, before, after, ok)
        await wait_unloaded(server.url)  # written and compacted into its snapshot
        loads = await load_times(database_url, workspace_id, expected)
        server.stop()
        server = Studyhall(database_url, server.port)
        server.start(tmp / "data")
        assert server.proc is not None
        idle = rss_mib(server.proc.pid)
        first_sync = await sync_time(url)
        async with aiohttp.ClientSession() as session:
            holder = await session.ws_connect(url, max_msg_size=0)  # keeps the document loaded while measured
            await holder.send_bytes(protocol.sync_step1(b"\x00"))
            await holder.receive()
            loaded_rss = rss_mib(server.proc.pid)
            await holder.close()
        return {"run": run, "loads": loads, "first_sync": first_sync, "fresh_rss": (idle, loaded_rss)}
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def bench_node(frames: list[bytes], expected: str, window: int) -> Run | None:
    node = shutil.which("node")
    if node is None or not NODE_SERVER.exists():
        print("(the Node peer is skipped: run scripts/setup with Node.js and npm to install @y/websocket-server)")
        return None
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port)}
    proc = subprocess.Popen(  # noqa: ASYNC220 -- started once, before anything is measured
        pinned([node, str(NODE_SERVER)]), env=env, cwd=NODE_SERVER.parent, stdout=subprocess.DEVNULL
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc)
        before = rss_mib(proc.pid)
        url = f"ws://127.0.0.1:{port}/bench-{uuid.uuid4().hex[:6]}"
        seconds, cpu, _, ok = await replay(url, frames, expected, proc.pid, window)
        return Run("y-websocket Node server (@y/websocket-server 0.1.1)", len(frames), seconds, cpu, None, before,
                   rss_mib(proc.pid), ok)  # fmt: skip
    finally:
        stop(proc)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node = (
        subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        if shutil.which("node")
        else "-"
    )
    return (f"{os.cpu_count()} CPUs ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}, Node {node}, {time.strftime('%Y-%m-%d')}")  # fmt: skip


async def amain(args: argparse.Namespace) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    if not args.trace.exists():
        raise SystemExit(f"the trace is missing: {args.trace} (../shared/data/editing-traces)")
    database_url = args.database_url or os.environ.get("STUDYHALL_DATABASE_URL")
    if not database_url:
        raise SystemExit("set STUDYHALL_DATABASE_URL (a Postgres server; a fresh database is created and dropped)")
    print(f"machine: {machine()}")
    if args.mode != "replay":
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.idle + 4096)), hard))
        name = f"studyhall_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(database_url)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        try:
            db = database_url.rsplit("/", 1)[0] + "/" + name
            await (bench_idle(args, db) if args.mode == "idle" else bench_live(args, db))
        finally:
            admin = await asyncpg.connect(database_url)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
        return
    started = time.perf_counter()
    frames, expected = encode_trace(args.trace, args.ops)
    print(f"encoded {len(frames):,} updates in {time.perf_counter() - started:.1f}s (not timed below)")
    name = f"studyhall_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    db = database_url.rsplit("/", 1)[0] + "/" + name
    try:
        runs: list[Run] = []
        ours = await bench_studyhall(db, frames, expected, args.window)
        runs.append(ours["run"])
        if not args.skip_node:
            peer = await bench_node(frames, expected, args.window)
            if peer is not None:
                runs.append(peer)
    finally:
        admin = await asyncpg.connect(database_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    print()
    print(
        "| server | updates | e2e ops/s | server CPU µs/op | Postgres CPU µs/op | RSS idle → after (MiB) | reader ok |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for r in runs:
        db_cpu = f"{r.db_cpu_s / r.ops * 1e6:.1f}" if r.db_cpu_s is not None else "—"
        print(f"| {r.server} | {r.ops:,} | {r.ops_per_s:,.0f} | {r.cpu_us_per_op:.1f} | {db_cpu} | "
              f"{r.rss_before_mib:.1f} → {r.rss_after_mib:.1f} | {r.final_ok} |")  # fmt: skip
    loads = sorted(ours["loads"])
    idle, loaded = ours["fresh_rss"]
    print()
    print(
        f"studyhall: load of the finished document from Postgres (snapshot + log → pycrdt): median "
        f"{statistics.median(loads) * 1e3:.1f} ms, max {loads[-1] * 1e3:.1f} ms over {len(loads)}"
    )
    print(
        f"studyhall: a fresh client after a restart is in sync in {ours['first_sync'] * 1e3:.1f} ms; "
        f"RSS {idle:.1f} → {loaded:.1f} MiB with the document loaded from Postgres"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--ops", type=int, default=None, help="replay only the first N operations")
    parser.add_argument("--window", type=int, default=2000, help="most updates in flight (sent, not yet read)")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--skip-node", action="store_true")
    parser.add_argument(
        "--mode",
        choices=("replay", "live", "editors", "idle"),
        default="replay",
        help="replay: the pre-encoded, windowed B4 replay; live: one editor typing --trace one "
        "transaction per operation, each sent as it is made, and one reader; editors: "
        "--workspaces × --editors typing the B4, rustcode and sveltecomponent traces at --rate "
        "ops/s each plus --readers per workspace, for --duration s; idle: --idle idle connections",
    )
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument("--editors", type=int, default=3, help="editors per workspace (--mode editors)")
    parser.add_argument("--readers", type=int, default=1, help="readers per workspace (--mode editors)")
    parser.add_argument("--rate", type=float, default=8.0, help="operations/s per editor (--mode editors)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of typing (editors: 60; live: the trace)")
    parser.add_argument("--idle", type=int, default=10000, help="idle connections (--mode idle)")
    parser.add_argument("--idle-settle-s", type=float, default=30.0)
    parser.add_argument(
        "--compare-aiohttp",
        action="store_true",
        help="also studyhall with STUDYHALL_YJS_TAKEOVER=false (aiohttp's websocket)",
    )
    parser.add_argument(
        "--engine",
        choices=("c", "python"),
        default="c",
        help="what reads /yjs messages in studyhall (STUDYHALL_YJS_ENGINE; c is the server's default where it is "
        "built; live, editors and idle modes)",
    )
    parser.add_argument("--compare-engines", action="store_true", help="also studyhall with the other --engine")
    parser.add_argument(
        "--compare-loops",
        action="store_true",
        help="also studyhall on uvloop (STUDYHALL_EVENT_LOOP=uvloop; the default is asyncio's loop)",
    )
    asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    main()
