"""Random payloads at every Socket.IO event: each gets an ack, none an ``internal`` one, nothing falls over.

The events come from ``realtime.app.EVENTS.specs`` when this module is collected, so an event added
later is fuzzed without touching this file. For each event hypothesis throws, through one real
``socketio.AsyncClient`` connection to a live server:

- payloads shaped by the event's own pydantic model (its JSON schema), with ids of a real room and a
  real message as well as unknown ones, strings at and past their length limits, numbers past their
  bounds, and one field swapped for junk, dropped, or an unknown one added;
- anything else JSON can carry: wrong types, nested junk, huge strings, binary attachments, non-dict
  payloads, several arguments and no payload at all;

and unknown event names get the same treatment. Every call must be answered within a few seconds by
``{ok: true, ...}`` or ``{ok: false, error: {code, message}}`` with a known code other than
``internal``; afterwards the connection, a new connection and the node still answer, and nothing was
logged at error level.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import socketio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_api.auth import AUTH, RegisterIn, register
from core_api.context import CORE
from core_api.errors import ErrorCode
from realtime.app import EVENTS
from realtime.sockets import MAX_PACKET_BYTES
from tests.conftest import make_settings
from tests.live import LiveServer
from tests.nodes import QuietLiveServer, User, rest

ACK_WITHIN_S = 5.0
# Past the server's packet limit the connection is dropped (tested on its own); payloads stay below it.
MAX_PACKET = MAX_PACKET_BYTES - 4096
CODES = {code.value for code in ErrorCode} - {ErrorCode.INTERNAL.value}
EVENT_NAMES = sorted(EVENTS.specs)
NO_PAYLOAD = object()  # emit the event with no argument at all


@dataclass
class Several:
    """Emit the event with several arguments."""

    args: tuple[Any, ...]


class Marker(str):
    """Stands for an id only known at run time (the real room, the real message)."""


REAL_ROOM = Marker("<real room id>")
REAL_MESSAGE = Marker("<real message id>")


# --- strategies ------------------------------------------------------------------------------------

huge_strings = st.builds(
    lambda piece, n: piece * n,
    st.sampled_from(["a", "é", "😀", "\x00", " ", "\n", "<script>", "' OR 1=1 --", "\u202e"]),
    st.integers(1_000, MAX_PACKET_BYTES // 16),  # escaped emoji take 12 bytes each
)
texts = st.text(max_size=40) | huge_strings
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
    | st.uuids().map(str)
    | st.just(REAL_ROOM)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
junk = st.one_of(json_values, json_values, json_values, st.binary(max_size=64))  # binary: an attachment


def for_schema(schema: dict[str, Any], defs: dict[str, Any], name: str = "") -> st.SearchStrategy[Any]:
    """Values that fit a JSON schema (a pydantic model's), leaning on its edges."""
    if "$ref" in schema:
        return for_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, name)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return st.one_of([for_schema(s, defs, name) for s in schema[key]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | texts
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: for_schema(v, defs, k) for k, v in props.items() if k in required},
            optional={k: for_schema(v, defs, k) for k, v in props.items() if k not in required},
        )
    if kind == "string":
        if schema.get("format") == "uuid":
            known = [REAL_ROOM] if "room" in name else [REAL_MESSAGE] if "message" in name else []
            return (st.sampled_from(known) | st.uuids().map(str)) if known else st.uuids().map(str)
        longest = schema.get("maxLength", 64)
        shortest = schema.get("minLength", 0)
        return (
            st.text(min_size=shortest, max_size=min(longest, 50))
            | st.builds(lambda c, extra: c * (longest + extra), st.sampled_from("aé😀\x00 "), st.sampled_from([0, 1]))
            | st.just("")
        )
    if kind == "integer":
        low, high = schema.get("minimum", -(2**63)), schema.get("maximum", 2**63)
        return st.integers(low, high) | st.sampled_from([low - 1, low, high, high + 1, 0, -1, 2**64])
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans() | st.sampled_from([0, 1, "true"])
    if kind == "array":
        return st.lists(for_schema(schema.get("items", {}), defs, name), max_size=5)
    if kind == "null":
        return st.none()
    return json_values


def payloads(event: str) -> st.SearchStrategy[Any]:
    anything = (
        junk
        | st.dictionaries(st.text(max_size=12), junk, max_size=5)
        | st.just(NO_PAYLOAD)
        | st.lists(junk, min_size=2, max_size=3).map(lambda xs: Several(tuple(xs)))
    )
    spec = EVENTS.specs.get(event)
    if spec is None:
        return anything
    schema = spec.payload.model_json_schema()
    shaped = for_schema(schema, schema.get("$defs", {}))
    keys = sorted(schema.get("properties", {})) or ["x"]

    def swap(pair: tuple[dict[str, Any], tuple[str, Any]]) -> dict[str, Any]:
        base, (key, value) = pair
        return {**base, key: value}

    def drop(pair: tuple[dict[str, Any], str]) -> dict[str, Any]:
        base, key = pair
        return {k: v for k, v in base.items() if k != key}

    return st.one_of(  # the model-shaped ones get the larger share: they reach the handlers
        shaped,
        shaped,
        shaped,
        st.tuples(shaped, st.tuples(st.sampled_from(keys), junk)).map(swap),  # one field of the wrong kind
        st.tuples(shaped, st.tuples(st.text(max_size=12), junk)).map(swap),  # an unknown field
        st.tuples(shaped, st.sampled_from(keys)).map(drop),  # a field missing
        st.dictionaries(st.sampled_from(keys), junk, max_size=len(keys)),
        anything,
    )


unknown_names = (
    st.text(max_size=30)
    | st.sampled_from(["room:", "chat:", "room:JOIN", "chat:send ", ":", "**", "message", "error", "connect_error"])
    | st.integers()
).filter(lambda name: name not in EVENTS.specs)


# --- the server and the one connection -----------------------------------------------------------


@dataclass
class Target:
    live: LiveServer
    client: socketio.AsyncClient
    token: str
    room_id: str | None = None
    message_id: str | None = None
    errors: list[logging.LogRecord] = field(default_factory=list)

    def resolve(self, value: Any) -> Any:
        """The payload with the run-time markers replaced by the real ids."""
        if value is REAL_ROOM or value == REAL_ROOM:
            return self.room_id or str(uuid.uuid4())
        if value is REAL_MESSAGE or value == REAL_MESSAGE:
            return self.message_id or str(uuid.uuid4())
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return value

    def call(self, event: Any, payload: Any) -> Any:
        if payload is NO_PAYLOAD:
            data = None
        elif isinstance(payload, Several):
            data = tuple(self.resolve(a) for a in payload.args)
        else:
            data = self.resolve(payload)
        return self.live.run(self.client.call(event, data, timeout=ACK_WITHIN_S))


class ErrorRecords(logging.Handler):
    """Error records logged on the server's thread (not, say, another test's loop being collected)."""

    def __init__(self, sink: list[logging.LogRecord], thread: int) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink
        self.thread = thread

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread and not record.getMessage().startswith("Task was destroyed"):
            self.sink.append(record)


async def current_thread() -> int:
    return threading.get_ident()


@pytest.fixture(scope="module")
def target(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    live = QuietLiveServer(make_settings(database_url, tmp_path_factory.mktemp("fuzz"))).start()
    app = live.app
    email = f"fuzz-{uuid.uuid4().hex[:10]}@example.com"
    account = RegisterIn(email=email, password="correct horse battery staple", display_name="fuzzer")
    row = live.run(register(app[CORE], app[AUTH], account, role="student"))
    token = app[AUTH].tokens.issue(row["id"], "student")
    client = socketio.AsyncClient(reconnection=False)
    live.run(client.connect(live.url, auth={"token": token}, transports=["websocket"], wait_timeout=10))
    target = Target(live, client, token)
    if "room:join" in EVENTS.specs:  # a real room (the fuzzer hosts it) and, with chat, a real message
        user = User(str(row["id"]), email, "fuzzer", token)
        body = {"name": "fuzz", "kind": "study", "visibility": "public"}
        status, room = live.run(rest(live.url, "POST", "/rooms", user, json=body))
        assert status == 201, room
        target.room_id = room["id"]
        assert target.call("room:join", {"room_id": room["id"]})["ok"] is True
        if "chat:send" in EVENTS.specs:
            ack = target.call("chat:send", {"room_id": room["id"], "body": "first", "client_msg_id": "fuzz-1"})
            assert ack["ok"] is True, ack
            target.message_id = ack["message"]["id"]
    handler = ErrorRecords(target.errors, live.run(current_thread()))
    logging.getLogger().addHandler(handler)
    try:
        yield target
    finally:
        logging.getLogger().removeHandler(handler)
        if client.connected:
            live.run(client.disconnect())
        live.stop()


def check_ack(event: Any, payload: Any, ack: Any) -> None:
    where = f"{event!r} with {json.dumps(payload, default=repr)[:300]}"
    assert isinstance(ack, dict), f"{where}: ack is not an object: {ack!r}"
    if ack.get("ok") is True:
        return
    assert ack.get("ok") is False, f"{where}: ack without ok: {ack!r}"
    error = ack.get("error")
    assert isinstance(error, dict), f"{where}: error ack without error: {ack!r}"
    assert isinstance(error.get("message"), str) and error["message"], f"{where}: no message: {ack!r}"
    assert error.get("code") in CODES, f"{where}: code {error.get('code')!r}: {ack!r}"


def fits(payload: Any) -> bool:
    """Whether the packet stays under the server's size limit (past it the connection is dropped by
    design: tested on its own below)."""
    if payload is NO_PAYLOAD:
        return True
    if isinstance(payload, Several):
        payload = list(payload.args)
    return len(json.dumps(payload, default=lambda b: "x" * (2 * len(b)))) < MAX_PACKET


FUZZ = settings(
    max_examples=int(os.environ.get("STUDYHALL_FUZZ_EXAMPLES", "40")),  # per event; raise it for a deeper run
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("event", [*EVENT_NAMES, "<unknown events>"])
@FUZZ
@given(data=st.data())
def test_every_event_answers_every_payload(target: Target, event: str, data: st.DataObject) -> None:
    name: Any = data.draw(unknown_names, label="event") if event == "<unknown events>" else event
    payload = data.draw(payloads(name if isinstance(name, str) else "").filter(fits), label="payload")
    try:
        ack = target.call(name, payload)
    except socketio.exceptions.TimeoutError:
        pytest.fail(f"no ack within {ACK_WITHIN_S}s for {name!r} with {json.dumps(payload, default=repr)[:300]}")
    check_ack(name, payload, ack)
    assert target.client.connected, f"the connection dropped after {name!r}"


# What a client can put in the CONNECT packet: an object, or (not per the protocol, but sendable) another
# JSON value. Bare numbers are left out: python-socketio's encoding of CONNECT + number ("01.5") reads as
# a packet id, which its own decoder then chokes on; no official client can send one.
auth_payloads = st.one_of(
    st.dictionaries(st.just("token"), json_values),
    st.dictionaries(st.text(max_size=12), json_values, max_size=4),
    st.just(NO_PAYLOAD),
    texts,
    st.lists(json_values, max_size=3),
    st.booleans(),
)


@FUZZ
@given(auth=auth_payloads)
def test_the_handshake_refuses_any_bad_auth_with_unauthorized(target: Target, auth: Any) -> None:
    async def attempt() -> Any:
        client = socketio.AsyncClient(reconnection=False)
        refused: asyncio.Queue[Any] = asyncio.Queue()
        client.on("connect_error", refused.put)
        try:
            await client.connect(
                target.live.url,
                auth=None if auth is NO_PAYLOAD else target.resolve(auth),
                transports=["websocket"],
                wait_timeout=ACK_WITHIN_S,
            )
        except socketio.exceptions.ConnectionError:
            try:
                return await asyncio.wait_for(refused.get(), ACK_WITHIN_S)
            except TimeoutError:
                return "dropped"  # the connection closed without a CONNECT_ERROR
        await client.disconnect()
        return "connected"

    resolved = None if auth is NO_PAYLOAD else target.resolve(auth)
    refused = target.live.run(attempt())
    assert refused != "connected", f"connected with auth {auth!r}"
    if len(json.dumps(resolved)) > MAX_PACKET_BYTES - 16:
        # Over the packet limit the server does not read the CONNECT at all: it closes the websocket (1009).
        assert refused == "dropped" or refused["data"] == {"code": "unauthorized"}, refused
        return
    assert refused != "dropped", f"no CONNECT_ERROR for auth of {len(json.dumps(resolved))} bytes"
    assert refused["data"] == {"code": "unauthorized"}, refused
    assert isinstance(refused["message"], str) and refused["message"]


def test_an_oversized_packet_drops_only_its_own_connection(target: Target) -> None:
    async def oversized() -> Any:
        client = socketio.AsyncClient(reconnection=False)
        dropped = asyncio.Event()
        client.on("disconnect", lambda *_: dropped.set())
        await client.connect(target.live.url, auth={"token": target.token}, transports=["websocket"])
        try:
            try:
                ack = await client.call("no:such", {"body": "x" * MAX_PACKET_BYTES}, timeout=1)
            except socketio.exceptions.TimeoutError:
                ack = None
            await asyncio.wait_for(dropped.wait(), ACK_WITHIN_S)
            return ack
        finally:
            if client.connected:
                await client.disconnect()

    assert target.live.run(oversized()) is None  # dropped by the server, never answered
    check_ack("no:such", {}, target.call("no:such", {}))  # the fuzzing connection is untouched


# Malformed Engine.IO / Socket.IO frames, as a hand-written client could send them. ("1", Engine.IO's
# close, is left out: after it the server rightly stops answering that connection.)
RAW_FRAMES: list[str | bytes] = [
    "42[", "42{}", "42[]", "42[1.5]", "42[null]", "42[{}]", "42[[1]]", "41.5", "4x", "9", "", "4", "42",
    "421", '42abc["x"]', '42/nope,["x"]', "40/nope,{}", "40", "43[]", "431[]", "44", "6", "5", "3", "2probe",
    '45-["x",{"_placeholder":true,"num":0}]', b"\x00\x01", b"", '42["no:such",' + "[" * 5000 + "]" * 5000 + "]",
]  # fmt: skip


@pytest.mark.parametrize("frame", RAW_FRAMES, ids=[repr(f)[:24] for f in RAW_FRAMES])
def test_a_malformed_frame_leaves_its_connection_answering_or_closed(target: Target, frame: str | bytes) -> None:
    """Over a raw websocket: after the bad frame, a valid event is still acked, or the server closed the
    connection; it never just hangs. (python-socketio logs most of these at error level; that is its
    report of a rejected packet, not a failure, so this test's log records are dropped.)"""

    async def send() -> str:
        ws_url = target.live.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
            assert (await ws.receive(timeout=ACK_WITHIN_S)).data.startswith("0")  # Engine.IO open
            await ws.send_str("40" + json.dumps({"token": target.token}))
            assert (await ws.receive(timeout=ACK_WITHIN_S)).data.startswith("40")  # Socket.IO connect
            await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
            await ws.send_str('4299["no:such",{}]')
            while True:
                msg = await ws.receive(timeout=ACK_WITHIN_S)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return "closed"
                if msg.data.startswith("4399["):
                    check_ack("no:such", {}, json.loads(msg.data[4:])[0])
                    return "answers"
                if msg.data == "2":  # the server's ping
                    await ws.send_str("3")

    logged = len(target.errors)
    try:
        assert target.live.run(send()) in ("answers", "closed")
    except TimeoutError:
        pytest.fail(f"after {frame!r} the connection neither answered nor was closed")
    finally:
        del target.errors[logged:]
    check_ack("no:such", {}, target.call("no:such", {}))


RESERVED_CALLS = [
    pytest.param("connect", ({"token": "<real token>"},), id="connect-token"),  # no second handshake
    pytest.param("connect", ("junk", {"token": "<real token>"}), id="connect-2-args"),
    pytest.param("connect", (None, None, b""), id="connect-3-args"),
    pytest.param("disconnect", ({"x": 1},), id="disconnect"),
    pytest.param("disconnect", (1, 2), id="disconnect-2-args"),  # python-socketio retries with one less
    pytest.param("disconnect", (1, 2, 3), id="disconnect-3-args"),
    pytest.param("disconnect", (), id="disconnect-no-args"),
    pytest.param("*", ({"x": 1},), id="star"),
    pytest.param("*", (), id="star-no-args"),
    pytest.param("*", (1, 2, 3), id="star-3-args"),
]


@pytest.mark.parametrize(("name", "args"), RESERVED_CALLS)
def test_reserved_event_names_get_error_acks_and_leave_the_session_alone(
    target: Target, name: str, args: tuple[Any, ...]
) -> None:
    """python-socketio routes client events named "connect", "disconnect" and "*" to the handlers
    registered under those names; they must answer like any unknown event and change nothing."""
    data = tuple(target.token if a == "<real token>" else a for a in args)
    data = tuple({"token": target.token} if a == {"token": "<real token>"} else a for a in data)

    async def probe() -> list[Any]:
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(target.live.url, auth={"token": target.token}, transports=["websocket"])
        try:
            try:
                ack = await client.call(name, data if len(data) != 1 else data[0], timeout=1)
            except socketio.exceptions.TimeoutError:
                ack = "no ack"
            # A declared event with a bad payload answers invalid_input, unless the session is gone.
            after = await client.call(EVENT_NAMES[0], {"junk": 1}, timeout=2) if EVENT_NAMES else None
            return [ack, after]
        finally:
            await client.disconnect()

    logged = len(target.errors)
    try:
        ack, after = target.live.run(probe())
        errors = [r.getMessage() for r in target.errors[logged:]]
    finally:
        del target.errors[logged:]  # reported here, not again by the final check
    assert not errors, errors
    check_ack(name, args, ack)
    assert ack["ok"] is False
    if after is not None:
        assert after["error"]["code"] == "invalid_input", after


def test_the_connection_and_the_node_still_answer(target: Target) -> None:
    """Runs after the fuzzing (tests run in file order)."""
    assert target.client.connected
    with urllib.request.urlopen(target.live.url + "/healthz", timeout=5) as resp:
        assert (resp.status, json.loads(resp.read())) == (200, {"status": "ok"})
    if target.room_id is not None:  # a final valid call
        assert target.call("room:join", {"room_id": target.room_id})["ok"] is True
    else:
        assert target.call("no:such", {})["error"]["code"] == "invalid_input"

    async def fresh_connection() -> Any:
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(target.live.url, auth={"token": target.token}, transports=["websocket"])
        try:
            return await client.call("no:such", {}, timeout=ACK_WITHIN_S)
        finally:
            await client.disconnect()

    check_ack("no:such", {}, target.live.run(fresh_connection()))
    logged = [f"{r.name}: {r.getMessage()}" for r in target.errors]
    assert not logged, "errors were logged while fuzzing:\n" + "\n".join(logged[:10])
