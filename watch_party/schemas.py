"""Payloads of the ``watch:*`` events, validated at the edge (unknown fields refused, no coercion, limits).

Every command names its room and may name the state ``version`` it was based on: when given and no
longer current, the command is refused as stale (``conflict``).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from core_api.http import Input
from watch_party.core import ControlMode, MediaKind, ReadyMode

MAX_POSITION_S = 10_000_000.0  # about 115 days: longer than any media, small enough to stay exact in a float
MAX_URL = 2048


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable (no control characters)")
    return value


def _web_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an http:// or https:// URL")
    if any(c.isspace() for c in value) or not value.isprintable():
        raise ValueError("must not contain spaces or control characters")
    return value


Position = Annotated[float, Field(ge=0, le=MAX_POSITION_S, allow_inf_nan=False)]
ItemId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class MediaIn(Input):
    """What to play: a web URL with its kind (and duration, if known), or a course lecture by id.

    A lecture's URL, kind, duration and title are taken from the course (you must be able to see it),
    and watching it updates enrolled viewers' resume points.
    """

    url: Annotated[str, StringConstraints(max_length=MAX_URL), AfterValidator(_web_url)] | None = None
    kind: MediaKind | None = Field(None, description="`video` (a file), `hls` (a playlist) or `audio`.")
    duration: float | None = Field(
        None, gt=0, le=MAX_POSITION_S, allow_inf_nan=False, description="Seconds; leave out for live streams."
    )
    title: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(_printable)] = ""
    lecture_id: uuid.UUID | None = Field(None, description="A lecture to watch instead of a URL.")

    @model_validator(mode="after")
    def _url_or_lecture(self) -> MediaIn:
        if self.lecture_id is not None:
            if self.url is not None or self.kind is not None or self.duration is not None:
                raise ValueError("give either lecture_id or url/kind/duration, not both")
        elif self.url is None or self.kind is None:
            raise ValueError("url and kind are required (or give a lecture_id)")
        return self


class RoomIn(Input):
    """``watch:sync`` and ``watch:report``."""

    room_id: uuid.UUID


class CommandIn(Input):
    room_id: uuid.UUID
    version: int | None = Field(None, ge=0, le=2**62, description="The state version this command is based on.")


class PlayIn(CommandIn):
    position: Position | None = Field(None, description="Play from here (default: where the player is).")
    force: bool = Field(False, description="Start even if the ready check is not met.")


class PauseIn(CommandIn):
    position: Position | None = Field(None, description="Pause here (default: where the shared player is now).")


class SeekIn(CommandIn):
    position: Position


class LoadIn(CommandIn):
    media: MediaIn


class RateIn(CommandIn):
    rate: float = Field(ge=0.25, le=4.0, allow_inf_nan=False)


class QueueIn(CommandIn):
    media: MediaIn
    next: bool = Field(False, description="Right after the current item instead of at the end.")


class DequeueIn(CommandIn):
    item_id: ItemId


class MoveIn(CommandIn):
    item_id: ItemId
    index: int = Field(ge=0, le=100_000)


class SkipIn(CommandIn):
    item_id: ItemId | None = Field(None, description="Go to this item (default: the next one).")


class ControlIn(CommandIn):
    mode: ControlMode


class HandoverIn(CommandIn):
    user_id: uuid.UUID


class ReadyCheckIn(CommandIn):
    mode: ReadyMode
    count: int = Field(1, ge=1, le=100_000, description="With mode `count`: how many viewers must be ready.")


class ReadyIn(Input):
    room_id: uuid.UUID
    ready: bool


class HeartbeatIn(Input):
    """A viewer's player, sampled at ``client_time`` (the client's clock, seconds)."""

    room_id: uuid.UUID
    position: Position
    playing: bool
    client_time: float = Field(ge=-1e12, le=1e12, allow_inf_nan=False)
    version: int | None = Field(None, ge=0, le=2**62, description="The state version the player follows.")
    offset: float | None = Field(
        None, ge=-1e12, le=1e12, allow_inf_nan=False, description="The client's estimate of server minus client clock."
    )
    rtt: float | None = Field(None, ge=0, le=600, allow_inf_nan=False, description="The client's round-trip estimate.")
