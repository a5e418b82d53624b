"""Chat rules with no I/O: message bodies, mentions, rate windows, typing throttling, who may moderate whom.

Every rule that depends on time takes ``now`` as an argument, so it can be checked with any clock; the
service passes the database's clock (one clock for every node).

**Bodies** are plain text. Control characters are removed except newline and tab (``\\r\\n`` and a lone
``\\r`` become ``\\n``), surrounding whitespace is trimmed, and what is left must be 1..``max_len``
characters long.

**Mentions** are parsed by :mod:`core_api.mentions` (shared with the forums); chat mentions reach the
room's members whose display name matches.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core_api.errors import AppError, ErrorCode, invalid
from core_api.mentions import MAX_MENTION_LEN, MAX_MENTIONS, excerpt, mention_key, parse_mentions

__all__ = ["MAX_MENTIONS", "MAX_MENTION_LEN", "excerpt", "mention_key", "parse_mentions"]

TYPING_REFRESH_S = 3.0
"""A connection's repeated ``typing: true`` in one room is forwarded at most once per this many seconds."""


# --- text ----------------------------------------------------------------------------------------


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs")


def clean_body(raw: str, max_len: int) -> str:
    """The body as stored: control characters removed (newline and tab kept), trimmed, length checked."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch in "\n\t" or not _is_control(ch)).strip()
    if not text:
        raise invalid("body: the message is empty")
    if len(text) > max_len:
        raise invalid(f"body: at most {max_len} characters")
    return text


def check_token(value: str, what: str) -> str:
    """A short identifier from a client (client_msg_id, emoji): no control characters, no whitespace."""
    if any(_is_control(ch) or ch.isspace() for ch in value):
        raise invalid(f"{what}: must not contain whitespace or control characters")
    return value


# --- time windows --------------------------------------------------------------------------------


def _wait(seconds: float) -> int:
    """Seconds to tell a client to wait: rounded up, at least one."""
    return max(1, math.ceil(seconds))


def rate_retry_after(recent: Sequence[datetime], now: datetime, limit: int, window_s: float) -> int | None:
    """Seconds until the sender may send again under ``limit`` messages per ``window_s``; None if now.

    ``recent`` are the times of the sender's latest messages (any order; older ones are ignored).
    """
    in_window = sorted((t for t in recent if (now - t).total_seconds() < window_s), reverse=True)
    if len(in_window) < limit:
        return None
    # The limit-th newest message has to leave the window first.
    return _wait(window_s - (now - in_window[limit - 1]).total_seconds())


def slow_mode_retry_after(last_sent: datetime | None, now: datetime, slow_mode_s: int) -> int | None:
    """Seconds until the sender may post again in a room with slow mode; None if now."""
    if slow_mode_s <= 0 or last_sent is None:
        return None
    elapsed = (now - last_sent).total_seconds()
    return None if elapsed >= slow_mode_s else _wait(slow_mode_s - elapsed)


def muted_for(muted_until: datetime | None, now: datetime) -> int | None:
    """Seconds of a mute still to run; None if not muted."""
    if muted_until is None or muted_until <= now:
        return None
    return _wait((muted_until - now).total_seconds())


def rate_limited(what: str, retry_after_s: int) -> AppError:
    return AppError(
        ErrorCode.RATE_LIMITED,
        f"{what}: try again in {retry_after_s} s (retry_after={retry_after_s})",
        {"retry_after_s": retry_after_s},
    )


@dataclass(frozen=True)
class TypingMark:
    """The last typing state forwarded for one connection and room, and when (monotonic seconds)."""

    typing: bool
    at: float


def forward_typing(last: TypingMark | None, typing: bool, now: float) -> bool:
    """Forward a typing change always; repeat a ``typing: true`` only every :data:`TYPING_REFRESH_S`."""
    if last is None:
        return typing
    if last.typing != typing:
        return True
    return typing and now - last.at >= TYPING_REFRESH_S


# --- moderation ----------------------------------------------------------------------------------


def may_moderate(actor_rank: int, actor_is_admin: bool, target_rank: int, target_is_admin: bool) -> bool:
    """Whether an actor may act on a target: admins on anyone, others only on someone ranked below them.

    A moderator may act on members, a host on moderators and members; nobody but an admin acts on an admin.
    """
    if actor_is_admin:
        return True
    if target_is_admin:
        return False
    return actor_rank > target_rank


# --- wire shapes ---------------------------------------------------------------------------------


def message_view(row: Mapping[str, Any], reactions: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A message as clients see it; a deleted one keeps its place (seq) but not its body or reactions."""
    deleted = row["deleted_at"] is not None
    edited = row["edited_at"]
    return {
        "id": str(row["id"]),
        "room_id": str(row["room_id"]),
        "seq": row["seq"],
        "author": {"id": str(row["author_id"]), "display_name": row["display_name"]},
        "body": "" if deleted else row["body"],
        "created_at": row["created_at"].isoformat(),
        "edited_at": edited.isoformat() if edited is not None else None,
        "deleted": deleted,
        "reactions": {} if deleted else dict(reactions or {}),
        "rev": row["rev"],
    }
