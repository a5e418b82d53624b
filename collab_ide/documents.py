"""The documents this node has loaded: loading, batched persistence, compaction, unloading, relay.

One background task (owned, cancelled on close) does all the writing, so a keystroke never waits for
Postgres:

- every ``flush_interval_s`` (or as soon as ``flush_max_updates`` are waiting) the updates of all
  documents go to the log in one ``INSERT``;
- a document is compacted into its snapshot after ``compact_after_updates`` logged updates, after
  ``compact_idle_s`` without changes, and when it is unloaded; compaction also folds in what the node
  only received from other nodes, so an update survives in Postgres as long as one node held it;
- a document without clients is unloaded ``unload_delay_s`` later (a client coming back in time keeps it).

A crash can lose at most the updates of the last batch window from the log; y-websocket clients re-send
what the server lacks when they reconnect (sync step 1 / step 2), and the server logs it then.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import time
import uuid
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

from collab_ide import protocol
from collab_ide.document import AwarenessLimits, Peer, SharedDocument
from collab_ide.relay import OP_ACCESS, OP_FRAMES, OP_HELLO, OP_RESYNC, Relay
from collab_ide.sizes import SizeLimits
from collab_ide.store import DocumentLog, files_of

log = logging.getLogger(__name__)
AWARENESS_TIMEOUT_S = 30.0
RESYNC_INTERVAL_S = 1.0
"""At most this often per document, a node whose relayed updates wait for missing ones asks again."""
SCAN_INTERVAL_S = 1.0
"""At most this often the writer looks at every loaded document (stale awareness, gaps, idle compaction)."""


def _malloc_trim() -> Callable[[], None]:
    """glibc keeps freed memory in its arenas; ``malloc_trim`` hands it back to the system."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]

    def release() -> None:
        trim(0)

    return release


release_memory = _malloc_trim()
"""Return freed heap to the OS after documents were unloaded, so RSS follows what is open."""


@dataclass(frozen=True)
class Tuning:
    """Persistence and lifetime knobs (``STUDYHALL_COLLAB_*`` settings)."""

    flush_interval_s: float = 0.05
    flush_max_updates: int = 500
    compact_after_updates: int = 5000
    compact_idle_s: float = 10.0
    unload_delay_s: float = 30.0


class DocumentManager:
    """Loads each workspace's document once per node and keeps it durable.

    Args:
        store: the Postgres log.
        relay: the way to the other nodes (:class:`~collab_ide.relay.LocalRelay` on one node).
        tuning: batching, compaction and unloading intervals.
        clock: monotonic seconds (tests may pass their own).
        awareness: what one client may put into a document's awareness.
        sizes: how large a document and each of its files may grow.
    """

    def __init__(
        self,
        store: DocumentLog,
        relay: Relay,
        tuning: Tuning,
        clock: Callable[[], float] = time.monotonic,
        awareness: AwarenessLimits = AwarenessLimits(),
        sizes: SizeLimits = SizeLimits(),
    ) -> None:
        self.store = store
        self.relay = relay
        self.tuning = tuning
        self.clock = clock
        self.awareness = awareness
        self.sizes = sizes
        self.docs: dict[uuid.UUID, SharedDocument] = {}
        self.log_rows_at_load: dict[uuid.UUID, int] = {}
        """Logged updates a document had when loaded here (compaction folds them in)."""
        self._unload_at: dict[uuid.UUID, float] = {}
        self._gates: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = weakref.WeakValueDictionary()
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()  # one append at a time: see flush()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.loads = 0
        self.unloads = 0
        self.on_unload: list[Callable[[uuid.UUID], None]] = []
        """Called with the workspace id after a document was written and unloaded (metrics, tests)."""

    async def start(self) -> None:
        await self.relay.start(self._deliver)
        self._task = asyncio.create_task(self._maintain())

    def _gate(self, workspace_id: uuid.UUID) -> asyncio.Lock:
        gate = self._gates.get(workspace_id)
        if gate is None:
            gate = asyncio.Lock()
            self._gates[workspace_id] = gate
        return gate

    # --- clients -------------------------------------------------------------------------------

    async def open(self, workspace_id: uuid.UUID) -> SharedDocument | None:
        """The loaded document (loading it if needed); None if the workspace has none (deleted)."""
        doc = self.docs.get(workspace_id)
        if doc is not None:
            return doc
        async with self._gate(workspace_id):
            doc = self.docs.get(workspace_id)
            if doc is not None:
                return doc
            # Subscribe before reading Postgres, then say HELLO: whatever other nodes hold that the
            # log does not (their unwritten batch, edits relayed while we loaded) comes back as FRAMES.
            await self.relay.join(workspace_id)
            loaded = await self.store.load(workspace_id)
            if loaded is None:
                await self.relay.leave(workspace_id)
                return None
            doc = SharedDocument(
                workspace_id,
                loaded.doc,
                loaded.version,
                partial(self.relay.publish, workspace_id),
                self.awareness,
                self.sizes,
                loaded.stored_bytes,
            )
            doc.relays = getattr(self.relay, "enabled", True)
            self.docs[workspace_id] = doc
            self.log_rows_at_load[workspace_id] = loaded.log_rows
            self.loads += 1
            self.relay.hello(workspace_id, doc.doc.get_state())
            return doc

    def attach(self, doc: SharedDocument, peer: Peer) -> None:
        self._unload_at.pop(doc.workspace_id, None)
        doc.add(peer)

    def detach(self, doc: SharedDocument, peer: Peer) -> None:
        doc.remove(peer)
        if not doc.peers and self.docs.get(doc.workspace_id) is doc:
            self._unload_at[doc.workspace_id] = self.clock() + self.tuning.unload_delay_s
            self._wake.set()

    def updated(self, doc: SharedDocument) -> None:
        """Call after a client's update was applied: wakes the writer once a batch is full."""
        if len(doc.pending) >= self.tuning.flush_max_updates:
            self._wake.set()

    async def current_files(self, workspace_id: uuid.UUID) -> dict[str, str] | None:
        """The workspace's files as they are now: from memory if loaded here, else from Postgres.

        This is the server's own copy, never one a client sends: runs and downloads read it.
        """
        doc = self.docs.get(workspace_id)
        if doc is not None:
            return files_of(doc.doc)
        loaded = await self.store.load(workspace_id)
        return files_of(loaded.doc) if loaded is not None else None

    # --- other nodes ---------------------------------------------------------------------------

    def _deliver(self, workspace_id: uuid.UUID, op: int, body: bytes) -> None:
        doc = self.docs.get(workspace_id)
        if doc is None:
            return
        if op == OP_FRAMES:
            now = self.clock()
            gap = False
            for frame in protocol.split_var_bytes(body):
                kind, payload = protocol.decode(frame)
                if kind is protocol.Kind.UPDATE:
                    gap = doc.apply_remote(payload, frame, now) or gap
                elif kind is protocol.Kind.AWARENESS:
                    doc.node_awareness(protocol.decode_awareness(payload), frame, now)
            if gap:
                self._resync(doc, now)
        elif op == OP_HELLO:
            try:
                missing = doc.doc.get_update(body)
            except ValueError:
                return
            if missing != protocol.EMPTY_UPDATE:
                self.relay.publish(workspace_id, protocol.update_message(missing))
            if doc.awareness:
                self.relay.publish(workspace_id, doc.awareness_frame())
        elif op == OP_ACCESS and len(body) == 16:
            self._spawn(self._recheck(doc, uuid.UUID(bytes=body)))
        elif op == OP_RESYNC:
            self.relay.hello(workspace_id, doc.doc.get_state())

    def _resync(self, doc: SharedDocument, now: float) -> None:
        """Relayed updates arrived ahead of what they depend on: ask the other nodes for what this one
        lacks (their answer to a HELLO), at most once per :data:`RESYNC_INTERVAL_S`."""
        if now - doc.resynced_at >= RESYNC_INTERVAL_S:
            doc.resynced_at = now
            self.relay.hello(doc.workspace_id, doc.doc.get_state())

    async def access_changed(self, workspace_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """A user's access changed (committed): their connections on every node re-check it."""
        self.relay.access(workspace_id, user_id)
        doc = self.docs.get(workspace_id)
        if doc is not None:
            await self._recheck(doc, user_id)

    async def recheck_user(self, user_id: uuid.UUID) -> None:
        """The user's rights changed (role, room membership, ban, account): each of their connections to
        any document on this node re-reads its access (every node is told; see realtime/rights.py)."""
        for doc in list(self.docs.values()):
            await self._recheck(doc, user_id)

    async def recheck_workspaces(self, workspace_ids: list[uuid.UUID]) -> None:
        """Everyone's access to these workspaces may have changed (their room was archived): each of
        their connections on this node reads it again."""
        for workspace_id in workspace_ids:
            doc = self.docs.get(workspace_id)
            if doc is not None:
                for user_id in {peer.user_id for peer in doc.peers}:
                    await self._recheck(doc, user_id)

    async def _recheck(self, doc: SharedDocument, user_id: uuid.UUID) -> None:
        for peer in [p for p in doc.peers if p.user_id == user_id]:
            try:
                await peer.recheck()
            except Exception:
                log.exception("could not re-check a connection's access to %s", doc.workspace_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- the writer ----------------------------------------------------------------------------

    async def _maintain(self) -> None:
        # Each flush looks at the documents it wrote (are they due for compaction?); every document is
        # looked at (stale awareness, gaps to ask for, idle ones to compact) at most once a second: those
        # checks count seconds, and walking every loaded document at each flush cost ~1.7 µs per edit at
        # 200 documents.
        scan_every = min(SCAN_INTERVAL_S, self.tuning.compact_idle_s)
        scanned = float("-inf")
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tuning.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                written = await self.flush()
                now = self.clock()
                if now - scanned >= scan_every:
                    scanned = now
                    await self._look_after(list(self.docs.values()), now, everything=True)
                else:
                    await self._look_after(written, now, everything=False)
                del written  # (a document unloaded below must not be held here while the heap is trimmed)
                unloaded = self.unloads
                for workspace_id, at in list(self._unload_at.items()):
                    if now >= at:
                        await self._unload(workspace_id)
                if self.unloads != unloaded and not self._unload_at:
                    release_memory()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("document writer failed; retrying")
                await asyncio.sleep(min(1.0, self.tuning.flush_interval_s * 10))

    async def _look_after(self, docs: list[SharedDocument], now: float, everything: bool) -> None:
        """Compact those of ``docs`` that are due; with ``everything``, also drop stale awareness and ask
        other nodes for what relayed updates wait for."""
        for doc in docs:
            if self.docs.get(doc.workspace_id) is not doc:
                continue
            if everything:
                doc.forget_stale_awareness(now - AWARENESS_TIMEOUT_S)
                if doc.awaited:
                    self._resync(doc, now)
            logged = doc.logged + self.log_rows_at_load.get(doc.workspace_id, 0)
            idle = doc.unsaved and now - doc.last_change >= self.tuning.compact_idle_s
            if logged >= self.tuning.compact_after_updates or idle:
                await self.compact(doc)

    async def flush(self) -> list[SharedDocument]:
        """Append every document's waiting updates to the log: one row per document, one statement; the
        documents written.

        When it returns, every update that waited when it was called is in the log: a flush that finds
        the writer's own flush under way waits for it (that one took the updates) before taking the rest.
        """
        async with self._flushing:
            return await self._flush()

    async def _flush(self) -> list[SharedDocument]:
        taken: list[tuple[SharedDocument, list[bytes]]] = []
        for doc in self.docs.values():
            if doc.pending:
                taken.append((doc, doc.pending))
                doc.pending = []
        if not taken:
            return []
        try:
            rows = await self.store.append([(doc.workspace_id, batch) for doc, batch in taken])
        except BaseException:
            for doc, batch in taken:  # keep them for the next try, in order
                doc.pending[:0] = batch
            raise
        by_id = {doc.workspace_id: doc for doc, _ in taken}
        for workspace_id, row_id in rows:
            by_id[workspace_id].own_rows.append(row_id)
        for doc, batch in taken:
            doc.logged += len(batch)
        return [doc for doc, _ in taken]

    async def compact(self, doc: SharedDocument) -> None:
        unsaved = doc.unsaved
        own, doc.own_rows = doc.own_rows, []
        try:
            result = await self.store.compact(doc.workspace_id, doc.doc, doc.version, own, doc.sizes.written)
        except BaseException:
            doc.own_rows[:0] = own
            raise
        if result is None:
            return
        doc.version = result.version
        doc.unsaved -= unsaved
        doc.logged = 0
        self.log_rows_at_load[doc.workspace_id] = 0
        if result.news is not None:
            doc.refresh_state()
            doc.sizes.applied_elsewhere(result.news, counted=True)
            frame = protocol.update_message(result.news)
            for peer in doc.peers:
                peer.send(frame)
            if doc.changed is not None:
                doc.changed()

    async def _unload(self, workspace_id: uuid.UUID) -> None:
        async with self._gate(workspace_id):
            doc = self.docs.get(workspace_id)
            self._unload_at.pop(workspace_id, None)
            if doc is None or doc.peers:
                return
            await self.flush()
            if doc.unsaved or doc.own_rows or self.log_rows_at_load.get(workspace_id):
                await self.compact(doc)
            if doc.peers:  # a client came back while we were writing
                return
            del self.docs[workspace_id]
            self.log_rows_at_load.pop(workspace_id, None)
            self.unloads += 1
            await self.relay.leave(workspace_id)
            for hook in self.on_unload:
                hook(workspace_id)

    async def close(self, close_peer: Callable[[Peer], None]) -> None:
        """Stop: disconnect the clients, write everything, compact what changed, leave the relay."""
        for task in [self._task, *self._background]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for doc in list(self.docs.values()):
            doc.close_all(close_peer)
        try:
            await self.flush()
            for doc in list(self.docs.values()):
                if doc.unsaved or doc.own_rows or self.log_rows_at_load.get(doc.workspace_id):
                    await self.compact(doc)
        except Exception:
            log.exception("could not write every document on shutdown; clients re-send on reconnect")
        await self.relay.close()
