"""The selective forwarding unit: each published track's encoded frames go to every subscriber as they are.

aiortc's :class:`~aiortc.RTCRtpReceiver` reassembles RTP packets into encoded frames in its jitter buffer
and hands each one to a decoder thread through a queue; its :class:`~aiortc.RTCRtpSender` accepts a track
whose ``recv()`` yields ``av.Packet`` (already encoded data) and only packetizes it. The SFU joins the two:

- :class:`ReceiverTap` stands in for the receiver's decoder queue, so every reassembled frame reaches a
  :class:`Feed` on the event loop and nothing is ever decoded (the decoder thread waits idle until the
  receiver stops, and then ends the remote track as usual);
- the :class:`Feed` wraps the frame once in an ``av.Packet`` and offers that same packet to each
  :class:`ForwardedTrack`, one per subscriber, which a subscriber's sender packetizes with its own SSRC,
  sequence numbers and timestamps (no re-encoding per viewer);
- a new subscriber's video starts at a keyframe: its track drops frames until one comes, and the feed
  asks the publisher for one (an RTCP PLI). Subscribers' own keyframe requests (PLI/FIR) are forwarded
  upstream too. Requests to one publisher are rate-limited (``STUDYHALL_LIVE_KEYFRAME_INTERVAL_S``): the
  ones inside the interval are merged into one sent when it ends;
- a slow subscriber only hurts itself: its queue is bounded, and when full it is emptied and the track
  waits for the next keyframe (which it asks for).

Only VP8 video and Opus audio are negotiated (keyframes are recognised in VP8's frame header).

The tap reads one private attribute of aiortc's receiver (``_RTCRtpReceiver__decoder_queue``) and
replaces one protected method on each sender (``_send_keyframe``); :func:`check_aiortc` refuses to start
on an aiortc whose internals differ, and ``pyproject.toml`` pins the versions this was read against.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

log = logging.getLogger(__name__)

_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
QUEUE_FRAMES = {"video": 60, "audio": 100}
"""Frames a subscriber may fall behind before its queue is emptied (2 s of 30 fps video, 2 s of 20 ms audio)."""
CODECS = {"video": ("video/vp8", "video/rtx"), "audio": ("audio/opus",)}


def check_aiortc() -> None:
    """Raise if aiortc's receiver and sender are not built the way the tap expects."""
    # The receiver hands frames to its decoder queue in _handle_rtp_packet and gives the queue to its
    # decoder thread in receive(); the sender answers PLI/FIR by calling _send_keyframe.
    handle = getattr(RTCRtpReceiver, "_handle_rtp_packet", None)
    receive = getattr(RTCRtpReceiver, "receive", None)
    rtcp = getattr(RTCRtpSender, "_handle_rtcp_packet", None)
    if not (
        handle is not None
        and receive is not None
        and _DECODER_QUEUE in handle.__code__.co_names
        and _DECODER_QUEUE in receive.__code__.co_names
    ):
        raise RuntimeError("this aiortc's receiver has no decoder queue to tap; install aiortc>=1.15,<1.17")
    if rtcp is None or "_send_keyframe" not in rtcp.__code__.co_names:
        raise RuntimeError("this aiortc's sender does not call _send_keyframe; install aiortc>=1.15,<1.17")


def codec_preferences(kind: str) -> list[RTCRtpCodecCapability]:
    """The codecs the SFU negotiates for ``kind``: VP8 (with RTX) for video, Opus for audio."""
    capabilities = RTCRtpSender.getCapabilities(kind)
    assert capabilities is not None
    return [c for c in capabilities.codecs if c.mimeType.lower() in CODECS[kind]]


def is_keyframe(kind: str, frame: bytes) -> bool:
    """Whether an encoded frame can start a stream: every audio frame; a VP8 frame whose P bit is 0."""
    if kind == "audio":
        return True
    return bool(frame) and not frame[0] & 0x01


class ReceiverTap:
    """Stands in for an :class:`~aiortc.RTCRtpReceiver`'s decoder queue (a ``queue.Queue``).

    The receiver calls :meth:`put` on the event loop with ``(codec, encoded_frame)`` for each frame it
    reassembled, and ``None`` when it stops. Its decoder thread calls :meth:`get`, which blocks until
    then and answers ``None`` (the thread then ends the remote track and exits, never having decoded).
    """

    def __init__(self, sink: Callable[[RTCRtpCodecParameters, Any], None]) -> None:
        self._sink = sink
        self._stopped = threading.Event()

    def put(self, item: tuple[RTCRtpCodecParameters, Any] | None) -> None:
        if item is None:
            self._stopped.set()
            return
        codec, frame = item
        try:
            self._sink(codec, frame)
        except Exception:  # a forwarding bug must not break the publisher's receiver
            log.exception("could not forward a frame")

    def get(self, block: bool = True, timeout: float | None = None) -> tuple[RTCRtpCodecParameters, Any] | None:
        self._stopped.wait()
        return None


class Feed:
    """One published track as the SFU forwards it: its receiver, its subscribers, its keyframe requests.

    Args:
        kind: ``"audio"`` or ``"video"``.
        receiver: the publisher's receiver of this track; :meth:`attach` taps it (before it starts).
        keyframe_interval_s: least time between two keyframe requests sent to the publisher.
    """

    def __init__(self, kind: str, receiver: RTCRtpReceiver, keyframe_interval_s: float) -> None:
        self.kind = kind
        self.receiver = receiver
        self.keyframe_interval_s = keyframe_interval_s
        self.subscribers: set[ForwardedTrack] = set()
        self.muted = False
        self.frames = 0
        self.keyframes = 0
        self.keyframe_requests = 0  # asked for (by new or lagging subscribers, or their PLIs)
        self.plis_sent = 0  # sent upstream, after rate limiting
        self._last_pli = -1e9
        self._pending: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()

    def attach(self) -> None:
        if not hasattr(self.receiver, _DECODER_QUEUE):
            raise RuntimeError("this aiortc version has no decoder queue to tap; install aiortc>=1.15,<1.17")
        setattr(self.receiver, _DECODER_QUEUE, ReceiverTap(self.on_frame))

    def on_frame(self, codec: RTCRtpCodecParameters, frame: Any) -> None:
        data: bytes = frame.data
        self.frames += 1
        key = is_keyframe(self.kind, data)
        self.keyframes += key and self.kind == "video"
        if self.muted or not self.subscribers:
            return
        packet = av.Packet(data)
        packet.pts = frame.timestamp
        packet.time_base = Fraction(1, codec.clockRate)
        for track in list(self.subscribers):
            track.offer(packet, key)

    def subscribe(self) -> ForwardedTrack:
        track = ForwardedTrack(self)
        self.subscribers.add(track)
        if self.kind == "video":
            self.request_keyframe()
        return track

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe: now, or when the rate limit's interval ends (merged)."""
        if self.kind != "video":
            return
        self.keyframe_requests += 1
        if self._pending is not None:
            return
        wait = self._last_pli + self.keyframe_interval_s - self._loop.time()
        if wait <= 0:
            self._send_pli()
        else:
            self._pending = self._loop.call_later(wait, self._send_pli)

    def _send_pli(self) -> None:
        self._pending = None
        self._last_pli = self._loop.time()
        self.plis_sent += 1
        task = self._loop.create_task(self._pli())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pli(self) -> None:
        try:
            for source in self.receiver.getSynchronizationSources():
                await self.receiver._send_rtcp_pli(source.source)
        except ConnectionError:
            pass  # the publisher is going away

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        for task in self._tasks:
            task.cancel()
        for track in list(self.subscribers):
            track.stop()


class ForwardedTrack(MediaStreamTrack):
    """One subscriber's copy of a :class:`Feed`: the feed's encoded packets, as a track a sender sends.

    Video starts at a keyframe. The queue holds at most :data:`QUEUE_FRAMES`; a subscriber that falls
    further behind is dropped to the next keyframe rather than slowing anyone else.
    """

    def __init__(self, feed: Feed) -> None:
        super().__init__()
        self.kind = feed.kind
        self.feed = feed
        self.forwarded = 0
        self.dropped = 0
        self._queue: asyncio.Queue[av.Packet[Any] | None] = asyncio.Queue(QUEUE_FRAMES[feed.kind])
        self._need_keyframe = feed.kind == "video"

    def offer(self, packet: av.Packet[Any], keyframe: bool) -> None:
        if self.readyState != "live":
            return
        if self._need_keyframe:
            if not keyframe:
                self.dropped += 1
                return
            self._need_keyframe = False
        if self._queue.full():
            while not self._queue.empty():
                self._queue.get_nowait()
                self.dropped += 1
            if self.kind == "video":
                self._need_keyframe = not keyframe
                if not keyframe:
                    self.dropped += 1
                    self.feed.request_keyframe()
                    return
        self._queue.put_nowait(packet)
        self.forwarded += 1

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            self.feed.subscribers.discard(self)
            while self._queue.full():
                self._queue.get_nowait()
            self._queue.put_nowait(None)
        super().stop()


def forward_keyframe_requests(sender: RTCRtpSender, feed: Feed) -> None:
    """Make a subscriber's keyframe requests (RTCP PLI/FIR reaching its sender) ask the publisher."""
    sender._send_keyframe = feed.request_keyframe  # type: ignore[method-assign]
