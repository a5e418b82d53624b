"""Pure parts of collab_ide, without I/O: the y-websocket codec, the shared document with stand-in
peers, the fast update path, and the workspace access rules."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text

from collab_ide import protocol
from collab_ide.access import access_of
from collab_ide.document import AwarenessLimits, InvalidUpdate, SharedDocument, update_applier
from collab_ide.protocol import AwarenessEntry, Kind, ProtocolError
from collab_ide.sizes import SizeGuard, SizeLimits, TooLarge, adds_items
from core_api.http import Principal

# --- the codec -----------------------------------------------------------------------------------------


@given(st.binary(max_size=64))
@settings(max_examples=500, deadline=None)
def test_any_bytes_decode_to_a_message_or_a_protocol_error(frame: bytes) -> None:
    try:
        kind, payload = protocol.decode(frame)
    except ProtocolError:
        return
    assert kind in Kind
    if kind is not Kind.AWARENESS_QUERY:
        assert frame.endswith(payload)


@given(st.binary(max_size=300), st.sampled_from([protocol.sync_step1, protocol.sync_step2, protocol.update_message]))
def test_sync_messages_round_trip(payload: bytes, make: Any) -> None:
    kinds = {protocol.sync_step1: Kind.SYNC_STEP1, protocol.sync_step2: Kind.SYNC_STEP2}
    assert protocol.decode(make(payload)) == (kinds.get(make, Kind.UPDATE), payload)


@given(st.lists(st.tuples(st.integers(0, 2**53 - 1), st.integers(0, 2**32), st.binary(max_size=40)), max_size=5))
def test_awareness_round_trips(raw: list[tuple[int, int, bytes]]) -> None:
    entries = [AwarenessEntry(*e) for e in raw]
    kind, payload = protocol.decode(protocol.encode_awareness(entries))
    assert kind is Kind.AWARENESS and protocol.decode_awareness(payload) == entries


def test_varints_and_their_limits() -> None:
    for value in (0, 1, 127, 128, 300, 2**32, 2**53 - 1):
        assert protocol.read_var_uint(protocol.write_var_uint(value), 0) == (value, len(protocol.write_var_uint(value)))
    with pytest.raises(ProtocolError, match="too long"):
        protocol.read_var_uint(b"\xff" * 9, 0)
    with pytest.raises(ProtocolError, match="unknown message type"):
        protocol.decode(b"\x09")
    assert protocol.decode(b"\x03") == (Kind.AWARENESS_QUERY, b"")


# --- the shared document -----------------------------------------------------------------------------


class FakePeer:
    def __init__(self, can_edit: bool = True) -> None:
        self.user_id = uuid.uuid4()
        self.can_edit = can_edit
        self.awareness_ids: set[int] = set()
        self.sent: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    async def recheck(self) -> None:
        return None


def starter() -> Doc[Any]:
    doc: Doc[Any] = Doc()
    doc.get("files", type=Map)["main.py"] = Text("print(1)\n")
    return doc


def keystroke(base: Doc[Any], text: str) -> bytes:
    """An update typing ``text`` at the start of main.py, made by a client holding ``base``."""
    client: Doc[Any] = Doc()
    client.apply_update(base.get_update())
    before = client.get_state()
    t = client.get("files", type=Map)["main.py"]
    t.insert(0, text)
    return client.get_update(before)


def test_an_update_is_applied_forwarded_as_the_same_bytes_relayed_and_queued() -> None:
    relayed: list[bytes] = []
    doc = SharedDocument(uuid.uuid4(), starter(), 1, relayed.append)
    a, b, c = FakePeer(), FakePeer(), FakePeer()
    for peer in (a, b, c):
        doc.add(peer)
    assert all(p.sent[0][:2] == b"\x00\x00" for p in (a, b, c))  # greeted with sync step 1
    update = keystroke(doc.doc, "# ")
    frame = protocol.update_message(update)
    doc.apply(update, frame, a, now=5.0)
    assert b.sent[-1] is frame and c.sent[-1] is frame and a.sent[-1] is not frame
    assert relayed == [frame] and doc.pending == [update] and doc.unsaved == 1 and doc.last_change == 5.0
    assert str(doc.doc.get("files", type=Map)["main.py"]).startswith("# print")
    with pytest.raises(InvalidUpdate):
        doc.apply(b"\x05garbage", protocol.update_message(b"\x05garbage"), a, now=6.0)
    with pytest.raises(InvalidUpdate):
        doc.answer_step1(b"\xff\xff")


def aware(*entries: tuple[int, int, bytes]) -> tuple[bytes, bytes]:
    """An awareness message's (payload, frame)."""
    frame = protocol.encode_awareness([AwarenessEntry(*e) for e in entries])
    return protocol.decode(frame)[1], frame


def states(peer: FakePeer) -> list[AwarenessEntry]:
    """The awareness entries of the last frame ``peer`` was sent."""
    return protocol.decode_awareness(protocol.decode(peer.sent[-1])[1])


def test_a_leaving_peer_takes_its_awareness_with_it_and_stale_states_expire() -> None:
    relayed: list[bytes] = []
    doc = SharedDocument(uuid.uuid4(), starter(), 1, relayed.append)
    a, b = FakePeer(), FakePeer()
    doc.add(a)
    doc.add(b)
    payload, frame = aware((11, 3, b'{"u":1}'))
    doc.client_awareness(a, payload, frame)
    assert b.sent[-1] is frame and a.sent[-1] is frame and a.awareness_ids == {11}  # echoed, as y-websocket does
    assert relayed == [frame]
    newcomer = FakePeer()
    doc.add(newcomer)
    assert newcomer.sent[-1] == frame  # everyone's awareness after sync step 1
    doc.remove(a)
    assert states(b) == [AwarenessEntry(11, 4, b"null")] and doc.awareness == {} and relayed[-1] == b.sent[-1]
    # Another node's client: kept, renewed by its node, expired (and said so) if its node goes quiet.
    remote = protocol.encode_awareness([AwarenessEntry(12, 1, b"{}")])
    doc.node_awareness(protocol.decode_awareness(protocol.decode(remote)[1]), remote, now=10.0)
    assert b.sent[-1] is remote and 12 in doc.awareness
    doc.forget_stale_awareness(before=5.0)
    assert 12 in doc.awareness
    doc.forget_stale_awareness(before=11.0)
    assert doc.awareness == {} and states(b) == [AwarenessEntry(12, 2, b"null")]


def test_a_connection_speaks_only_for_the_client_ids_it_owns() -> None:
    relayed: list[bytes] = []
    limits = AwarenessLimits(max_bytes=1024, max_entries=4, ids_per_connection=2)
    doc = SharedDocument(uuid.uuid4(), starter(), 1, relayed.append, limits)
    victim, attacker, watcher = FakePeer(), FakePeer(), FakePeer()
    for peer in (victim, attacker, watcher):
        doc.add(peer)
    doc.client_awareness(victim, *aware((1, 1, b'{"name":"victim"}')))
    sent = len(watcher.sent)
    # Another connection's id (even with a newer clock, even its removal), too many entries, too many
    # bytes: nothing of it is kept or passed on.
    doc.client_awareness(attacker, *aware((1, 9, b'{"name":"evil"}')))
    doc.client_awareness(attacker, *aware((1, 10, b"null")))
    doc.client_awareness(attacker, *aware(*[(100 + i, 1, b"{}") for i in range(5)]))
    doc.client_awareness(attacker, *aware((7, 1, b'"' + b"x" * 2000 + b'"')))
    assert len(watcher.sent) == sent and doc.awareness[1].state == b'{"name":"victim"}'
    # Its own ids, up to two; of a mixed message only its own entries go on (re-encoded).
    doc.client_awareness(attacker, *aware((1, 11, b'{"name":"evil"}'), (7, 1, b"{}"), (8, 1, b"{}"), (9, 1, b"{}")))
    assert states(watcher) == [AwarenessEntry(7, 1, b"{}"), AwarenessEntry(8, 1, b"{}")]
    assert attacker.awareness_ids == {7, 8} and relayed[-1] == watcher.sent[-1]
    # Another node's client cannot be taken over either; and relayed states never touch local clients'.
    remote = protocol.encode_awareness([AwarenessEntry(50, 1, b"{}"), AwarenessEntry(1, 99, b"null")])
    doc.node_awareness(protocol.decode_awareness(protocol.decode(remote)[1]), remote, now=1.0)
    assert states(watcher) == [AwarenessEntry(50, 1, b"{}")] and doc.awareness[1].state == b'{"name":"victim"}'
    doc.client_awareness(attacker, *aware((50, 2, b'{"name":"evil"}')))
    assert doc.awareness[50].state == b"{}"
    # The attacker leaving removes its own states only; its owner leaving removes the victim's.
    doc.remove(attacker)
    assert states(watcher) == [AwarenessEntry(7, 2, b"null"), AwarenessEntry(8, 2, b"null")]
    assert set(doc.awareness) == {1, 50}
    # Not even the same user's other connection (another tab echoing everyone's states, or a client that
    # reconnected before its old connection was noticed) may write it: that one gets it once it is free.
    again = FakePeer()
    again.user_id = victim.user_id
    doc.add(again)
    doc.client_awareness(again, *aware((1, 2, b'{"name":"victim, again"}')))
    assert again.awareness_ids == set() and doc.awareness[1].state == b'{"name":"victim"}'
    doc.remove(victim)
    assert states(again) == [AwarenessEntry(1, 2, b"null")] and 1 not in doc.awareness
    doc.client_awareness(again, *aware((1, 3, b'{"name":"victim, again"}')))
    assert again.awareness_ids == {1} and doc.awareness[1].state == b'{"name":"victim, again"}'


def test_the_fast_update_path_matches_pycrdts_own() -> None:
    base = starter()
    updates = [keystroke(base, f"{i}") for i in range(5)]
    fast: Doc[Any] = Doc()
    slow: Doc[Any] = Doc()
    apply = update_applier(fast)
    apply(base.get_update())
    slow.apply_update(base.get_update())
    for u in updates:
        apply(u)
        slow.apply_update(u)
    assert str(fast.get("files", type=Map)["main.py"]) == str(slow.get("files", type=Map)["main.py"])
    assert fast.get_state() == slow.get_state()
    with fast.transaction():  # inside an open transaction the public method is used
        apply(keystroke(base, "x"))
    with pytest.raises(ValueError, match="decode"):
        apply(b"\x05garbage")


# --- access rules ------------------------------------------------------------------------------------

CREATOR = uuid.uuid4()


def row(**over: Any) -> dict[str, Any]:
    base = {"created_by": CREATOR, "room_role": None, "member_access": None, "room_access": "edit",
            "room_archived_at": None}  # fmt: skip
    return {**base, **over}


def user(uid: uuid.UUID | None = None, role: str = "student") -> Principal:
    return Principal(id=uid or uuid.uuid4(), role=role, email="x@example.com", display_name="X")


@pytest.mark.parametrize(
    ("r", "who", "expected"),
    [
        (row(), user(CREATOR), (True, True)),
        (row(), user(role="admin"), (True, True)),
        (row(), user(), None),
        (row(room_role="member"), user(), (True, False)),
        (row(room_role="member", room_access="read"), user(), (False, False)),
        (row(room_role="member", room_access="read", member_access="edit"), user(), (True, False)),
        (row(room_role="member", member_access="read"), user(), (False, False)),
        (row(room_role="moderator", room_access="read"), user(), (True, True)),
        (row(member_access="edit"), user(), (True, False)),
        (row(room_role="host", room_archived_at=datetime.now(UTC)), user(), (False, True)),
        (row(room_archived_at=datetime.now(UTC)), user(role="admin"), (True, True)),
    ],
)
def test_access_rules(r: dict[str, Any], who: Principal, expected: tuple[bool, bool] | None) -> None:
    access = access_of(r, who)
    assert (None if access is None else (access.edit, access.manage)) == expected


# --- size caps ---------------------------------------------------------------------------------------


def test_size_caps_refuse_growth_past_them_but_never_a_deletion() -> None:
    doc = starter()
    limits = SizeLimits(document_bytes=64 * 1024, file_bytes=8 * 1024)
    guard = SizeGuard(doc, limits, len(doc.get_update()))
    files = doc.get("files", type=Map)

    def typed(text: str, path: str = "main.py", at: int = 0) -> bytes:
        client: Doc[Any] = Doc()
        client.apply_update(doc.get_update())
        before = client.get_state()
        target = client.get("files", type=Map)
        if path not in target:
            target[path] = Text("")
        target[path].insert(at, text)
        return client.get_update(before)

    def land(update: bytes) -> None:
        guard.admit(update)
        doc.apply_update(update)

    land(typed("a" * 7000))
    with pytest.raises(TooLarge, match=r"main\.py"):
        guard.admit(typed("b" * 2000))  # past the file cap: refused, the document untouched
    assert len(files["main.py"]) == 7000 + len("print(1)\n")
    land(typed("c" * 4000, path="other.py"))  # another file still grows (measured exactly, not by bound)
    assert guard.watching
    deletion: Doc[Any] = Doc()
    deletion.apply_update(doc.get_update())
    before = deletion.get_state()
    del deletion.get("files", type=Map)["main.py"][0:5000]
    shrink = deletion.get_update(before)
    assert not adds_items(shrink)
    land(shrink)
    guard.written(len(doc.get_update()))  # a write measures everything: the watch ends
    assert not guard.watching and guard.largest == 4000  # every file under half the cap
    land(typed("d" * 3000))

    def fill() -> None:
        for i in range(20):
            land(typed("e" * 6000, path=f"f{i}.py"))

    with pytest.raises(TooLarge, match="workspace"):  # the document cap, with every file under its own
        fill()
    assert len(doc.get_update()) <= limits.document_bytes
