"""The y-websocket wire protocol, decoded and encoded by hand: pure functions, no I/O.

Every websocket frame carries one message, a sequence of lib0 variable-length integers and
length-prefixed byte strings:

| frame | meaning |
| --- | --- |
| ``0, 0, <state vector>`` | sync step 1: "here is what I have, send me what I miss" |
| ``0, 1, <update>`` | sync step 2: the answer to step 1 |
| ``0, 2, <update>`` | an incremental document update |
| ``1, <awareness update>`` | awareness (cursors, user names): ``n, (client id, clock, JSON state) * n`` |
| ``2, 0, <reason>`` | auth: permission denied (server → client only) |
| ``3`` | awareness query: "send me everyone's awareness" |

Decoding is strict: a truncated integer or byte string, trailing bytes or an unknown type raise
:class:`ProtocolError`, which the connection turns into a close frame. The server never re-encodes an
update it relays: it forwards the frame it received.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

MAX_VAR_UINT_BYTES = 8  # 56 bits: above JavaScript's safe integers, which is all lib0 writes


class ProtocolError(ValueError):
    """A frame that is not a well-formed y-websocket message; ``unknown_type`` for a type we do not speak."""

    def __init__(self, message: str, *, unknown_type: bool = False) -> None:
        super().__init__(message)
        self.unknown_type = unknown_type


class Kind(IntEnum):
    """What a decoded message is; the connection dispatches on it."""

    SYNC_STEP1 = 0
    SYNC_STEP2 = 1
    UPDATE = 2
    AWARENESS = 3
    AWARENESS_QUERY = 4


MESSAGE_SYNC = 0
MESSAGE_AWARENESS = 1
MESSAGE_AUTH = 2
MESSAGE_QUERY_AWARENESS = 3
_SYNC_KINDS = (Kind.SYNC_STEP1, Kind.SYNC_STEP2, Kind.UPDATE)
EMPTY_UPDATE = b"\x00\x00"  # an update with no structs and no deletions (y-websocket sends it as step 2)


def read_var_uint(buf: bytes, pos: int) -> tuple[int, int]:
    """The unsigned integer at ``pos`` and the position after it."""
    value = 0
    shift = 0
    end = len(buf)
    for _ in range(MAX_VAR_UINT_BYTES):
        if pos >= end:
            raise ProtocolError("truncated integer")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ProtocolError("integer too long")


def read_var_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    """The length-prefixed byte string at ``pos`` and the position after it."""
    length, pos = read_var_uint(buf, pos)
    end = pos + length
    if end > len(buf):
        raise ProtocolError("truncated byte string")
    return buf[pos:end], end


def write_var_uint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def _var_bytes(data: bytes) -> bytes:
    return write_var_uint(len(data)) + data


def join_var_bytes(items: list[bytes]) -> bytes:
    """Length-prefixed byte strings one after another (a batch of updates, a relay message's frames)."""
    return b"".join([part for item in items for part in (write_var_uint(len(item)), item)])


def split_var_bytes(body: bytes) -> list[bytes]:
    """The inverse of :func:`join_var_bytes`; :class:`ProtocolError` if ``body`` is cut short."""
    items = []
    pos = 0
    while pos < len(body):
        item, pos = read_var_bytes(body, pos)
        items.append(item)
    return items


def decode(frame: bytes) -> tuple[Kind, bytes]:
    """Split one frame into its kind and payload (state vector, update or awareness update)."""
    # Fast path for the message that dominates (a keystroke's sync message, payload under 128 bytes).
    if (
        len(frame) >= 3
        and frame[0] == MESSAGE_SYNC
        and frame[1] <= 2
        and frame[2] < 0x80
        and len(frame) == 3 + frame[2]
    ):
        return _SYNC_KINDS[frame[1]], frame[3:]
    if not frame:
        raise ProtocolError("empty message")
    kind = frame[0]
    if kind == MESSAGE_SYNC:
        if len(frame) < 2:
            raise ProtocolError("truncated sync message")
        sub = frame[1]
        if sub > 2:
            raise ProtocolError(f"unknown sync message type {sub}", unknown_type=True)
        payload, end = read_var_bytes(frame, 2)
        if end != len(frame):
            raise ProtocolError("trailing bytes after a sync message")
        return _SYNC_KINDS[sub], payload
    if kind == MESSAGE_AWARENESS:
        payload, end = read_var_bytes(frame, 1)
        if end != len(frame):
            raise ProtocolError("trailing bytes after an awareness message")
        return Kind.AWARENESS, payload
    if kind == MESSAGE_QUERY_AWARENESS:
        if len(frame) != 1:
            raise ProtocolError("trailing bytes after an awareness query")
        return Kind.AWARENESS_QUERY, b""
    raise ProtocolError(f"unknown message type {kind}", unknown_type=True)


# --- awareness -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness: its clock and its JSON state as sent (``b"null"`` means it left)."""

    client_id: int
    clock: int
    state: bytes

    @property
    def removed(self) -> bool:
        return self.state == b"null"


def decode_awareness(payload: bytes) -> list[AwarenessEntry]:
    """The entries of an awareness update (states are kept as the client's JSON bytes, not parsed)."""
    count, pos = read_var_uint(payload, 0)
    entries = []
    for _ in range(count):
        client_id, pos = read_var_uint(payload, pos)
        clock, pos = read_var_uint(payload, pos)
        state, pos = read_var_bytes(payload, pos)
        entries.append(AwarenessEntry(client_id, clock, state))
    if pos != len(payload):
        raise ProtocolError("trailing bytes after awareness entries")
    return entries


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    """An awareness message (type byte included) carrying ``entries``."""
    body = bytearray(write_var_uint(len(entries)))
    for entry in entries:
        body += write_var_uint(entry.client_id)
        body += write_var_uint(entry.clock)
        body += _var_bytes(entry.state)
    return bytes([MESSAGE_AWARENESS]) + _var_bytes(bytes(body))


# --- messages --------------------------------------------------------------------------------------


def sync_step1(state_vector: bytes) -> bytes:
    return bytes([MESSAGE_SYNC, 0]) + _var_bytes(state_vector)


def sync_step2(update: bytes) -> bytes:
    return bytes([MESSAGE_SYNC, 1]) + _var_bytes(update)


def update_message(update: bytes) -> bytes:
    return bytes([MESSAGE_SYNC, 2]) + _var_bytes(update)


def permission_denied(reason: str) -> bytes:
    """y-websocket's auth message: the client logs the reason (its ``permissionDeniedHandler``)."""
    return bytes([MESSAGE_AUTH, 0]) + _var_bytes(reason.encode())


AWARENESS_QUERY = bytes([MESSAGE_QUERY_AWARENESS])
