"""Pure search logic: reading the query, the kinds, the cursor and the highlighted snippets. No I/O."""

from __future__ import annotations

import base64
import json
import math
import re
import uuid
from dataclasses import dataclass
from typing import cast

from core_api.errors import forbidden, invalid
from core_api.search.schemas import ADMIN_ONLY, KINDS, Kind, Segment

WORD = re.compile(r"\w+")
# ts_headline marks matches with these (Unicode private-use characters), which are removed from the text
# first: the snippet reaches the client as plain segments, never as markup to trust.
START, STOP = "\ue000", "\ue001"


@dataclass(frozen=True)
class Limits:
    max_query_chars: int
    max_words: int
    max_limit: int


def words_of(q: str, limits: Limits) -> list[str]:
    """The words of a query: runs of letters, digits and underscores, lower-cased, repeats dropped.

    400 for a query too long, with NUL or other control characters, with too many words or with none.
    """
    if len(q) > limits.max_query_chars:
        raise invalid(f"the query is longer than {limits.max_query_chars} characters", max_chars=limits.max_query_chars)
    if any(ord(c) < 32 or c == "\x7f" for c in q):
        raise invalid("the query must not contain control characters")
    words = list(dict.fromkeys(w.lower() for w in WORD.findall(q)))
    if not words:
        raise invalid("the query has no words to search for (letters or digits)")
    if len(words) > limits.max_words:
        raise invalid(f"the query has more than {limits.max_words} words", max_words=limits.max_words)
    return words


def kinds_of(raw: str | None, *, admin: bool) -> tuple[Kind, ...]:
    """The kinds to search, in :data:`KINDS` order: those named (400 for an unknown one, 403 for ``users`` to
    a non-admin), or by default every kind the caller may search."""
    if raw is None or not raw.strip():
        return tuple(k for k in KINDS if admin or k not in ADMIN_ONLY)
    named = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = sorted(named - set(KINDS))
    if unknown:
        raise invalid(f"unknown kind {unknown[0]!r}; kinds are {', '.join(KINDS)}", kinds=list(KINDS))
    if not admin and named & ADMIN_ONLY:
        raise forbidden("only admins may search users")
    return tuple(k for k in KINDS if k in named)


@dataclass(frozen=True)
class Position:
    """Where a kind's next page starts: after the hit with this rank and id (ranks descending, then ids)."""

    kind: Kind
    rank: float
    id: uuid.UUID


def encode_cursor(kind: Kind, rank: float, ident: uuid.UUID) -> str:
    raw = json.dumps([kind, rank, str(ident)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, kinds: tuple[Kind, ...]) -> Position | None:
    """The position a cursor names; 400 unless this server issued it and ``kinds`` is its kind alone."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        kind, rank, ident = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if kind not in KINDS or not isinstance(rank, float | int) or isinstance(rank, bool):
            raise ValueError(kind)
        position = Position(cast(Kind, kind), float(rank), uuid.UUID(ident))
        if not math.isfinite(position.rank):
            raise ValueError(rank)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise invalid("cursor is not one this server issued") from None
    if kinds != (position.kind,):
        raise invalid(f"a cursor continues one kind: pass kinds={position.kind}")
    return position


def segments(marked: str) -> list[Segment]:
    """Split ts_headline's output (matches between :data:`START` and :data:`STOP`) into segments."""
    out: list[Segment] = []
    match = False
    for piece in re.split(f"([{START}{STOP}])", marked):
        if piece == START:
            match = True
        elif piece == STOP:
            match = False
        elif piece:
            if out and out[-1].match == match:
                out[-1] = Segment(text=out[-1].text + piece, match=match)
            else:
                out.append(Segment(text=piece, match=match))
    return out


# Reading the member rooms' messages costs about as much per message (an index-only scan of their vectors,
# about 0.2-0.4 µs each) as the GIN index costs per match (0.2-0.5 µs, every match in every room), measured
# over a million messages (bench/search.py).
BY_ROOM_COST = 1.0
BY_ROOM_ALWAYS = 5_000


def read_messages_by_room(visible: int, estimated: float | None) -> bool:
    """Whether to search the caller's messages by reading their rooms' messages one by one (cost: the
    ``visible`` messages) rather than through the GIN index (cost: every message the words match, in any room,
    which for a frequent word or a short prefix is most of the table). ``estimated`` is the planner's estimate
    of those matches; None when not asked for (few visible messages: reading them is cheap whatever the words).
    """
    if visible <= BY_ROOM_ALWAYS:
        return True
    return estimated is not None and estimated > BY_ROOM_COST * visible
