"""Socket.IO room fan-out: studyhall against a minimal Node ``socket.io`` server, in the same run.

Usage::

    .venv/bin/python -m bench.fanout                    # 1,000 clients in one room, then 10,000 idle clients
    .venv/bin/python -m bench.fanout --deflate          # also: clients offer per-message deflate, servers accept
    .venv/bin/python -m bench.fanout --clients 200 --idle 1000 --rates 10,50 --step-s 3   # a quick look

For each server in turn (studyhall's ``studyhall serve`` on a fresh Postgres database; the Node peer
``bench/js/fanout_peer.mjs``, installed with ``npm ci`` on first use), pinned to CPU 0 while this load
generator runs on CPU 1:

1. **Idle capacity.** ``--idle`` clients connect (websocket, ``auth: {token}``, each its own user) and
   stay; the server's RSS growth divided by the number of clients is the memory per connection.
2. **Fan-out.** ``--clients`` clients join one room; one more client sends ``chat:send`` at each rate of
   ``--rates`` (messages/s) for ``--step-s`` seconds. Every message carries its send time, so each
   delivery's latency is measured (one clock: all clients live in this process). For studyhall a message
   is the real thing: stored in Postgres (committed before it is broadcast), with a gap-free ``seq``.
   The Node peer stores nothing. A step "keeps up" when every delivery arrived and p99 < 100 ms.

The clients are ``bench/lightclient.py``: raw websocket frames, Engine.IO v4 and Socket.IO v5. Once the
receivers joined the room, their sockets are handed to ``bench/c/fanrecv.c`` (compiled with the
machine's C compiler on first use; ``--receiver python`` keeps them in Python): Python receivers cost
7–9 µs a delivery and, near 100,000 deliveries/s, most of their core, which made the load generator the
limit of both servers. The load generator's CPU (with the C receiver's) is printed, so a row where it,
and not the server, was the limit can be told apart. Server CPU is the server process's (all threads);
studyhall's Postgres backends are separate processes and not counted.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from bench.lightclient import LightClient, connect
from bench.rest import Server, free_port

ROOT = Path(__file__).resolve().parent
JS = ROOT / "js"
JWT_SECRET = "bench-fanout-secret-" + "x" * 40
MACHINE_PG = "postgresql://postgres@127.0.0.1:5432/test"
TICKS = os.sysconf("SC_CLK_TCK")


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


def taskset(cmd: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", "0", *cmd]
    return cmd


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def steal_ticks() -> tuple[int, int]:
    """(steal, total) CPU ticks of the whole machine so far: time the hypervisor gave to someone else."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Target(Protocol):
    name: str
    port: int

    def pid(self) -> int: ...
    async def tokens(self, n: int) -> list[str]: ...
    async def room(self, token: str) -> str: ...
    def stop(self) -> None: ...


class Studyhall:
    """``studyhall serve`` on a fresh Postgres database; users inserted directly, tokens signed here."""

    def __init__(
        self, database_url: str, deflate: bool, name: str = "studyhall", loop: str = "asyncio", writer: str = "c"
    ) -> None:
        self.name = name
        env = {
            "STUDYHALL_EVENT_LOOP": loop,
            "STUDYHALL_WS_FANOUT_WRITER": writer,
            "STUDYHALL_JWT_SECRET": JWT_SECRET,
            "STUDYHALL_ACCESS_TOKEN_TTL_S": "86400",
            "STUDYHALL_CHAT_RATE_COUNT": "1000",
            "STUDYHALL_CHAT_RATE_WINDOW_S": "0.1",
            "STUDYHALL_WS_DEFLATE": "true" if deflate else "false",
            # Every client comes from this one address, hundreds logging in at once: not an attack here.
            "STUDYHALL_SIO_ANONYMOUS_PER_ADDRESS": "100000",
        }
        self.server = Server(database_url, extra_env=env)
        self.server.start()
        self.port = self.server.port
        self.database_url = self.server.env["STUDYHALL_DATABASE_URL"]
        self.created = 0

    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    async def tokens(self, n: int) -> list[str]:
        import asyncpg

        from core_api.auth import Tokens

        ids = [uuid.uuid4() for _ in range(n)]
        start = self.created
        self.created += n
        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.copy_records_to_table(
                "users",
                records=[(u, f"fan{start + i}@bench.test", f"fan {start + i}", "!bench") for i, u in enumerate(ids)],
                columns=["id", "email", "display_name", "password_hash"],
            )
        finally:
            await conn.close()
        signer = Tokens(JWT_SECRET, 86400)
        return [signer.issue(u, "student") for u in ids]

    async def room(self, token: str) -> str:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.server.url}/api/v1/rooms",
                json={"name": "fan-out", "kind": "study", "visibility": "public"},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp,
        ):
            body = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"creating the room: {resp.status} {body}")
            return str(body["id"])

    def stop(self) -> None:
        self.server.stop()


class NodePeer:
    """``bench/js/fanout_peer.mjs``: socket.io 4 with its defaults, the room broadcast and nothing else."""

    def __init__(self, deflate: bool, name: str = "node socket.io") -> None:
        self.name = name
        ensure_node_modules()
        env = {**os.environ, "PEER_DEFLATE": "1" if deflate else "0"}
        self.port = free_port()
        self.proc = subprocess.Popen(
            taskset(["node", str(JS / "fanout_peer.mjs"), str(self.port)]),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"the Node peer did not start: {line}{self.proc.stdout.read()}")
        self.proc.stdout.close()

    def pid(self) -> int:
        return self.proc.pid

    async def tokens(self, n: int) -> list[str]:
        return [f"peer-{i}" for i in range(n)]

    async def room(self, token: str) -> str:
        return str(uuid.uuid4())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ensure_node_modules() -> None:
    if not shutil.which("node") or not shutil.which("npm"):
        raise SystemExit("the Node peer needs node and npm on PATH (or run with --no-peer)")
    if not (JS / "node_modules" / "socket.io").is_dir():
        print("installing the Node peer (npm ci in bench/js) ...", file=sys.stderr)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS, check=True)


# --- measurement ---------------------------------------------------------------------------------


@dataclass
class Step:
    rate: int
    clients: int
    sent: int = 0
    errors: int = 0
    delivered: int = 0
    seconds: float = 0.0
    server_cpu_s: float = 0.0
    loadgen_cpu_s: float = 0.0
    rss_kb: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    ack_ms: list[float] = field(default_factory=list)
    steal_pct: float = 0.0

    @property
    def expected(self) -> int:
        return self.sent * self.clients

    @property
    def per_s(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    def pct(self, q: float, which: str = "latencies_ms") -> float:
        values: list[float] = getattr(self, which)
        if not values:
            return float("nan")
        data = sorted(values)
        return data[min(len(data) - 1, int(q * len(data)))]

    @property
    def kept_up(self) -> bool:
        return self.delivered >= self.expected and self.errors == 0 and self.pct(0.99) < 100


@dataclass
class Idle:
    clients: int
    baseline_kb: int
    loaded_kb: int
    connect_s: float

    @property
    def per_conn_kb(self) -> float:
        return (self.loaded_kb - self.baseline_kb) / self.clients if self.clients else 0.0


@dataclass
class Report:
    name: str
    idle: Idle | None = None
    steps: list[Step] = field(default_factory=list)
    join_s: float = 0.0
    deflate_negotiated: bool = False
    receiver: str = ""


class Recorder:
    """The receivers' callback, in Python: counts ``chat:message`` deliveries and their latency."""

    name = "python"

    def __init__(self) -> None:
        self.delivered = 0
        self.latencies_ms: list[float] = []
        self.active = False

    def __call__(self, packet: bytes) -> None:
        if not self.active:
            return
        i = packet.find(b"T=", 2)
        if i < 0:
            return
        j = i + 2
        while 48 <= packet[j] <= 57:
            j += 1
        self.delivered += 1
        self.latencies_ms.append((time.perf_counter_ns() - int(packet[i + 2 : j])) / 1e6)

    async def attach(self, clients: list[LightClient]) -> None:
        pass

    def start(self) -> None:
        self.delivered, self.latencies_ms, self.active = 0, [], True

    async def count(self) -> int:
        return self.delivered

    async def stop(self) -> list[float]:
        self.active = False
        return self.latencies_ms

    def cpu_s(self) -> float:
        return 0.0  # counted in this process's own CPU

    async def close(self) -> None:
        pass


def build_c_receiver() -> Path | None:
    """Compile ``bench/c/fanrecv.c`` (once, into ``bench/c/build``); None without a C compiler."""
    source = ROOT / "c" / "fanrecv.c"
    binary = ROOT / "c" / "build" / "fanrecv"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    binary.parent.mkdir(exist_ok=True)
    subprocess.run([cc, "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


class CRecorder:
    """The receivers handed to ``bench/c/fanrecv`` once they joined: it reads their sockets with epoll.

    The Python clients stop reading (their transports paused) and the C process, started with their file
    descriptors, counts deliveries and measures latency on the same clock (CLOCK_MONOTONIC).
    """

    name = "C (bench/c/fanrecv.c)"

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.proc: asyncio.subprocess.Process | None = None

    async def attach(self, clients: list[LightClient]) -> None:
        fds = []
        for c in clients:
            assert c.transport is not None
            c.transport.pause_reading()
            if c._buf:
                raise RuntimeError("a receiver has a partial frame buffered; cannot hand it over")
            fds.append(c.transport.get_extra_info("socket").fileno())
        self.proc = await asyncio.create_subprocess_exec(
            str(self.binary), *map(str, fds), pass_fds=fds, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    async def _command(self, cmd: str) -> int:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        await self.proc.stdin.drain()
        return int(await self.proc.stdout.readline())

    def start(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"start\n")

    async def count(self) -> int:
        return await self._command("count")

    async def stop(self) -> list[float]:
        assert self.proc is not None and self.proc.stdout is not None
        n = await self._command("stop")
        raw = await self.proc.stdout.readexactly(4 * n)
        return [us / 1000 for us in array.array("I", raw)]

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid) if self.proc is not None else 0.0

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 5)
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()


async def timed(call: Any, into: list[float]) -> Any:
    """Await an ack, noting how long it took (for studyhall: the message stored and committed)."""
    started = time.perf_counter()
    result = await call
    into.append((time.perf_counter() - started) * 1000)
    return result


async def connect_many(
    target: Target, tokens: list[str], deflate: bool, on_event: Any = None, batch: int = 200
) -> list[LightClient]:
    clients: list[LightClient] = []
    for i in range(0, len(tokens), batch):
        chunk = tokens[i : i + batch]
        clients += await asyncio.gather(
            *(connect("127.0.0.1", target.port, t, on_event=on_event, deflate=deflate) for t in chunk)
        )
    return clients


async def idle_phase(target: Target, n: int, deflate: bool, settle_s: float) -> Idle:
    warm = await connect_many(target, await target.tokens(20), deflate)
    for c in warm:
        c.close()
    await asyncio.sleep(1.0)
    tokens = await target.tokens(n)
    baseline = proc_rss_kb(target.pid())
    started = time.monotonic()
    clients = await connect_many(target, tokens, deflate)
    connect_s = time.monotonic() - started
    await asyncio.sleep(settle_s)  # past the first ping round trip: the steady state of an idle connection
    loaded = proc_rss_kb(target.pid())
    for c in clients:
        c.close()
    await asyncio.sleep(2.0)
    return Idle(n, baseline, loaded, connect_s)


async def fanout_phase(target: Target, args: argparse.Namespace, deflate: bool, report: Report) -> None:
    tokens = await target.tokens(args.clients + 1)
    room = await target.room(tokens[0])
    # Compressed frames need inflating: with deflate offered, the Python receivers read them.
    use_c = args.receiver == "c" and not deflate
    binary = build_c_receiver() if use_c else None
    if use_c and binary is None:
        raise SystemExit("--receiver c needs a C compiler (cc or gcc); use --receiver python")
    recorder: Recorder | CRecorder = CRecorder(binary) if binary is not None else Recorder()
    report.receiver = recorder.name
    started = time.monotonic()
    sender = (await connect_many(target, tokens[:1], deflate))[0]
    await sender.call("room:join", {"room_id": room})
    receivers = await connect_many(
        target, tokens[1:], deflate, on_event=recorder if isinstance(recorder, Recorder) else None
    )
    report.deflate_negotiated = receivers[0].deflate_accepted
    for i in range(0, len(receivers), 100):
        joined = await asyncio.gather(
            *(r.call("room:join", {"room_id": room}, wait_s=120) for r in receivers[i : i + 100])
        )
        bad = [a for a in joined if not a.get("ok")]
        if bad:
            raise RuntimeError(f"room:join failed: {bad[0]}")
    report.join_s = time.monotonic() - started
    await asyncio.sleep(2.0)  # let the join announcements drain
    await recorder.attach(receivers)

    for rate in args.rates:
        step = Step(rate=rate, clients=len(receivers))
        recorder.start()
        total = int(rate * args.step_s)
        pid = target.pid()
        cpu0, own0 = proc_cpu_s(pid), own_cpu_s() + recorder.cpu_s()
        steal0 = steal_ticks()
        t0 = time.perf_counter()
        acks: list[asyncio.Future[Any]] = []
        for i in range(total):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = f"T={time.perf_counter_ns()} fan-out message {i:06d} " + "x" * 40
            acks.append(
                asyncio.ensure_future(
                    timed(
                        sender.call("chat:send", {"room_id": room, "body": body, "client_msg_id": uuid.uuid4().hex}),
                        step.ack_ms,
                    )
                )
            )
        step.sent = total
        deadline = time.perf_counter() + args.drain_s
        last, last_change = -1, time.perf_counter()
        delivered = await recorder.count()
        while delivered < step.expected and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
            delivered = await recorder.count()
            if delivered != last:
                last, last_change = delivered, time.perf_counter()
            elif time.perf_counter() - last_change > 2.0:
                break
        step.seconds = max(time.perf_counter() - t0, args.step_s)
        if delivered >= step.expected:
            step.seconds = max(args.step_s, last_change - t0)
        step.server_cpu_s = proc_cpu_s(pid) - cpu0
        step.loadgen_cpu_s = own_cpu_s() + recorder.cpu_s() - own0
        steal1 = steal_ticks()
        step.steal_pct = 100 * (steal1[0] - steal0[0]) / max(1, steal1[1] - steal0[1])
        step.rss_kb = proc_rss_kb(pid)
        for result in await asyncio.gather(*acks, return_exceptions=True):
            if isinstance(result, BaseException) or not result.get("ok"):
                step.errors += 1
        step.latencies_ms = await recorder.stop()
        step.delivered = len(step.latencies_ms)
        report.steps.append(step)
        print(
            f"  {target.name}: {rate} msg/s -> {step.per_s:,.0f} deliveries/s, p99 {step.pct(0.99):.1f} ms",
            file=sys.stderr,
        )
        await asyncio.sleep(1.0)
        if not step.kept_up and step.pct(0.99) > 1000:
            break  # far behind: higher rates only queue more
    for c in [sender, *receivers]:
        c.close()
    await recorder.close()
    await asyncio.sleep(1.0)


async def run_target(target: Target, args: argparse.Namespace, deflate: bool) -> Report:
    report = Report(target.name)
    if args.idle:
        report.idle = await idle_phase(target, args.idle, deflate, args.idle_settle_s)
        print(f"  {target.name}: {args.idle} idle clients, {report.idle.per_conn_kb:.1f} KB each", file=sys.stderr)
    if args.clients and args.rates:
        await fanout_phase(target, args, deflate, report)
    return report


def print_reports(reports: list[Report], args: argparse.Namespace) -> None:
    print(
        f"\n# fan-out — {platform.node()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}, "
        f"Python {platform.python_version()}"
    )
    print("server pinned to CPU 0, load generator (this process and its C receiver) on CPU 1\n")
    if args.idle:
        print(f"## idle capacity: {args.idle} connected clients\n")
        print("| server | RSS before (MB) | RSS with clients (MB) | KB per connection | connect time (s) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for r in reports:
            if r.idle:
                i = r.idle
                print(
                    f"| {r.name} | {i.baseline_kb / 1024:.0f} | {i.loaded_kb / 1024:.0f} | {i.per_conn_kb:.1f} "
                    f"| {i.connect_s:.1f} |"
                )
    if args.clients:
        print(f"\n## fan-out: one room, {args.clients} receivers, one sender, {args.step_s:g} s per rate\n")
        print(
            "| server | msg/s | offered deliveries/s | delivered/s | p50 ms | p99 ms | ack p50/p99 ms | server CPU % "
            "| server µs/delivery | load-gen CPU % | steal % | server RSS MB | kept up |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for r in reports:
            for s in r.steps:
                cpu_pct = 100 * s.server_cpu_s / s.seconds if s.seconds else 0
                us = 1e6 * s.server_cpu_s / s.delivered if s.delivered else float("nan")
                print(
                    f"| {r.name} | {s.rate} | {s.rate * s.clients:,} | {s.per_s:,.0f} | {s.pct(0.5):.1f} "
                    f"| {s.pct(0.99):.1f} | {s.pct(0.5, 'ack_ms'):.1f}/{s.pct(0.99, 'ack_ms'):.1f} "
                    f"| {cpu_pct:.0f} | {us:.1f} | {100 * s.loadgen_cpu_s / s.seconds:.0f} | {s.steal_pct:.0f} "
                    f"| {s.rss_kb / 1024:.0f} "
                    f"| {'yes' if s.kept_up else 'NO'}{'' if not s.errors else f' ({s.errors} send errors)'} |"
                )
        print()
        for r in reports:
            best = max((s.per_s for s in r.steps if s.kept_up), default=0.0)
            extra = ", deflate negotiated" if r.deflate_negotiated else ""
            extra += f"; receivers read by {r.receiver}" if r.receiver else ""
            print(f"- {r.name}: kept up to {best:,.0f} deliveries/s; {args.clients} joins took {r.join_s:.1f} s{extra}")


async def main_async(args: argparse.Namespace) -> list[Report]:
    pin(1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * (args.idle + args.clients) + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # children (the servers) inherit it
    # (label, server, server accepts deflate, clients offer deflate)
    configs: list[tuple[str, str, bool, bool]] = [("studyhall", "studyhall", False, False)]
    if args.compare_loops:
        configs.append(("studyhall, uvloop", "studyhall", False, False))
    if args.compare_writers:
        configs.append(("studyhall, writer python", "studyhall", False, False))
        configs.append(("studyhall, writer transport", "studyhall", False, False))
    if args.stock:
        # STUDYHALL_WS_DEFLATE=true puts websockets back on python-engineio's own driver and room emits on
        # python-socketio's own manager code; with clients not offering deflate that is the stock path.
        configs.append(("studyhall, python-socketio stock path", "studyhall", True, False))
    if args.peer:
        configs.append(("node socket.io", "node", False, False))
    if args.deflate:
        configs.append(("studyhall, deflate offered (declined)", "studyhall", False, True))
        configs.append(("studyhall, deflate accepted", "studyhall", True, True))
        if args.peer:
            configs.append(("node socket.io, deflate accepted", "node", True, True))
    reports = []
    for label, kind, server_deflate, client_deflate in configs:
        # Starting and stopping run blocking code (and their own event loops): off this loop's thread.
        target: Target
        if kind == "studyhall":
            loop = "uvloop" if label.endswith("uvloop") else "asyncio"
            writer = label.rpartition("writer ")[2] if "writer " in label else "c"
            target = await asyncio.to_thread(Studyhall, args.database_url, server_deflate, label, loop, writer)
        else:
            target = await asyncio.to_thread(NodePeer, server_deflate, label)
        try:
            print(f"{target.name} on port {target.port} ...", file=sys.stderr)
            reports.append(await run_target(target, args, client_deflate))
        finally:
            await asyncio.to_thread(target.stop)
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000, help="receivers in the room (default 1000)")
    parser.add_argument("--rates", default="10,25,50,100,150,200", help="sender messages/s, comma-separated")
    parser.add_argument("--step-s", type=float, default=5.0, help="seconds per rate")
    parser.add_argument("--drain-s", type=float, default=15.0, help="longest wait for a step's deliveries")
    parser.add_argument("--idle", type=int, default=10000, help="idle clients for the memory test (0: skip)")
    parser.add_argument("--idle-settle-s", type=float, default=30.0, help="wait before reading the idle RSS")
    parser.add_argument(
        "--receiver",
        choices=["c", "python"],
        default="c",
        help="who reads the receivers' sockets once they joined: bench/c/fanrecv.c (default) or Python",
    )
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="skip the Node peer")
    parser.add_argument("--deflate", action="store_true", help="also run with clients offering per-message deflate")
    parser.add_argument("--compare-loops", action="store_true",
                        help="also run studyhall on uvloop (the default: asyncio's loop)")  # fmt: skip
    parser.add_argument(
        "--compare-writers",
        action="store_true",
        help="also run studyhall with the room emit's Python loop and with transport.write per recipient "
        "(STUDYHALL_WS_FANOUT_WRITER; the default is the C call)",
    )
    parser.add_argument("--stock", action="store_true", help="also run studyhall on python-socketio's stock send path")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("STUDYHALL_DATABASE_URL", MACHINE_PG),
        help="Postgres server for studyhall (a fresh database is created and dropped)",
    )
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",") if r.strip()]
    reports = asyncio.run(main_async(args))
    print_reports(reports, args)


if __name__ == "__main__":
    main()
