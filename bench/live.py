"""Live sessions: server CPU per viewer for the forwarding SFU (``live/sfu.py``) against aiortc's
``MediaRelay`` (decode once, encode per viewer) and, as the anchor, Janus VideoRoom, in the same run.

Usage::

    .venv/bin/python -m bench.live        # forward and janus: 10, 25, 50 viewers; relay: 2, 5, 10
    .venv/bin/python -m bench.live --forward 10 --relay 2 --janus 10 --seconds 5   # a quick look
    .venv/bin/python -m bench.live --janus ""                        # without Janus
    .venv/bin/python -m bench.live --no-pin                          # let the OS place both processes

With ``--janus`` (on by default) the bench needs Debian's ``janus`` package: when ``/usr/bin/janus`` is
missing it runs ``apt-get install -y janus`` itself, which needs root (otherwise it stops and says so).

The publisher sends a real VP8 stream: 640×360 at 30 fps, about 800 kbit/s, made once with ffmpeg
(libvpx, a keyframe every 2 s) and sent as pre-encoded packets, so the publisher costs the load
generator no encoding. For each mode and number of viewers:

1. a server process starts, pinned to CPU 0 (this load generator runs on CPU 1): an aiohttp app taking
   non-trickle SDP offers on ``/publish`` and ``/subscribe`` (or Janus, see ``janus`` below);
2. the publisher negotiates, then the viewers subscribe (light viewers: once connected, only the header of
   each decrypted RTP packet is read, so the load generator is not the limit); the publisher's first frame
   goes once every peer is connected;
3. after ``--warmup-s``, the server process's CPU time (all threads: user + system) is read at the start
   and end of ``--seconds`` of streaming; CPU per viewer = CPU seconds per second / viewers;
4. each viewer's frames are matched with the publisher's by RTP timestamp (both sides count from the
   stream's first frame): **lost** = frames sent in the window that never reached a viewer, **delay** =
   from the publisher's track handing a frame to its sender to the viewer's receiver completing it (one
   clock: all peers live in this process), p50 and p99 over every viewer and frame; **dropped by the SFU**
   = frames the forwarding path itself discarded (a viewer's queue full), which tells the server's losses
   from the network's and the load generator's.

- ``forward``: the server taps its receiver before the decoder and hands the encoded frames to one
  ``ForwardedTrack`` per viewer (``live.sfu``): no decoding, no encoding.
- ``relay``: aiortc's documented way to serve many viewers: ``MediaRelay().subscribe(track)`` per viewer,
  each viewer's sender encodes the decoded frames itself (VP8 at aiortc's default settings).

- ``janus``: Janus VideoRoom (``bench/janus_client.py``). The bench starts its own ``janus`` process,
  pinned to CPU 0 (every thread), with a config written to a temp dir: the VideoRoom plugin and the HTTP
  transport on 127.0.0.1 only (no WebSockets, event handlers or loggers), no STUN, host candidates on the
  interface aiortc's candidates are on, half-trickle (the aiortc peers send no trickle: their candidates
  are in the SDP). Through the HTTP API (events long-polled with GET) it creates a room (VP8, no bitrate
  cap), the publisher joins and publishes the same pre-encoded stream, each viewer joins as a subscriber
  to its feed, answers Janus's offer and starts. Server CPU is the Janus process's (all threads, from
  ``/proc``); "dropped by the SFU" is not known for Janus (shown as –). Janus is stopped by its PID.

What is measured is the media path alone: the studyhall server adds Socket.IO signalling and a database
read per negotiation, not per frame. The forwarding path's delay includes one frame interval (33 ms) that
aiortc's receiver adds: its jitter buffer hands a frame on when the next frame's first packet arrives;
Janus forwards each RTP packet as it comes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from aiohttp import ClientSession, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from bench.janus_client import Janus, JanusError, Session, ensure_installed
from live.sfu import Feed, codec_preferences, forward_keyframe_requests

FPS = 30
# A keyframe every 2 s: a browser's encoder answers the SFU's keyframe requests, a pre-encoded stream cannot,
# so a viewer dropped to the next keyframe (it fell 2 s behind) waits at most this long.
KEYFRAME_EVERY = 60
TICKS = 90000 // FPS  # RTP ticks per frame (90 kHz video clock)


def peer() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))  # host candidates only: no public STUN


# --- the server (a process of its own, pinned to CPU 0) -------------------------------------------


async def serve(mode: str) -> None:
    state: dict[str, Any] = {"feed": None, "track": None, "relay": MediaRelay(), "pcs": [], "tracks": []}
    ready = asyncio.Event()

    async def publish(request: web.Request) -> web.Response:
        offer = await request.json()
        pc = peer()
        state["pcs"].append(pc)
        transceiver = pc.addTransceiver("video", direction="recvonly")
        transceiver.setCodecPreferences(codec_preferences("video"))
        if mode == "forward":
            feed = Feed("video", transceiver.receiver, 0.5)
            feed.attach()
            state["feed"] = feed
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        state["track"] = transceiver.receiver.track
        ready.set()
        return web.json_response({"sdp": pc.localDescription.sdp})

    async def subscribe(request: web.Request) -> web.Response:
        offer = await request.json()
        await ready.wait()
        pc = peer()
        state["pcs"].append(pc)
        if mode == "forward":
            track: MediaStreamTrack = state["feed"].subscribe()
            state["tracks"].append(track)
        else:
            track = state["relay"].subscribe(state["track"])
        transceiver = pc.addTransceiver(track, direction="sendonly")
        transceiver.setCodecPreferences(codec_preferences("video"))
        if mode == "forward":
            forward_keyframe_requests(transceiver.sender, state["feed"])
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp})

    async def cpu(request: web.Request) -> web.Response:
        t = os.times()
        # Frames the forwarding SFU dropped for viewers that fell 2 s behind (its senders lagged).
        dropped = sum(track.dropped for track in state["tracks"])
        return web.json_response({"cpu_s": t.user + t.system, "dropped": dropped})

    app = web.Application()
    app.router.add_post("/publish", publish)
    app.router.add_post("/subscribe", subscribe)
    app.router.add_get("/cpu", cpu)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)  # the port, for the load generator
    try:
        await asyncio.Event().wait()
    finally:
        for pc in state["pcs"]:
            await pc.close()
        await runner.cleanup()


# --- the load generator (this process, CPU 1) -----------------------------------------------------


def make_stream(path: Path, seconds: int) -> list[bytes]:
    """The publisher's VP8 frames (ffmpeg, libvpx: 640×360, 30 fps, ~800 kbit/s, one keyframe)."""
    if not path.exists():
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            sys.exit("bench/live.py needs ffmpeg (scripts/setup installs it)")
        subprocess.run(
            [ffmpeg, "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate={FPS}",
             "-t", str(seconds), "-c:v", "libvpx", "-b:v", "800k", "-minrate", "800k", "-maxrate", "800k",
             "-g", str(KEYFRAME_EVERY), "-deadline", "realtime", "-cpu-used", "8", "-an", str(path)],
            check=True,
        )  # fmt: skip
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


class Recorded(MediaStreamTrack):
    """Sends pre-encoded frames at 30 fps, looping, and notes when each frame went to the sender."""

    kind = "video"

    def __init__(self, frames: list[bytes]) -> None:
        super().__init__()
        self.frames, self.index = frames, 0
        self.sent_at: dict[int, float] = {}
        self.start: float | None = None
        self.go = asyncio.Event()  # set once every viewer is connected: they all see the first frame

    async def recv(self) -> av.Packet[Any]:
        if self.start is None:
            await self.go.wait()
            self.start = time.perf_counter()
        due = self.start + self.index / FPS
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        packet = av.Packet(self.frames[self.index % len(self.frames)])
        packet.pts, packet.time_base = self.index * TICKS, Fraction(1, 90000)
        self.sent_at[self.index] = time.perf_counter()
        self.index += 1
        return packet


@dataclass
class Watcher:
    """A light viewer: once connected, its decrypted RTP packets only have their header read (a frame has
    arrived with its last packet, the one with the marker bit), so 50 of them fit in the load generator.
    Its RTP timestamps count from the first frame it got, which is the stream's first (see ``run_one``)."""

    pc: RTCPeerConnection
    arrived: dict[int, float] = field(default_factory=dict)
    origin: int | None = None

    async def on_rtp(self, data: bytes, arrival_time_ms: int) -> None:
        if len(data) < 12 or not data[1] & 0x80:
            return
        timestamp = int.from_bytes(data[4:8], "big")
        if self.origin is None:
            self.origin = timestamp
        self.arrived.setdefault(((timestamp - self.origin) % (1 << 32)) // TICKS, time.perf_counter())


async def connected(pc: RTCPeerConnection) -> None:
    done = asyncio.Event()

    @pc.on("connectionstatechange")
    def changed() -> None:
        if pc.connectionState == "connected":
            done.set()

    if pc.connectionState != "connected":
        await asyncio.wait_for(done.wait(), timeout=30)


async def negotiate(http: ClientSession, url: str, pc: RTCPeerConnection) -> None:
    await pc.setLocalDescription(await pc.createOffer())
    async with http.post(url, json={"sdp": pc.localDescription.sdp}) as resp:
        answer = await resp.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Server:
    """The server under test, as the load generator sees it: a publish, a subscribe, a CPU reading."""

    async def publish(self, pc: RTCPeerConnection) -> None:
        raise NotImplementedError

    async def subscribe(self, pc: RTCPeerConnection) -> None:
        raise NotImplementedError

    async def cpu(self) -> tuple[float, float]:
        """CPU seconds of the server process (all threads) and frames its forwarding path dropped."""
        raise NotImplementedError


class Studyhall(Server):
    """``--serve forward`` or ``--serve relay`` in a process of its own (see :func:`serve`)."""

    def __init__(self, http: ClientSession, base: str) -> None:
        self.http, self.base = http, base

    async def publish(self, pc: RTCPeerConnection) -> None:
        await negotiate(self.http, self.base + "/publish", pc)

    async def subscribe(self, pc: RTCPeerConnection) -> None:
        pc.addTransceiver("video", direction="recvonly")
        await negotiate(self.http, self.base + "/subscribe", pc)

    async def cpu(self) -> tuple[float, float]:
        async with self.http.get(self.base + "/cpu") as resp:
            body = await resp.json()
        return body["cpu_s"], body["dropped"]


class JanusRoom(Server):
    """Janus VideoRoom: the publisher joins a room the bench creates and publishes its offer; each viewer
    joins as a subscriber to its feed, answers Janus's offer and starts. One API session for all."""

    def __init__(self, janus: Janus, session: Session) -> None:
        self.janus, self.session = janus, session
        self.room = 0
        self.feed = 0

    async def publish(self, pc: RTCPeerConnection) -> None:
        handle = await self.session.attach()
        created = await self.session.message(handle, {
            "request": "create", "publishers": 1, "bitrate": 0, "videocodec": "vp8", "audiocodec": "opus",
            "fir_freq": 0, "notify_joining": False,
        })  # fmt: skip
        self.room = created["plugindata"]["data"]["room"]
        joined = await self.session.message(handle, {"request": "join", "ptype": "publisher", "room": self.room})
        self.feed = joined["plugindata"]["data"]["id"]
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"type": "offer", "sdp": pc.localDescription.sdp}
        configured = await self.session.message(handle, {"request": "publish", "audio": False, "video": True}, offer)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=configured["jsep"]["sdp"], type="answer"))
        await connected(pc)  # Janus offers the feed to subscribers once its PeerConnection is up

    async def subscribe(self, pc: RTCPeerConnection) -> None:
        handle = await self.session.attach()
        join = {"request": "join", "ptype": "subscriber", "room": self.room, "streams": [{"feed": self.feed}]}
        for attempt in range(50):  # the feed is there once Janus has seen the publisher's DTLS done (webrtcup)
            try:
                attached = await self.session.message(handle, join)
                break
            except JanusError as e:
                if "No such feed" not in str(e) or attempt == 49:
                    raise
                await asyncio.sleep(0.1)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=attached["jsep"]["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = {"type": "answer", "sdp": pc.localDescription.sdp}
        await self.session.message(handle, {"request": "start", "room": self.room}, answer)

    async def cpu(self) -> tuple[float, float]:
        return self.janus.cpu_s(), float("nan")  # Janus does not say what its path dropped


@contextlib.asynccontextmanager
async def server_for(mode: str, http: ClientSession, args: argparse.Namespace) -> AsyncIterator[Server]:
    if mode == "janus":
        janus = Janus(pin=args.pin)
        try:
            await janus.start()
            session = Session(http, janus.url)
            await session.create()
            try:
                yield JanusRoom(janus, session)
            finally:
                await session.destroy()
        finally:
            await janus.stop()
        return
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.live", "--serve", mode, stdout=asyncio.subprocess.PIPE
    )
    try:
        if args.pin:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(process.pid, {0})
        assert process.stdout is not None
        yield Studyhall(http, f"http://127.0.0.1:{int(await process.stdout.readline())}")
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10)


async def run_one(mode: str, viewers: int, frames: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    async with ClientSession() as http, server_for(mode, http, args) as server:
        publisher = peer()
        track = Recorded(frames)
        publisher.addTransceiver(track, direction="sendonly").setCodecPreferences(codec_preferences("video"))
        await server.publish(publisher)
        watchers = []
        for _ in range(viewers):
            pc = peer()
            watcher = Watcher(pc)
            await server.subscribe(pc)
            # aiortc's own receive path (parse, jitter buffer, NACKs) is skipped: see Watcher.
            receiver = pc.getTransceivers()[0].receiver
            receiver.transport._handle_rtp_data = watcher.on_rtp  # type: ignore[method-assign]
            watchers.append(watcher)
        for pc in [publisher, *(w.pc for w in watchers)]:
            await connected(pc)
        track.go.set()
        await asyncio.sleep(args.warmup_s)
        (cpu0, dropped0), t0, first = await server.cpu(), time.perf_counter(), track.index
        own0 = time.process_time()
        await asyncio.sleep(args.seconds)
        (cpu1, dropped1), t1, last = await server.cpu(), time.perf_counter(), track.index
        own1 = time.process_time()
        await asyncio.sleep(0.5)  # the window's last frames still in flight
        window = range(first, last - FPS // 2)
        delays = [w.arrived[i] - track.sent_at[i] for w in watchers for i in window if i in w.arrived]
        expected = len(window) * viewers
        for pc in [publisher, *(w.pc for w in watchers)]:
            await pc.close()
    cpu_per_s = (cpu1 - cpu0) / (t1 - t0)
    return {
        "mode": mode, "viewers": viewers, "server_cpu": cpu_per_s, "cpu_per_viewer": cpu_per_s / viewers,
        "lost": 1 - len(delays) / expected if expected else float("nan"),
        "p50_ms": pct(delays, 0.5) * 1000, "p99_ms": pct(delays, 0.99) * 1000,
        "generator_cpu": (own1 - own0) / (t1 - t0),
        "server_dropped": (dropped1 - dropped0) / expected if expected else float("nan"),
    }  # fmt: skip


async def bench(args: argparse.Namespace, frames: list[bytes]) -> list[dict[str, Any]]:
    if args.pin:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {1})
    kbit = sum(len(f) for f in frames) * 8 / (len(frames) / FPS) / 1000
    print(f"{platform.node()} {platform.platform()} cpus={os.cpu_count()} load={os.getloadavg()}")
    print(f"stream: 640x360 VP8 {FPS} fps, {kbit:.0f} kbit/s, {len(frames)} frames looped")
    print(
        "| path | viewers | server CPU (cores) | CPU per viewer | frames lost | delay p50 | delay p99 | generator CPU"
        " | dropped by the SFU | load avg |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    runs = [("forward", n) for n in args.forward] + [("relay", n) for n in args.relay]
    runs += [("janus", n) for n in args.janus]
    results = []
    for mode, n in runs:
        r = await run_one(mode, n, frames, args)
        results.append(r)
        dropped = "–" if r["server_dropped"] != r["server_dropped"] else f"{r['server_dropped']:.2%}"  # nan: Janus
        print(f"| {mode} | {n} | {r['server_cpu']:.2f} | {r['cpu_per_viewer'] * 1000:.1f} m | {r['lost']:.2%} |"
              f" {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['generator_cpu']:.2f} | {dropped} |"
              f" {os.getloadavg()[0]:.1f} |",
              flush=True)  # fmt: skip
    print("load after:", os.getloadavg(), "median server CPU per viewer (forward):",
          statistics.median([r["cpu_per_viewer"] for r in results if r["mode"] == "forward"] or [0.0]))  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forward", type=lambda s: [int(x) for x in s.split(",") if x], default=[10, 25, 50])
    parser.add_argument("--relay", type=lambda s: [int(x) for x in s.split(",") if x], default=[2, 5, 10])
    parser.add_argument("--janus", type=lambda s: [int(x) for x in s.split(",") if x], default=[10, 25, 50],
                        help="Janus VideoRoom anchor runs (empty to skip)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per run")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--serve", choices=["forward", "relay"], help=argparse.SUPPRESS)
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin the server to CPU 0 and the load generator to CPU 1")  # fmt: skip
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
    else:
        if args.janus:
            ensure_installed()
        frames = make_stream(Path(tempfile.gettempdir()) / f"studyhall-bench-live-640x360-g{KEYFRAME_EVERY}.webm", 10)
        results = asyncio.run(bench(args, frames))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
