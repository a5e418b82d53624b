"""A y-websocket client on pycrdt, as a Python editor would write it: for the tests and the benchmark.

It speaks the protocol the way y-websocket's browser provider does: on connect it sends sync step 1
(its state vector) and answers the server's step 1 with step 2 (everything the server lacks), so a
client that reconnects — to the same node or another — hands back every edit it holds. Local edits
(``edit``) go out as update messages; remote ones are applied without being echoed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiohttp
from pycrdt import Doc, Map, Text

from collab_ide import protocol
from collab_ide.protocol import Kind


class YClient:
    def __init__(self, doc: Doc[Any] | None = None) -> None:
        self.doc: Doc[Any] = doc if doc is not None else Doc()
        self.files = self.doc.get("files", type=Map)
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.synced = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.denied: list[str] = []
        self.awareness: dict[int, bytes] = {}
        self.received = 0
        self._changed = asyncio.Event()
        self._remote = False
        self._outbox: list[bytes] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.doc.observe(self._on_local)

    # --- connection ----------------------------------------------------------------------------

    async def connect(self, base_url: str, workspace_id: str, token: str | None, **params: str) -> YClient:
        """Open ``base_url/yjs/<id>?token=...`` (``ws://`` from ``http://``) and start syncing."""
        await self.disconnect()
        query = {**({"token": token} if token is not None else {}), **params}
        url = base_url.replace("http://", "ws://", 1) + f"/yjs/{workspace_id}"
        if self.session is None:
            self.session = aiohttp.ClientSession()
        self.synced.clear()
        self.closed.clear()
        self.close_code = None
        self.ws = await self.session.ws_connect(url, params=query, max_msg_size=64 * 1024 * 1024, autoping=True)
        self._outbox.clear()
        self._send(protocol.sync_step1(self.doc.get_state()))
        self._tasks = [asyncio.create_task(self._read(self.ws)), asyncio.create_task(self._write(self.ws))]
        return self

    async def disconnect(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.ws.close()
        self.ws = None

    async def close(self) -> None:
        await self.disconnect()
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def __aenter__(self) -> YClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- traffic -------------------------------------------------------------------------------

    def _send(self, frame: bytes) -> None:
        self._outbox.append(frame)
        self._wake.set()

    def send_raw(self, frame: bytes) -> None:
        """Send any bytes as one binary frame (the fuzz tests send malformed ones)."""
        self._send(frame)

    async def _write(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            frames, self._outbox = self._outbox, []
            for frame in frames:
                if ws.closed:
                    return
                await ws.send_bytes(frame)

    def _on_local(self, event: Any) -> None:
        if not self._remote and self.ws is not None:
            self._send(protocol.update_message(event.update))

    def _apply_remote(self, update: bytes) -> None:
        self._remote = True
        try:
            self.doc.apply_update(update)
        finally:
            self._remote = False

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            while True:
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.CLOSE:
                    self.close_reason = str(msg.extra or "")
                    await ws.close()
                    break
                if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                    break
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    continue
                self.received += 1
                data: bytes = msg.data
                if data[:1] == bytes([protocol.MESSAGE_AUTH]):
                    reason, _ = protocol.read_var_bytes(data, 2)
                    self.denied.append(reason.decode())
                else:
                    kind, payload = protocol.decode(data)
                    if kind is Kind.SYNC_STEP1:
                        self._send(protocol.sync_step2(self.doc.get_update(payload)))
                    elif kind is Kind.SYNC_STEP2:
                        self._apply_remote(payload)
                        self.synced.set()
                    elif kind is Kind.UPDATE:
                        self._apply_remote(payload)
                    elif kind is Kind.AWARENESS:
                        for entry in protocol.decode_awareness(payload):
                            if entry.removed:
                                self.awareness.pop(entry.client_id, None)
                            else:
                                self.awareness[entry.client_id] = entry.state
                self._changed.set()
        finally:
            self.close_code = ws.close_code
            self.closed.set()
            self._changed.set()

    # --- editing -------------------------------------------------------------------------------

    def text(self, path: str) -> str:
        value = self.files.get(path)
        return str(value) if value is not None else ""

    def edit(self, path: str, pos: int, delete: int = 0, insert: str = "") -> None:
        """One keystroke (or replacement) in one transaction: one update message."""
        text = self.files[path]
        assert isinstance(text, Text)
        with self.doc.transaction():
            if delete:
                del text[pos : pos + delete]
            if insert:
                text.insert(pos, insert)

    def type_token(self, path: str, token: str, choice: int) -> None:
        """Insert ``token`` between two tokens (after a '.', or at 0): concurrent tokens never split."""
        current = self.text(path)
        boundaries = [0] + [i + 1 for i, c in enumerate(current) if c == "."]
        self.edit(path, boundaries[choice % len(boundaries)], insert=token)

    def set_awareness(self, client_id: int, clock: int, state: str) -> None:
        entry = protocol.AwarenessEntry(client_id, clock, state.encode())
        self._send(protocol.encode_awareness([entry]))

    async def wait_until(self, condition: Callable[[], bool], within: float = 20) -> None:
        """Wait until ``condition()`` holds, re-checking after every message (no sleeps)."""
        async with asyncio.timeout(within):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def wait_synced(self, within: float = 20) -> YClient:
        async with asyncio.timeout(within):
            await self.synced.wait()
        return self

    async def wait_closed(self, within: float = 20) -> tuple[int | None, str]:
        async with asyncio.timeout(within):
            await self.closed.wait()
        return self.close_code, self.close_reason
