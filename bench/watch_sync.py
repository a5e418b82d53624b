"""Watch party sync benchmark: how far apart 50 viewers' players are, through a scripted session.

Usage::

    .venv/bin/python -m bench.watch_sync                   # starts its own `studyhall serve`, pinned to CPU 0
    .venv/bin/python -m bench.watch_sync --url http://127.0.0.1:8080 --seed 2

What is real and what is simulated:

- **Real**: the server (a separate ``studyhall serve`` process with Postgres), the 50 Socket.IO
  connections over 127.0.0.1, every command, broadcast, ``watch:sync`` and heartbeat, and the reference
  client (:mod:`watch_party.client`) doing clock sync and corrections.
- **Simulated, in this process** (:mod:`watch_party.sim`): each viewer's clock (true time plus an offset
  of up to ±2 s, gaining or losing up to 50 ppm), its network (every message held for a one-way delay
  of 10–250 ms plus exponential jitter with a mean of 2 ms + 10 % of that delay, first in first out,
  both ways), and its media player (a media clock off by up to ±0.1 %, seeks that freeze the picture
  for 20–100 ms, ``play()`` taking 0–15 ms to start, position reads off by up to ±2 ms). "True time"
  is this machine's clock, which the server reads too.

The *spread* at an instant is the largest minus the smallest position the 50 simulated players show at
that same true instant. It is measured 0.5, 1 and 2 s after each command (from when the host's client
sent it; for a play gated by the ready check and for an automatic advance, from when the server
started playback), and every 50 ms in steady state: from 3 s after a command until the next one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import socketio

from bench.rest import Server
from watch_party.client import WatchClient
from watch_party.sim import DelayedLink, SimPlayer, skewed_clock

SETTLE_S = 3.0
PROBES_S = (0.5, 1.0, 2.0)
SAMPLE_EVERY_S = 0.05
MEDIA_A = {"url": "https://example.com/a.mp4", "kind": "video", "duration": 1800.0, "title": "Lecture A"}
MEDIA_B = {"url": "https://example.com/b.mp4", "kind": "video", "duration": 25.0, "title": "Short B"}
MEDIA_C = {"url": "https://example.com/c.mp4", "kind": "video", "duration": 1800.0, "title": "Lecture C"}

# Syncplay's defaults (syncplay/constants.py) beside ours, for the table.
SYNCPLAY = {
    "clock": "RTT moving average (weight 0.85), forward delay = RTT/2; no clock offset",
    "slow down when ahead by": "1.5 s (DEFAULT_SLOWDOWN_KICKIN_THRESHOLD)",
    "slow-down rate": "0.95 (SLOWDOWN_RATE), only when ahead",
    "back to normal rate within": "0.1 s (SLOWDOWN_RESET_THRESHOLD)",
    "seek (rewind) when ahead by": "4 s (DEFAULT_REWIND_THRESHOLD)",
    "seek (fast-forward) when behind by": "5 s (DEFAULT_FASTFORWARD_THRESHOLD)",
    "seek on a state change when off by": "1 s (SEEK_THRESHOLD)",
}


@dataclass
class Viewer:
    n: int
    token: str
    offset: float
    skew: float
    delay: float
    jitter: float
    rng: random.Random
    player: SimPlayer
    sio: socketio.AsyncClient = field(default_factory=lambda: socketio.AsyncClient(reconnection=False))
    client: WatchClient | None = None


@dataclass
class Mark:
    name: str
    at: float
    version: int


@dataclass
class Samples:
    playing: list[float] = field(default_factory=list)
    paused: list[float] = field(default_factory=list)


def pct(data: list[float], q: float) -> float:
    if not data:
        return float("nan")
    ordered = sorted(data)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def register(session: aiohttp.ClientSession, api: str, n: int, tag: str) -> str:
    email = f"viewer-{tag}-{n}@bench.example"
    body = {"email": email, "password": "bench-password", "display_name": f"Viewer {n}"}
    async with session.post(api + "/auth/register", json=body) as resp:
        assert resp.status == 201, await resp.text()
    async with session.post(api + "/auth/login", json={"email": email, "password": "bench-password"}) as resp:
        assert resp.status == 200, await resp.text()
        token: str = (await resp.json())["access_token"]
        return token


class Bench:
    def __init__(self, url: str, viewers: int, seed: int) -> None:
        self.url = url
        self.count = viewers
        self.rng = random.Random(seed)
        self.viewers: list[Viewer] = []
        self.room_id = ""
        self.marks: list[Mark] = []
        self.samples: list[tuple[float, float, bool]] = []
        self.probes: dict[tuple[int, float], tuple[float, int]] = {}
        self._probe_tasks: list[asyncio.Task[None]] = []

    @property
    def host(self) -> WatchClient:
        client = self.viewers[0].client
        assert client is not None
        return client

    def spread(self, t: float) -> float:
        shown = [v.player.shown(t) for v in self.viewers]
        return max(shown) - min(shown)

    # --- set-up ----------------------------------------------------------------------------------------

    async def setup(self) -> None:
        api = self.url + "/api/v1"
        tag = uuid.uuid4().hex[:6]
        async with aiohttp.ClientSession() as session:
            tokens = [await register(session, api, n, tag) for n in range(self.count)]
            body = {"name": "bench watch party", "kind": "watch", "visibility": "public"}
            async with session.post(api + "/rooms", json=body, headers={"Authorization": f"Bearer {tokens[0]}"}) as r:
                assert r.status == 201, await r.text()
                self.room_id = (await r.json())["id"]
        for n, token in enumerate(tokens):
            rng = random.Random(self.rng.random())
            delay = rng.uniform(0.010, 0.250)
            player = SimPlayer(rng, rate_error=rng.uniform(-1e-3, 1e-3), seek_latency=(0.02, 0.1),
                               play_latency=(0.0, 0.015), read_noise=0.002)  # fmt: skip
            self.viewers.append(Viewer(n, token, offset=rng.uniform(-2.0, 2.0), skew=rng.uniform(-50e-6, 50e-6),
                                       delay=delay, jitter=0.002 + 0.1 * delay, rng=rng, player=player))  # fmt: skip
        await asyncio.gather(*(self._connect(v) for v in self.viewers))

    async def _connect(self, v: Viewer) -> None:
        await v.sio.connect(self.url, auth={"token": v.token}, transports=["websocket"], wait_timeout=30)
        link = DelayedLink(v.sio, v.rng, delay_s=v.delay, jitter_s=v.jitter)
        ack = await link.call("room:join", {"room_id": self.room_id})
        assert ack["ok"], ack
        v.client = WatchClient(link, self.room_id, v.player, clock=skewed_clock(v.offset, v.skew))
        await v.client.start()

    async def close(self) -> None:
        for task in self._probe_tasks:
            task.cancel()
        for v in self.viewers:
            if v.client is not None:
                await v.client.stop()
        await asyncio.gather(*(v.sio.disconnect() for v in self.viewers if v.sio.connected))

    # --- the session -----------------------------------------------------------------------------------

    async def sampler(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_EVERY_S)
            t = time.time()
            state = self.host.state
            self.samples.append((t, self.spread(t), bool(state and state["playing"])))

    def mark(self, name: str, at: float, version: int) -> None:
        self.marks.append(Mark(name, at, version))
        for after in PROBES_S:
            self._probe_tasks.append(asyncio.create_task(self._probe(len(self.marks) - 1, at, after, version)))

    async def _probe(self, index: int, at: float, after: float, version: int) -> None:
        await asyncio.sleep(max(0.0, at + after - time.time()))
        t = time.time()
        behind = sum(1 for v in self.viewers if v.client is None or (v.client.version or 0) < version)
        self.probes[(index, after)] = (self.spread(t), behind)

    async def command(self, name: str, event: str, **fields: Any) -> dict[str, Any]:
        sent = time.time()
        state = await self.host.command(event, **fields)
        self.mark(name, sent, state["version"])
        return state

    async def until(self, check: Callable[[dict[str, Any]], bool], within: float = 30) -> dict[str, Any]:
        """The host's state once ``check`` holds (it changes on broadcasts, so look often)."""
        async with asyncio.timeout(within):
            while True:
                state = self.host.state
                if state is not None and check(state):
                    return state
                await asyncio.sleep(0.01)

    async def ready_when_loaded(self, v: Viewer) -> None:
        """Each viewer "buffers" new media for 0.3–1.5 s, then says it is ready."""
        seen: Any = None
        assert v.client is not None
        while True:
            await asyncio.sleep(0.05)
            media = (v.client.state or {}).get("media")
            item = media["item_id"] if media else None
            if item is not None and item != seen:
                seen = item
                await asyncio.sleep(v.rng.uniform(0.3, 1.5))
                await v.client.set_ready(True)

    async def script(self) -> None:
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        await self.host.command("watch:ready_check", mode="all")
        await self.command("load", "watch:load", media=MEDIA_A)
        armed = await self.host.play()  # at once: it waits until every viewer has "buffered" and is ready
        started = armed if armed["playing"] else await self.until(lambda s: s["version"] > armed["version"])
        assert started["playing"], started
        self.mark("play after ready check", started["changed_at"], started["version"])
        await sleep(20.0)
        await self.host.command("watch:ready_check", mode="off")
        await sleep(2.0)
        await self.command("pause", "watch:pause")
        await sleep(4.0)
        await self.command("play", "watch:play")
        await sleep(15.0)
        await self.command("seek forward", "watch:seek", position=900.0)
        await sleep(15.0)
        await self.command("seek back", "watch:seek", position=300.0)
        await sleep(15.0)
        await self.command("rate 1.5", "watch:rate", rate=1.5)
        await sleep(10.0)
        await self.command("rate 1.0", "watch:rate", rate=1.0)
        await sleep(10.0)
        await self.command("load (short clip)", "watch:load", media=MEDIA_B)
        await self.host.command("watch:queue", media=MEDIA_C)
        await sleep(3.0)
        played = await self.command("play", "watch:play")
        advanced = await self.until(lambda s: s["current"] != played["current"], within=60)
        self.mark("auto-advance", advanced["changed_at"], advanced["version"])
        await sleep(15.0)
        await self.command("pause", "watch:pause")
        await sleep(4.0)

    async def run(self) -> None:
        await self.setup()
        await asyncio.sleep(3.0)  # a few heartbeats for every clock
        tasks = [asyncio.create_task(self.sampler())]
        tasks += [asyncio.create_task(self.ready_when_loaded(v)) for v in self.viewers]
        try:
            await self.script()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- results ---------------------------------------------------------------------------------------

    def steady(self) -> Samples:
        out = Samples()
        bounds = [m.at for m in self.marks] + [float("inf")]
        for t, spread, playing in self.samples:
            last = max((b for b in bounds if b <= t), default=None)
            if last is None or t < last + SETTLE_S:
                continue
            (out.playing if playing else out.paused).append(spread)
        return out

    def report(self, seed: int) -> bool:
        ms = 1000.0
        delays = sorted(v.delay * ms for v in self.viewers)
        offsets = [v.offset for v in self.viewers]
        median = statistics.median(delays)
        print(f"\n# viewers' one-way delays {delays[0]:.0f}–{delays[-1]:.0f} ms (median {median:.0f});"
              f" the host's {self.viewers[0].delay * ms:.0f} ms;"
              f" clock offsets {min(offsets):+.2f} to {max(offsets):+.2f} s")  # fmt: skip
        print(f"\n## spread after each command (ms; {self.count} players; viewers not yet on the new version)")
        print("| command | +0.5 s | +1 s | +2 s |")
        print("| --- | ---: | ---: | ---: |")
        worst_seek = 0.0
        for n, m in enumerate(self.marks):
            cells = []
            for after in PROBES_S:
                got = self.probes.get((n, after))
                cells.append(f"{got[0] * ms:.1f} ({got[1]})" if got else "-")
                if got and after == 1.0 and m.name.startswith("seek"):
                    worst_seek = max(worst_seek, got[0])
            print(f"| {n + 1}. {m.name} | " + " | ".join(cells) + " |")
        steady = self.steady()
        print("\n## steady state (from 3 s after a command until the next one; a sample every 50 ms)")
        print("| player state | samples | p50 ms | p95 ms | p99 ms | max ms |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for label, data in (("playing", steady.playing), ("paused", steady.paused)):
            row = [pct(data, q) * ms for q in (0.5, 0.95, 0.99)] + [max(data, default=float("nan")) * ms]
            print(f"| {label} | {len(data)} | " + " | ".join(f"{x:.1f}" for x in row) + " |")
        errors = []
        for v in self.viewers:
            assert v.client is not None
            true_offset = time.time() - v.client.clock()  # server (true) clock minus the viewer's, skew included
            errors.append(((v.client.sync.offset or 0.0) - true_offset) * ms)
        seeks = [v.player.seeks for v in self.viewers]
        print("\n## the clients")
        print(f"- clock offset estimates (true offsets within ±2 s): error mean {statistics.mean(errors):+.1f} ms"
              f" (the same for everyone does not spread the players), spread of errors (max − min)"
              f" {max(errors) - min(errors):.1f} ms, stdev {statistics.pstdev(errors):.1f} ms")  # fmt: skip
        print(f"- seeks per viewer over the session: median {statistics.median(seeks):.0f}, max {max(seeks)}")
        s = self.host.settings
        print(f"\n## thresholds: studyhall (this run: {s}) vs Syncplay defaults")
        print("| | studyhall | Syncplay |")
        print("| --- | --- | --- |")
        ours = {
            "clock": f"offset from NTP's 4 timestamps, each direction's minimum over the last {s.window} heartbeats"
            f" (every {s.heartbeat_s:g} s)",
            "slow down when ahead by": f"{s.nudge_threshold_s * ms:g} ms (proportional, both ways)",
            "slow-down rate": f"1 ∓ drift/{s.nudge_horizon_s:g} s, within ±{s.max_nudge:.0%}",
            "back to normal rate within": f"{s.nudge_release_s * ms:g} ms",
            "seek (rewind) when ahead by": f"{s.seek_threshold_s * ms:g} ms",
            "seek (fast-forward) when behind by": f"{s.seek_threshold_s * ms:g} ms",
            "seek on a state change when off by": f"{s.hard_sync_s * ms:g} ms",
        }
        for key, theirs in SYNCPLAY.items():
            print(f"| {key} | {ours[key]} | {theirs} |")
        p99 = pct(steady.playing, 0.99) * ms
        ok_steady, ok_seek = p99 < 50, worst_seek * ms < 150
        print(f"\n# target steady-state p99 < 50 ms: {'met' if ok_steady else 'NOT met'} ({p99:.1f} ms)")
        print(f"# target < 150 ms 1 s after a seek: {'met' if ok_seek else 'NOT met'} (worst {worst_seek * ms:.1f} ms)")
        print(f"# seed {seed}")
        return ok_steady and ok_seek


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="benchmark this running server (accounts are registered on it)")
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"# studyhall watch-party sync benchmark — {platform.node()}, {os.cpu_count()} CPUs,"
          f" {time.strftime('%Y-%m-%d %H:%M')}; {args.viewers} viewers")  # fmt: skip
    server: Server | None = None
    url = args.url
    if url is None:
        server = Server(os.environ.get("STUDYHALL_DATABASE_URL"))
        server.start()
        url = server.url
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    bench = Bench(url, args.viewers, args.seed)

    async def go() -> bool:
        try:
            await bench.run()
        finally:
            await bench.close()
        return bench.report(args.seed)

    try:
        met = asyncio.run(go())
    finally:
        if server is not None:
            server.stop()
    raise SystemExit(0 if met else 1)


if __name__ == "__main__":
    main()
