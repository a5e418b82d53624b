"""The forwarding unit's own rules, without peers: keyframes start a viewer's video, a viewer that falls
behind is dropped to the next keyframe, keyframe requests to a publisher are rate-limited and merged, and
the tap ends the receiver's decoder thread without decoding."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from live.sfu import QUEUE_FRAMES, Feed, ReceiverTap, forward_keyframe_requests, is_keyframe

KEY = b"\x10\x02\x00\x9d\x01\x2a"  # a VP8 frame tag with the P bit clear: a keyframe
DELTA = b"\x31\x02\x00"  # P bit set: an interframe


@dataclass
class FakeReceiver:
    """Stands in for RTCRtpReceiver: one synchronisation source, PLIs recorded."""

    plis: list[int] = field(default_factory=list)
    sent: asyncio.Event = field(default_factory=asyncio.Event)

    def getSynchronizationSources(self) -> list[Any]:
        return [type("Source", (), {"source": 1234})()]

    async def _send_rtcp_pli(self, ssrc: int) -> None:
        self.plis.append(ssrc)
        self.sent.set()


@dataclass
class Frame:
    data: bytes
    timestamp: int


class Codec:
    clockRate = 90000


def feed_of(receiver: FakeReceiver, interval_s: float = 0.5) -> Feed:
    return Feed("video", receiver, interval_s)  # type: ignore[arg-type]


def test_vp8_keyframes_are_told_from_interframes() -> None:
    assert is_keyframe("video", KEY) and not is_keyframe("video", DELTA) and not is_keyframe("video", b"")
    assert is_keyframe("audio", DELTA)  # every audio frame can start a stream


async def test_a_new_viewer_starts_at_a_keyframe_and_asks_for_one() -> None:
    receiver = FakeReceiver()
    feed = feed_of(receiver)
    track = feed.subscribe()
    await asyncio.wait_for(receiver.sent.wait(), 5)
    assert receiver.plis == [1234]
    for i, data in enumerate([DELTA, DELTA, KEY, DELTA]):
        feed.on_frame(Codec(), Frame(data, i * 3000))  # type: ignore[arg-type]
    first, second = await track.recv(), await track.recv()
    assert (bytes(first), first.pts) == (KEY, 6000) and bytes(second) == DELTA
    assert track.dropped == 2
    feed.close()


async def test_keyframe_requests_are_rate_limited_and_merged() -> None:
    receiver = FakeReceiver()
    feed = feed_of(receiver, interval_s=0.2)
    for _ in range(5):
        feed.request_keyframe()
    await asyncio.wait_for(receiver.sent.wait(), 5)
    receiver.sent.clear()
    assert receiver.plis == [1234] and feed.keyframe_requests == 5
    # The four asked within the interval go upstream as one, when it ends.
    await asyncio.wait_for(receiver.sent.wait(), 5)
    assert receiver.plis == [1234, 1234] and feed.plis_sent == 2
    feed.close()


async def test_a_viewer_that_falls_behind_waits_for_the_next_keyframe() -> None:
    receiver = FakeReceiver()
    feed = feed_of(receiver, interval_s=0.0)
    slow, keeping_up = feed.subscribe(), feed.subscribe()
    feed.on_frame(Codec(), Frame(KEY, 0))  # type: ignore[arg-type]
    for i in range(1, QUEUE_FRAMES["video"] + 5):
        feed.on_frame(Codec(), Frame(DELTA, i * 3000))  # type: ignore[arg-type]
        if keeping_up._queue.qsize():
            await keeping_up.recv()
    assert keeping_up.dropped == 0
    assert slow.dropped > QUEUE_FRAMES["video"]  # emptied, then waiting for a keyframe
    asked = feed.keyframe_requests
    feed.on_frame(Codec(), Frame(DELTA, 99 * 3000))  # type: ignore[arg-type]
    assert slow._queue.empty() and feed.keyframe_requests == asked  # asked once when it fell behind
    feed.on_frame(Codec(), Frame(KEY, 100 * 3000))  # type: ignore[arg-type]
    assert bytes(await slow.recv()) == KEY
    feed.close()


async def test_a_muted_feed_forwards_nothing_and_a_closed_one_ends_its_viewers() -> None:
    feed = feed_of(FakeReceiver())
    track = feed.subscribe()
    feed.muted = True
    feed.on_frame(Codec(), Frame(KEY, 0))  # type: ignore[arg-type]
    assert track._queue.empty()
    feed.close()
    assert track.readyState == "ended" and feed.subscribers == set()


def test_the_tap_ends_the_decoder_thread_without_decoding() -> None:
    got: list[Any] = []
    tap = ReceiverTap(lambda codec, frame: got.append(frame))
    answers: list[Any] = []

    def decoder_thread() -> None:  # what aiortc's decoder_worker does with its queue
        answers.append(tap.get())

    worker = threading.Thread(target=decoder_thread)
    worker.start()
    tap.put((Codec(), Frame(KEY, 0)))  # type: ignore[arg-type]
    tap.put(None)  # the receiver stops
    worker.join(timeout=5)
    assert not worker.is_alive() and answers == [None] and [f.data for f in got] == [KEY]


async def test_a_viewers_keyframe_request_reaches_the_publisher() -> None:
    receiver = FakeReceiver()
    feed = feed_of(receiver)

    class Sender:  # aiortc's RTCRtpSender calls this on a PLI or FIR from its viewer
        def _send_keyframe(self) -> None:
            raise AssertionError("a forwarding sender has no encoder to ask")

    sender = Sender()
    forward_keyframe_requests(sender, feed)  # type: ignore[arg-type]
    sender._send_keyframe()
    await asyncio.wait_for(receiver.sent.wait(), 5)
    assert receiver.plis == [1234] and feed.keyframe_requests == 1
    feed.close()
