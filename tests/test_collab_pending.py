"""Yjs updates the document cannot integrate whole never reach the CRDT's pending state.

The attack: Yrs (under pycrdt) keeps an update whose structs depend on changes the document does not
have, or that deletes clocks it does not have, as *pending*, in memory, outside every size cap; any
editor could grow the server's memory without bound with such updates, and they would surface in the
document as soon as what they waited for arrived. Now each update is checked against the document's
state vector before it is applied (``collab_ide/updates.py``): one that would be left pending is held
by its connection (bounded by ``STUDYHALL_COLLAB_HELD_MAX_BYTES`` and ``_TIMEOUT_S``) while the client
is asked for what is missing, applied in order if it comes, and otherwise dropped with a close 1008.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from pycrdt import Doc, Map, Text

from collab_ide import protocol
from collab_ide.document import SharedDocument
from collab_ide.documents import DocumentManager, Tuning
from collab_ide.relay import OP_FRAMES, LocalRelay
from collab_ide.store import DocumentLog
from collab_ide.updates import MissingDependencies, check, decode, decode_state_vector
from realtime.app import create_app
from tests.collab_helpers import create_workspace
from tests.conftest import ApiClient, make_settings
from tests.nodes import Node, node_env, register
from tests.test_collab_limits import base_of, stored_files, workspace
from tests.yclient import YClient

TRACES = Path(__file__).resolve().parent / "data" / "editing-traces"  # two real traces, kept in the repo
var = protocol.write_var_uint


# --- crafting updates -------------------------------------------------------------------------------


def local_updates(doc: Doc[Any]) -> list[bytes]:
    """Every update of ``doc`` from now on (its own edits' are what its client would send)."""
    out: list[bytes] = []
    doc.observe(lambda event: out.append(event.update))
    return out


def forger(state: bytes, client_id: int) -> tuple[Doc[Any], Map[Any], list[bytes]]:
    doc: Doc[Any] = Doc(client_id=client_id)
    files = doc.get("files", type=Map)
    doc.apply_update(state)
    return doc, files, local_updates(doc)


def unknown_deletions(client: int, ranges: int, first: int = 0) -> bytes:
    """A delete-only update removing ``ranges`` one-clock ranges of ``client`` from clock ``first``."""
    body = b"".join(var(first + 2 * i) + var(1) for i in range(ranges))
    return b"\x00\x01" + var(client) + var(ranges) + body


def missing_origin(client: int, text: str) -> bytes:
    """One struct of ``client`` inserting ``text`` after an item of a client nobody has seen."""
    raw = text.encode()
    return b"\x01\x01" + var(client) + var(0) + b"\x84" + var(client + 1) + var(10**6) + var(len(raw)) + raw + b"\x00"


# --- the check, against the CRDT --------------------------------------------------------------------


def random_history(rng: random.Random, clients: list[int]) -> list[bytes]:
    """Updates of several editors typing, deleting, adding files and syncing with each other at random."""
    docs: list[Doc[Any]] = [Doc(client_id=c) for c in clients]
    log: list[bytes] = []
    for doc in docs:
        doc.get("files", type=Map)
        doc.observe(lambda event: log.append(event.update))
    for _ in range(50):
        doc = rng.choice(docs)
        files = doc.get("files", type=Map)
        with doc.transaction():
            if rng.random() < 0.1 or not len(files):
                files[rng.choice("abc")] = Text(rng.choice(["", "x", "abc" * 5]))
            else:
                text = files[rng.choice(sorted(files.keys()))]
                if len(text) and rng.random() < 0.4:
                    at = rng.randrange(len(text))
                    del text[at : min(len(text), at + rng.randint(1, 4))]
                else:
                    text.insert(rng.randint(0, len(text)), rng.choice(["a", "bc", "\n"]))
        if rng.random() < 0.5:
            a, b = rng.sample(docs, 2)
            b.apply_update(a.get_update(b.get_state()))
    return log


def shuffled_histories(rng: random.Random, rounds: int, orders: int) -> Iterator[tuple[Doc[Any], list[bytes]]]:
    """``rounds`` random histories of three editors (32- and 53-bit client ids in turn), each given ``orders``
    times as a random subset in a random order, with an empty document to apply them to."""
    for round_ in range(rounds):
        ids = [rng.randrange(1, 2**53) if round_ % 2 else rng.randrange(1, 2**32) for _ in range(3)]
        log = random_history(rng, ids)
        for _ in range(orders):
            doc: Doc[Any] = Doc()
            doc.get("files", type=Map)
            yield doc, rng.sample(log, rng.randint(1, len(log)))


def test_the_check_accepts_exactly_what_the_crdt_integrates_whole() -> None:
    """Random subsets of random histories, in random orders: an accepted update is integrated whole
    (the state vector becomes what the check said); a refused one would have left something pending."""
    rng = random.Random(12)
    accepted = refused = 0
    for doc, updates in shuffled_histories(rng, 25, 8):
        known: dict[int, int] = {}
        for update in updates:
            shape = decode(update)
            try:
                after = check(update, known)
            except MissingDependencies:
                refused += 1
                probe: Doc[Any] = Doc()
                probe.apply_update(doc.get_update())
                probe.apply_update(update)
                state = decode_state_vector(probe.get_state())
                ends = {c: b[-1][0] + b[-1][1] for c, b in shape.clients if b}
                pending_structs = any(state.get(c, 0) < end for c, end in ends.items())
                pending_deletes = any(k + n > state.get(c, 0) for c, k, n in shape.deletes if n)
                already_had = all(k + n <= known.get(c, 0) for c, b in shape.clients for k, n, _, _ in b)
                assert pending_structs or pending_deletes or already_had, (shape, known)
                continue
            accepted += 1
            doc.apply_update(update)
            known = decode_state_vector(doc.get_state())
            assert all(known.get(c, 0) == clock for c, clock in after.items()), (shape, after, known)
    assert accepted > 1000 and refused > 1000


def typed_traces(
    edits: int, between: Callable[[int, Text], None] | None = None
) -> Iterator[tuple[str, list[bytes], Text]]:
    """Each sequential trace in ``tests/data`` typed by one editor, one transaction per edit (the first
    ``edits``): its name, the updates its client sent and the text; ``between(i, text)`` runs after edit
    ``i``. (The concurrent trace is replayed with one document per agent by bench/yjs_check.py.)"""
    paths = sorted(TRACES.glob("*.json.gz"))
    assert paths, f"no traces in {TRACES}"
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            trace = json.load(fh)
        if trace.get("kind") == "concurrent":
            continue
        source: Doc[Any] = Doc()
        updates = local_updates(source)
        source_files = source.get("files", type=Map)
        source_files["f"] = Text(trace["startContent"])
        text = source_files["f"]
        for i, txn in enumerate(trace["txns"][:edits]):
            with source.transaction():
                for pos, delete, insert in txn["patches"]:
                    if delete:
                        del text[pos : pos + delete]
                    if insert:
                        text.insert(pos, insert)
            if between is not None:
                between(i, text)
        yield path.name, updates, text


def test_every_update_of_the_real_editing_traces_passes_the_check() -> None:
    for name, updates, text in typed_traces(4000):
        target: Doc[Any] = Doc()
        known: dict[int, int] = {}
        for update in updates:
            known.update(check(update, known))
            target.apply_update(update)
        assert known == decode_state_vector(target.get_state()), name
        assert str(target.get("files", type=Map)["f"]) == str(text)


def test_relayed_updates_ahead_of_their_dependencies_wait_and_ask_for_the_rest() -> None:
    """Scaled out, one node's message can overtake another's: another node's update is applied even
    then (nodes check their own clients), the node asks for what is missing, and it settles."""
    source: Doc[Any] = Doc(client_id=7)
    files = source.get("files", type=Map)
    updates = local_updates(source)
    files["a.py"] = Text("one")
    files["a.py"].insert(3, " two")
    server: Doc[Any] = Doc()
    server.get("files", type=Map)
    doc = SharedDocument(uuid.uuid4(), server, 0, lambda frame: None)
    first, second = updates
    assert doc.apply_remote(second, protocol.update_message(second), 0.0) is True  # a gap: ask for a resync
    assert doc.awaited and "a.py" not in files_of_doc(server)
    assert doc.apply_remote(first, protocol.update_message(first), 0.0) is False
    assert doc.awaited == {} and files_of_doc(server)["a.py"] == "one two"
    assert doc.known == decode_state_vector(server.get_state())


class RecordingRelay(LocalRelay):
    """A relay that remembers the HELLOs it was asked to send."""

    def __init__(self) -> None:
        self.hellos: list[bytes] = []

    def hello(self, workspace_id: uuid.UUID, state_vector: bytes) -> None:
        self.hellos.append(state_vector)


async def test_a_node_whose_relayed_update_overtook_its_dependency_asks_the_others_once_a_second() -> None:
    source: Doc[Any] = Doc(client_id=9)
    files = source.get("files", type=Map)
    updates = local_updates(source)
    files["a.py"] = Text("x")
    for i in range(3):
        files["a.py"].insert(1 + i, str(i))
    now = [100.0]
    relay = RecordingRelay()
    manager = DocumentManager(DocumentLog(None), relay, Tuning(), clock=lambda: now[0])
    server: Doc[Any] = Doc()
    server.get("files", type=Map)
    wid = uuid.uuid4()
    doc = manager.docs[wid] = SharedDocument(wid, server, 0, lambda frame: None)

    def relayed(*parts: bytes) -> None:
        manager._deliver(wid, OP_FRAMES, protocol.join_var_bytes([protocol.update_message(p) for p in parts]))

    relayed(updates[2])
    relayed(updates[3])  # still waiting: not asked again within the second
    assert len(relay.hellos) == 1 and decode_state_vector(relay.hellos[0]) == {}
    now[0] += 1.5
    relayed(updates[0], updates[1])  # the answer: everything settles
    assert doc.awaited == {} and files_of_doc(server)["a.py"] == "x012" and len(relay.hellos) == 1


def files_of_doc(doc: Doc[Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in doc.get("files", type=Map).items()}


# --- through the server -----------------------------------------------------------------------------


@pytest.fixture
async def quick(aiohttp_client: Any, database_url: str, tmp_path: Path) -> ApiClient:
    """An app whose connections hold an out-of-order update for at most half a second."""
    settings = make_settings(database_url, tmp_path, collab_held_timeout_s=0.5)
    return ApiClient(await aiohttp_client(create_app(settings)))


@pytest.fixture
async def clients() -> AsyncIterator[list[YClient]]:
    made: list[YClient] = []
    yield made
    for client in made:
        await client.close()


async def connected(clients: list[YClient], api: ApiClient, wid: str, token: str) -> YClient:
    client = YClient()
    clients.append(client)
    await client.connect(base_of(api), wid, token)
    return await client.wait_synced()


async def test_updates_that_depend_on_what_the_document_lacks_are_refused_and_never_surface(
    quick: ApiClient, clients: list[YClient]
) -> None:
    owner = await quick.user()
    wid = await workspace(quick, owner, **{"main.py": "print(1)\n"})
    watcher = await connected(clients, quick, wid, owner.token)
    state = watcher.doc.get_update()
    # A forger makes two edits but sends only the second (it continues from the first)...
    _, f_files, f_updates = forger(state, 1111)
    f_files["main.py"].insert(0, "AAA")
    f_files["main.py"].insert(3, "BBB")
    first, second = f_updates
    # ... another inserts inside the first one's text, which the server has not seen ...
    g_doc, g_files, g_updates = forger(state, 2222)
    g_doc.apply_update(first)
    g_files["main.py"].insert(2, "CCC")
    inside = g_updates[-1]
    # ... and a third deletes the first one's clocks, and text after an item nobody has.
    attacker = await connected(clients, quick, wid, owner.token)
    for update in (second, inside, unknown_deletions(1111, 3), missing_origin(3333, "DDD")):
        attacker.send_raw(protocol.update_message(update))
    code, reason = await attacker.wait_closed()
    assert code == 1008 and "depends on changes" in reason
    # What they waited for comes: only it appears; nothing of theirs was kept to surface now.
    filler = await connected(clients, quick, wid, owner.token)
    filler.send_raw(protocol.update_message(first))
    watcher.edit("main.py", len(watcher.text("main.py")), insert="# end\n")
    try:
        await watcher.wait_until(lambda: watcher.text("main.py") == "AAAprint(1)\n# end\n", within=5)
    except TimeoutError:
        raise AssertionError((watcher.text("main.py"), filler.close_code, filler.close_reason)) from None
    probe = await connected(clients, quick, wid, owner.token)
    assert probe.text("main.py") == "AAAprint(1)\n# end\n"
    assert (await stored_files(quick, wid))["main.py"] == "AAAprint(1)\n# end\n"
    assert watcher.close_code is None and filler.close_code is None


async def test_an_update_sent_before_what_it_depends_on_is_held_and_applied_in_order(
    quick: ApiClient, clients: list[YClient]
) -> None:
    owner = await quick.user()
    wid = await workspace(quick, owner, **{"main.py": ""})
    watcher = await connected(clients, quick, wid, owner.token)
    _, files, updates = forger(watcher.doc.get_update(), 4444)
    for word in ("one ", "two ", "three"):
        text = files["main.py"]
        text.insert(len(text), word)
    sender = await connected(clients, quick, wid, owner.token)
    for update in (updates[2], updates[1], updates[0]):
        sender.send_raw(protocol.update_message(update))
    await watcher.wait_until(lambda: watcher.text("main.py") == "one two three")
    await asyncio.sleep(0)  # (nothing to wait for: the sender must simply still be connected)
    assert sender.close_code is None


# --- memory, in a server process ----------------------------------------------------------------------


@pytest.fixture
def server(database_url: str) -> Iterator[Node]:
    logs = Path(tempfile.mkdtemp(prefix="studyhall-pending-"))
    env = node_env(database_url, "", logs / "data")
    env.pop("STUDYHALL_REDIS_URL")
    env.update(STUDYHALL_COLLAB_HELD_TIMEOUT_S="0.5")
    node = Node("pending", env, logs)
    try:
        node.wait_ready()
        yield node
    finally:
        node.stop()
        shutil.rmtree(logs, ignore_errors=True)


def rss_mib(node: Node) -> float:
    return psutil.Process(node.proc.pid).memory_info().rss / 2**20


async def test_thousands_of_updates_with_gaps_leave_memory_and_the_document_as_they_were(server: Node) -> None:
    """2,000 small updates with gaps, and 150 large ones (structs after unknown items, deletions of
    unknown clocks: about 15 MB): before, the server kept every one (+49 MiB of RSS; now +3 MiB)."""
    user = await register(server.url)
    wid = (await create_workspace(server.url, user, files={"main.py": "print(1)\n"}, entry="main.py"))["id"]
    watcher = YClient()
    await watcher.connect(server.url, wid, user.token)
    await watcher.wait_synced()
    before = rss_mib(server)
    refused = 0
    try:
        small = [missing_origin(10_000 + i, "x" * 40) for i in range(2000)]
        large = [unknown_deletions(20_000 + i, 24_000) for i in range(75)]
        large += [missing_origin(30_000 + i, "y" * 100_000) for i in range(75)]
        batches = [small[i : i + 200] for i in range(0, len(small), 200)] + [[u] for u in large]
        for batch in batches:
            attacker = YClient()
            try:
                await attacker.connect(server.url, wid, user.token)
                for update in batch:
                    attacker.send_raw(protocol.update_message(update))
                code, _ = await attacker.wait_closed()
                assert code == 1008
                refused += 1
            finally:
                await attacker.close()
        watcher.edit("main.py", 0, insert="# still here\n")
        probe = YClient()
        try:
            await probe.connect(server.url, wid, user.token)
            await probe.wait_synced()
            await probe.wait_until(lambda: probe.text("main.py") == "# still here\nprint(1)\n")
            assert sorted(probe.files.keys()) == ["main.py"]
        finally:
            await probe.close()
    finally:
        await watcher.close()
    grown = rss_mib(server) - before
    assert refused == len(batches)
    assert grown < 20, f"the server grew by {grown:.0f} MiB"
