"""Two-node chat soak with a kill -9 and the reconnect storm it causes (issue 19).

Usage::

    .venv/bin/python -m bench.soak                                  # 2,000 clients, 100 rooms, 100 messages/s
    .venv/bin/python -m bench.soak --rate 1000                      # the same at 1,000 messages/s
    .venv/bin/python -m bench.soak --clients 200 --rooms 10 --steady-s 5 --after-s 5   # a quick look
    .venv/bin/python -m bench.soak --reconnect immediate            # every client back at once (no backoff)

Two ``studyhall serve`` nodes (``a`` and ``b``, each on a free port, both pinned to CPU 0 while this load
generator takes CPU 1) share a fresh database of the machine's Postgres and the machine's Redis
(``--redis-url``, database 12 by default: the tests use 11 and 15). The security limits keep their
defaults except the two every bench raises: the per-user chat rate (``STUDYHALL_CHAT_RATE_COUNT`` 1000 per
0.1 s: a few thousand users send from one process) and the unauthenticated sessions one address may hold
(``STUDYHALL_SIO_ANONYMOUS_PER_ADDRESS``: every client comes from 127.0.0.1). Frame limits, the node-wide
cap on unauthenticated sessions, the ``room:join_many`` rate and sizes stay as shipped.

``--clients`` light clients (``bench/lightclient.py``; even ones on ``a``, odd ones on ``b``) each join
``--rooms-per-client`` of the ``--rooms`` rooms with one ``room:join_many``. Senders, round robin over the
connected clients and their rooms, send ``chat:send`` at ``--rate`` messages/s in all, each send in flight
without waiting for the previous ack. Every client keeps, per room, the highest *contiguous* seq it holds
and the seqs above it, counting a seq seen twice as a duplicate.

1. ``steady``: ``--steady-s`` seconds on two nodes.
2. ``kill -9`` node ``b``. Its clients see the connection drop and reconnect to ``a`` (the surviving node; a
   load balancer's job in production) after socket.io-client's delay with the web app's settings
   (``web/src/lib/live.ts`` ``RECONNECT``: 1 s doubling per failed attempt up to 10 s, randomised by ±90 %,
   so the first attempts land within 0.1-1.9 s), then rejoin all their rooms with one ``room:join_many``
   from the last contiguous seq each holds (paging with ``chat:history`` on ``has_more``), then resend the
   sends that got no ack because their node died, with the same ``client_msg_id``. ``storm`` is the window
   from the kill until the last client rejoined: the surviving node's CPU then, and the ack and delivery
   p99 of the clients that were on ``a`` all along ("others").
3. ``after``: ``--after-s`` seconds on one node; then the sends stop and ``--drain-s`` seconds (more than
   ``STUDYHALL_CHAT_POSITION_CHECK_S``, the longest a node takes to fill a gap left by a dead node) pass.

Then every message stored in Postgres is checked against every client that is a member of its room: lost
(never reached the client, live or in a ``room:join_many`` / ``chat:history`` answer), split into acked and
not acked; duplicates shown to a client; acked messages missing from Postgres; ``client_msg_id``s stored
twice. Latencies use one clock (every client lives in this process): ack = ``chat:send`` → its ack (after
the commit), delivery = send → each member's live ``chat:message`` (catch-up through ``room:join_many`` is
not a delivery latency). The machine's load average is printed at the start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from bench.fanout import JWT_SECRET, MACHINE_PG, own_cpu_s, pin, proc_cpu_s
from bench.lightclient import ConnectError, LightClient, connect
from bench.rest import Server

REDIS_URL = "redis://127.0.0.1:6379/12"  # the tests use 11 and 15
HOST = "127.0.0.1"
# web/src/lib/live.ts RECONNECT (socket.io-client's Manager options)
RECONNECTION_DELAY_MS = 1000
RECONNECTION_DELAY_MAX_MS = 10_000
RANDOMIZATION_FACTOR = 0.9


def sio_backoff_s(attempt: int, rng: random.Random) -> float:
    """socket.io-client's ``Backoff.duration()`` (component-backoff) with the web app's settings."""
    ms = RECONNECTION_DELAY_MS * 2**attempt
    r = rng.random()
    deviation = math.floor(r * RANDOMIZATION_FACTOR * ms)
    ms = ms - deviation if (math.floor(r * 10) & 1) == 0 else ms + deviation
    return float(min(ms, RECONNECTION_DELAY_MAX_MS)) / 1000


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _int_after(packet: bytes, key: bytes) -> int | None:
    i = packet.find(key)
    if i < 0:
        return None
    i += len(key)
    j = i
    while j < len(packet) and 48 <= packet[j] <= 57:
        j += 1
    return int(packet[i:j]) if j > i else None


@dataclass
class Stats:
    """Everything measured, each sample with the time it was sent (``perf_counter`` seconds)."""

    acks: list[tuple[float, float, str]] = field(default_factory=list)  # (sent, ms, sender's group)
    deliveries: list[tuple[float, float, str]] = field(default_factory=list)  # (sent, ms, receiver's group)
    errors: dict[str, int] = field(default_factory=dict)
    acked: dict[str, tuple[str, int]] = field(default_factory=dict)  # client_msg_id -> (room, seq)
    unacked: list[tuple[Member, str, str, str]] = field(default_factory=list)  # node died: resend these
    resent_ok: int = 0
    resent_failed: int = 0
    unexpected_drops: int = 0
    rejoin_failures: list[str] = field(default_factory=list)
    rejoined: list[float] = field(default_factory=list)  # perf_counter when each moved client had rejoined
    attempts: list[int] = field(default_factory=list)  # connect attempts each moved client needed
    catch_up: int = 0  # messages received in join_many / chat:history answers
    paged: int = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class Member:
    """One simulated user: its connection, its rooms, and what it holds of each room."""

    def __init__(self, index: int, token: str, group: str, rooms: list[str], stats: Stats) -> None:
        self.index = index
        self.token = token
        self.group = group  # the node it started on: "a" (survives) or "b" (killed)
        self.rooms = rooms
        self.stats = stats
        self.conn: LightClient | None = None
        self.contig = dict.fromkeys(rooms, 0)
        self.above: dict[str, set[int]] = {r: set() for r in rooms}
        self.dups = 0
        self.dup_kinds: dict[str, int] = {}  # duplicates by how the second copy came: live, join_many, history
        self.dup_seen: list[tuple[str, int, str]] = []  # (room, seq, how) of the first few
        self.next_room = 0
        self.record = False  # time its deliveries
        self.ready = False  # connected and joined: it may send
        self.moved = False  # rejoined after its node died

    @property
    def connected(self) -> bool:
        return self.conn is not None and self.conn.transport is not None and not self.conn.transport.is_closing()

    def holds(self, room: str, seq: int) -> bool:
        return seq <= self.contig[room] or seq in self.above[room]

    def got(self, room: str, seq: int, how: str = "live") -> None:
        contig = self.contig.get(room)
        if contig is None:
            return
        above = self.above[room]
        if seq <= contig or seq in above:
            self.dups += 1
            kind = f"{how} ({'after' if self.moved else 'before'} a rejoin, client from {self.group})"
            self.dup_kinds[kind] = self.dup_kinds.get(kind, 0) + 1
            if len(self.dup_seen) < 3:
                self.dup_seen.append((room, seq, kind))
            return
        if seq == contig + 1:
            contig = seq
            while contig + 1 in above:
                contig += 1
                above.discard(contig)
            self.contig[room] = contig
        else:
            above.add(seq)

    def on_event(self, packet: bytes) -> None:
        if not packet.startswith(b'42["chat:message"'):
            return
        i = packet.find(b'"room_id":"')
        seq = _int_after(packet, b'"seq":')
        if i < 0 or seq is None:
            return
        room = packet[i + 11 : i + 47].decode()
        self.got(room, seq)
        if self.record:
            sent_ns = _int_after(packet, b"T=")
            if sent_ns is not None:
                now = time.perf_counter_ns()
                self.stats.deliveries.append((sent_ns / 1e9, (now - sent_ns) / 1e6, self.group))

    async def connect(self, port: int) -> None:
        self.conn = await connect(HOST, port, self.token, on_event=self.on_event, wait_s=30)

    async def join(self, first: bool) -> None:
        """One ``room:join_many`` for every room, from the highest contiguous seq held; pages on ``has_more``."""
        assert self.conn is not None
        rooms = [{"room_id": r, "after_seq": self.contig[r]} for r in self.rooms]
        ack = await self.conn.call("room:join_many", {"rooms": rooms}, wait_s=60)
        if not ack.get("ok"):
            raise RuntimeError(f"room:join_many refused: {ack}")
        for result in ack["rooms"]:
            if not result.get("ok"):
                raise RuntimeError(f"room:join_many: room {result.get('room_id')} refused: {result}")
            room = result["room_id"]
            last = self.contig[room]
            for m in result["messages"]:
                self.got(room, m["seq"], "join_many answer")
                last = max(last, m["seq"])
                self.stats.catch_up += not first
            more = result.get("has_more", False)
            while more:
                self.stats.paged += 1
                page = await self.conn.call("chat:history", {"room_id": room, "after_seq": last, "limit": 200})
                if not page.get("ok"):
                    raise RuntimeError(f"chat:history refused: {page}")
                for m in page["messages"]:
                    self.got(room, m["seq"], "chat:history page")
                    last = max(last, m["seq"])
                    self.stats.catch_up += 1
                more = page.get("has_more", False) and page["messages"]

    def pick_room(self) -> str:
        room = self.rooms[self.next_room % len(self.rooms)]
        self.next_room += 1
        return room


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stats = Stats()
        self.rng = random.Random(args.seed)
        self.members: list[Member] = []
        self.nodes: dict[str, Server] = {}
        self.t_kill: float | None = None
        self.kill_wall: float | None = None
        self.stopping = False
        self.sent = 0
        self.send_tasks: set[asyncio.Task[None]] = set()
        self.reconnects: list[asyncio.Task[None]] = []
        self.moved = -1
        self.all_back = asyncio.Event()  # every moved client rejoined (or gave up)

    # --- set-up ------------------------------------------------------------------------------------

    def start_nodes(self, database_url: str) -> None:
        env = {
            "STUDYHALL_DATABASE_URL": database_url,
            "STUDYHALL_REDIS_URL": self.args.redis_url,
            "STUDYHALL_JWT_SECRET": JWT_SECRET,
            "STUDYHALL_ACCESS_TOKEN_TTL_S": "86400",
            # The two limits every bench raises (one process plays thousands of users from one address).
            "STUDYHALL_CHAT_RATE_COUNT": "1000",
            "STUDYHALL_CHAT_RATE_WINDOW_S": "0.1",
            "STUDYHALL_SIO_ANONYMOUS_PER_ADDRESS": "100000",
        }
        for item in self.args.node_env:  # --node-env KEY=VALUE: a setting to compare (e.g. the join gate)
            key, _, value = item.partition("=")
            env[key] = value
        for name in ("a", "b"):  # one after the other: the first migrates the fresh database
            node = Server(None, extra_env=env)
            self.nodes[name] = node
            node.start()

    def pid(self, name: str) -> int:
        proc = self.nodes[name].proc
        assert proc is not None
        return proc.pid

    async def users(self, database_url: str, n: int) -> list[str]:
        from core_api.auth import Tokens

        ids = [uuid.uuid4() for _ in range(n)]
        conn = await asyncpg.connect(database_url)
        try:
            await conn.copy_records_to_table(
                "users",
                records=[(u, f"soak{i}@bench.test", f"soak {i}", "!bench") for i, u in enumerate(ids)],
                columns=["id", "email", "display_name", "password_hash"],
            )
        finally:
            await conn.close()
        signer = Tokens(JWT_SECRET, 86400)
        return [signer.issue(u, "student") for u in ids]

    async def create_rooms(self, tokens: list[str]) -> list[str]:
        rooms = []
        async with aiohttp.ClientSession() as http:
            for i in range(self.args.rooms):
                async with http.post(
                    f"{self.nodes['a'].url}/api/v1/rooms",
                    json={"name": f"soak {i}", "kind": "study", "visibility": "public"},
                    headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"},
                ) as resp:
                    body = await resp.json()
                    if resp.status != 201:
                        raise RuntimeError(f"creating a room: {resp.status} {body}")
                    rooms.append(str(body["id"]))
        return rooms

    async def connect_all(self) -> None:
        async def one(m: Member) -> None:
            await m.connect(self.nodes[m.group].port)
            await m.join(first=True)

        for i in range(0, len(self.members), 100):
            await asyncio.gather(*(one(m) for m in self.members[i : i + 100]))
        for m in self.members:
            self.watch(m)

    # --- traffic -----------------------------------------------------------------------------------

    async def send(self, m: Member, room: str, body: str, client_msg_id: str, resend: bool = False) -> None:
        conn = m.conn
        assert conn is not None
        started = time.perf_counter()
        try:
            ack = await conn.call("chat:send", {"room_id": room, "body": body, "client_msg_id": client_msg_id})
        except ConnectionError:
            if resend:
                self.stats.resent_failed += 1
            else:
                self.stats.unacked.append((m, room, body, client_msg_id))
            return
        except TimeoutError:
            self.stats.error("no ack within 30 s")
            return
        if not ack.get("ok"):
            self.stats.error(f"refused: {ack.get('error', {}).get('code')}")
            if resend:
                self.stats.resent_failed += 1
            return
        self.stats.acked[client_msg_id] = (room, ack["message"]["seq"])
        if resend:
            self.stats.resent_ok += 1
        else:
            self.stats.acks.append((started, (time.perf_counter() - started) * 1000, m.group))

    async def sender(self, until: asyncio.Event) -> None:
        t0 = time.perf_counter()
        i = 0
        cursor = 0
        n = len(self.members)
        while not until.is_set():
            delay = t0 + i / self.args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            for _ in range(n):  # the next connected client (a moved one may be away)
                m = self.members[cursor % n]
                cursor += 1
                if m.ready and m.connected:
                    break
            else:
                await asyncio.sleep(0.01)
                continue
            body = f"T={time.perf_counter_ns()} soak {i:07d} " + "x" * 40
            task = asyncio.ensure_future(self.send(m, m.pick_room(), body, uuid.uuid4().hex))
            self.send_tasks.add(task)
            task.add_done_callback(self.send_tasks.discard)
            i += 1
        self.sent = i

    # --- the kill and the storm ----------------------------------------------------------------------

    def watch(self, m: Member) -> None:
        conn = m.conn
        assert conn is not None

        def dropped(_: asyncio.Future[None]) -> None:
            if self.stopping or m.conn is not conn:
                return
            if m.group != "b" or self.t_kill is None:
                self.stats.unexpected_drops += 1
                return
            self.reconnects.append(asyncio.ensure_future(self.reconnect(m)))

        conn.closed.add_done_callback(dropped)

    def _rejoin_done(self) -> None:
        if len(self.stats.rejoined) + len(self.stats.rejoin_failures) >= self.moved:
            self.all_back.set()

    async def reconnect(self, m: Member) -> None:
        m.conn, m.ready = None, False
        attempt = 0
        while True:
            delay = 0.0 if self.args.reconnect == "immediate" else sio_backoff_s(attempt, self.rng)
            attempt += 1
            await asyncio.sleep(delay)
            try:
                await m.connect(self.nodes["a"].port)
                break
            except (ConnectError, OSError, TimeoutError):
                if attempt >= 20:
                    self.stats.rejoin_failures.append(f"client {m.index}: no connection after {attempt} attempts")
                    self._rejoin_done()
                    return
        m.moved = True
        try:
            await m.join(first=False)
        except Exception as exc:  # a reconnect that fails is a finding: keep it
            self.stats.rejoin_failures.append(f"client {m.index}: {exc!r}"[:300])
            self._rejoin_done()
            return
        self.stats.rejoined.append(time.perf_counter())
        self.stats.attempts.append(attempt)
        self._rejoin_done()
        m.ready = True
        self.watch(m)
        mine = [u for u in self.stats.unacked if u[0] is m]
        for _, room, body, cid in mine:  # what the web app's composer would send again: same client_msg_id
            await self.send(m, room, body, cid, resend=True)

    def start_py_spy(self) -> subprocess.Popen[bytes] | None:
        """``--py-spy``: sample node a for ``--storm-profile-s`` from the kill (collapsed stacks), on the load
        generator's CPU."""
        if not self.args.py_spy:
            return None
        cmd = [self.args.py_spy_bin, "record", "-p", str(self.pid("a")), "-d", str(int(self.args.storm_profile_s))]
        cmd += ["-r", "200", "--nonblocking", "-f", "raw", "-o", self.args.py_spy]
        return subprocess.Popen(["taskset", "-c", "1", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self, name: str) -> None:
        proc = self.nodes[name].proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    # --- the run -----------------------------------------------------------------------------------

    async def run(self, database_url: str) -> dict[str, Any]:
        args = self.args
        tokens = await self.users(database_url, args.clients)
        rooms = await self.create_rooms(tokens)
        for i, token in enumerate(tokens):
            mine = self.rng.sample(rooms, min(args.rooms_per_client, len(rooms)))
            self.members.append(Member(i, token, "ab"[i % 2], mine, self.stats))
        t = time.perf_counter()
        await self.connect_all()
        print(f"  {len(self.members)} clients connected and joined in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        await asyncio.sleep(2.0)  # the join announcements settle
        for m in self.members:
            m.record = m.ready = True
        until = asyncio.Event()
        sending = asyncio.ensure_future(self.sender(until))
        cpu = {n: proc_cpu_s(self.pid(n)) for n in self.nodes}
        own = own_cpu_s()
        t_start = time.perf_counter()
        await asyncio.sleep(args.steady_s)
        t_kill = time.perf_counter()
        steady_cpu = {n: (proc_cpu_s(self.pid(n)) - cpu[n]) / (t_kill - t_start) for n in self.nodes}
        steady_own = (own_cpu_s() - own) / (t_kill - t_start)
        cpu_a, own = proc_cpu_s(self.pid("a")), own_cpu_s()
        moved = sum(1 for m in self.members if m.group == "b")
        self.moved = moved
        spy = self.start_py_spy()
        self.t_kill, self.kill_wall = t_kill, time.time()
        self.kill("b")
        print(f"  killed node b (-9): {moved} clients reconnect to a", file=sys.stderr)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_back.wait(), args.storm_max_s)
        t_rejoined = time.perf_counter()
        storm_cpu = (proc_cpu_s(self.pid("a")) - cpu_a) / (t_rejoined - t_kill)
        storm_own = (own_cpu_s() - own) / (t_rejoined - t_kill)
        print(f"  {len(self.stats.rejoined)} rejoined in {t_rejoined - t_kill:.2f} s", file=sys.stderr)
        cpu_a, own = proc_cpu_s(self.pid("a")), own_cpu_s()
        await asyncio.sleep(args.after_s)
        t_end = time.perf_counter()
        after_cpu = (proc_cpu_s(self.pid("a")) - cpu_a) / (t_end - t_rejoined)
        after_own = (own_cpu_s() - own) / (t_end - t_rejoined)
        until.set()
        if spy is not None:
            await asyncio.to_thread(stop_pid, spy, args.storm_profile_s + 30)
        await sending
        await asyncio.gather(*list(self.send_tasks), return_exceptions=True)
        await asyncio.gather(*self.reconnects, return_exceptions=True)
        await asyncio.sleep(args.drain_s)
        for m in self.members:
            m.record = False
        check = await self.check(database_url)
        self.stopping = True
        for m in self.members:
            if m.conn is not None:
                m.conn.close()
        return {
            "t": (t_start, t_kill, t_rejoined, t_end),
            "cpu": {"steady": steady_cpu, "storm": storm_cpu, "after": after_cpu},
            "own": {"steady": steady_own, "storm": storm_own, "after": after_own},
            "moved": moved,
            "check": check,
        }

    async def check(self, database_url: str) -> dict[str, Any]:
        """Every stored message against every member of its room; what the server stored twice."""
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT room_id::text AS room, seq, client_msg_id, created_at FROM chat_messages")
            twice = await conn.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM chat_messages GROUP BY room_id, author_id, client_msg_id"
                " HAVING count(*) > 1) t"
            )
            bodies_twice = await conn.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM chat_messages GROUP BY body HAVING count(*) > 1) t"
            )
        finally:
            await conn.close()
        stored: dict[str, list[tuple[int, str]]] = {}
        by_id = {}
        for r in rows:
            stored.setdefault(r["room"], []).append((r["seq"], r["client_msg_id"]))
            by_id[r["client_msg_id"]] = (r["room"], r["seq"], r["created_at"].timestamp())
        acked_missing = sum(
            1 for cid, (room, seq) in self.stats.acked.items() if by_id.get(cid, ("", -1))[:2] != (room, seq)
        )
        lost_acked = lost_unacked = 0
        lost_clients = set()
        for m in self.members:
            for room in m.rooms:
                for seq, cid in stored.get(room, []):
                    if not m.holds(room, seq):
                        lost_clients.add(m.index)
                        if cid in self.stats.acked:
                            lost_acked += 1
                        else:
                            lost_unacked += 1
        unacked_ids = {cid for _, _, _, cid in self.stats.unacked}
        stored_before_death = sum(
            1 for cid in unacked_ids if cid in by_id and self.kill_wall is not None and by_id[cid][2] < self.kill_wall
        )
        return {
            "stored": len(rows),
            "acked": len(self.stats.acked),
            "expected_deliveries": sum(len(stored.get(r, [])) for m in self.members for r in m.rooms),
            "lost_acked": lost_acked,
            "lost_unacked": lost_unacked,
            "lost_clients": len(lost_clients),
            "duplicates": sum(m.dups for m in self.members),
            "duplicate_kinds": merge(m.dup_kinds for m in self.members),
            "duplicate_examples": [x for m in self.members for x in m.dup_seen][:5],
            "acked_not_stored": acked_missing,
            "stored_twice": twice,
            "bodies_twice": bodies_twice,
            "unacked": len(self.stats.unacked),
            "unacked_stored_before_death": stored_before_death,
            "unacked_not_stored": sum(1 for cid in unacked_ids if cid not in by_id),
        }


def merge(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def stop_pid(proc: subprocess.Popen[bytes], wait_s: float) -> None:
    """Wait for a child to end by itself, else stop it by its PID."""
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait()


def report(soak: Soak, result: dict[str, Any], load: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
    args, stats = soak.args, soak.stats
    t_start, t_kill, t_rejoined, t_end = result["t"]
    phases = {
        "steady (2 nodes)": (t_start, t_kill),
        "storm (kill → all rejoined)": (t_kill, t_rejoined),
        "after (1 node)": (t_rejoined, t_end),
    }
    print(
        f"\nclients {args.clients:,} ({result['moved']:,} on the killed node), rooms {args.rooms} × "
        f"{args.rooms_per_client} per client, {args.rate:,} msg/s, reconnect: {args.reconnect}; "
        f"load average at start {' '.join(f'{x:.2f}' for x in load[0])}, at end {' '.join(f'{x:.2f}' for x in load[1])}"
    )
    print(
        "\n| phase | s | who | ack n | ack p50 ms | ack p99 ms | delivery n | delivery p50 ms | delivery p99 ms "
        "| node CPU | load gen CPU |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for phase, (lo, hi) in phases.items():
        key = phase.split()[0]
        cpu = result["cpu"][key]
        cpu_text = (
            " + ".join(f"{n} {100 * c:.0f} %" for n, c in cpu.items())
            if isinstance(cpu, dict)
            else f"a {100 * cpu:.0f} %"
        )
        groups = [("all", None)] if key != "storm" else [("others (on a all along)", "a"), ("moved (from b)", "b")]
        for who, group in groups:
            acks = [ms for t, ms, g in stats.acks if lo <= t < hi and (group is None or g == group)]
            dels = [ms for t, ms, g in stats.deliveries if lo <= t < hi and (group is None or g == group)]
            print(
                f"| {phase} | {hi - lo:.1f} | {who} | {len(acks):,} | {pct(acks, 0.5):.1f} | {pct(acks, 0.99):.1f} "
                f"| {len(dels):,} | {pct(dels, 0.5):.1f} | {pct(dels, 0.99):.1f} | {cpu_text} "
                f"| {100 * result['own'][key]:.0f} % |"
            )
    if args.timeline:
        print(f"\nper second of send time (from the start; the kill at {t_kill - t_start:.1f} s):", file=sys.stderr)
        for sec in range(math.ceil(t_end - t_start)):
            lo, hi = t_start + sec, t_start + sec + 1
            acks = [ms for t, ms, _ in stats.acks if lo <= t < hi]
            dels = [ms for t, ms, _ in stats.deliveries if lo <= t < hi]
            back = sum(1 for t in stats.rejoined if lo <= t < hi)
            print(
                f"  {sec:3d} s: {len(acks):5d} acks p99 {pct(acks, 0.99):8.1f} ms, {len(dels):6d} deliveries "
                f"p50 {pct(dels, 0.5):8.1f} p99 {pct(dels, 0.99):8.1f} ms, {back:4d} rejoined",
                file=sys.stderr,
            )
    rejoin_s = [t - t_kill for t in stats.rejoined]
    print(
        f"\nreconnect storm: {len(stats.rejoined):,} of {result['moved']:,} rejoined; all within "
        f"{t_rejoined - t_kill:.2f} s of the kill (p50 {pct(rejoin_s, 0.5):.2f} s, p99 {pct(rejoin_s, 0.99):.2f} s); "
        f"connect attempts max {max(stats.attempts, default=0)}; {stats.catch_up:,} messages caught up in "
        f"join_many answers, {stats.paged} chat:history pages; surviving node CPU {100 * result['cpu']['storm']:.0f} % "
        f"of a core during the storm; rejoin failures {len(stats.rejoin_failures)}"
    )
    for failure in stats.rejoin_failures[:5]:
        print(f"  {failure}")
    c = result["check"]
    for example in c["duplicate_examples"]:
        print(f"  duplicate: room {example[0]} seq {example[1]}: {example[2]}", file=sys.stderr)
    print(
        f"zero loss: {c['stored']:,} messages stored ({c['acked']:,} acked), {c['expected_deliveries']:,} "
        f"member-message pairs checked; lost: {c['lost_acked']} acked + {c['lost_unacked']} not acked "
        f"(at {c['lost_clients']} clients); duplicates shown to clients: {c['duplicates']} "
        f"{c['duplicate_kinds'] or ''}; acked but not "
        f"stored: {c['acked_not_stored']}; stored twice (same client_msg_id): {c['stored_twice']}, same body "
        f"twice: {c['bodies_twice']}"
    )
    print(
        f"sends the dead node never acked: {c['unacked']} ({c['unacked_stored_before_death']} had been committed "
        f"before the kill, {c['unacked_not_stored']} not stored at all after the resends); resent with the same "
        f"client_msg_id: {stats.resent_ok} acked, {stats.resent_failed} failed"
    )
    print(
        f"other errors: {stats.errors or 'none'}; unexpected drops (clients of a): {stats.unexpected_drops}; "
        f"sent {soak.sent:,}"
    )


async def main_async(args: argparse.Namespace) -> None:
    db = f"studyhall_soak_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{db}"')
    finally:
        await admin.close()
    database_url = args.database_url.rsplit("/", 1)[0] + "/" + db
    soak = Soak(args)
    load0 = os.getloadavg()
    try:
        await asyncio.to_thread(soak.start_nodes, database_url)
        result = await soak.run(database_url)
        load1 = os.getloadavg()
        report(soak, result, (load0, load1))
    finally:
        for node in soak.nodes.values():
            node.database_url = None  # the database is dropped below, once
            await asyncio.to_thread(node.stop)
        admin = await asyncpg.connect(args.database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        finally:
            await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2000, help="light clients, half on each node")
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--rooms-per-client", type=int, default=2)
    parser.add_argument("--rate", type=int, default=100, help="chat:send messages/s in all")
    parser.add_argument("--steady-s", type=float, default=20.0, help="seconds on two nodes before the kill")
    parser.add_argument("--after-s", type=float, default=10.0, help="seconds on one node after the storm")
    parser.add_argument("--storm-max-s", type=float, default=60.0, help="give up waiting for the rejoins after this")
    parser.add_argument("--drain-s", type=float, default=7.0, help="seconds after the last send before the check")
    parser.add_argument(
        "--reconnect",
        choices=("webapp", "immediate"),
        default="webapp",
        help="webapp: socket.io-client's jittered backoff with web/src/lib/live.ts RECONNECT; immediate: all at once",
    )
    parser.add_argument("--timeline", action="store_true", help="also print p99s per second of the run")
    parser.add_argument("--py-spy", metavar="OUT", help="profile node a during the storm with py-spy into OUT")
    parser.add_argument("--py-spy-bin", default="py-spy", help="the py-spy executable (not a dependency of studyhall)")
    parser.add_argument("--storm-profile-s", type=float, default=8.0, help="seconds py-spy samples from the kill")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument(
        "--node-env", action="append", default=[], metavar="KEY=VALUE",
        help="a STUDYHALL_* setting for both nodes (repeatable), e.g. STUDYHALL_ROOM_JOINS_AT_ONCE=4",
    )  # fmt: skip
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("STUDYHALL_DATABASE_URL", MACHINE_PG),
        help="Postgres server (a fresh database is created and dropped)",
    )
    args = parser.parse_args()
    pin(1)
    asyncio.run(main_async(args))
    print("(node CPU from /proc, % of one core; Postgres and Redis are not counted)", file=sys.stderr)


if __name__ == "__main__":
    main()
