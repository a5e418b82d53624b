"""One workspace's live document on this node: the Yjs doc, the clients editing it, their awareness.

:class:`SharedDocument` knows nothing of websockets or Redis. Clients are :class:`Peer` objects with a
synchronous ``send(frame)``; other nodes are reached through a ``relay`` callback, and what must be
stored is queued in ``pending`` for the manager's batched writer. Updates are applied to the pycrdt
document and the *same frame* is forwarded to the other peers: nothing is re-encoded per recipient.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol

from pycrdt import Doc

from collab_ide import protocol
from collab_ide.protocol import AwarenessEntry


class Peer(Protocol):
    """A client of a document (a websocket connection, or a test double)."""

    user_id: uuid.UUID
    can_edit: bool
    awareness_ids: set[int]
    """The awareness client ids this peer announced: removed for everyone when it leaves."""

    def send(self, frame: bytes) -> None:
        """Queue one y-websocket frame for the client without waiting."""
        ...

    async def recheck(self) -> None:
        """The user's access changed: read it again (read-only now, or disconnected if none is left)."""
        ...


Relay = Callable[[bytes], None]
"""Passes a frame on to the other nodes that hold this document (a no-op on a single node)."""


def update_applier(doc: Doc[Any]) -> Callable[[bytes], None]:
    """``doc.apply_update``, minus pycrdt's Python transaction wrapper when that is safe to skip.

    The wrapper (context manager, origin bookkeeping, model checks) costs about as much as applying a
    one-keystroke update in Rust, for every update the server receives. For a plain document (no
    pydantic model, single-threaded) outside any open transaction, the same Rust calls are made
    directly; otherwise — or on a pycrdt without these internals — the public method is used.
    """
    raw = getattr(doc, "_doc", None)
    if raw is None or getattr(doc, "_Model", None) is not None or getattr(doc, "_allow_multithreading", True):
        return doc.apply_update

    def apply(update: bytes) -> None:
        if doc._txn is not None:
            doc.apply_update(update)
            return
        txn = raw.create_transaction()
        try:
            raw.apply_update(txn, update)
            txn.commit()
        finally:
            txn.drop()

    return apply


class InvalidUpdate(ValueError):
    """A document update (or state vector) the CRDT could not decode."""


class SharedDocument:
    """A loaded document and its local peers.

    Args:
        workspace_id: the workspace the document belongs to.
        doc: the document as loaded from Postgres.
        version: the snapshot version it was loaded from (compaction skips re-reading it).
        relay: how frames reach other nodes.
    """

    def __init__(self, workspace_id: uuid.UUID, doc: Doc[Any], version: int, relay: Relay) -> None:
        self.workspace_id = workspace_id
        self.doc = doc
        self._apply_update = update_applier(doc)
        self.version = version
        self.relay = relay
        self.peers: list[Peer] = []
        self.awareness: dict[int, AwarenessEntry] = {}
        self.awareness_seen: dict[int, float] = {}
        self.pending: list[bytes] = []
        """Updates from this node's clients not yet appended to the log."""
        self.own_rows: list[int] = []
        """Log rows this node appended since the last compaction (already in ``doc``: not re-read)."""
        self.logged = 0
        """Updates in those rows."""
        self.unsaved = 0
        """Updates applied (from anywhere) since the last compaction: the next snapshot must include them."""
        self.last_change = 0.0

    # --- peers ---------------------------------------------------------------------------------

    def add(self, peer: Peer) -> None:
        """Let ``peer`` in and greet it as y-websocket servers do: sync step 1, then everyone's awareness."""
        self.peers.append(peer)
        peer.send(protocol.sync_step1(self.doc.get_state()))
        if self.awareness:
            peer.send(protocol.encode_awareness(list(self.awareness.values())))

    def remove(self, peer: Peer) -> None:
        """Take ``peer`` out and tell everyone its cursors are gone."""
        if peer in self.peers:
            self.peers.remove(peer)
        gone = [
            AwarenessEntry(cid, self.awareness[cid].clock + 1, b"null")
            for cid in peer.awareness_ids
            if cid in self.awareness
        ]
        if gone:
            for entry in gone:
                del self.awareness[entry.client_id]
                self.awareness_seen.pop(entry.client_id, None)
            frame = protocol.encode_awareness(gone)
            self._broadcast(frame, None)
            self.relay(frame)

    def _broadcast(self, frame: bytes, origin: Peer | None) -> None:
        for peer in self.peers:
            if peer is not origin:
                peer.send(frame)

    # --- sync ----------------------------------------------------------------------------------

    def answer_step1(self, state_vector: bytes) -> bytes:
        """Sync step 2 for a client that has ``state_vector``."""
        try:
            return protocol.sync_step2(self.doc.get_update(state_vector))
        except ValueError as exc:
            raise InvalidUpdate(str(exc)) from None

    def apply(self, update: bytes, frame: bytes, origin: Peer | None, now: float) -> None:
        """Apply a client's update, forward ``frame`` to the other peers and nodes, queue it for the log.

        ``frame`` must be an update message (``0, 2, ...``) carrying ``update``.
        """
        if update == protocol.EMPTY_UPDATE:
            return
        try:
            self._apply_update(update)
        except ValueError as exc:
            raise InvalidUpdate(str(exc)) from None
        for peer in self.peers:
            if peer is not origin:
                peer.send(frame)
        self.relay(frame)
        self.pending.append(update)
        self.unsaved += 1
        self.last_change = now

    def apply_remote(self, update: bytes, frame: bytes, now: float) -> None:
        """Apply an update another node relayed (that node logs it) and forward it to local peers."""
        if update == protocol.EMPTY_UPDATE:
            return
        try:
            self._apply_update(update)
        except ValueError:
            return  # the sending node applied it, so this cannot happen short of corruption in transit
        self._broadcast(frame, None)
        self.unsaved += 1
        self.last_change = now

    # --- awareness -----------------------------------------------------------------------------

    def apply_awareness(
        self, entries: list[AwarenessEntry], frame: bytes, origin: Peer | None, now: float = 0.0
    ) -> None:
        """Record awareness states (newer clocks win) and forward ``frame`` to every peer and other nodes."""
        for entry in entries:
            if origin is not None:
                if entry.removed:
                    origin.awareness_ids.discard(entry.client_id)
                else:
                    origin.awareness_ids.add(entry.client_id)
            known = self.awareness.get(entry.client_id)
            if known is not None and known.clock > entry.clock:
                continue
            if entry.removed:
                self.awareness.pop(entry.client_id, None)
                self.awareness_seen.pop(entry.client_id, None)
            else:
                self.awareness[entry.client_id] = entry
                self.awareness_seen[entry.client_id] = now
        # To the sender too, as y-websocket's own server does: a client renews its awareness every 15 s
        # and takes 30 s without any message for a dead connection, so a lone editor needs the echo.
        self._broadcast(frame, None)
        if origin is not None:
            self.relay(frame)

    def forget_stale_awareness(self, before: float) -> None:
        """Drop states not renewed since ``before``: y-protocols clients renew theirs every 15 s and
        time out others' after 30 s, so this only removes the cursors of clients of a node that died."""
        for client_id, seen in list(self.awareness_seen.items()):
            if seen < before:
                del self.awareness_seen[client_id]
                self.awareness.pop(client_id, None)

    def awareness_frame(self) -> bytes:
        return protocol.encode_awareness(list(self.awareness.values()))

    def close_all(self, close: Callable[[Peer], None]) -> None:
        for peer in list(self.peers):
            close(peer)
