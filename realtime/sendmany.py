"""One frame to many connections: the inner loop of a room emit.

A chat message to a room of 1,000 goes out as 1,000 writes of the same websocket frame. Each write is one
``send(2)`` on loopback or a LAN (~6–7 µs of kernel time, the receiver's TCP work included); around it
asyncio's ``transport.write`` and the checks of :meth:`realtime.fastws.DirectWebSocket.write` cost another
~2 µs of Python per recipient (``bench/RESULTS.md``, 2026-12-04). Node's socket.io spends ~12.7 µs per
delivery all told, so that Python was the difference between 0.83x and the 0.7x issue 19 aims at.

:func:`send_frame` does what ``transport.write`` would do for a transport whose buffer is empty — send
the frame to its socket at once — for a whole list of transports in one call, with the GIL released
once for all the sends (``realtime/_sendmany.c``, built with the package; :func:`send_frame_py` is the
same in Python when it could not be built). Whatever did not go out whole (a transport with bytes already
waiting, closing or lost, a socket without room, an error) is named in the result, and the caller hands
it to that transport's own ``write``: it queues behind what is waiting, or reports the error and closes,
as asyncio does. So the bytes on the wire, their order per connection and the slow-consumer cut-off are
exactly those of ``transport.write``.

This reads three attributes of asyncio's own ``_SelectorSocketTransport`` (``_buffer``, ``_closing``,
``_sock_fd``, and ``_sock`` in Python: the same since Python 3.8; a lost connection is always closing too,
so ``_conn_lost`` need not be read), and is used only for transports of exactly that
class whose attributes are there (:func:`direct_transport`): uvloop's transports, TLS and anything else
go through ``transport.write``. ``STUDYHALL_WS_FANOUT_WRITER`` picks the writer (``c``, ``python`` or
``transport``, the last one being plain ``transport.write`` per recipient).
"""

from __future__ import annotations

import asyncio.selector_events
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

SendFrame = Callable[[list[Any], bytes], list[tuple[int, int]]]

_SELECTOR_TRANSPORT: type | None = getattr(asyncio.selector_events, "_SelectorSocketTransport", None)
_READ = ("_buffer", "_closing", "_sock_fd", "_sock")


def direct_transport(transport: Any) -> Any:
    """``transport`` if :func:`send_frame` may write to it, else None."""
    if _SELECTOR_TRANSPORT is None or type(transport) is not _SELECTOR_TRANSPORT:
        return None
    if not all(hasattr(transport, name) for name in _READ):
        return None
    return transport


def send_frame_py(transports: list[Any], frame: bytes) -> list[tuple[int, int]]:
    """:func:`send_frame` in Python: ``[(index, bytes sent)]`` for the transports that did not take all of
    ``frame`` (0: not written to; -1: the socket reported an error)."""
    rest: list[tuple[int, int]] = []
    size = len(frame)
    for i, t in enumerate(transports):
        if t._buffer or t._closing:
            rest.append((i, 0))
            continue
        try:
            n = t._sock.send(frame)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            n = -1
        if n != size:
            rest.append((i, n))
    return rest


send_frame_c: SendFrame | None
try:
    from realtime._sendmany import send_frame as send_frame_c
except ImportError:  # built with the package; a machine without a C compiler gets the Python loop
    send_frame_c = None


def pick_writer(name: str) -> SendFrame | None:
    """The writer ``STUDYHALL_WS_FANOUT_WRITER`` names; None for plain ``transport.write``."""
    if name == "transport":
        return None
    if name == "c":
        if send_frame_c is not None:
            return send_frame_c
        log.warning("realtime/_sendmany.c is not built (no C compiler at install?): room emits use the Python loop")
    return send_frame_py


def finish(writers: list[Any], rest: list[tuple[int, int]], frame: bytes) -> None:
    """Hand what :func:`send_frame` left to each connection's own ``write`` (``writers[i].write``)."""
    for i, n in rest:
        writers[i].write(frame[n:] if n > 0 else frame)
