"""Drift: how far a viewer's player is from the shared one, from its latest heartbeat (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from watch_party.core import Person, WatchState


@dataclass(frozen=True)
class Beat:
    """One viewer connection's latest heartbeat, as the server keeps it.

    ``sampled_at`` is the server time the position was read at: the client's ``client_time`` plus its
    clock offset estimate when it sent one, else the time the server received the beat.
    """

    key: str
    user: Person
    position: float
    playing: bool
    version: int | None
    sampled_at: float
    received_at: float
    rtt: float | None = None


Status = Literal["in_sync", "drifting", "wrong_state", "behind", "silent"]


@dataclass(frozen=True)
class ViewerSync:
    beat: Beat
    expected: float
    drift: float
    status: Status


def check_beat(state: WatchState, beat: Beat, now: float, *, in_sync: float, silent_after: float) -> ViewerSync:
    """How far a viewer's player is from the shared one (``drift`` > 0: ahead), and a verdict."""
    expected = state.position_at(beat.sampled_at)
    drift = beat.position - expected
    should_play = state.playing and (beat.sampled_at >= state.server_time or state.rate_before > 0)
    status: Status
    if now - beat.received_at > silent_after:
        status = "silent"
    elif beat.version is not None and beat.version < state.version:
        status = "behind"
    elif beat.playing != should_play:
        status = "wrong_state"
    elif abs(drift) > in_sync:
        status = "drifting"
    else:
        status = "in_sync"
    return ViewerSync(beat, expected, drift, status)
