"""Rights re-checked on open connections, on every node, as soon as they change.

A connection is authenticated once, at its handshake, but what its user may do can change while it stays
open: an admin is demoted, a member is kicked or banned from a room, leaves or is removed from a
community, loses a community role, or the account disappears. Each service that makes such a change calls
:func:`core_api.context.rights_changed` in its transaction; after the commit the event ``rights:<user>``
reaches every node (the bus's Redis relay when scaled), and :class:`RightsWatch` acts on it:

1. at once, the user's Socket.IO sessions on this node are marked stale, so the next event they send
   re-reads the account before its handler runs (:meth:`realtime.sockets.SocketServer.mark_stale`);
2. then (a task per user, :data:`~core_api.settings.Settings.rights_recheck_parallel` users at a time)
   the account is read again and every open connection of the user is re-checked: Socket.IO sessions get
   the new account and each package's ``rights_changed`` hook takes them out of what they may no longer
   follow (rooms: ``room:removed``; a contest's jury board: ``contest:downgraded``), and they hear
   ``me:changed`` when their role changed; ``/yjs`` connections read their access to the workspace again
   (read-only now, or closed with 4403); a deleted account's connections are closed.

Archiving a room (``rights:room:<room>``) makes the open editors of its workspaces read-only the same way.

A safety net catches what no event announces (a role changed with the CLI or in SQL) and events lost
while a node's Redis subscription was down: every ``STUDYHALL_RIGHTS_RECHECK_S`` each node reads the
roles of the users it holds connections for (one query), and re-checks those whose role or account
changed; a relay that reconnects makes its node re-check every connection it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from collab_ide.documents import DocumentManager
from collab_ide.websocket import SocketPeer
from core_api.auth import current_principal, current_principals
from core_api.context import RESYNC_TOPIC, RIGHTS_PREFIX, ROOM_RIGHTS_PREFIX, Core
from core_api.settings import Settings
from realtime.sockets import SocketServer

log = logging.getLogger(__name__)


class RightsWatch:
    """Applies ``rights:<user>`` events to this node's open connections (Socket.IO and ``/yjs``).

    Args:
        core: the app's core (pool and bus).
        sockets: the Socket.IO server whose sessions are re-checked.
        documents: finds the app's document manager (None before it started), whose peers are re-checked.
        settings: ``rights_recheck_s`` (the safety net's interval) and ``rights_recheck_parallel``.
    """

    def __init__(
        self,
        core: Core,
        sockets: SocketServer,
        documents: Callable[[], DocumentManager | None],
        settings: Settings,
    ) -> None:
        self.core = core
        self.sockets = sockets
        self.documents = documents
        self.interval_s = settings.rights_recheck_s
        self._slots = asyncio.Semaphore(settings.rights_recheck_parallel)
        self._queued: set[uuid.UUID] = set()
        self._running: set[uuid.UUID] = set()
        self._again: set[uuid.UUID] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.rechecks = 0
        """Users re-checked so far (tests and metrics)."""
        sockets.recheck_soon = self.schedule

    async def on_bus_event(self, topic: str, payload: dict[str, object]) -> None:
        if topic.startswith(ROOM_RIGHTS_PREFIX):
            try:
                room_id = uuid.UUID(topic.removeprefix(ROOM_RIGHTS_PREFIX))
            except ValueError:
                log.warning("ignored a rights event for %r", topic)
                return
            self._spawn(self.recheck_room(room_id))
        elif topic.startswith(RIGHTS_PREFIX):
            try:
                user_id = uuid.UUID(topic.removeprefix(RIGHTS_PREFIX))
            except ValueError:
                log.warning("ignored a rights event for %r", topic)
                return
            self.sockets.mark_stale(user_id)
            self.schedule(user_id)
        elif topic == RESYNC_TOPIC:
            for user_id in self.held_roles():
                self.sockets.mark_stale(user_id)
                self.schedule(user_id)

    def held_roles(self) -> dict[uuid.UUID, set[str]]:
        """The platform roles this node's open connections act with, by user."""
        held = self.sockets.held_roles()
        manager = self.documents()
        if manager is not None:
            for doc in manager.docs.values():
                for peer in doc.peers:
                    if isinstance(peer, SocketPeer):
                        held.setdefault(peer.user_id, set()).add(peer.user.role)
        return held

    # --- re-checking -------------------------------------------------------------------------------

    def schedule(self, user_id: uuid.UUID) -> None:
        """Re-check the user's connections soon: once more after a re-check already under way."""
        if user_id in self._running:
            self._again.add(user_id)
            return
        if user_id in self._queued:
            return
        self._queued.add(user_id)
        self._spawn(self._run(user_id))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, user_id: uuid.UUID) -> None:
        async with self._slots:
            self._queued.discard(user_id)
            self._running.add(user_id)
            try:
                while True:
                    self._again.discard(user_id)
                    try:
                        await self.recheck(user_id)
                    except Exception:
                        log.exception("could not re-check the connections of user %s", user_id)
                    if user_id not in self._again:
                        break
            finally:
                self._running.discard(user_id)

    async def recheck(self, user_id: uuid.UUID) -> None:
        """Read the user's account again and re-check each of their open connections on this node."""
        marks = self.sockets.seen_marks(user_id)
        if marks:
            principal = await current_principal(self.core, user_id)
            await self.sockets.apply_rights(user_id, principal, marks)
        manager = self.documents()
        if manager is not None:
            await manager.recheck_user(user_id)  # each connection reads the account and its access again
        self.rechecks += 1

    async def recheck_room(self, room_id: uuid.UUID) -> None:
        """What anyone may do in the room changed: the open editors of its workspaces re-check."""
        manager = self.documents()
        if manager is None or not manager.docs:
            return
        async with self._slots:
            try:
                rows = await self.core.pool.fetch("SELECT id FROM workspaces WHERE room_id = $1", room_id)
                await manager.recheck_workspaces([row["id"] for row in rows])
            except Exception:
                log.exception("could not re-check the editors of room %s", room_id)

    # --- the safety net ----------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Re-check every user whose stored role (or account) differs from what their connections hold."""
        held = self.held_roles()
        if not held:
            return
        stored = await current_principals(self.core, list(held))
        for user_id, roles in held.items():
            now = stored.get(user_id)
            if now is None or roles != {now.role}:
                self.sockets.mark_stale(user_id)
                self.schedule(user_id)

    async def run(self) -> None:
        """The safety net's loop (an owned task; cancel it to stop)."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the periodic rights re-check failed; trying again next time")

    async def idle(self) -> None:
        """Wait until every scheduled re-check has run (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
