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
import contextlib
import gzip
import json
import os
import platform
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
from typing import Any

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
    asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    main()
