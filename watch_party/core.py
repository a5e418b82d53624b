"""The shared player of a watch party as a pure state machine: no I/O, the clock is passed in.

A :class:`WatchState` says what every viewer's player should show: the current playlist item, whether
it plays, and ``position`` — the media position at server time ``server_time`` — with ``rate``. While
playing, the position at server time ``t`` is ``position + rate * (t - server_time)`` from
``server_time`` on, and ``position - rate_before * (server_time - t)`` before it (clamped to the media).
Changes take effect a little in the future, :attr:`Rules.start_lead` after the server took them, so
that every viewer hears of them in time and they happen on the same instant everywhere: a play or seek
holds at ``position`` until ``server_time`` (``rate_before`` is 0), a rate change keeps the old rate
until then (``rate_before`` is the old rate).

``version`` grows by one with every change of what ``watch:state`` carries (player, playlist, control,
leader, ready check). A command may name the version it was based on; if the state has moved on it is
refused (``conflict``), so an echo of an older state can never undo a newer change. Who is ready is
kept beside it with its own counter (``ready_rev``): readiness toggles do not make commands stale.

Control (see :func:`may_control`): in ``host`` mode the party's *leader*, the room's host and its
moderators (and platform admins) control the player; in ``everyone`` mode every member does. Control
settings (mode, hand-over, ready check) always need the leader, the room host, a moderator or an admin.

**Leader succession.** The leader starts as the room's host. The leader (or the room host, a moderator
or an admin) may hand over to any present viewer. When the leader is not present, leadership passes to
the present viewer with the highest room role (host, then moderator, then member), the longest-standing
member of the room first; with nobody present it stays where it is.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from core_api.errors import conflict, forbidden, invalid

ControlMode = Literal["host", "everyone"]
ReadyMode = Literal["off", "all", "count"]
MediaKind = Literal["video", "hls", "audio"]
RoomRole = Literal["host", "moderator", "member"]
RANK: dict[str, int] = {"member": 1, "moderator": 2, "host": 3}
MIN_RATE = 0.25
MAX_RATE = 4.0


@dataclass(frozen=True)
class Person:
    id: str
    display_name: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "display_name": self.display_name}


@dataclass(frozen=True)
class Media:
    """What to play. ``duration`` is None when unknown (a live stream): such an item never ends by itself."""

    url: str
    kind: MediaKind
    duration: float | None
    title: str = ""
    lecture_id: str | None = None


@dataclass(frozen=True)
class Item:
    """One playlist entry; ``id`` tells two entries of the same media apart."""

    id: str
    media: Media
    added_by: str | None = None


@dataclass(frozen=True)
class ReadyCheck:
    """``off``: play at once. ``all``: every present viewer ready. ``count``: at least ``count`` ready."""

    mode: ReadyMode = "off"
    count: int = 1


@dataclass(frozen=True)
class Rules:
    """Server-side rules of the state machine.

    Args:
        start_lead: seconds between the server taking a play/seek and the playback starting (everyone
            whose copy of the state arrives within the lead starts on the same instant).
        max_playlist: most items in a playlist.
    """

    start_lead: float = 0.25
    max_playlist: int = 100


@dataclass(frozen=True)
class Actor:
    """Who sends a command: their room role (None if not a member) and platform admin flag."""

    person: Person
    role: RoomRole | None
    is_admin: bool = False


@dataclass(frozen=True)
class Viewer:
    """A present viewer, as succession sees them: room role and when they became a member (any clock)."""

    person: Person
    role: RoomRole
    member_since: float


@dataclass(frozen=True)
class WatchState:
    room_id: str
    version: int = 0
    playlist: tuple[Item, ...] = ()
    current: str | None = None
    playing: bool = False
    position: float = 0.0
    server_time: float = 0.0
    rate: float = 1.0
    rate_before: float = 0.0
    """The rate before ``server_time`` while playing (0: hold at ``position`` until then)."""
    control: ControlMode = "host"
    leader: Person | None = None
    ready_check: ReadyCheck = field(default_factory=ReadyCheck)
    waiting: bool = False
    """A play was asked for and waits for the ready check."""
    ready: frozenset[str] = frozenset()
    """Ids of the users ready for the current item (reset when it changes)."""
    ready_rev: int = 0
    changed_at: float = 0.0
    """Server time of the last change ``version`` counts (a play's ``server_time`` is this plus the lead)."""

    @property
    def item(self) -> Item | None:
        return next((i for i in self.playlist if i.id == self.current), None)

    @property
    def media(self) -> Media | None:
        item = self.item
        return item.media if item is not None else None

    @property
    def duration(self) -> float | None:
        media = self.media
        return media.duration if media is not None else None

    def position_at(self, t: float) -> float:
        """The media position at server time ``t``."""
        if not self.playing:
            return self.position
        if t >= self.server_time:
            pos = self.position + self.rate * (t - self.server_time)
        else:
            pos = max(0.0, self.position - self.rate_before * (self.server_time - t))
        duration = self.duration
        return min(pos, duration) if duration is not None else pos

    def ends_at(self) -> float | None:
        """The server time the current item runs out, if it plays and has a known duration."""
        duration = self.duration
        if not self.playing or duration is None:
            return None
        return self.server_time + max(0.0, duration - self.position) / self.rate

    def index_of(self, item_id: str | None) -> int | None:
        return next((n for n, i in enumerate(self.playlist) if i.id == item_id), None)


# --- commands ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Play:
    position: float | None = None
    force: bool = False
    """Skip the ready check."""


@dataclass(frozen=True)
class Pause:
    position: float | None = None


@dataclass(frozen=True)
class Seek:
    position: float


@dataclass(frozen=True)
class Load:
    """Play this now: it goes into the playlist right after the current item, paused at 0."""

    item: Item


@dataclass(frozen=True)
class SetRate:
    rate: float


@dataclass(frozen=True)
class Queue:
    """Add to the playlist (at the end, or right after the current item); an idle player takes it up."""

    item: Item
    next: bool = False


@dataclass(frozen=True)
class Dequeue:
    item_id: str


@dataclass(frozen=True)
class Move:
    item_id: str
    index: int


@dataclass(frozen=True)
class Skip:
    """Go to ``item_id``, or to the next item; playback goes on if it was on."""

    item_id: str | None = None


@dataclass(frozen=True)
class SetControl:
    mode: ControlMode


@dataclass(frozen=True)
class Handover:
    to: str
    """User id of a present viewer."""


@dataclass(frozen=True)
class SetReadyCheck:
    check: ReadyCheck


Command = Play | Pause | Seek | Load | SetRate | Queue | Dequeue | Move | Skip | SetControl | Handover | SetReadyCheck
MANAGE_COMMANDS = (SetControl, Handover, SetReadyCheck)


@dataclass(frozen=True)
class Context:
    """What a command is applied with: the time, who is present, the rules."""

    now: float
    present: Sequence[Viewer]
    rules: Rules

    @property
    def present_ids(self) -> frozenset[str]:
        return frozenset(v.person.id for v in self.present)


# --- permissions ---------------------------------------------------------------------------------


def may_manage(state: WatchState, actor: Actor) -> bool:
    """Change control mode, hand over, set the ready check: leader, room host, moderators, admins."""
    if actor.is_admin or (actor.role is not None and RANK[actor.role] >= RANK["moderator"]):
        return True
    return state.leader is not None and state.leader.id == actor.person.id


def may_control(state: WatchState, actor: Actor) -> bool:
    """Play, pause, seek, load, change the playlist: managers always; every member in ``everyone`` mode."""
    if may_manage(state, actor):
        return True
    return state.control == "everyone" and actor.role is not None


# --- the transition function ---------------------------------------------------------------------


def apply(state: WatchState, actor: Actor, command: Command, ctx: Context, based_on: int | None = None) -> WatchState:
    """The state after ``actor``'s ``command``; the same object when nothing changed.

    Raises ``forbidden`` without control, ``conflict`` for a stale ``based_on`` version or a command the
    state cannot take (nothing loaded, a full playlist, an unknown item, an absent hand-over target).
    """
    manage = isinstance(command, MANAGE_COMMANDS)
    if not (may_manage(state, actor) if manage else may_control(state, actor)):
        who = "the leader, the room host or a moderator" if manage or state.control == "host" else "room members"
        raise forbidden(f"only {who} may do this in this watch party")
    if based_on is not None and based_on != state.version:
        raise conflict(f"stale command: it was based on version {based_on}, the state is at {state.version}")
    handler: Callable[[WatchState, Any, Actor, Context], WatchState] = _HANDLERS[type(command)]
    return _settle(state, handler(state, command, actor, ctx), ctx.now)


def set_ready(state: WatchState, user_id: str, ready: bool, ctx: Context) -> WatchState:
    """Mark a viewer (not) ready for the current item; a play waiting for the ready check may start."""
    marks = state.ready | {user_id} if ready else state.ready - {user_id}
    new = replace(state, ready=marks)
    if new.waiting and ready_met(new, ctx.present_ids):
        new = _start(new, ctx.now, ctx.rules)
    return _settle(state, new, ctx.now)


def tick(state: WatchState, ctx: Context) -> WatchState:
    """Upkeep: advance past an item that ran out, pass leadership on, start a play whose viewers are ready."""
    new = state
    ends = new.ends_at()
    if ends is not None and ctx.now >= ends:
        new = _advance(new, ends, ctx)
    new = _succession(new, ctx.present)
    if new.waiting and ready_met(new, ctx.present_ids):
        new = _start(new, ctx.now, ctx.rules)
    return _settle(state, new, ctx.now)


def needs_tick(state: WatchState, now: float, present_ids: Collection[str]) -> bool:
    """Whether :func:`tick` could change anything (a cheap check before taking the row lock)."""
    ends = state.ends_at()
    if ends is not None and now >= ends:
        return True
    if present_ids and (state.leader is None or state.leader.id not in present_ids):
        return True
    return state.waiting and ready_met(state, present_ids)


def ready_met(state: WatchState, present_ids: Collection[str]) -> bool:
    check = state.ready_check
    if check.mode == "off":
        return True
    ready_here = len(state.ready & set(present_ids))
    if check.mode == "all":
        return bool(present_ids) and ready_here == len(set(present_ids))
    return ready_here >= check.count


def _versioned(state: WatchState) -> WatchState:
    return replace(state, version=0, ready=frozenset(), ready_rev=0, changed_at=0.0)


def _settle(old: WatchState, new: WatchState, now: float) -> WatchState:
    """Number the change: ``version`` if anything ``watch:state`` carries changed, ``ready_rev`` for readiness."""
    if new == old:
        return old
    if new.ready != old.ready:
        new = replace(new, ready_rev=old.ready_rev + 1)
    if _versioned(new) != _versioned(old):
        new = replace(new, version=old.version + 1, changed_at=now)
    else:
        new = replace(new, version=old.version, changed_at=old.changed_at)
    return new


LEAD_FACTOR = 1.25
LEAD_MARGIN_S = 0.02


def start_lead(rtts: Collection[float], *, minimum: float, maximum: float) -> float:
    """How far ahead to schedule a start so that the slowest viewer's copy still arrives in time.

    A broadcast takes about half a round trip to reach a viewer; the lead covers the largest of the
    viewers' half round trips with room for jitter, within ``[minimum, maximum]``.
    """
    slowest = max(rtts, default=0.0) / 2
    return max(minimum, min(maximum, LEAD_FACTOR * slowest + LEAD_MARGIN_S))


# --- building blocks -----------------------------------------------------------------------------


def _clamp(state: WatchState, position: float) -> float:
    duration = state.duration
    position = max(0.0, position)
    return min(position, duration) if duration is not None else position


def _start(state: WatchState, now: float, rules: Rules) -> WatchState:
    return replace(state, playing=True, waiting=False, server_time=now + rules.start_lead, rate_before=0.0)


def _play_or_wait(state: WatchState, ctx: Context, force: bool) -> WatchState:
    if force or ready_met(state, ctx.present_ids):
        return _start(state, ctx.now, ctx.rules)
    return replace(state, playing=False, waiting=True, server_time=ctx.now, rate_before=0.0)


def _select(state: WatchState, item_id: str | None, ctx: Context, *, keep_playing: bool) -> WatchState:
    """Make ``item_id`` current at position 0; readiness starts afresh."""
    new = replace(state, current=item_id, position=0.0, server_time=ctx.now, rate_before=0.0, ready=frozenset())
    on = keep_playing and (state.playing or state.waiting) and item_id is not None
    new = replace(new, playing=False, waiting=False)
    return _play_or_wait(new, ctx, force=False) if on else new


def _require_media(state: WatchState) -> None:
    if state.item is None:
        raise conflict("nothing is loaded: load or queue something first")


def _require_room(state: WatchState, rules: Rules) -> None:
    if len(state.playlist) >= rules.max_playlist:
        raise conflict(f"the playlist is full ({rules.max_playlist} items)")


def _require_item(state: WatchState, item_id: str) -> int:
    index = state.index_of(item_id)
    if index is None:
        raise conflict("no such item in the playlist", item_id=item_id)
    return index


def _advance(state: WatchState, ended: float, ctx: Context) -> WatchState:
    """The current item ran out at server time ``ended``: the next one plays, or playback stops at the end."""
    index = state.index_of(state.current)
    following = state.playlist[index + 1] if index is not None and index + 1 < len(state.playlist) else None
    if following is None:
        return replace(state, playing=False, waiting=False, position=_clamp(state, state.duration or 0.0),
                       server_time=ended)  # fmt: skip
    new = replace(state, current=following.id, position=0.0, playing=False, waiting=False, ready=frozenset())
    if ready_met(new, ctx.present_ids):
        return replace(new, playing=True, server_time=max(ended, ctx.now) + ctx.rules.start_lead, rate_before=0.0)
    return replace(new, waiting=True, server_time=ctx.now)


def _succession(state: WatchState, present: Sequence[Viewer]) -> WatchState:
    if not present or (state.leader is not None and state.leader.id in {v.person.id for v in present}):
        return state
    heir = min(present, key=lambda v: (-RANK[v.role], v.member_since, v.person.id))
    return replace(state, leader=heir.person)


# --- one handler per command ---------------------------------------------------------------------


def _on_play(state: WatchState, cmd: Play, actor: Actor, ctx: Context) -> WatchState:
    _require_media(state)
    if cmd.position is None and state.playing:
        return state
    if cmd.position is None and state.waiting and not cmd.force and not ready_met(state, ctx.present_ids):
        return state
    position = state.position_at(ctx.now) if cmd.position is None else _clamp(state, cmd.position)
    if state.duration is not None and position >= state.duration:
        position = 0.0  # play at the end starts over
    return _play_or_wait(replace(state, position=position), ctx, cmd.force)


def _on_pause(state: WatchState, cmd: Pause, actor: Actor, ctx: Context) -> WatchState:
    _require_media(state)
    if cmd.position is None and not state.playing and not state.waiting:
        return state
    position = state.position_at(ctx.now) if cmd.position is None else _clamp(state, cmd.position)
    return replace(state, playing=False, waiting=False, position=position, server_time=ctx.now, rate_before=0.0)


def _on_seek(state: WatchState, cmd: Seek, actor: Actor, ctx: Context) -> WatchState:
    _require_media(state)
    new = replace(state, position=_clamp(state, cmd.position), server_time=ctx.now)
    return _start(new, ctx.now, ctx.rules) if state.playing else new


def _on_load(state: WatchState, cmd: Load, actor: Actor, ctx: Context) -> WatchState:
    _require_room(state, ctx.rules)
    index = state.index_of(state.current)
    at = index + 1 if index is not None else len(state.playlist)
    playlist = (*state.playlist[:at], cmd.item, *state.playlist[at:])
    return _select(replace(state, playlist=playlist), cmd.item.id, ctx, keep_playing=False)


def _on_rate(state: WatchState, cmd: SetRate, actor: Actor, ctx: Context) -> WatchState:
    if not MIN_RATE <= cmd.rate <= MAX_RATE:
        raise invalid(f"rate must be between {MIN_RATE} and {MAX_RATE}")
    if cmd.rate == state.rate:
        return state
    switch = max(ctx.now + ctx.rules.start_lead, state.server_time)
    if not state.playing or switch == state.server_time:  # paused, or a start still ahead: it starts at the new rate
        return replace(state, rate=cmd.rate)
    return replace(state, position=state.position_at(switch), server_time=switch, rate_before=state.rate, rate=cmd.rate)


def _on_queue(state: WatchState, cmd: Queue, actor: Actor, ctx: Context) -> WatchState:
    _require_room(state, ctx.rules)
    index = state.index_of(state.current)
    at = index + 1 if cmd.next and index is not None else len(state.playlist)
    new = replace(state, playlist=(*state.playlist[:at], cmd.item, *state.playlist[at:]))
    if state.item is None:
        new = _select(new, cmd.item.id, ctx, keep_playing=False)
    return new


def _on_dequeue(state: WatchState, cmd: Dequeue, actor: Actor, ctx: Context) -> WatchState:
    index = _require_item(state, cmd.item_id)
    playlist = state.playlist[:index] + state.playlist[index + 1 :]
    new = replace(state, playlist=playlist)
    if state.current != cmd.item_id:
        return new
    following = playlist[index].id if index < len(playlist) else None
    return _select(new, following, ctx, keep_playing=True)


def _on_move(state: WatchState, cmd: Move, actor: Actor, ctx: Context) -> WatchState:
    index = _require_item(state, cmd.item_id)
    item = state.playlist[index]
    rest = state.playlist[:index] + state.playlist[index + 1 :]
    at = max(0, min(cmd.index, len(rest)))
    return replace(state, playlist=(*rest[:at], item, *rest[at:]))


def _on_skip(state: WatchState, cmd: Skip, actor: Actor, ctx: Context) -> WatchState:
    if cmd.item_id is not None:
        _require_item(state, cmd.item_id)
        return _select(state, cmd.item_id, ctx, keep_playing=True)
    index = state.index_of(state.current)
    if index is None or index + 1 >= len(state.playlist):
        raise conflict("there is no next item")
    return _select(state, state.playlist[index + 1].id, ctx, keep_playing=True)


def _on_control(state: WatchState, cmd: SetControl, actor: Actor, ctx: Context) -> WatchState:
    return replace(state, control=cmd.mode)


def _on_handover(state: WatchState, cmd: Handover, actor: Actor, ctx: Context) -> WatchState:
    heir = next((v for v in ctx.present if v.person.id == cmd.to), None)
    if heir is None:
        raise conflict("hand over to someone present in the room", user_id=cmd.to)
    return replace(state, leader=heir.person)


def _on_ready_check(state: WatchState, cmd: SetReadyCheck, actor: Actor, ctx: Context) -> WatchState:
    if cmd.check.count < 1:
        raise invalid("count must be at least 1")
    new = replace(state, ready_check=cmd.check)
    if new.waiting and ready_met(new, ctx.present_ids):
        new = _start(new, ctx.now, ctx.rules)
    return new


_HANDLERS: dict[type, Callable[[WatchState, Any, Actor, Context], WatchState]] = {
    Play: _on_play,
    Pause: _on_pause,
    Seek: _on_seek,
    Load: _on_load,
    SetRate: _on_rate,
    Queue: _on_queue,
    Dequeue: _on_dequeue,
    Move: _on_move,
    Skip: _on_skip,
    SetControl: _on_control,
    Handover: _on_handover,
    SetReadyCheck: _on_ready_check,
}
