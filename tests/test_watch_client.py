"""The reference client: clock sync and the correction rule on their own, then a late joiner converging
against a real server through a simulated slow link, with a skewed clock and a simulated player."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
import socketio

from realtime.app import create_app
from tests.conftest import ApiClient, make_settings
from tests.watch_helpers import VIDEO, eventually, ok, viewer, watch_room
from watch_party.client import ClockSync, SyncSettings, WatchClient, correct, rate_at, target_position
from watch_party.sim import DelayedLink, SimPlayer, skewed_clock

S = SyncSettings(nudge_threshold_s=0.02, nudge_release_s=0.005, max_nudge=0.1, nudge_horizon_s=1.0)


def test_clock_sync_finds_the_offset_through_queueing_jitter() -> None:
    rng = random.Random(7)
    sync = ClockSync(window=16)
    true_offset, base = 1.734, 0.08
    t = 1000.0
    for _ in range(16):
        up, down = base + rng.expovariate(1 / 0.03), base + rng.expovariate(1 / 0.03)
        t1 = t
        t2 = t1 + up + true_offset
        t3 = t2 + 0.004  # the server's own processing does not count as delay
        t4 = t3 - true_offset + down
        sync.add(t1, t2, t3, t4)
        t += 1.0
    assert sync.offset == pytest.approx(true_offset, abs=0.004)
    assert sync.delay == pytest.approx(2 * base, abs=0.01)
    assert sync.rtt_avg is not None and sync.rtt_avg > 2 * base
    assert sync.local_time(sync.server_time(5.0)) == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("drift", "nudging", "fresh", "kind", "rate"),
    [
        (0.0, False, False, "rate", 1.0),
        (0.010, False, False, "rate", 1.0),  # under the nudge threshold
        (0.010, True, False, "rate", 0.99),  # already nudging: keep going down to the release point
        (0.003, True, False, "rate", 1.0),  # released
        (0.030, False, False, "rate", 0.97),  # ahead: slower
        (-0.030, False, False, "rate", 1.03),  # behind: faster
        (-0.300, False, False, "rate", 1.1),  # capped at max_nudge
        (0.050, False, True, "seek", 1.0),  # right after a change: hard sync
        (0.600, False, False, "seek", 1.0),  # too far at any time
    ],
)
def test_the_correction_rule(drift: float, nudging: bool, fresh: bool, kind: str, rate: float) -> None:
    fix = correct(drift, base_rate=1.0, nudging=nudging, fresh=fresh, settings=S)
    assert fix.kind == kind and fix.rate == pytest.approx(rate)


def test_server_tuning_replaces_the_thresholds() -> None:
    tuned = S.tuned({"seek_threshold_s": 2, "burst": 9, "unknown": 1})
    assert tuned.seek_threshold_s == 2.0 and tuned.burst == 9 and tuned.nudge_threshold_s == S.nudge_threshold_s


def test_the_target_holds_until_a_scheduled_start_and_stops_at_the_end() -> None:
    state: dict[str, Any] = {"playing": True, "position": 5.0, "server_time": 100.0, "rate": 2.0,
                             "rate_before": 0.0, "media": {"duration": 10.0}}  # fmt: skip
    assert target_position(state, 99.0) == 5.0
    assert target_position(state, 101.0) == 7.0
    assert target_position(state, 200.0) == 10.0
    switching = {**state, "rate_before": 1.0}  # a rate change: the old rate until server_time
    assert target_position(switching, 99.0) == 4.0
    assert (rate_at(switching, 99.0), rate_at(switching, 100.0)) == (1.0, 2.0)
    assert target_position({**state, "playing": False}, 200.0) == 5.0


@pytest.fixture
async def api(aiohttp_client: Any, database_url: str, tmp_path: Path) -> ApiClient:
    return ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path))))


async def test_a_late_joiner_with_a_skewed_clock_on_a_slow_link_converges(api: ApiClient) -> None:
    host, late = await api.user(), await api.user()
    room = await watch_room(api, host, late)
    h = await viewer(api, host, room)
    await ok(h, "watch:load", {"room_id": room, "media": VIDEO})
    await ok(h, "watch:seek", {"room_id": room, "position": 100.0})
    await ok(h, "watch:play", {"room_id": room})

    rng = random.Random(3)
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(str(api.http.make_url("/")), auth={"token": late.token}, transports=["websocket"])
    link = DelayedLink(sio, rng, delay_s=0.12, jitter_s=0.01)
    player = SimPlayer(rng, rate_error=0.002)
    client = WatchClient(link, room, player, clock=skewed_clock(offset=-1.8, skew=20e-6))
    try:
        assert (await link.call("room:join", {"room_id": room}))["ok"]
        await client.start()

        def off_by() -> float:
            now = time.time()
            assert client.state is not None
            return abs(player.shown(now) - target_position(client.state, now))

        await eventually(lambda: off_by() < 0.03)
        assert client.sync.offset == pytest.approx(1.8, abs=0.02)
        faster = (await ok(h, "watch:rate", {"room_id": room, "rate": 1.5}))["state"]
        await eventually(lambda: client.version == faster["version"] and time.time() > faster["server_time"])
        await eventually(lambda: off_by() < 0.03 and player.rate == pytest.approx(1.5, abs=0.1))

        paused = (await ok(h, "watch:pause", {"room_id": room}))["state"]
        await eventually(lambda: not player.playing and abs(player.shown(time.time()) - paused["position"]) < 0.01)
    finally:
        await client.stop()
        await sio.disconnect()
        await h.disconnect()
