"""What refusing Yjs updates with missing dependencies costs per update, on the real editing traces.

Usage::

    .venv/bin/python -m bench.yjs_check [--rounds 5] [--ops N]

Each trace in ``/work/shared/data/editing-traces`` is encoded first, one Yjs update per operation, with
pycrdt (not timed; as ``bench/crdt.py`` does). Then, in alternating rounds, every update is applied to
a fresh document the way the server applies a client's update:

- **without the check**: ``update_applier(doc)(update)`` (what the server did before);
- **with the check**: :func:`collab_ide.updates.check` against the kept state vector, then the same
  apply, then the state vector advanced (what :meth:`SharedDocument.apply` does now).

Printed: CPU microseconds per update (this process's CPU time, so that other load on the machine counts
less) for both (median of the rounds), the difference, and the check alone.
The server's whole cost per operation (websocket, decode, forward, batched log) is ``bench/crdt.py``'s
"server CPU per operation"; the difference here is what the check adds to it.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import statistics
import time
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map, Text

from bench.crdt import FILE, ROOT, encode_trace, machine
from collab_ide import protocol
from collab_ide.document import update_applier
from collab_ide.updates import check, decode_state_vector

TRACES = ROOT.parent / "shared" / "data" / "editing-traces"


def encode(path: Path, limit: int | None) -> list[bytes]:
    """The trace's updates in the order a server receives them (one per operation)."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        trace = json.load(fh)
    if trace.get("kind") != "concurrent":
        frames, _ = encode_trace(path, limit)
        return [protocol.decode(frame)[1] for frame in frames]
    return encode_concurrent(trace, limit)


def encode_concurrent(trace: dict[str, Any], limit: int | None) -> list[bytes]:
    """A concurrent trace: one document per agent, each txn typed on its agent's document once that
    has exactly the txns it was made after (``parents``); the updates in txn order, as a server gets them."""
    agents = trace["numAgents"]
    docs: list[Doc[Any]] = [Doc(client_id=1000 + a) for a in range(agents)]
    updates: list[bytes] = []
    owner: list[int] = []
    local = [True]
    for doc in docs:
        doc.observe(lambda event: updates.append(event.update) if local[0] else None)
    docs[0].get("files", type=Map)[FILE] = Text("")
    owner.append(0)
    seen = [[0] * agents for _ in range(agents)]  # seen[a][b]: how many of b's updates a's doc has
    seen[0][0] = 1
    by_agent: list[list[int]] = [[] for _ in range(agents)]  # update indexes per agent
    by_agent[0].append(0)
    versions: list[list[int]] = []  # per txn: how many updates of each agent it was made after
    for n, txn in enumerate(trace["txns"]):
        if limit is not None and n >= limit:
            break
        agent = txn["agent"]
        version = [0] * agents
        version[0] = 1
        for parent in txn["parents"]:
            version = [max(x, y) for x, y in zip(version, versions[parent], strict=True)]
        doc = docs[agent]
        local[0] = False
        for other in range(agents):
            for i in by_agent[other][seen[agent][other] : version[other]]:
                doc.apply_update(updates[i])
            seen[agent][other] = max(seen[agent][other], version[other])
        local[0] = True
        text = doc.get("files", type=Map)[FILE]
        with doc.transaction():
            for pos, delete, insert in txn["patches"]:
                if delete:
                    del text[pos : pos + delete]
                if insert:
                    text.insert(pos, insert)
        by_agent[agent].append(len(updates) - 1)
        owner.append(agent)
        seen[agent][agent] = len(by_agent[agent])
        version[agent] = len(by_agent[agent])
        versions.append(version)
    return updates


def fresh() -> Doc[Any]:
    doc: Doc[Any] = Doc()
    doc.get("files", type=Map)
    return doc


def without_check(updates: list[bytes]) -> float:
    apply = update_applier(fresh())
    start = time.process_time()
    for update in updates:
        apply(update)
    return time.process_time() - start


def with_check(updates: list[bytes]) -> float:
    doc = fresh()
    apply = update_applier(doc)
    known = decode_state_vector(doc.get_state())
    start = time.process_time()
    for update in updates:
        after = check(update, known)
        apply(update)
        if len(after) > 1:
            known = decode_state_vector(doc.get_state())
        else:
            known.update(after)
    return time.process_time() - start


def check_alone(updates: list[bytes]) -> float:
    known: dict[int, int] = {}
    start = time.process_time()
    for update in updates:
        known.update(check(update, known))
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=Path, default=TRACES)
    parser.add_argument("--ops", type=int, default=None, help="only the first N operations of each trace")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(machine())
    print("| trace | updates | without the check µs/update | with it | added | check alone |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for path in sorted(args.traces.glob("*.json.gz")):
        updates = encode(path, args.ops)
        plain: list[float] = []
        checked: list[float] = []
        alone: list[float] = []
        gc.disable()
        try:
            for _ in range(args.rounds):
                plain.append(without_check(updates))
                checked.append(with_check(updates))
                alone.append(check_alone(updates))
                gc.collect()
        finally:
            gc.enable()
        per = 1e6 / len(updates)
        a, b, c = (statistics.median(x) * per for x in (plain, checked, alone))
        name = path.name.removesuffix(".json.gz")
        print(f"| {name} | {len(updates):,} | {a:.2f} | {b:.2f} | {b - a:+.2f} ({(b - a) / a:+.0%}) | {c:.2f} |")


if __name__ == "__main__":
    main()
