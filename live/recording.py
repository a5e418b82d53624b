"""Recording a live session: the published encoded frames remuxed into a WebM file, never decoded or encoded.

A :class:`Recorder` subscribes to a session's video feed (the camera, else the screen) and its audio feed like
one more viewer (a :class:`~live.sfu.ForwardedTrack` each: video starts at a keyframe, which the feed asks the
publisher for), and writes each encoded frame as it comes into a Matroska/WebM file with PyAV
(``OutputContainer.add_mux_stream``: streams without a codec context, so no encoder or decoder exists; VP8 and
Opus are stored as published). Timestamps come from the frames' RTP timestamps (unwrapped past 2**32), each
track placed on the recording's clock by when its first frame arrived.

The container is opened at the first video keyframe (its header needs the picture's size, read from the VP8
keyframe header); audio that comes before is held (a few seconds at most). The file is written by one task,
each PyAV call in a worker thread, so the event loop never waits on the disk.

A recording ends when asked (``live:record`` off, the session's end), when the feeds it records end and no new
ones come within :data:`REPUBLISH_GRACE_S` (the publisher stopped or vanished; publishing again, e.g. to share
the screen, gives it the new feeds through :meth:`Recorder.attach` and the file goes on), or at
``STUDYHALL_LIVE_RECORDING_MAX_S`` / ``STUDYHALL_LIVE_RECORDING_MAX_BYTES``. What happens to the file then is
:mod:`live.recordings`' business (it becomes an upload of the recorder's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError

from live.sfu import Feed, ForwardedTrack, is_keyframe

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 1000)  # Matroska's own: milliseconds
EARLY_AUDIO_FRAMES = 500  # held until the first video keyframe opens the file (10 s of 20 ms frames)
CODEC_NAMES = {"video/vp8": "vp8", "audio/opus": "opus"}
REPUBLISH_GRACE_S = 5.0
"""How long a recording whose feeds ended waits for the publisher's new ones (publishing again, e.g. to share
the screen, replaces their peer and feeds) before it ends as ``publisher_gone``."""


def vp8_size(frame: bytes) -> tuple[int, int] | None:
    """The picture size of a VP8 keyframe (RFC 6386 9.1: start code 9d 01 2a, then 14-bit width and height)."""
    if len(frame) < 10 or frame[0] & 0x01 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    return int.from_bytes(frame[6:8], "little") & 0x3FFF, int.from_bytes(frame[8:10], "little") & 0x3FFF


@dataclass
class Recorded:
    """What a finished recording holds."""

    path: Path
    duration_s: float
    bytes: int
    video_codec: str | None
    audio_codec: str | None
    reason: str  # "stopped", "publisher_gone", "max_duration", "max_bytes"


class _Clock:
    """One track's RTP timestamps as milliseconds on the recording's clock."""

    def __init__(self, clock_rate: int, offset_ms: float, first_rtp: int) -> None:
        self.rate = clock_rate
        self.offset_ms = offset_ms
        self.last = first_rtp
        self.extended = 0

    def ms(self, rtp: int) -> int:
        delta = (rtp - self.last) % (1 << 32)
        if delta >= 1 << 31:  # an older timestamp (reordered), not a jump ahead of half the range
            delta -= 1 << 32
        self.last = rtp
        self.extended += delta
        return round(self.offset_ms + self.extended * 1000 / self.rate)


class Recorder:
    """Records ``video`` and ``audio`` (either may be None) into ``path``.

    Args:
        path: the file to write (WebM).
        video: the video feed to record, or None.
        audio: the audio feed to record, or None.
        max_s: longest recording; it stops by itself then.
        max_bytes: largest file; it stops by itself past it.
        on_end: awaited once the file is closed, with what it holds (whatever ended it).
        grace_s: how long to wait for new feeds (:meth:`attach`) once the recorded ones ended.
    """

    def __init__(
        self, path: Path, video: Feed | None, audio: Feed | None, max_s: float, max_bytes: int,
        on_end: Callable[[Recorded], Awaitable[None]], grace_s: float = REPUBLISH_GRACE_S,
    ) -> None:  # fmt: skip
        self.path = path
        self.max_s = max_s
        self.max_bytes = max_bytes
        self._on_end = on_end
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()
        self._tracks: dict[str, ForwardedTrack] = {}
        for kind, feed in (("video", video), ("audio", audio)):
            if feed is not None:
                self._tracks[kind] = feed.subscribe()  # video: waits for a keyframe, asked of the publisher
        self._queue: asyncio.Queue[tuple[str, bytes, int, int] | None] = asyncio.Queue()
        self._clocks: dict[str, _Clock] = {}
        self._last_pts: dict[str, int] = {}
        self._container: Any = None
        self._streams: dict[str, Any] = {}
        self._codecs: dict[str, str] = {}
        self._held: list[tuple[str, bytes, int, int]] = []
        self._written = 0
        self._end_ms = 0
        self.reason = "stopped"
        self._stopping = False
        self._finishing = False
        self.grace_s = grace_s
        self.result: Recorded | None = None
        self._readers = [asyncio.create_task(self._read(kind, t)) for kind, t in self._tracks.items()]
        self._writer = asyncio.create_task(self._write())
        self.done: asyncio.Future[Recorded] = self._loop.create_future()

    @property
    def recording_s(self) -> float:
        return self._loop.time() - self._started

    async def stop(self, reason: str = "stopped") -> Recorded:
        """End the recording (idempotent) and answer what the file holds once it is closed."""
        self._end(reason)  # the readers see the end of their tracks
        return await asyncio.shield(self.done)

    async def _read(self, kind: str, track: ForwardedTrack) -> None:
        codec = "video/vp8" if kind == "video" else "audio/opus"
        self._codecs[kind] = CODEC_NAMES[codec]
        with contextlib.suppress(MediaStreamError):
            while True:
                packet = await track.recv()
                rtp, rate = int(packet.pts or 0), int(1 / packet.time_base) if packet.time_base else 90000
                clock = self._clocks.get(kind)
                if clock is None:
                    clock = self._clocks[kind] = _Clock(rate, (self._loop.time() - self._started) * 1000, rtp)
                data = bytes(packet)
                await self._queue.put((kind, data, clock.ms(rtp), is_keyframe(kind, data)))
                if self.recording_s >= self.max_s:
                    self._end("max_duration")
        if self._stopping:
            self._maybe_finish()
        else:  # the feed ended under us: the publisher stopped, published again (a new feed), or vanished
            self._loop.call_later(self.grace_s, self._gone_check)

    def attach(self, video: Feed | None, audio: Feed | None) -> None:
        """Record these feeds from now on (the publisher published again: new feeds for the same picture and
        sound). Only the kinds recorded from the start; the file goes on, its timestamps too."""
        if self._stopping:
            return
        for kind, feed in (("video", video), ("audio", audio)):
            old = self._tracks.get(kind)
            if feed is None or old is None or (old.feed is feed and old.readyState == "live"):
                continue
            old.stop()
            self._tracks[kind] = track = feed.subscribe()
            self._clocks.pop(kind, None)  # another RTP timeline: placed again by its first frame's arrival
            self._readers.append(asyncio.create_task(self._read(kind, track)))

    def _reading(self) -> bool:
        current = asyncio.current_task() if self._loop.is_running() else None
        return any(not t.done() and t is not current for t in self._readers)

    def _gone_check(self) -> None:
        if not self._stopping and not self._reading():
            self._end("publisher_gone")

    def _maybe_finish(self) -> None:
        if not self._finishing and not self._reading():
            self._finishing = True
            self._queue.put_nowait(None)

    def _end(self, reason: str) -> None:
        if not self._stopping:
            self._stopping, self.reason = True, reason
        for track in self._tracks.values():
            track.stop()
        self._maybe_finish()

    async def _write(self) -> None:
        try:
            while (item := await self._queue.get()) is not None:
                if self._written >= self.max_bytes:
                    self._end("max_bytes")
                    continue
                await self._put(*item)
        except Exception:
            log.exception("the recording %s failed; what was written is kept", self.path)
        finally:
            self._stopping = True
            result = await asyncio.shield(self._close())
            self.result = result
            try:
                await self._on_end(result)
            except Exception:
                log.exception("could not store the recording %s", self.path)
            if not self.done.done():
                self.done.set_result(result)

    async def _put(self, kind: str, data: bytes, pts: int, key: int) -> None:
        if self._container is None:
            if "video" in self._tracks and kind == "video":
                size = vp8_size(data)
                if size is None:
                    return  # not a keyframe we can read the size of: wait for the next one
                await asyncio.to_thread(self._open, size)
            elif "video" in self._tracks:
                if len(self._held) < EARLY_AUDIO_FRAMES:
                    self._held.append((kind, data, pts, key))
                return
            else:
                await asyncio.to_thread(self._open, None)
            held, self._held = self._held, []
            for item in held:
                await self._put(*item)
        last = self._last_pts.get(kind)
        if last is not None and pts <= last:
            if kind == "audio":
                return  # a frame at or before the previous one's time: a duplicate or a late one
            pts = last + 1
        self._last_pts[kind] = pts
        self._end_ms = max(self._end_ms, pts + (20 if kind == "audio" else 0))
        self._written += await asyncio.to_thread(self._mux, kind, data, pts, bool(key))

    def _open(self, size: tuple[int, int] | None) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        container = av.open(str(self.path), mode="w", format="webm")
        if "video" in self._tracks:
            width, height = size or (0, 0)
            self._streams["video"] = container.add_mux_stream("vp8", width=width, height=height)
            self._streams["video"].time_base = TIME_BASE
        if "audio" in self._tracks:
            self._streams["audio"] = container.add_mux_stream("opus", rate=48000)
            self._streams["audio"].time_base = TIME_BASE
        self._container = container

    def _mux(self, kind: str, data: bytes, pts: int, key: bool) -> int:
        packet = av.Packet(data)
        packet.stream = self._streams[kind]
        packet.time_base = TIME_BASE
        packet.pts = packet.dts = pts
        packet.is_keyframe = key
        self._container.mux(packet)
        return len(data)

    async def _close(self) -> Recorded:
        for track in self._tracks.values():
            track.stop()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        if self._container is not None:
            await asyncio.to_thread(self._container.close)
        size = self.path.stat().st_size if self.path.exists() else 0
        return Recorded(
            self.path, round(self._end_ms / 1000, 3), size,
            self._codecs.get("video") if "video" in self._streams else None,
            self._codecs.get("audio") if "audio" in self._streams else None,
            self.reason,
        )  # fmt: skip
