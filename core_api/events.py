"""Realtime events as the domain packages see them: a typed event table and a transport interface.

Domain packages (``rooms``, ``watch_party``, ...) declare their Socket.IO events in an :class:`Events`
table, like the REST route table: each event names a pydantic payload model, and the handler receives
an :class:`EventCall` with the payload already validated and the caller authenticated. Handlers return
the fields of a successful ack (``{"ok": true, ...}``) or raise :class:`~core_api.errors.AppError`,
which becomes ``{"ok": false, "error": {code, message}}``. They talk to connections only through the
:class:`Transport` protocol, so no domain package imports the Socket.IO server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from core_api.context import Core
from core_api.http import Principal


class Transport(Protocol):
    """What handlers may do to connections; implemented over python-socketio by ``realtime``."""

    node_id: str

    async def emit(
        self, event: str, data: Any, *, to: str | list[str], skip_sid: str | list[str] | None = None
    ) -> None:
        """Send ``event`` to a room (``room:<id>``, ``user:<id>``) or a single sid, or to a list of them
        (each connection gets it once), on every node, except the connections in ``skip_sid``."""
        ...

    async def enter_room(self, sid: str, room: str) -> None: ...

    async def enter_room_at(self, sid: str, room: str, committed: int, after: int | None = None) -> int:
        """Enter a room whose ordered event (``chat:message``) the connection must get once each, in ``seq``
        order: it is sent live every one after the returned ``seq``, and the caller gives it the history
        up to there. ``committed`` is the room's last committed ``seq``, read before the call. ``after``:
        the connection already holds the room up to this ``seq`` (a rejoin): none up to it is sent live,
        even when this node had not delivered that far yet."""
        ...

    async def leave_room(self, sid: str, room: str) -> None: ...

    async def disconnect(self, sid: str) -> None: ...

    def rooms_of(self, sid: str) -> list[str]:
        """The rooms a local connection sits in."""
        ...


@dataclass
class EventCall:
    """One validated client→server event."""

    sid: str
    user: Principal
    payload: Any
    core: Core
    transport: Transport
    session: dict[str, Any]


@dataclass
class Connection:
    """A connection as connect/disconnect hooks see it."""

    sid: str
    user: Principal
    core: Core
    transport: Transport
    session: dict[str, Any]


EventHandler = Callable[[EventCall], Awaitable[dict[str, Any] | None]]
ConnectionHook = Callable[[Connection], Awaitable[None]]


@dataclass
class EventSpec:
    name: str
    payload: type[BaseModel]
    handler: EventHandler


@dataclass
class Events:
    """A table of events and connection hooks (one per domain package); ``combine`` joins them."""

    specs: dict[str, EventSpec] = field(default_factory=dict)
    on_connect: list[ConnectionHook] = field(default_factory=list)
    on_disconnect: list[ConnectionHook] = field(default_factory=list)
    on_rights_changed: list[ConnectionHook] = field(default_factory=list)
    """Run for each open connection of a user whose rights changed, with ``conn.user`` already re-read:
    each package takes the connection out of what it may no longer follow (rooms, jury boards)."""

    def on(self, name: str, payload: type[BaseModel]) -> Callable[[EventHandler], EventHandler]:
        def register(handler: EventHandler) -> EventHandler:
            if name in self.specs:
                raise ValueError(f"event {name} is declared twice")
            self.specs[name] = EventSpec(name, payload, handler)
            return handler

        return register

    def connected(self, hook: ConnectionHook) -> ConnectionHook:
        self.on_connect.append(hook)
        return hook

    def disconnected(self, hook: ConnectionHook) -> ConnectionHook:
        self.on_disconnect.append(hook)
        return hook

    def rights_changed(self, hook: ConnectionHook) -> ConnectionHook:
        self.on_rights_changed.append(hook)
        return hook

    @classmethod
    def combine(cls, *tables: Events) -> Events:
        out = cls()
        for table in tables:
            for spec in table.specs.values():
                out.on(spec.name, spec.payload)(spec.handler)
            out.on_connect.extend(table.on_connect)
            out.on_disconnect.extend(table.on_disconnect)
            out.on_rights_changed.extend(table.on_rights_changed)
        return out
