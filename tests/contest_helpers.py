"""What the contest tests share: a two-problem contest between two communities, and the programs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from realtime.app import create_app
from tests.conftest import Actor, ApiClient, make_settings

START = datetime(2026, 1, 3, 10, 0, tzinfo=UTC)
A_OK = "a, b = map(int, input().split())\nprint(a + b)\n"
A_WRONG = "print(0)\n"
B_OK = "print(int(input()) * 2)\n"
B_WRONG = "print(int(input()) + 1)\n"
C_BROKEN = "int main( {"


class Clock:
    """The contests' clock, set by the test (``clock.now = at(15)``)."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


PROBLEMS = [
    {
        "title": "Sum",
        "statement": "Print a + b.",
        "samples": [{"stdin": "1 2", "expected_output": "3"}],
        "tests": [{"stdin": "1 2", "expected_output": "3"}, {"stdin": "5 7", "expected_output": "12"}],
        "cpu_ms": 2000,
        "points": 3,
    },
    {
        "title": "Double",
        "statement": "Print 2n.",
        "tests": [{"stdin": "3", "expected_output": "6"}, {"stdin": "10", "expected_output": "20"}],
        "cpu_ms": 2000,
        "points": 5,
    },
]


async def api_with(aiohttp_client: Any, database_url: str, tmp_path: Path, **settings: Any) -> ApiClient:
    """A test app like the ``api`` fixture's, with some settings changed."""
    return ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, **settings))))


async def give_coins(pool: Any, who: Actor, coins: int) -> None:
    """Coins for a test about spending them, written straight into the ledger (a credit must name a source:
    real ones are contest prizes, see leaderboards/prizes.py)."""
    await pool.execute(
        "INSERT INTO wallet_entries (id, user_id, amount, reason, ref, source) VALUES ($1, $2, $3, 'test coins', $4,"
        " 'test')",
        uuid.uuid4(), uuid.UUID(who.id), coins, f"test:{uuid.uuid4()}",
    )  # fmt: skip


async def ok(api: ApiClient, method: str, path: str, actor: Actor, **kw: Any) -> Any:
    status, body = await api.call(method, path, actor, **kw)
    assert status < 300, (method, path, status, body)
    return body


async def community_with(api: ApiClient, owner: Actor, name: str, members: list[Actor]) -> str:
    community = await ok(api, "POST", "/communities", owner, json={"name": f"{name} {owner.id[:8]}"})
    for m in members:
        await ok(api, "POST", f"/communities/{community['id']}/members", owner, json={"user_id": m.id})
    return str(community["id"])


def contest_body(communities: list[str], organizer: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Weekend war",
        "starts_at": START.isoformat(),
        "ends_at": (START + timedelta(hours=5)).isoformat(),
        "freeze_at": (START + timedelta(hours=4)).isoformat(),
        "communities": communities,
        "problems": PROBLEMS,
    }
    if organizer is not None:
        body["organizer_id"] = organizer
    body.update(extra)
    return body


def at(minute: float) -> datetime:
    return START + timedelta(minutes=minute)
