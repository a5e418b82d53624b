"""What a Yjs update needs before it can be applied whole: decoded by hand from the v1 encoding.

A Yjs update carries, per client, a run of structs (items, GC ranges, skips) starting at some clock,
and a delete set (per client, ranges of clocks). The CRDT (Yrs, under pycrdt) integrates a struct only
when everything it hangs on is already in the document: the client's earlier clocks, and the items it
names as its left and right origins and its parent. What it cannot integrate it keeps as *pending*, in
memory, until the missing part arrives (maybe never); a deletion of clocks it does not have is kept
the same way. Pending state is not part of the encoded document, so no size cap sees it, and a client
with write access could grow the server's memory without bound by sending updates with gaps.

:func:`decode` reads an update's shape (each struct's id, length and dependencies on other clients;
the delete set) without building anything, and :func:`requirements` checks it against the document's
state vector the way Yrs integrates (a struct is taken when its clock is at most the client's state and
its dependencies on other clients are known, clients of the update feeding each other): the update is
either integrated whole, or refused before anything is applied. Official clients never send such an
update (y-websocket syncs first), so a refusal means a broken or hostile client.

Only the content kinds Yjs writes are accepted (Yrs' own move and weak-link extensions are refused).
"""

from __future__ import annotations

from dataclasses import dataclass

_ORIGIN = 0x80
_RIGHT_ORIGIN = 0x40
_PARENT_SUB = 0x20
_GC = 0
_SKIP = 10
_MAX_VAR_UINT_BYTES = 8  # lib0 writes at most 53 bits
_TYPE_REFS_WITH_NAME = (3, 5)  # YXmlElement (node name), YXmlHook (key)
_MAX_TYPE_REF = 6  # YArray .. YXmlText: the shared types Yjs has


class MalformedUpdate(ValueError):
    """Not a Yjs (v1) update this server accepts: truncated, trailing bytes, an unknown struct or content."""


class MissingDependencies(ValueError):
    """An update that the document could not integrate whole: it depends on changes the document does
    not have, or deletes what the document does not have (the message says which client)."""


class LeftPending(MissingDependencies):
    """The check passed an update that the CRDT then did not integrate whole (a disagreement: a bug)."""


Block = tuple[int, int, bool, tuple[tuple[int, int], ...]]
"""One struct: (clock, length, is a skip, dependencies on other clients as (client, clock))."""


@dataclass(frozen=True, slots=True)
class UpdateShape:
    """What :func:`decode` found: each client's structs in order, and the delete set."""

    clients: tuple[tuple[int, tuple[Block, ...]], ...]
    deletes: tuple[tuple[int, int, int], ...]
    """(client, clock, length) of every deleted range."""


def _uint(buf: bytes, pos: int) -> tuple[int, int]:
    """The lib0 variable-length unsigned integer at ``pos`` and the position after it."""
    try:
        byte = buf[pos]
        if byte < 0x80:
            return byte, pos + 1
        value = byte & 0x7F
        shift = 7
        while shift < 7 * _MAX_VAR_UINT_BYTES:
            pos += 1
            byte = buf[pos]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos + 1
            shift += 7
    except IndexError:
        raise MalformedUpdate("truncated update") from None
    raise MalformedUpdate("integer too long")


_client_ids: dict[bytes, tuple[bytes, int]] = {}
"""Client ids of five bytes or more (Yjs picks random 32-bit ids, pycrdt 53-bit ones) by the first five
bytes of their encoding: (the whole encoding, the id). A client id recurs in every update of its client,
and reading one is the costliest part of a keystroke's decode. A hit is exact: a stored encoding is a
complete integer, so bytes that start with it hold that integer."""
_CLIENT_IDS_KEPT = 4096


_MAX_CLIENT = 2**53 - 1
"""Yjs picks 32-bit client ids and pycrdt 53-bit ones; Yrs keeps only the low 53 bits of a larger one, so
an update naming one would be checked as one client and integrated as another: refused as malformed."""


def _client(buf: bytes, pos: int) -> tuple[int, int]:
    """A client id (a variable-length integer) at ``pos``, through :data:`_client_ids`."""
    head = buf[pos : pos + 5]
    known = _client_ids.get(head)
    if known is not None and buf.startswith(known[0], pos):
        return known[1], pos + len(known[0])
    value, end = _uint(buf, pos)
    if value > _MAX_CLIENT:
        raise MalformedUpdate("a client id over 53 bits")
    if end - pos >= 5:
        if len(_client_ids) >= _CLIENT_IDS_KEPT:
            _client_ids.clear()
        _client_ids[head] = (buf[pos:end], value)
    return value, end


def _skip_bytes(buf: bytes, pos: int) -> int:
    length, pos = _uint(buf, pos)
    pos += length
    if pos > len(buf):
        raise MalformedUpdate("truncated update")
    return pos


def _utf16_units(raw: bytes) -> int:
    """The length of a UTF-8 string in UTF-16 code units (Yjs' clock unit for text)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise MalformedUpdate("a string is not UTF-8") from None
    return len(text.encode("utf-16-le")) // 2


def _utf16_length(buf: bytes, pos: int) -> tuple[int, int]:
    """A string's length in UTF-16 code units and the position after it."""
    length, pos = _uint(buf, pos)
    end = pos + length
    if end > len(buf):
        raise MalformedUpdate("truncated update")
    raw = buf[pos:end]
    return (length if raw.isascii() else _utf16_units(raw)), end


def _skip_any(buf: bytes, pos: int) -> int:
    """Skip one lib0 ``any`` value (nested arrays and objects without recursion)."""
    todo = [1]  # values still to read at each open level; an object's entry is a key then a value
    keyed = [False]
    while todo:
        if todo[-1] == 0:
            todo.pop()
            keyed.pop()
            continue
        todo[-1] -= 1
        if keyed[-1]:
            pos = _skip_bytes(buf, pos)
        try:
            tag = buf[pos]
        except IndexError:
            raise MalformedUpdate("truncated update") from None
        pos += 1
        if tag in (127, 126, 121, 120):  # undefined, null, false, true
            continue
        if tag == 125:  # integer
            _, pos = _uint(buf, pos)  # a signed varint has the same byte layout
        elif tag == 124:
            pos += 4
        elif tag in (123, 122):  # float64, bigint
            pos += 8
        elif tag in (119, 116):  # string, bytes
            pos = _skip_bytes(buf, pos)
        elif tag in (118, 117):  # object, array
            count, pos = _uint(buf, pos)
            todo.append(count)
            keyed.append(tag == 118)
        else:
            raise MalformedUpdate(f"unknown value tag {tag}")
        if pos > len(buf):
            raise MalformedUpdate("truncated update")
    return pos


def _content(buf: bytes, pos: int, ref: int) -> tuple[int, int]:
    """Skip an item's content of kind ``ref``; its length in clocks and the position after it."""
    if ref == 4:  # string
        return _utf16_length(buf, pos)
    if ref == 1:  # deleted
        return _uint(buf, pos)
    if ref in (2, 8):  # JSON strings, any values
        count, pos = _uint(buf, pos)
        for _ in range(count):
            pos = _skip_bytes(buf, pos) if ref == 2 else _skip_any(buf, pos)
        return count, pos
    if ref in (3, 5):  # binary, embed
        return 1, _skip_bytes(buf, pos)
    if ref == 6:  # format: key and value
        return 1, _skip_bytes(buf, _skip_bytes(buf, pos))
    if ref == 7:  # a shared type
        type_ref, pos = _uint(buf, pos)
        if type_ref > _MAX_TYPE_REF:
            raise MalformedUpdate(f"unknown shared type {type_ref}")
        if type_ref in _TYPE_REFS_WITH_NAME:
            pos = _skip_bytes(buf, pos)
        return 1, pos
    if ref == 9:  # a subdocument: guid and options
        return 1, _skip_any(buf, _skip_bytes(buf, pos))
    raise MalformedUpdate(f"unknown content kind {ref}")


def decode(update: bytes) -> UpdateShape:
    """The shape of a v1 update; :class:`MalformedUpdate` if it is not one.

    Written for speed (it runs for every update a client sends): one-byte integers are read inline.
    """
    buf = update
    uint = _uint
    try:
        n_clients = buf[0]
        pos = 1
        if n_clients >= 0x80:
            n_clients, pos = uint(buf, 0)
        clients = []
        for _ in range(n_clients):
            n_structs = buf[pos]
            if n_structs < 0x80:
                pos += 1
            else:
                n_structs, pos = uint(buf, pos)
            client, pos = _client(buf, pos)
            clock = buf[pos]
            if clock < 0x80:
                pos += 1
            else:
                clock, pos = uint(buf, pos)
            blocks: list[Block] = []
            for _ in range(n_structs):
                info = buf[pos]
                pos += 1
                ref = info & 0x1F
                if ref in (_GC, _SKIP):
                    length, pos = uint(buf, pos)
                    blocks.append((clock, length, ref == _SKIP, ()))
                    clock += length
                    continue
                deps: tuple[tuple[int, int], ...] = ()
                if info & _ORIGIN:
                    dep_client, pos = _client(buf, pos)
                    dep_clock, pos = uint(buf, pos)
                    if dep_client != client:
                        deps = ((dep_client, dep_clock),)
                    elif dep_clock >= clock:
                        raise MissingDependencies(_own_later(client, clock))
                if info & _RIGHT_ORIGIN:
                    dep_client, pos = _client(buf, pos)
                    dep_clock, pos = uint(buf, pos)
                    if dep_client != client:
                        deps += ((dep_client, dep_clock),)
                    elif dep_clock >= clock:
                        raise MissingDependencies(_own_later(client, clock))
                if not info & (_ORIGIN | _RIGHT_ORIGIN):
                    named, pos = uint(buf, pos)
                    if named == 1:
                        pos = _skip_bytes(buf, pos)
                    else:
                        dep_client, pos = _client(buf, pos)
                        dep_clock, pos = uint(buf, pos)
                        if dep_client != client:
                            deps = ((dep_client, dep_clock),)
                        elif dep_clock >= clock:
                            raise MissingDependencies(_own_later(client, clock))
                    if info & _PARENT_SUB:
                        pos = _skip_bytes(buf, pos)
                if ref == 4:  # a string, the common case: its length in UTF-16 code units
                    size = buf[pos]
                    if size < 0x80:
                        pos += 1
                    else:
                        size, pos = uint(buf, pos)
                    end = pos + size
                    raw = buf[pos:end]
                    if len(raw) != size:
                        raise MalformedUpdate("truncated update")
                    pos = end
                    length = size if raw.isascii() else _utf16_units(raw)
                else:
                    length, pos = _content(buf, pos, ref)
                blocks.append((clock, length, False, deps))
                clock += length
            clients.append((client, tuple(blocks)))
        n_delete_clients = buf[pos]
        if n_delete_clients < 0x80:
            pos += 1
        else:
            n_delete_clients, pos = uint(buf, pos)
        deletes = []
        for _ in range(n_delete_clients):
            client, pos = _client(buf, pos)
            n_ranges, pos = uint(buf, pos)
            for _ in range(n_ranges):
                clock, pos = uint(buf, pos)
                length, pos = uint(buf, pos)
                deletes.append((client, clock, length))
    except IndexError:
        raise MalformedUpdate("truncated update") from None
    if pos != len(buf):
        raise MalformedUpdate("trailing bytes after the update")
    return UpdateShape(tuple(clients), tuple(deletes))


def decode_state_vector(state: bytes) -> dict[int, int]:
    """A document's encoded state vector (client → the next clock it will write)."""
    count, pos = _uint(state, 0)
    out: dict[int, int] = {}
    for _ in range(count):
        client, pos = _uint(state, pos)
        clock, pos = _uint(state, pos)
        out[client] = clock
    return out


def _own_later(client: int, clock: int) -> str:
    """An item that hangs on an item of its own client that is not before it: Yjs never writes one, and the
    CRDT would keep it pending for good (it waits for itself)."""
    return f"client {client}'s item at clock {clock} refers to its own later changes"


def _unknown_dependency(client: int, clock: int) -> str:
    return f"it refers to client {client}'s clock {clock}, not in the document"


def check(update: bytes, known: dict[int, int]) -> dict[int, int]:
    """:func:`requirements` of ``update`` (decoded). The common keystrokes are read on short paths: one
    client inserting one piece of text next to an item it names, and one range of one client deleted."""
    if len(update) > 3:
        if update[0] == 1 and update[1] == 1 and update[-1] == 0:
            found = _one_insert(update, known)
            if found is not None:
                return found
        elif update[0] == 0 and update[1] == 1 and _one_deletion(update, known):
            return {}
    return requirements(decode(update), known)


def _one_deletion(buf: bytes, known: dict[int, int]) -> bool:
    """Whether ``buf`` only deletes one range the document has (False: read it the long way)."""
    try:
        client, pos = _client(buf, 2)
        if buf[pos] != 1:
            return False
        clock, pos = _uint(buf, pos + 1)
        length, pos = _uint(buf, pos)
    except (MalformedUpdate, IndexError):  # (cut short: the long way says so)
        return False
    return pos == len(buf) and clock + length <= known.get(client, 0)


def _one_insert(buf: bytes, known: dict[int, int]) -> dict[int, int] | None:
    """The state after a one-item text insertion, None if ``buf`` is not laid out as one."""
    try:
        client, pos = _client(buf, 2)
        start = pos
        clock = buf[pos]
        if clock < 0x80:
            pos += 1
        else:
            clock, pos = _uint(buf, pos)
        info = buf[pos]
        if info & 0x3F != 4 or not info & (_ORIGIN | _RIGHT_ORIGIN):
            return None
        pos += 1
        state = known.get(client, 0)
        if clock > state:
            raise MissingDependencies(f"it continues client {client} from clock {clock}, the document has {state}")
        own = buf[2:start]  # the client's id as encoded: an origin of its own needs no look-up
        for flag in (_ORIGIN, _RIGHT_ORIGIN):
            if info & flag:
                if buf.startswith(own, pos):  # an item of its own client: one before it
                    own_clock, pos = _uint(buf, pos + len(own))
                    if own_clock >= clock:
                        raise MissingDependencies(_own_later(client, clock))
                    continue
                dep_client, pos = _client(buf, pos)
                dep_clock = buf[pos]
                if dep_clock < 0x80:
                    pos += 1
                else:
                    dep_clock, pos = _uint(buf, pos)
                if dep_clock >= known.get(dep_client, 0):
                    raise MissingDependencies(_unknown_dependency(dep_client, dep_clock))
        size = buf[pos]
        if size < 0x80:
            pos += 1
        else:
            size, pos = _uint(buf, pos)
    except IndexError:
        return None
    end = pos + size
    if end != len(buf) - 1:  # not followed by an empty delete set alone
        return None
    raw = buf[pos:end]
    end = clock + (size if raw.isascii() else _utf16_units(raw))
    return {client: end if end > state else state}


def requirements(shape: UpdateShape, known: dict[int, int]) -> dict[int, int]:
    """The state vector entries the document will have once ``shape`` is applied, if it integrates
    whole against ``known`` (the document's state vector); else :class:`MissingDependencies`.

    Mirrors Yrs' integration: a struct is taken when its clock is at most its client's state and its
    left origin, right origin and parent (when another client's) are below theirs, a skip is taken
    without advancing anything, and clients of the update feed each other until nothing moves.
    """
    clients = shape.clients
    if not clients:  # deletions only
        after: dict[int, int] = {}
    elif len(clients) == 1:  # the common case (one client's edit): one pass, no bookkeeping
        client, blocks = clients[0]
        state = known.get(client, 0)
        for clock, length, skip, deps in blocks:
            if skip:
                continue
            if clock > state:
                raise MissingDependencies(f"it continues client {client} from clock {clock}, the document has {state}")
            for dep_client, dep_clock in deps:
                if dep_clock >= known.get(dep_client, 0):
                    raise MissingDependencies(_unknown_dependency(dep_client, dep_clock))
            if clock + length > state:
                state = clock + length
        after = {client: state}
    else:
        after = _integrate(shape, known)
    for client, clock, length in shape.deletes:
        if length and clock + length > after.get(client, known.get(client, 0)):
            raise MissingDependencies(f"it deletes client {client}'s clocks up to {clock + length}, unknown here")
    return after


def _integrate(shape: UpdateShape, known: dict[int, int]) -> dict[int, int]:
    state = {client: known.get(client, 0) for client, _ in shape.clients}
    queues = {client: list(reversed(blocks)) for client, blocks in shape.clients}
    progress = True
    while progress:
        progress = False
        for client, queue in queues.items():
            while queue:
                clock, length, skip, deps = queue[-1]
                if not skip:
                    if clock > state[client]:
                        break
                    if any(k >= state.get(c, known.get(c, 0)) for c, k in deps):
                        break
                    if clock + length > state[client]:
                        state[client] = clock + length
                queue.pop()
                progress = True
    for client, queue in queues.items():
        if queue:
            clock = queue[-1][0]
            raise MissingDependencies(f"its structs of client {client} from clock {clock} depend on unknown changes")
    return state
