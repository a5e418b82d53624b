"""Chat ack latency with and without group commit (issue 19): ``chat:send`` → its ack, which comes only
after the message is committed.

Usage::

    .venv/bin/python -m bench.chat_ack                          # 100 and 1,000 messages/s, 5 s each, both modes
    .venv/bin/python -m bench.chat_ack --rates 100 --step-s 3   # a quick look

For each mode (``STUDYHALL_CHAT_GROUP_COMMIT`` true, then false) a fresh ``studyhall serve`` on a fresh
database (pinned to CPU 0; this load generator on CPU 1): ``--senders`` clients, spread over ``--rooms``
rooms, each room with ``--receivers`` more clients that only listen. The senders send at each rate of
``--rates`` (messages/s in all, round robin, every send in flight without waiting for the previous ack)
for ``--step-s`` seconds. Reported per step: ack p50/p99/max, delivery p99 (send → each receiver's
``chat:message``), errors, server CPU, and the writer's mean batch (``/metrics``). Postgres is the
machine's (its own fsync settings): this measures commits as they are here, not the disk stalls of the
issue's soak.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from typing import Any

import aiohttp

from bench.fanout import JWT_SECRET, MACHINE_PG, Recorder, Studyhall, pin, proc_cpu_s, steal_ticks
from bench.lightclient import LightClient, connect
from bench.rest import Server

METRICS_TOKEN = "bench-chat-ack-" + "m" * 32


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Target(Studyhall):
    def __init__(
        self,
        database_url: str,
        group_commit: bool,
        lanes: int = 2,
        wait_s: float = 0.002,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = f"group commit ({lanes} lanes, wait {wait_s * 1000:g} ms)" if group_commit else "commit per send"
        env = {
            "STUDYHALL_JWT_SECRET": JWT_SECRET,
            "STUDYHALL_ACCESS_TOKEN_TTL_S": "86400",
            "STUDYHALL_CHAT_RATE_COUNT": "1000",
            "STUDYHALL_CHAT_RATE_WINDOW_S": "0.1",
            "STUDYHALL_SIO_ANONYMOUS_PER_ADDRESS": "100000",
            "STUDYHALL_METRICS_TOKEN": METRICS_TOKEN,
            "STUDYHALL_CHAT_GROUP_COMMIT": "true" if group_commit else "false",
            "STUDYHALL_CHAT_GROUP_COMMIT_LANES": str(lanes),
            "STUDYHALL_CHAT_GROUP_COMMIT_WAIT_S": str(wait_s),
            **(extra_env or {}),
        }
        self.server = Server(database_url, extra_env=env)
        self.server.start()
        self.port = self.server.port
        self.database_url = self.server.env["STUDYHALL_DATABASE_URL"]
        self.created = 0

    async def commits(self) -> tuple[float, float]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.server.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as resp,
        ):
            text = await resp.text()
        values = {}
        for line in text.splitlines():
            if line.startswith("studyhall_chat_commit_"):
                name, value = line.split()
                values[name] = float(value)
        return values.get("studyhall_chat_commit_batches_total", 0.0), values.get(
            "studyhall_chat_commit_messages_total", 0.0
        )


async def run(target: Target, args: argparse.Namespace) -> list[dict[str, Any]]:
    tokens = await target.tokens(args.senders + args.rooms * args.receivers)
    rooms = [await target.room(tokens[i]) for i in range(args.rooms)]
    recorder = Recorder()
    senders: list[LightClient] = await asyncio.gather(
        *(connect("127.0.0.1", target.port, t) for t in tokens[: args.senders])
    )
    listeners: list[LightClient] = await asyncio.gather(
        *(connect("127.0.0.1", target.port, t, on_event=recorder) for t in tokens[args.senders :])
    )
    sender_room = {id(s): rooms[i % len(rooms)] for i, s in enumerate(senders)}
    for s in senders:
        assert (await s.call("room:join", {"room_id": sender_room[id(s)]}))["ok"]
    for i, listener in enumerate(listeners):
        assert (await listener.call("room:join", {"room_id": rooms[i % len(rooms)]}))["ok"]
    await asyncio.sleep(1.0)
    rows = []
    for rate in args.rates:
        total = int(rate * args.step_s)
        acks: list[float] = []
        errors = 0

        async def send(sender: LightClient, i: int, acks: list[float] = acks) -> None:
            nonlocal errors
            body = f"T={time.perf_counter_ns()} ack bench {i:06d} " + "x" * 40
            started = time.perf_counter()
            try:
                ack = await sender.call(
                    "chat:send", {"room_id": sender_room[id(sender)], "body": body, "client_msg_id": uuid.uuid4().hex}
                )
            except Exception:
                errors += 1
                return
            acks.append((time.perf_counter() - started) * 1000)
            if not ack.get("ok"):
                errors += 1

        batches0, messages0 = await target.commits()
        recorder.start()
        cpu0, steal0 = proc_cpu_s(target.pid()), steal_ticks()
        t0 = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(send(senders[i % len(senders)], i)))
        await asyncio.gather(*tasks)
        await asyncio.sleep(1.0)  # the last deliveries
        deliveries = await recorder.stop()
        cpu = proc_cpu_s(target.pid()) - cpu0
        steal1 = steal_ticks()
        batches1, messages1 = await target.commits()
        batches, messages = batches1 - batches0, messages1 - messages0
        row = {
            "mode": target.name,
            "rate": rate,
            "sent": total,
            "errors": errors,
            "ack_p50": pct(acks, 0.5),
            "ack_p99": pct(acks, 0.99),
            "ack_max": max(acks, default=float("nan")),
            "delivery_p99": pct(deliveries, 0.99),
            "deliveries": len(deliveries),
            "server_cpu_pct": 100 * cpu / max(args.step_s, time.perf_counter() - t0),
            "mean_batch": messages / batches if batches else float("nan"),
            "steal_pct": 100 * (steal1[0] - steal0[0]) / max(1, steal1[1] - steal0[1]),
        }
        rows.append(row)
        print(
            f"  {target.name}: {rate}/s ack p50 {row['ack_p50']:.1f} p99 {row['ack_p99']:.1f} ms, "
            f"batch {row['mean_batch']:.1f}",
            file=sys.stderr,
        )
        await asyncio.sleep(1.0)
    for c in [*senders, *listeners]:
        c.close()
    return rows


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for mode in args.modes:
        group_commit = mode != "single"
        target = await asyncio.to_thread(Target, args.database_url, group_commit, args.lanes, args.wait_s)
        try:
            rows += await run(target, args)
        finally:
            await asyncio.to_thread(target.stop)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,1000", help="messages/s in all, comma-separated")
    parser.add_argument("--step-s", type=float, default=5.0, help="seconds per rate")
    parser.add_argument("--modes", default="group,single", help="group (group commit) and/or single, in order")
    parser.add_argument("--lanes", type=int, default=2, help="STUDYHALL_CHAT_GROUP_COMMIT_LANES in group mode")
    parser.add_argument("--wait-s", type=float, default=0.002, help="STUDYHALL_CHAT_GROUP_COMMIT_WAIT_S in group mode")
    parser.add_argument("--senders", type=int, default=50, help="sending clients")
    parser.add_argument("--rooms", type=int, default=10, help="rooms the senders are spread over")
    parser.add_argument("--receivers", type=int, default=5, help="listening clients per room")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("STUDYHALL_DATABASE_URL", MACHINE_PG),
        help="Postgres server (a fresh database is created and dropped per mode)",
    )
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",") if r.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    pin(1)
    rows = asyncio.run(main_async(args))
    print(
        "| mode | msg/s | sent | errors | ack p50 ms | ack p99 ms | ack max ms | delivery p99 ms | server CPU "
        "| mean batch |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['mode']} | {r['rate']:,} | {r['sent']:,} | {r['errors']} | {r['ack_p50']:.1f} | {r['ack_p99']:.1f} "
            f"| {r['ack_max']:.1f} | {r['delivery_p99']:.1f} | {r['server_cpu_pct']:.0f} % | {r['mean_batch']:.1f} |"
        )


if __name__ == "__main__":
    main()
