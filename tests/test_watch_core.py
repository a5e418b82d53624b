"""The shared player's state machine (watch_party/core.py), without I/O: time is passed in."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core_api.errors import AppError
from watch_party import codec, core, drift
from watch_party.core import (
    Actor,
    Context,
    Dequeue,
    Handover,
    Item,
    Load,
    Media,
    Move,
    Pause,
    Person,
    Play,
    Queue,
    ReadyCheck,
    Rules,
    Seek,
    SetControl,
    SetRate,
    SetReadyCheck,
    Skip,
    Viewer,
    WatchState,
)
from watch_party.drift import Beat

RULES = Rules(start_lead=0.25, max_playlist=3)
HOST = Person("u-host", "Hana")
MOD = Person("u-mod", "Moe")
ANN = Person("u-ann", "Ann")
BOB = Person("u-bob", "Bob")
VIEWERS = [
    Viewer(HOST, "host", 1.0),
    Viewer(MOD, "moderator", 3.0),
    Viewer(ANN, "member", 2.0),
    Viewer(BOB, "member", 4.0),
]


def as_host() -> Actor:
    return Actor(HOST, "host")


def member(p: Person = ANN) -> Actor:
    return Actor(p, "member")


def ctx(now: float, present: list[Viewer] | None = None) -> Context:
    return Context(now=now, present=VIEWERS if present is None else present, rules=RULES)


def item(n: int, duration: float | None = 100.0) -> Item:
    return Item(f"i{n}", Media(f"https://example.com/{n}.mp4", "video", duration, f"clip {n}"))


def loaded(now: float = 0.0, duration: float | None = 100.0) -> WatchState:
    s = WatchState("room", leader=HOST)
    return core.apply(s, as_host(), Load(item(1, duration)), ctx(now))


def test_load_pauses_at_zero_and_version_grows_with_every_change() -> None:
    s = loaded(10.0)
    assert (s.version, s.current, s.playing, s.position) == (1, "i1", False, 0.0)
    s2 = core.apply(s, as_host(), Play(), ctx(11.0))
    s3 = core.apply(s2, as_host(), Pause(), ctx(13.0))
    assert [s2.version, s3.version] == [2, 3]


def test_play_starts_after_the_lead_and_position_is_held_until_then() -> None:
    s = core.apply(loaded(), as_host(), Play(), ctx(100.0))
    assert s.playing and s.server_time == pytest.approx(100.25)
    assert s.position_at(100.1) == 0.0  # held: everyone starts on the same instant
    assert s.position_at(102.25) == pytest.approx(2.0)


def test_position_is_clamped_to_the_duration_and_the_end_is_known() -> None:
    s = core.apply(loaded(duration=10.0), as_host(), Play(), ctx(0.0))
    assert s.position_at(1000.0) == 10.0
    assert s.ends_at() == pytest.approx(10.25)


def test_pause_takes_the_shared_position_or_the_one_given() -> None:
    s = core.apply(loaded(), as_host(), Play(), ctx(0.0))
    paused = core.apply(s, as_host(), Pause(), ctx(4.25))
    assert not paused.playing
    assert paused.position == pytest.approx(4.0)
    assert paused.server_time == 4.25
    at_given = core.apply(s, as_host(), Pause(position=3.9), ctx(4.25))
    assert at_given.position == 3.9


def test_seek_while_playing_holds_for_the_lead_then_plays_on() -> None:
    s = core.apply(loaded(), as_host(), Play(), ctx(0.0))
    s = core.apply(s, as_host(), Seek(50.0), ctx(10.0))
    assert s.playing and s.position == 50.0 and s.server_time == pytest.approx(10.25)
    assert s.position_at(11.25) == pytest.approx(51.0)


def test_seek_past_the_end_lands_on_the_end_and_play_there_starts_over() -> None:
    s = core.apply(loaded(duration=30.0), as_host(), Seek(99.0), ctx(0.0))
    assert s.position == 30.0
    assert core.apply(s, as_host(), Play(), ctx(1.0)).position == 0.0


def test_a_rate_change_takes_effect_after_the_lead_and_keeps_the_position_continuous() -> None:
    s = core.apply(loaded(), as_host(), Play(), ctx(0.0))
    before = s.position_at(10.25)
    s = core.apply(s, as_host(), SetRate(2.0), ctx(10.25))
    assert s.server_time == pytest.approx(10.5)
    assert (s.rate_before, s.rate) == (1.0, 2.0)
    assert s.position_at(10.25) == pytest.approx(before)  # the old rate until the switch
    assert s.position_at(10.5) == pytest.approx(before + 0.25)
    assert s.position_at(11.5) == pytest.approx(before + 0.25 + 2.0)
    with pytest.raises(AppError) as err:
        core.apply(s, as_host(), SetRate(9.0), ctx(11.0))
    assert err.value.code == "invalid_input"


def test_nothing_changes_and_the_version_stays_when_a_command_is_a_no_op() -> None:
    s = core.apply(loaded(), as_host(), Play(), ctx(0.0))
    assert core.apply(s, as_host(), Play(), ctx(1.0)) is s
    assert core.apply(s, as_host(), SetRate(1.0), ctx(1.0)) is s


def test_a_stale_command_is_refused_so_an_echo_cannot_undo_a_newer_change() -> None:
    s = loaded()
    played = core.apply(s, as_host(), Play(), ctx(1.0), based_on=s.version)
    with pytest.raises(AppError) as err:
        core.apply(played, as_host(), Pause(), ctx(2.0), based_on=s.version)
    assert err.value.code == "conflict"
    assert core.apply(played, as_host(), Pause(), ctx(2.0), based_on=played.version).version == played.version + 1


def test_nothing_loaded_is_a_conflict() -> None:
    with pytest.raises(AppError) as err:
        core.apply(WatchState("room", leader=HOST), as_host(), Play(), ctx(0.0))
    assert err.value.code == "conflict"


# --- control -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "allowed"),
    [(Actor(HOST, "host"), True), (Actor(MOD, "moderator"), True), (Actor(ANN, "member"), False),
     (Actor(Person("x", "admin"), None, is_admin=True), True), (Actor(BOB, None), False)],
)  # fmt: skip
def test_host_mode_lets_the_leader_host_and_moderators_control(who: Actor, allowed: bool) -> None:
    s = loaded()
    if allowed:
        assert core.apply(s, who, Play(), ctx(0.0)).playing
    else:
        with pytest.raises(AppError) as err:
            core.apply(s, who, Play(), ctx(0.0))
        assert err.value.code == "forbidden"


def test_everyone_mode_lets_members_control_but_not_change_the_mode() -> None:
    s = core.apply(loaded(), as_host(), SetControl("everyone"), ctx(0.0))
    assert core.apply(s, member(), Seek(5.0), ctx(1.0)).position == 5.0
    with pytest.raises(AppError):
        core.apply(s, member(), SetControl("host"), ctx(1.0))
    with pytest.raises(AppError):
        core.apply(s, Actor(BOB, None), Play(), ctx(1.0))  # not a member


def test_the_leader_hands_over_and_a_member_leader_controls_then_loses_control() -> None:
    s = core.apply(loaded(), as_host(), Handover(ANN.id), ctx(0.0))
    assert s.leader == ANN
    s = core.apply(s, member(ANN), Play(), ctx(1.0))
    s = core.apply(s, member(ANN), Handover(BOB.id), ctx(2.0))
    with pytest.raises(AppError):
        core.apply(s, member(ANN), Pause(), ctx(3.0))
    assert core.apply(s, member(BOB), Pause(), ctx(3.0)).playing is False


def test_hand_over_only_to_someone_present() -> None:
    with pytest.raises(AppError) as err:
        core.apply(loaded(), as_host(), Handover("u-gone"), ctx(0.0))
    assert err.value.code == "conflict"


def test_when_the_leader_leaves_the_highest_ranked_longest_member_present_leads() -> None:
    s = core.apply(loaded(), as_host(), Handover(BOB.id), ctx(0.0))
    without_bob = [v for v in VIEWERS if v.person != BOB]
    assert core.tick(s, ctx(1.0, without_bob)).leader == HOST
    members_only = [v for v in VIEWERS if v.role == "member" and v.person != BOB]
    assert core.tick(s, ctx(1.0, members_only)).leader == ANN
    two_members = [Viewer(BOB, "member", 9.0), Viewer(ANN, "member", 2.0)]
    assert core.tick(replace(s, leader=MOD), ctx(1.0, two_members)).leader == ANN  # member since 2.0 < 9.0
    assert core.tick(s, ctx(1.0, [])) is s  # nobody here: nothing to pass on
    assert not core.needs_tick(s, 1.0, [v.person.id for v in VIEWERS])


# --- ready check ---------------------------------------------------------------------------------


def test_play_waits_until_everyone_present_is_ready() -> None:
    s = core.apply(loaded(), as_host(), SetReadyCheck(ReadyCheck("all")), ctx(0.0))
    present = VIEWERS[:2]
    s = core.apply(s, as_host(), Play(), ctx(1.0, present))
    assert (s.playing, s.waiting) == (False, True)
    s = core.set_ready(s, HOST.id, True, ctx(2.0, present))
    assert s.waiting and s.ready == {HOST.id}
    version = s.version
    s = core.set_ready(s, MOD.id, True, ctx(3.0, present))
    assert s.playing and not s.waiting and s.server_time == pytest.approx(3.25)
    assert s.version == version + 1 and s.ready_rev == 2


def test_ready_marks_alone_do_not_make_commands_stale() -> None:
    s = loaded()
    marked = core.set_ready(s, ANN.id, True, ctx(1.0))
    assert marked.version == s.version and marked.ready_rev == s.ready_rev + 1
    assert core.apply(marked, as_host(), Play(), ctx(2.0), based_on=s.version).playing


def test_ready_count_and_force() -> None:
    s = core.apply(loaded(), as_host(), SetReadyCheck(ReadyCheck("count", 2)), ctx(0.0))
    s = core.apply(s, as_host(), Play(), ctx(1.0))
    assert s.waiting
    s = core.set_ready(s, ANN.id, True, ctx(2.0))
    assert s.waiting
    assert core.apply(s, as_host(), Play(force=True), ctx(3.0)).playing
    assert core.set_ready(s, BOB.id, True, ctx(3.0)).playing


def test_a_viewer_who_leaves_no_longer_holds_up_the_ready_check() -> None:
    s = core.apply(loaded(), as_host(), SetReadyCheck(ReadyCheck("all")), ctx(0.0))
    s = core.apply(s, as_host(), Play(), ctx(1.0))
    for v in VIEWERS[:3]:
        s = core.set_ready(s, v.person.id, True, ctx(2.0))
    assert s.waiting
    assert core.needs_tick(s, 3.0, [v.person.id for v in VIEWERS[:3]])
    assert core.tick(s, ctx(3.0, VIEWERS[:3])).playing


def test_loading_new_media_resets_readiness() -> None:
    s = core.set_ready(loaded(), ANN.id, True, ctx(1.0))
    s = core.apply(s, as_host(), Load(item(2)), ctx(2.0))
    assert s.ready == frozenset() and s.current == "i2"


# --- playlist ------------------------------------------------------------------------------------


def test_queue_into_an_idle_player_loads_it_and_the_playlist_is_capped() -> None:
    s = core.apply(WatchState("room", leader=HOST), as_host(), Queue(item(1)), ctx(0.0))
    assert s.current == "i1" and not s.playing
    s = core.apply(s, as_host(), Queue(item(2)), ctx(0.0))
    s = core.apply(s, as_host(), Queue(item(3), next=True), ctx(0.0))
    assert [i.id for i in s.playlist] == ["i1", "i3", "i2"]
    with pytest.raises(AppError) as err:
        core.apply(s, as_host(), Queue(item(4)), ctx(0.0))
    assert err.value.code == "conflict"


def test_an_item_that_runs_out_advances_to_the_next_at_its_end() -> None:
    s = core.apply(WatchState("room", leader=HOST), as_host(), Queue(item(1, 10.0)), ctx(0.0))
    s = core.apply(s, as_host(), Queue(item(2, 20.0)), ctx(0.0))
    s = core.apply(s, as_host(), Play(), ctx(0.0))
    assert core.tick(s, ctx(5.0)) is s
    ends = s.ends_at()
    assert ends == pytest.approx(10.25)
    nxt = core.tick(s, ctx(10.3))
    assert (nxt.current, nxt.playing, nxt.position) == ("i2", True, 0.0)
    assert nxt.server_time == pytest.approx(10.55)  # the later of the end and now, plus the lead
    last = core.tick(nxt, ctx(40.0))
    assert (last.current, last.playing, last.position) == ("i2", False, 20.0)


def test_auto_advance_waits_for_the_ready_check() -> None:
    s = core.apply(WatchState("room", leader=HOST), as_host(), Queue(item(1, 10.0)), ctx(0.0))
    s = core.apply(s, as_host(), Queue(item(2)), ctx(0.0))
    s = core.apply(s, as_host(), Play(), ctx(0.0))
    s = core.apply(s, as_host(), SetReadyCheck(ReadyCheck("count", 1)), ctx(1.0))
    nxt = core.tick(s, ctx(11.0))
    assert nxt.current == "i2" and nxt.waiting and not nxt.playing


def test_dequeue_move_and_skip() -> None:
    s = WatchState("room", leader=HOST)
    for n in (1, 2, 3):
        s = core.apply(s, as_host(), Queue(item(n)), ctx(0.0))
    s = core.apply(s, as_host(), Play(), ctx(0.0))
    s = core.apply(s, as_host(), Move("i3", 0), ctx(1.0))
    assert [i.id for i in s.playlist] == ["i3", "i1", "i2"]
    s = core.apply(s, as_host(), Dequeue("i1"), ctx(2.0))  # the current one: the next plays on
    assert (s.current, s.playing, s.position) == ("i2", True, 0.0)
    with pytest.raises(AppError):
        core.apply(s, as_host(), Skip(), ctx(3.0))  # no next item
    s = core.apply(s, as_host(), Skip("i3"), ctx(3.0))
    assert s.current == "i3" and s.playing
    with pytest.raises(AppError):
        core.apply(s, as_host(), Dequeue("nope"), ctx(3.0))


# --- drift and serialisation ---------------------------------------------------------------------


def beat(position: float, at: float, *, playing: bool = True, version: int | None = None) -> Beat:
    return Beat("n:s", ANN, position, playing, version, sampled_at=at, received_at=at)


def test_check_beat_measures_drift_and_names_the_problem() -> None:
    s = core.apply(loaded(), as_host(), Play(), ctx(0.0))  # position 0 at 0.25
    ok = drift.check_beat(s, beat(9.78, 10.0, version=s.version), 10.0, in_sync=0.1, silent_after=3)
    assert ok.status == "in_sync" and ok.drift == pytest.approx(0.03)
    assert drift.check_beat(s, beat(9.0, 10.0), 10.0, in_sync=0.1, silent_after=3).status == "drifting"
    assert drift.check_beat(s, beat(9.75, 10.0, playing=False), 10.0, in_sync=0.1, silent_after=3).status == (
        "wrong_state"
    )
    assert drift.check_beat(s, beat(9.75, 10.0, version=0), 10.0, in_sync=0.1, silent_after=3).status == "behind"
    assert drift.check_beat(s, beat(9.75, 10.0), 20.0, in_sync=0.1, silent_after=3).status == "silent"


def test_the_document_round_trips() -> None:
    s = core.apply(loaded(), as_host(), SetReadyCheck(ReadyCheck("count", 2)), ctx(0.0))
    s = core.apply(s, as_host(), Queue(item(2, None)), ctx(0.0))
    s = core.set_ready(s, ANN.id, True, ctx(1.0))
    assert codec.from_document("room", codec.to_document(s)) == s
    view = codec.state_view(s, cause="queue", by=HOST)
    assert set(view) >= {"room_id", "media", "playing", "position", "rate", "server_time", "version"}
    assert view["media"]["item_id"] == "i1" and view["playlist"][1]["media"]["duration"] is None
