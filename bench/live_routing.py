"""What forwarding live signalling to the session's owner node costs: the same events acked by the owner
for a connection it holds, and for a connection held by another node (forwarded over Redis, live/routing.py).

Usage::

    .venv/bin/python -m bench.live_routing --database-url postgresql://postgres@127.0.0.1:5432/test

Two ``studyhall serve`` processes (A and B, both pinned to CPU 0; this process on CPU 1) share a fresh
database and Redis. A host joins on A (so A owns the session) and goes live; one learner connects to A,
another to B. Alternately, each sends ``live:hand`` (a state change announced to the session) and
``live:subscribe`` (a complete SDP offer answered by aiortc on A), and the time from the emit to the ack is
recorded. The difference between B's and A's times is what routing adds: B's owner look-up in Redis, the
publish to A, A's reply to B.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import socketio
from aiortc import RTCConfiguration, RTCPeerConnection

from bench.rest import Server, call

PASSWORD = "correct horse battery staple"


async def register(http: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    email = f"route-{uuid.uuid4().hex[:10]}@example.com"
    user = await call(http, "POST", url + "/api/v1/auth/register",
                      json={"email": email, "password": PASSWORD, "display_name": email[:12]})  # fmt: skip
    tokens = await call(http, "POST", url + "/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    return str(user["id"]), str(tokens["access_token"])


async def connect(url: str, token: str) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    return client


async def ok(client: socketio.AsyncClient, event: str, data: dict[str, Any]) -> dict[str, Any]:
    ack: dict[str, Any] = await client.call(event, data, timeout=30)
    if ack.get("ok") is not True:
        raise RuntimeError(f"{event}: {ack}")
    return ack


async def offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, str(pc.localDescription.sdp)


def summary(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):6.1f} ms  p99 {p99:6.1f} ms  (n={len(ms)})"


async def run(args: argparse.Namespace, a: Server, b: Server) -> dict[str, dict[str, list[float]]]:
    async with aiohttp.ClientSession() as http:
        (_, host), (near_id, near), (far_id, far) = [await register(http, a.url) for _ in range(3)]
        room = await call(http, "POST", a.url + "/api/v1/rooms", host,
                          json={"name": "bench", "kind": "study", "visibility": "private"})  # fmt: skip
        for user_id in (near_id, far_id):
            await call(http, "POST", a.url + f"/api/v1/rooms/{room['id']}/invite", host, json={"user_id": user_id})
        starts = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        session = await call(http, "POST", a.url + f"/api/v1/rooms/{room['id']}/live-sessions", host,
                             json={"title": "bench", "starts_at": starts})  # fmt: skip
    ref = {"session_id": session["id"]}
    on_a, near_a, far_b = await connect(a.url, host), await connect(a.url, near), await connect(b.url, far)
    results: dict[str, dict[str, list[float]]] = {"live:hand": {"A": [], "B": []}, "live:subscribe": {"A": [], "B": []}}
    peers: list[RTCPeerConnection] = []
    try:
        await ok(on_a, "live:join", ref)
        await ok(on_a, "live:start", ref)
        for client in (near_a, far_b):
            await ok(client, "live:join", ref)
        for i in range(args.rounds):
            for name, client in (("A", near_a), ("B", far_b)):
                started = time.perf_counter()
                await ok(client, "live:hand", {**ref, "raised": i % 2 == 0})
                results["live:hand"][name].append(time.perf_counter() - started)
        for _ in range(args.negotiations):
            for name, client in (("A", near_a), ("B", far_b)):
                pc, sdp = await offer()
                peers.append(pc)
                started = time.perf_counter()
                await ok(client, "live:subscribe", {**ref, "sdp": sdp})
                results["live:subscribe"][name].append(time.perf_counter() - started)
                await pc.close()
        await ok(on_a, "live:stop", ref)
    finally:
        for pc in peers:
            await pc.close()
        for client in (on_a, near_a, far_b):
            await client.disconnect()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--rounds", type=int, default=300, help="live:hand round trips per node")
    parser.add_argument("--negotiations", type=int, default=30, help="live:subscribe negotiations per node")
    args = parser.parse_args()
    env = {"STUDYHALL_REDIS_URL": args.redis_url, "STUDYHALL_JWT_SECRET": "bench-live-routing-" + "x" * 32,
           "STUDYHALL_LIVE_SIGNAL_RATE_COUNT": "10000", "STUDYHALL_LIVE_NEGOTIATION_TIMEOUT_S": "30"}  # fmt: skip
    a = Server(args.database_url, env)
    a.start()
    b = Server(None, {**env, "STUDYHALL_DATABASE_URL": a.env["STUDYHALL_DATABASE_URL"]})
    try:
        b.start()
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {1})
        load = os.getloadavg()[0]
        results = asyncio.run(run(args, a, b))
        print(f"{platform.platform()}, Python {platform.python_version()}, load average {load:.1f} at the start")
        for event, by_node in results.items():
            for name, times in by_node.items():
                where = "held by the owner (A)" if name == "A" else "held by B, forwarded to A"
                print(f"{event:15} {where:27} {summary(times)}")
            added = statistics.median(by_node["B"]) - statistics.median(by_node["A"])
            print(f"{event:15} forwarding adds (p50)      {added * 1000:6.1f} ms")
    finally:
        b.stop()
        a.stop()


if __name__ == "__main__":
    main()
