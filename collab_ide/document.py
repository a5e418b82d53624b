"""One workspace's live document on this node: the Yjs doc, the clients editing it, their awareness.

:class:`SharedDocument` knows nothing of websockets or Redis. Clients are :class:`Peer` objects with a
synchronous ``send(frame)``; other nodes are reached through a ``relay`` callback, and what must be
stored is queued in ``pending`` for the manager's batched writer. Updates are applied to the pycrdt
document and the *same frame* is forwarded to the other peers: nothing is re-encoded per recipient.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pycrdt import Doc

from collab_ide import protocol
from collab_ide.protocol import AwarenessEntry
from collab_ide.sizes import SizeGuard, SizeLimits, TooLarge
from collab_ide.updates import LeftPending, MissingDependencies, check, decode, decode_state_vector

log = logging.getLogger(__name__)


class Peer(Protocol):
    """A client of a document (a websocket connection, or a test double)."""

    user_id: uuid.UUID
    can_edit: bool
    awareness_ids: set[int]
    """The awareness client ids this peer owns (it announced them first): removed for everyone when it leaves."""

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


def batch_applier(doc: Doc[Any]) -> Callable[[list[bytes]], None]:
    """Apply several updates in one transaction (the engine's drained batches; see
    :func:`update_applier` for when pycrdt's wrapper is skipped)."""
    raw = getattr(doc, "_doc", None)
    if raw is None or getattr(doc, "_Model", None) is not None or getattr(doc, "_allow_multithreading", True):

        def each(updates: list[bytes]) -> None:
            with doc.transaction():
                for update in updates:
                    doc.apply_update(update)

        return each

    def apply(updates: list[bytes]) -> None:
        if doc._txn is not None:
            for update in updates:
                doc.apply_update(update)
            return
        txn = raw.create_transaction()
        try:
            for update in updates:
                raw.apply_update(txn, update)
            txn.commit()
        finally:
            txn.drop()

    return apply


def _ends(update: bytes) -> dict[int, int]:
    """Per client, the clock up to which ``update`` brings structs or deletions."""
    shape = decode(update)
    ends: dict[int, int] = {}
    for client, blocks in shape.clients:
        if blocks:
            clock, length, _, _ = blocks[-1]
            ends[client] = max(ends.get(client, 0), clock + length)
    for client, clock, length in shape.deletes:
        ends[client] = max(ends.get(client, 0), clock + length)
    return ends


class InvalidUpdate(ValueError):
    """A document update (or state vector) the CRDT could not decode."""


@dataclass(frozen=True)
class AwarenessLimits:
    """What one client may put into a document's awareness (``STUDYHALL_COLLAB_AWARENESS_*``).

    Args:
        max_bytes: an awareness message larger than this is ignored unread.
        max_entries: an awareness message with more entries than this is ignored unread.
        ids_per_connection: awareness client ids one connection may own; it owns those it announces
            first (a y-protocols client has one), and no connection may write another's.
    """

    max_bytes: int = 16 * 1024
    max_entries: int = 16
    ids_per_connection: int = 4


class SharedDocument:
    """A loaded document and its local peers.

    Args:
        workspace_id: the workspace the document belongs to.
        doc: the document as loaded from Postgres.
        version: the snapshot version it was loaded from (compaction skips re-reading it).
        relay: how frames reach other nodes.
        awareness_limits: what one client may put into the awareness.
        size_limits: how large the document and each of its files may grow.
        stored_bytes: the size it was loaded from (a bound of its size until it is measured).
    """

    def __init__(
        self,
        workspace_id: uuid.UUID,
        doc: Doc[Any],
        version: int,
        relay: Relay,
        awareness_limits: AwarenessLimits = AwarenessLimits(),
        size_limits: SizeLimits = SizeLimits(),
        stored_bytes: int = 0,
    ) -> None:
        self.workspace_id = workspace_id
        self.doc = doc
        self.sizes = SizeGuard(doc, size_limits, stored_bytes)
        self.known: dict[int, int] = decode_state_vector(doc.get_state())
        """The document's state vector (client id → next clock), kept up to date without asking pycrdt."""
        self.awaited: dict[int, int] = {}
        """What relayed updates that arrived ahead of their dependencies wait for (client → clock)."""
        self.resynced_at = float("-inf")
        """When this node last asked the others for what such updates wait for."""
        self._apply_update = update_applier(doc)
        self._apply_batch = batch_applier(doc)
        self.stale = False
        """``known`` lags the document (the engine's updates were applied without a check): read it again first."""
        self.relays = True
        """Whether other nodes hear of updates (False on a single node: the engine's batches skip the relay)."""
        self.changed: Callable[[], None] | None = None
        """Called when the document or its sizes changed other than through :meth:`apply` or :meth:`apply_fast`
        (another node's update, compaction): the engine's copy of its state vector and sizes is renewed."""
        self.version = version
        self.relay = relay
        self.awareness_limits = awareness_limits
        self.peers: list[Peer] = []
        self.awareness: dict[int, AwarenessEntry] = {}
        """Everyone's awareness states by client id: this node's clients' and other nodes'."""
        self.awareness_owner: dict[int, Peer] = {}
        """Which local connection owns each of this node's clients' ids."""
        self.awareness_seen: dict[int, float] = {}
        """When each other node's client's state was last renewed (they expire; local ones leave with their peer)."""
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
        """Take ``peer`` out and tell everyone, here and on other nodes, that its cursors are gone."""
        if peer in self.peers:
            self.peers.remove(peer)
        gone = []
        for cid in sorted(peer.awareness_ids):
            if self.awareness_owner.get(cid) is not peer:
                continue
            del self.awareness_owner[cid]
            entry = self.awareness.pop(cid, None)
            if entry is not None:
                gone.append(AwarenessEntry(cid, entry.clock + 1, b"null"))
        peer.awareness_ids.clear()
        if gone:
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

        ``frame`` must be an update message (``0, 2, ...``) carrying ``update``. Nothing is applied when
        it raises: :class:`~collab_ide.updates.MissingDependencies` for an update the document could not
        integrate whole (see :mod:`collab_ide.updates`), :class:`~collab_ide.sizes.TooLarge` for one that
        would take the document or one of its files past its cap, :class:`InvalidUpdate` for one that
        cannot be decoded.
        """
        if update == protocol.EMPTY_UPDATE:
            return
        if self.stale:
            self.refresh_state()
        try:
            after = check(update, self.known)
            self.sizes.admit(update)
            self._apply_update(update)
        except ValueError as exc:
            if isinstance(exc, TooLarge | MissingDependencies):
                raise
            raise InvalidUpdate(str(exc)) from None
        self._advance(after)
        for peer in self.peers:
            if peer is not origin:
                peer.send(frame)
        self.relay(frame)
        self.pending.append(update)
        self.unsaved += 1
        self.last_change = now

    def apply_fast(self, updates: list[bytes], size: int, adding: int, now: float) -> None:
        """Updates the engine (:mod:`collab_ide.engine`) checked and already forwarded to this node's
        clients: applied to the CRDT in one transaction, relayed to other nodes and queued for the log.
        ``size`` is their length, ``adding`` the length of those that add items (the size guard's counts)."""
        try:
            self._apply_batch(updates)
        except ValueError:  # the engine's check and the CRDT disagree (a bug): logged, the rest is kept
            log.exception("the CRDT refused an update the engine passed, in %s", self.workspace_id)
        self.stale = True
        self.sizes.size += size
        self.sizes.largest += adding
        if self.relays:
            for update in updates:
                self.relay(protocol.update_message(update))
        self.pending.extend(updates)
        self.unsaved += len(updates)
        self.last_change = now

    def _advance(self, after: dict[int, int]) -> None:
        if len(after) > 1 or self.awaited:
            # Several clients' structs (a sync step 2), or relayed ones waiting: read the truth.
            self.refresh_state()
            short = {c: clock for c, clock in after.items() if self.known.get(c, 0) < clock}
            if short:  # the check and the CRDT disagree (a bug): the sender is closed like any other gap
                log.error("an update to %s left structs pending after its check: %s", self.workspace_id, short)
                raise LeftPending("the document could not integrate all of it")
        else:
            self.known.update(after)

    def refresh_state(self) -> None:
        """Read the state vector from the document (after changes applied without a check)."""
        self.stale = False
        self.known = decode_state_vector(self.doc.get_state())
        if self.awaited and all(self.known.get(c, 0) >= clock for c, clock in self.awaited.items()):
            self.awaited = {}

    def apply_remote(self, update: bytes, frame: bytes, now: float) -> bool:
        """Apply an update another node relayed (that node logs it) and forward it to local peers.

        Other nodes check what their clients send, so a relayed update is applied even when it arrived
        ahead of what it depends on (one node's message can overtake another's, or come while this node
        was loading); True then: the caller asks the other nodes for what is missing (a HELLO), and the
        CRDT holds the update until it comes.
        """
        if update == protocol.EMPTY_UPDATE:
            return False
        if self.stale:
            self.refresh_state()
        decoded = True
        try:
            after: dict[int, int] | None = check(update, self.known)
        except MissingDependencies:
            after = None
        except ValueError:  # not a shape this server reads (yet the sending node's CRDT took it)
            after, decoded = None, False
        try:
            self._apply_update(update)
        except ValueError:
            return False  # the sending node applied it, so this cannot happen short of corruption in transit
        if not decoded:
            self.refresh_state()
        elif after is None:
            try:
                ends = _ends(update)
            except ValueError:
                ends = {}
            for client, clock in ends.items():
                self.awaited[client] = max(self.awaited.get(client, 0), clock)
            self.refresh_state()
        elif len(after) > 1 or self.awaited:
            self.refresh_state()
        else:
            self.known.update(after)
        self.sizes.applied_elsewhere(update)
        self._broadcast(frame, None)
        self.unsaved += 1
        self.last_change = now
        if self.changed is not None:
            self.changed()
        return decoded and after is None

    # --- awareness -----------------------------------------------------------------------------

    def client_awareness(self, peer: Peer, payload: bytes, frame: bytes) -> None:
        """A local client's awareness message (``payload`` inside ``frame``): keep and pass on what it
        may say about itself, ignore the rest.

        A message over ``max_bytes`` or with more than ``max_entries`` entries is ignored unread. Of the
        others, an entry counts only for a client id the connection owns, or takes now (while it owns
        fewer than ``ids_per_connection`` and nobody, here or on another node, has that id). The official
        client echoes everyone else's states back (even its user's other tabs'): those entries are
        ignored, as are removals of ids it does not own (the server removes states itself when their
        connection goes). A client that reconnected before the server noticed its old connection gets
        its id back when the old one goes: the removal the server then sends makes a y-protocols client
        announce itself again. What is kept goes to every peer, the sender too (y-websocket's server
        echoes: a client that hears nothing for 30 s takes its connection for dead), and other nodes.

        Raises :class:`~collab_ide.protocol.ProtocolError` for a malformed message.
        """
        limits = self.awareness_limits
        if len(payload) > limits.max_bytes:
            return
        count, _ = protocol.read_var_uint(payload, 0)
        if count > limits.max_entries:
            return
        entries = protocol.decode_awareness(payload)
        kept: list[AwarenessEntry] = []
        for entry in entries:
            cid = entry.client_id
            owner = self.awareness_owner.get(cid)
            if owner is not peer:
                if entry.removed or owner is not None or cid in self.awareness:
                    continue  # another connection's client, here or on another node
                if len(peer.awareness_ids) >= limits.ids_per_connection:
                    continue
                self.awareness_owner[cid] = peer
                peer.awareness_ids.add(cid)
            known = self.awareness.get(cid)
            if known is not None and known.clock > entry.clock:
                continue
            if entry.removed:
                del self.awareness_owner[cid]
                peer.awareness_ids.discard(cid)
                self.awareness.pop(cid, None)
            else:
                self.awareness[cid] = entry
            kept.append(entry)
        if not kept:
            return
        out = frame if len(kept) == len(entries) else protocol.encode_awareness(kept)
        self._broadcast(out, None)
        self.relay(out)

    def node_awareness(self, entries: list[AwarenessEntry], frame: bytes, now: float) -> None:
        """Awareness another node relayed (its own clients', checked there): kept unless it is about
        a client of this node, and passed on to the local peers."""
        kept: list[AwarenessEntry] = []
        for entry in entries:
            cid = entry.client_id
            if cid in self.awareness_owner:
                continue  # a connection here owns it: only it, or its leaving, changes it
            known = self.awareness.get(cid)
            if known is not None and known.clock > entry.clock:
                continue
            if entry.removed:
                self.awareness.pop(cid, None)
                self.awareness_seen.pop(cid, None)
            else:
                self.awareness[cid] = entry
                self.awareness_seen[cid] = now
            kept.append(entry)
        if kept:
            self._broadcast(frame if len(kept) == len(entries) else protocol.encode_awareness(kept), None)

    def forget_stale_awareness(self, before: float) -> None:
        """Remove other nodes' clients' states not renewed since ``before`` and tell the local peers.

        y-protocols clients renew theirs every 15 s and time out others' after 30 s, so this only
        removes the cursors of clients of a node that died (a live node removes them when they leave).
        """
        gone = []
        for cid, seen in list(self.awareness_seen.items()):
            if seen < before:
                del self.awareness_seen[cid]
                entry = self.awareness.pop(cid, None)
                if entry is not None:
                    gone.append(AwarenessEntry(cid, entry.clock + 1, b"null"))
        if gone:
            self._broadcast(protocol.encode_awareness(gone), None)

    def awareness_frame(self) -> bytes:
        return protocol.encode_awareness(list(self.awareness.values()))

    def close_all(self, close: Callable[[Peer], None]) -> None:
        for peer in list(self.peers):
            close(peer)
