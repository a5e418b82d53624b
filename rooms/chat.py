"""Community chat over Socket.IO: the event table (thin handlers) and the connection registry hooks.

| event (c→s) | payload | ack (besides ``ok``) |
| --- | --- | --- |
| ``chat:send`` | ``{room_id, body, client_msg_id}`` | ``message`` |
| ``chat:history`` | ``{room_id, before_seq?, after_seq?, limit? = 50}`` | ``messages`` (ascending seq), ``has_more`` |
| ``chat:edit`` | ``{room_id, message_id, body}`` | ``message`` |
| ``chat:delete`` | ``{room_id, message_id}`` | ``message`` (the tombstone) |
| ``chat:react`` | ``{room_id, message_id, emoji, on}`` | ``reactions``, ``rev`` |
| ``chat:typing`` | ``{room_id, typing}`` | |
| ``chat:read`` | ``{room_id, seq}`` | ``last_read_seq``, ``unread`` |
| ``chat:mute`` | ``{room_id, user_id, seconds}`` | ``muted_until`` |
| ``chat:kick`` | ``{room_id, user_id}`` | |
| ``chat:ban`` | ``{room_id, user_id, on}`` | |
| ``chat:slow_mode`` | ``{room_id, seconds}`` | |

Server→client, to ``room:<id>``: ``chat:message`` (a message), ``chat:updated {message}``,
``chat:reactions {room_id, message_id, reactions, rev}``, ``chat:typing {room_id, user, typing}`` (not to
the typist), ``chat:moderation {room_id, action, user_id, by, ...}``; to ``user:<id>``:
``room:kicked {room_id, reason}``, ``chat:read {room_id, last_read_seq, unread}`` (the reader's other
connections) and, for direct-message rooms, ``dm:message {room_id, message}`` to every participant.
A message is ``{id, room_id, seq, author: {id, display_name}, body, created_at, edited_at, deleted,
reactions: {emoji: count}, rev}``; a deleted one has ``body: ""``,
``deleted: true`` and no reactions. ``rev`` grows with every change of a message: keep the highest.
``chat:message`` reaches each connection in ``seq`` order, once (:mod:`realtime.ordered`); a client that
reconnects asks ``chat:history`` with ``after_seq`` = the highest *contiguous* seq it holds.
The rules are in :mod:`rooms.chat_service` and :mod:`rooms.chat_moderation`.
"""

from __future__ import annotations

import logging
from typing import Any

from core_api.events import EventCall, Events
from core_api.http import Api
from rooms import chat_moderation as moderation
from rooms import chat_service as service
from rooms.chat_schemas import (
    BanIn,
    DeleteIn,
    EditIn,
    HistoryIn,
    KickIn,
    MuteIn,
    ReactIn,
    ReadIn,
    SendIn,
    SlowModeIn,
    TypingIn,
)

log = logging.getLogger(__name__)

api = Api()
events = Events()


@events.on("chat:send", SendIn)
async def send(call: EventCall) -> dict[str, Any]:
    return {"message": await service.send(call, call.payload)}


@events.on("chat:history", HistoryIn)
async def history(call: EventCall) -> dict[str, Any]:
    return await service.history(call, call.payload)


@events.on("chat:read", ReadIn)
async def read(call: EventCall) -> dict[str, Any]:
    return await service.read(call, call.payload)


@events.on("chat:edit", EditIn)
async def edit(call: EventCall) -> dict[str, Any]:
    return {"message": await service.edit(call, call.payload)}


@events.on("chat:delete", DeleteIn)
async def delete(call: EventCall) -> dict[str, Any]:
    return {"message": await service.delete(call, call.payload)}


@events.on("chat:react", ReactIn)
async def react(call: EventCall) -> dict[str, Any]:
    return await service.react(call, call.payload)


@events.on("chat:typing", TypingIn)
async def typing(call: EventCall) -> None:
    await service.typing(call, call.payload)


@events.on("chat:mute", MuteIn)
async def mute(call: EventCall) -> dict[str, Any]:
    return await moderation.mute(call, call.payload)


@events.on("chat:kick", KickIn)
async def kick(call: EventCall) -> None:
    await moderation.kick(call, call.payload)


@events.on("chat:ban", BanIn)
async def ban(call: EventCall) -> None:
    await moderation.ban(call, call.payload)


@events.on("chat:slow_mode", SlowModeIn)
async def slow_mode(call: EventCall) -> None:
    await moderation.slow_mode(call, call.payload)
