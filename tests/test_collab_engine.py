"""The compiled ``/yjs`` engine (``collab_ide/_engine.c``, the default where it is built) against the Python
path it stands in for.

The engine forwards a keystroke to the other editors *before* Python sees it, so its own check of the
update must never take what :func:`collab_ide.updates.check` refuses: a refused update would reach the
other clients, and an update the CRDT cannot integrate whole would sit in its pending state. The first
tests compare the two checks on random histories in random orders (updates ahead of their dependencies,
deletions of what the document lacks), on the real editing traces, on non-ASCII text and on byte-level
mutations of all of them: whatever the engine takes, the Python check takes with the same result, and
pycrdt integrates whole. They also check that the engine takes nearly every real keystroke (a check that
took nothing would be safe and useless).

Everything else the engine does (frames, limits, close codes, rights, awareness, held updates, scale-out)
is what the rest of ``tests/test_collab*.py`` and ``tests/test_rights*.py`` check: the suite runs them on
the engine, and ``scripts/test`` runs them again on the Python path (``STUDYHALL_YJS_ENGINE=python``).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

from pycrdt import Doc, Map, Text

from collab_ide import protocol
from collab_ide.engine import compiled
from collab_ide.handlers import DOCUMENTS, YJS_ENGINE
from collab_ide.store import DocumentLog
from collab_ide.updates import check, decode_state_vector
from core_api.context import CORE
from realtime.app import create_app
from tests.conftest import ApiClient, make_settings
from tests.test_collab_limits import base_of, stored_files, workspace
from tests.test_collab_pending import files_of_doc, shuffled_histories, typed_traces
from tests.yclient import YClient

var = protocol.write_var_uint


def state_vector(known: dict[int, int]) -> bytes:
    return var(len(known)) + b"".join(var(c) + var(k) for c, k in known.items())


class Tally:
    def __init__(self) -> None:
        self.fast = self.python_only = self.both_refused = 0

    def compare(self, update: bytes, known: dict[int, int], doc: Doc[Any] | None = None) -> bool:
        """Both checks of ``update`` against ``known``; True if the Python check accepts it."""
        fast = compiled().fast_check(update, state_vector(known))
        try:
            after = check(update, known)
        except ValueError:  # malformed, or missing dependencies
            assert fast is None, (update.hex(), known, fast)
            self.both_refused += 1
            return False
        if fast is None:
            self.python_only += 1
            return True
        client, end, adds = fast
        assert after == ({client: end} if adds else {}), (update.hex(), known, fast, after)
        if doc is not None:  # and the CRDT integrates what the engine takes whole
            probe: Doc[Any] = Doc()
            probe.apply_update(doc.get_update())
            probe.apply_update(update)
            state = decode_state_vector(probe.get_state())
            assert all(state.get(c, 0) >= k for c, k in after.items()), (update.hex(), after, state)
            merged = {**known, **{c: max(known.get(c, 0), k) for c, k in after.items()}}
            assert state == {c: k for c, k in merged.items() if k}, (update.hex(), state, merged)
        self.fast += 1
        return True


def mutations(rng: random.Random, update: bytes, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        b = bytearray(update)
        how = rng.randrange(5)
        if how == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif how == 1 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif how == 2:
            del b[rng.randrange(len(b) + 1) :]
        elif how == 3:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif b:
            del b[rng.randrange(len(b))]
        out.append(bytes(b))
    return out


def test_the_engines_check_takes_only_what_the_python_check_accepts_in_any_order() -> None:
    """Random histories of three editors (32- and 53-bit client ids), random subsets in random orders,
    each update and a few mutations of it checked by both against the document as it is."""
    rng = random.Random(7)
    tally = Tally()
    for doc, updates in shuffled_histories(rng, 40, 6):
        known: dict[int, int] = {}
        for update in updates:
            for mutated in mutations(rng, update, 3):
                tally.compare(mutated, known, doc)
            if tally.compare(update, known, doc):
                doc.apply_update(update)
                known = decode_state_vector(doc.get_state())
    assert tally.fast > 800 and tally.python_only > 800 and tally.both_refused > 10_000, vars(tally)


def test_the_engine_takes_nearly_every_keystroke_of_the_real_traces_and_their_unicode() -> None:
    """Each trace typed by one editor, one transaction per edit (as the official client sends them), plus
    edits with accents and CJK (UTF-8 longer than UTF-16), and mutations of every 25th update. (Emoji,
    two UTF-16 units each, are typed in the test through a server below and in the unit test after it.)"""
    rng = random.Random(3)

    def accents(i: int, text: Text) -> None:
        if i % 50 == 0:  # (no emoji here: after a surrogate pair pycrdt 0.14 writes items no Yrs integrates)
            with text.doc.transaction():
                text.insert(rng.randrange(len(text) + 1), rng.choice(["é", "日本語", "aéb", "ß\n"]))

    for name, updates, _ in typed_traces(1500, accents):
        tally = Tally()
        target: Doc[Any] = Doc()
        known: dict[int, int] = {}
        for i, update in enumerate(updates):
            if i % 25 == 0:
                for mutated in mutations(rng, update, 8):
                    tally.compare(mutated, known, target)
            assert tally.compare(update, known, None), (name, i)
            target.apply_update(update)
            known = decode_state_vector(target.get_state())
        assert tally.fast >= 0.95 * len(updates), (name, vars(tally), len(updates))


def test_malformed_text_and_out_of_range_numbers_are_left_to_python() -> None:
    """Shapes the engine reads but must not take: text that is not UTF-8, integers longer than lib0
    writes, a delete range that wraps around, a text item without an origin (Python's long path)."""
    known = {5: 10, 6: 3}
    sv = state_vector(known)
    good = b"\x01\x01" + var(5) + var(10) + b"\x84" + var(5) + var(9) + var(1) + b"x" + b"\x00"
    assert compiled().fast_check(good, sv) == (5, 11, True)
    emoji = b"\x01\x01" + var(5) + var(10) + b"\x84" + var(5) + var(9) + var(4) + "😀".encode() + b"\x00"
    assert compiled().fast_check(emoji, sv) == (5, 12, True)  # two UTF-16 units, as Yjs counts
    for bad in [
        b"\x01\x01" + var(5) + var(10) + b"\x84" + var(5) + var(9) + var(2) + b"\xc3\x28" + b"\x00",  # not UTF-8
        b"\x01\x01" + var(5) + var(10) + b"\x84" + var(5) + var(9) + var(1) + b"\xed" + b"\x00",  # cut short
        b"\x01\x01" + b"\xff" * 9 + b"\x01" + var(10) + b"\x84" + var(5) + var(9) + var(1) + b"x\x00",  # too long
        b"\x00\x01" + var(5) + var(1) + var(2**63) + var(2**63),  # wraps around
        b"\x01\x01" + var(5) + var(10) + b"\x04" + var(0) + b"\x01f" + var(1) + b"x" + b"\x00",  # no origin
        b"\x01\x01" + var(5) + var(11) + b"\x84" + var(5) + var(9) + var(1) + b"x" + b"\x00",  # a gap before it
        b"\x01\x01" + var(5) + var(10) + b"\x84" + var(7) + var(0) + var(1) + b"x" + b"\x00",  # unknown origin
        good + b"\x00",  # trailing bytes
    ]:
        assert compiled().fast_check(bad, sv) is None, bad.hex()


# --- through a server -------------------------------------------------------------------------------


async def test_keystrokes_reach_the_other_editors_through_the_engine_and_are_stored(api: ApiClient) -> None:
    """Two editors type; the engine forwards nearly all of it without Python, and the server's copy and
    the log end up with the same text as both editors."""
    assert YJS_ENGINE in api.app, "the engine is the default where it is built"
    engine = api.app[YJS_ENGINE]
    alice = await api.user()
    wid = await workspace(api, alice, **{"main.py": "print('hi')\n"})
    a, b = YClient(), YClient()
    try:
        for c in (a, b):
            await c.connect(base_of(api), wid, alice.token)
            await c.wait_synced()
        await a.wait_until(lambda: a.text("main.py") != "")
        await b.wait_until(lambda: b.text("main.py") != "")
        before = engine.engine.stats()["fast_updates"]
        a.edit("main.py", 7, delete=2, insert="yo")  # a replacement: one update that inserts and deletes
        for i in range(300):
            editor = a if i % 2 else b
            editor.edit("main.py", 0, insert="ab"[i % 2])
            if i % 50 == 0:  # a deletion, and text of 2- and 4-byte UTF-8 (1 and 2 UTF-16 units)
                editor.edit("main.py", 0, delete=1)
                editor.edit("main.py", 0, insert="é")
                editor.edit("main.py", 0, insert="😀")
            await asyncio.sleep(0)
        await b.wait_until(lambda: b.text("main.py") == a.text("main.py"))
        await a.wait_until(lambda: a.text("main.py") == b.text("main.py"))
        expected = a.text("main.py")
        assert len(expected) > 300 and expected.endswith("print('yo')\n"), expected
        assert engine.engine.stats()["fast_updates"] - before >= 300
        doc = api.app[DOCUMENTS].docs[uuid.UUID(wid)]
        for _ in range(100):  # the engine hands Python its batches every few milliseconds
            if str(doc.doc.get("files", type=Map)["main.py"]) == expected:
                break
            await asyncio.sleep(0.02)
        assert str(doc.doc.get("files", type=Map)["main.py"]) == expected
        assert (await stored_files(api, wid))["main.py"] == expected
    finally:
        await a.close()
        await b.close()


async def test_what_was_typed_just_before_a_shutdown_is_in_the_log(
    aiohttp_client: Any, database_url: str, tmp_path: Any
) -> None:
    """The engine's last batch is handed to Python and written when the server stops, however soon."""
    app = create_app(make_settings(database_url, tmp_path))
    client = await aiohttp_client(app)
    api = ApiClient(client)
    alice = await api.user()
    wid = await workspace(api, alice, **{"main.py": ""})
    editor = YClient()
    try:
        await editor.connect(base_of(api), wid, alice.token)
        await editor.wait_synced()
        await editor.wait_until(lambda: "main.py" in editor.files)
        for i in range(200):
            editor.edit("main.py", i, insert="x")
        for _ in range(100):  # all on the wire (the engine holds what came in for its next batch)
            if not editor._outbox:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)
        pool = app[CORE].pool
        await client.close()  # the app's shutdown: hang up, drain the engine, write the log
        assert (await editor.wait_closed())[0] == 1001
    finally:
        await editor.close()
    del pool
    check_app = create_app(make_settings(database_url, tmp_path))
    check_client = await aiohttp_client(check_app)
    try:
        loaded = await DocumentLog(check_app[CORE].pool).load(uuid.UUID(wid))
        assert loaded is not None
        assert files_of_doc(loaded.doc)["main.py"] == "x" * 200
    finally:
        await check_client.close()
