"""What a reconnect costs the server: rejoining each room with ``room:join`` (its last 50 messages again) against
one ``room:join_many`` carrying only what was missed (issue 19).

Usage::

    .venv/bin/python -m bench.reconnect                            # 200 clients, 5 rooms each, 60 messages held
    .venv/bin/python -m bench.reconnect --clients 100 --rooms 3    # a quick look
    .venv/bin/python -m bench.reconnect --redis-url redis://127.0.0.1:6379/13   # presence in Redis, as when scaled

A fresh ``studyhall serve`` (pinned to CPU 0; this load generator on CPU 1) on a fresh database. Every client
joins ``--rooms`` rooms holding ``--history`` messages, then disconnects; ``--missed`` more messages are sent
to each room; then all clients reconnect at once, twice: first each rejoining room by room with ``room:join``
(what the web app did before: the answers' last 50 messages cover what was missed), then each with one
``room:join_many`` from the last seq it held. Reported per way: the server's CPU per reconnect (the rejoin; the
clients connect first), the wall time until every client had rejoined, the p99 of a client's rejoin, the ack bytes
per client, and apart the server's CPU per client for the Socket.IO connect before it. Without
``--redis-url`` the server keeps presence in its process (one node); with it, in Redis, as every node of a
scaled deployment does (database 13 is free: the tests use 11 and 15, ``bench/soak.py`` 12).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid

from bench.chat_ack import Target, pct
from bench.fanout import MACHINE_PG, pin, proc_cpu_s
from bench.lightclient import LightClient, connect


async def connect_all(port: int, tokens: list[str]) -> list[LightClient]:
    clients: list[LightClient] = []
    for i in range(0, len(tokens), 100):
        clients += await asyncio.gather(*(connect("127.0.0.1", port, t) for t in tokens[i : i + 100]))
    return clients


async def run(args: argparse.Namespace) -> None:
    env = {"STUDYHALL_REDIS_URL": args.redis_url} if args.redis_url else {}
    target = await asyncio.to_thread(Target, args.database_url, True, 2, 0.002, env)
    try:
        tokens = await target.tokens(args.clients + 1)
        rooms = [await target.room(tokens[0]) for _ in range(args.rooms)]
        sender = (await connect_all(target.port, tokens[:1]))[0]
        for room in rooms:
            assert (await sender.call("room:join", {"room_id": room}))["ok"]

        async def post(count: int) -> None:
            for room in rooms:
                acks = await asyncio.gather(
                    *(
                        sender.call("chat:send", {"room_id": room, "body": f"m {i}", "client_msg_id": uuid.uuid4().hex})
                        for i in range(count)
                    )
                )
                assert all(a["ok"] for a in acks), acks[0]

        await post(args.history)
        clients = await connect_all(target.port, tokens[1:])
        held: dict[str, int] = {}
        for c in clients:
            for room in rooms:
                ack = await c.call("room:join", {"room_id": room})
                held[room] = ack["messages"][-1]["seq"]
        for c in clients:
            c.close()
        await asyncio.sleep(1.0)
        await post(args.missed)
        await asyncio.sleep(0.5)

        async def one_by_one(c: LightClient) -> tuple[float, int]:
            started, size = time.perf_counter(), 0
            for room in rooms:
                ack = await c.call("room:join", {"room_id": room}, wait_s=120)
                assert ack["ok"], ack
                assert ack["messages"][-1]["seq"] == held[room] + args.missed
                size += len(json.dumps(ack))
            return (time.perf_counter() - started) * 1000, size

        async def in_one(c: LightClient) -> tuple[float, int]:
            started = time.perf_counter()
            ack = await c.call(
                "room:join_many", {"rooms": [{"room_id": r, "after_seq": held[r]} for r in rooms]}, wait_s=120
            )
            assert ack["ok"] and all(r["ok"] and len(r["messages"]) == args.missed for r in ack["rooms"]), ack
            return (time.perf_counter() - started) * 1000, len(json.dumps(ack))

        print(
            "| way | clients × rooms | server CPU per reconnect ms | all rejoined s | rejoin p50 ms | rejoin p99 ms "
            "| ack bytes per client | connect CPU per client ms |"
        )
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, way in (("room:join per room", one_by_one), ("one room:join_many", in_one)):
            cpu_c = proc_cpu_s(target.pid())
            fresh = await connect_all(target.port, tokens[1:])  # connected first: the rejoin alone is measured
            connect_cpu = proc_cpu_s(target.pid()) - cpu_c
            cpu0, t0 = proc_cpu_s(target.pid()), time.perf_counter()
            results = await asyncio.gather(*(way(c) for c in fresh))
            wall, cpu = time.perf_counter() - t0, proc_cpu_s(target.pid()) - cpu0
            times = [t for t, _ in results]
            size = sum(s for _, s in results) / len(results)
            print(
                f"| {name} | {args.clients} × {args.rooms} | {1000 * cpu / args.clients:.2f} | {wall:.2f} "
                f"| {pct(times, 0.5):.0f} | {pct(times, 0.99):.0f} | {size:,.0f} "
                f"| {1000 * connect_cpu / args.clients:.2f} |"
            )
            for c in fresh:
                c.close()
            await asyncio.sleep(1.5)
        sender.close()
    finally:
        await asyncio.to_thread(target.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=5, help="rooms each client is in")
    parser.add_argument("--history", type=int, default=60, help="messages in each room before the drop")
    parser.add_argument("--missed", type=int, default=3, help="messages sent to each room while away")
    parser.add_argument("--database-url", default=MACHINE_PG)
    parser.add_argument("--redis-url", default=None, help="keep presence in this Redis (default: in the server)")
    args = parser.parse_args()
    pin(1)
    asyncio.run(run(args))
    print("(server CPU from /proc; the machine's load while it ran decides the wall times)", file=sys.stderr)


if __name__ == "__main__":
    main()
