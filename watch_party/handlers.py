"""Watch parties over Socket.IO: the event table (thin handlers). Every command answers ``{ok, state}``.

| event (c→s) | payload | ack (besides ``ok``) |
| --- | --- | --- |
| ``watch:sync`` | ``{room_id}`` | ``state``, ``readiness``, ``tuning``, ``server_time`` |
| ``watch:play`` | ``{room_id, version?, position?, force?}`` | ``state`` |
| ``watch:pause`` | ``{room_id, version?, position?}`` | ``state`` |
| ``watch:seek`` | ``{room_id, position, version?}`` | ``state`` |
| ``watch:load`` | ``{room_id, media, version?}`` | ``state`` |
| ``watch:rate`` | ``{room_id, rate, version?}`` | ``state`` |
| ``watch:queue`` | ``{room_id, media, next?, version?}`` | ``state`` |
| ``watch:dequeue`` | ``{room_id, item_id, version?}`` | ``state`` |
| ``watch:move`` | ``{room_id, item_id, index, version?}`` | ``state`` |
| ``watch:skip`` | ``{room_id, item_id?, version?}`` | ``state`` |
| ``watch:control`` | ``{room_id, mode, version?}`` | ``state`` |
| ``watch:handover`` | ``{room_id, user_id, version?}`` | ``state`` |
| ``watch:ready_check`` | ``{room_id, mode, count?, version?}`` | ``state`` |
| ``watch:ready`` | ``{room_id, ready}`` | ``readiness`` |
| ``watch:heartbeat`` | ``{room_id, position, playing, client_time, version?, offset?, rtt?}`` | times, ``version`` |
| ``watch:report`` | ``{room_id}`` | ``server_time``, ``version``, ``viewers``, ``summary`` |

A heartbeat's ack times are ``client_time`` (echoed), ``received_at`` and ``server_time``.
Server→client, to ``room:<id>``: ``watch:state`` (see :func:`watch_party.codec.state_view`) and
``watch:readiness`` (:func:`watch_party.codec.readiness_view`); a viewer joining a ``watch`` room gets
both at once. The rules are in :mod:`watch_party.core`, the use cases in :mod:`watch_party.service`.
"""

from __future__ import annotations

from typing import Any

from core_api.events import Connection, EventCall, Events
from watch_party import service
from watch_party.core import (
    Dequeue,
    Handover,
    Load,
    Move,
    Pause,
    Play,
    Queue,
    ReadyCheck,
    Seek,
    SetControl,
    SetRate,
    SetReadyCheck,
    Skip,
)
from watch_party.schemas import (
    ControlIn,
    DequeueIn,
    HandoverIn,
    HeartbeatIn,
    LoadIn,
    MoveIn,
    PauseIn,
    PlayIn,
    QueueIn,
    RateIn,
    ReadyCheckIn,
    ReadyIn,
    RoomIn,
    SeekIn,
    SkipIn,
)

events = Events()


@events.on("watch:sync", RoomIn)
async def sync(call: EventCall) -> dict[str, Any]:
    return await service.sync(call, call.payload.room_id)


@events.on("watch:play", PlayIn)
async def play(call: EventCall) -> dict[str, Any]:
    p: PlayIn = call.payload
    return await service.command(call, p.room_id, Play(p.position, p.force), p.version, "play")


@events.on("watch:pause", PauseIn)
async def pause(call: EventCall) -> dict[str, Any]:
    p: PauseIn = call.payload
    return await service.command(call, p.room_id, Pause(p.position), p.version, "pause")


@events.on("watch:seek", SeekIn)
async def seek(call: EventCall) -> dict[str, Any]:
    p: SeekIn = call.payload
    return await service.command(call, p.room_id, Seek(p.position), p.version, "seek")


@events.on("watch:load", LoadIn)
async def load(call: EventCall) -> dict[str, Any]:
    p: LoadIn = call.payload
    item = await service.new_item(call, p.media)
    return await service.command(call, p.room_id, Load(item), p.version, "load")


@events.on("watch:rate", RateIn)
async def rate(call: EventCall) -> dict[str, Any]:
    p: RateIn = call.payload
    return await service.command(call, p.room_id, SetRate(p.rate), p.version, "rate")


@events.on("watch:queue", QueueIn)
async def queue(call: EventCall) -> dict[str, Any]:
    p: QueueIn = call.payload
    item = await service.new_item(call, p.media)
    return await service.command(call, p.room_id, Queue(item, p.next), p.version, "queue")


@events.on("watch:dequeue", DequeueIn)
async def dequeue(call: EventCall) -> dict[str, Any]:
    p: DequeueIn = call.payload
    return await service.command(call, p.room_id, Dequeue(p.item_id), p.version, "dequeue")


@events.on("watch:move", MoveIn)
async def move(call: EventCall) -> dict[str, Any]:
    p: MoveIn = call.payload
    return await service.command(call, p.room_id, Move(p.item_id, p.index), p.version, "move")


@events.on("watch:skip", SkipIn)
async def skip(call: EventCall) -> dict[str, Any]:
    p: SkipIn = call.payload
    return await service.command(call, p.room_id, Skip(p.item_id), p.version, "skip")


@events.on("watch:control", ControlIn)
async def control(call: EventCall) -> dict[str, Any]:
    p: ControlIn = call.payload
    return await service.command(call, p.room_id, SetControl(p.mode), p.version, "control")


@events.on("watch:handover", HandoverIn)
async def handover(call: EventCall) -> dict[str, Any]:
    p: HandoverIn = call.payload
    return await service.command(call, p.room_id, Handover(str(p.user_id)), p.version, "handover")


@events.on("watch:ready_check", ReadyCheckIn)
async def ready_check(call: EventCall) -> dict[str, Any]:
    p: ReadyCheckIn = call.payload
    return await service.command(call, p.room_id, SetReadyCheck(ReadyCheck(p.mode, p.count)), p.version, "ready_check")


@events.on("watch:ready", ReadyIn)
async def ready(call: EventCall) -> dict[str, Any]:
    return await service.set_ready(call, call.payload.room_id, call.payload.ready)


@events.on("watch:heartbeat", HeartbeatIn)
async def heartbeat(call: EventCall) -> dict[str, Any]:
    return await service.heartbeat(call, call.payload)


@events.on("watch:report", RoomIn)
async def report(call: EventCall) -> dict[str, Any]:
    return await service.report(call, call.payload.room_id)


@events.disconnected
async def on_disconnect(conn: Connection) -> None:
    await service.on_disconnect(conn)
