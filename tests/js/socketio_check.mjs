// Drives a live studyhall server with the official Socket.IO client (socket.io-client from npm).
//
//   STUDYHALL_URL=http://127.0.0.1:PORT STUDYHALL_TOKEN=<access token> node socketio_check.mjs handshake
//   ... STUDYHALL_ROOM_ID=<room id> node socketio_check.mjs chat
//   ... STUDYHALL_ROOM_ID=<id of a watch room the token's user hosts> node socketio_check.mjs watch
//
// Prints one JSON line: {"ok": true, "checks": {...}} (exit 0) or {"ok": false, "error": "..."} (exit 1).
// tests/test_js_client.py runs it; every wait is bounded, so it always ends by itself.
import { io } from "socket.io-client";

const url = process.env.STUDYHALL_URL;
const token = process.env.STUDYHALL_TOKEN;
const roomId = process.env.STUDYHALL_ROOM_ID;
const WAIT_MS = 10000;
const sockets = [];

// Disconnect every socket and close its Engine.IO connection (a refused namespace leaves that open).
// Node then exits by itself once the closing packets have gone out (ping timers are unref'd).
function closeAll() {
  for (const socket of sockets) {
    socket.disconnect();
    socket.io.engine?.close();
  }
}

function fail(what, detail) {
  throw new Error(`${what}: ${JSON.stringify(detail)}`);
}

function open(auth, transports = ["websocket"]) {
  const socket = io(url, { auth, transports, reconnection: false, forceNew: true, timeout: WAIT_MS, autoUnref: true });
  // The transport the Engine.IO connection opened with (before any upgrade).
  socket.io.once("open", () => (socket.firstTransport = socket.io.engine.transport.name));
  sockets.push(socket);
  return socket;
}

// Resolves with {connected: true} or {connected: false, err} — whichever the server answers.
function outcome(socket) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no connect or connect_error within ${WAIT_MS} ms`)), WAIT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve({ connected: true });
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      resolve({ connected: false, err });
    });
  });
}

async function connected(transports) {
  const socket = open({ token }, transports);
  const result = await outcome(socket);
  if (!result.connected) fail(`connect over ${transports}`, { message: result.err.message, data: result.err.data });
  return socket;
}

function upgraded(socket) {
  const engine = socket.io.engine;
  if (engine.transport.name === "websocket") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no upgrade to websocket within ${WAIT_MS} ms`)), WAIT_MS);
    engine.once("upgrade", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function ask(socket, event, ...args) {
  return socket.timeout(WAIT_MS).emitWithAck(event, ...args);
}

function next(socket, event, check) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no matching ${event} within ${WAIT_MS} ms`)), WAIT_MS);
    const listener = (data) => {
      if (!check(data)) return;
      clearTimeout(timer);
      socket.off(event, listener);
      resolve(data);
    };
    socket.on(event, listener);
  });
}

async function handshake() {
  const checks = {};
  // A bad or missing token is refused with connect-error data {code: "unauthorized"}.
  const bad = [
    ["forged token", { token: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.x" }],
    ["empty token", { token: "" }],
    ["no token", {}],
  ];
  for (const [name, auth] of bad) {
    const result = await outcome(open(auth));
    if (result.connected) fail(`${name} was accepted`, auth);
    if (result.err?.data?.code !== "unauthorized") fail(`${name}: connect_error data`, result.err?.data);
    if (!result.err.message) fail(`${name}: connect_error without a message`, result.err?.data);
    checks[name] = result.err.data;
  }
  // A good token connects straight over websocket, and the way browsers do by default: long-polling
  // first, then the upgrade to websocket (which a load balancer must keep on one node). Unknown events
  // get an error ack on either transport. (Polling-only clients work too, but python-engineio keeps
  // their last long-poll open for up to ping interval + timeout after they leave, which would stall
  // the test server's shutdown.)
  for (const transports of [["websocket"], ["polling", "websocket"]]) {
    const socket = await connected(transports);
    const first = socket.firstTransport;
    const ack = await ask(socket, "no:such", { x: 1 });
    if (ack?.ok !== false || ack?.error?.code !== "invalid_input" || !ack.error.message) {
      fail(`unknown event ack over ${first}`, ack);
    }
    await upgraded(socket);
    const bare = await ask(socket, "no:such");
    if (bare?.ok !== false) fail(`unknown event without payload over ${socket.io.engine.transport.name}`, bare);
    checks[`unknown event (${transports})`] = ack.error.code;
    checks[`transports (${transports})`] = [first, socket.io.engine.transport.name];
  }
  return checks;
}

async function chat() {
  if (!roomId) fail("chat needs STUDYHALL_ROOM_ID", null);
  const checks = {};
  const sender = await connected(["websocket"]);
  const listener = await connected(["polling", "websocket"]); // a second connection, as browsers make it
  await upgraded(listener);
  for (const socket of [sender, listener]) {
    const joined = await ask(socket, "room:join", { room_id: roomId });
    if (joined?.ok !== true) fail("room:join", joined);
  }
  const clientMsgId = `js-${Date.now()}`;
  const body = "hello from socket.io-client";
  const heard = next(listener, "chat:message", (m) => m?.room_id === roomId && m?.body === body);
  const sent = await ask(sender, "chat:send", { room_id: roomId, body, client_msg_id: clientMsgId });
  if (sent?.ok !== true || !Number.isInteger(sent.message?.seq)) fail("chat:send ack", sent);
  const message = await heard;
  if (message.id !== sent.message.id || message.seq !== sent.message.seq) fail("chat:message", { message, sent });
  if (typeof message.author?.id !== "string" || typeof message.created_at !== "string") fail("message shape", message);
  checks.seq = message.seq;

  const again = await ask(sender, "chat:send", { room_id: roomId, body, client_msg_id: clientMsgId });
  if (again?.ok !== true || again.message.id !== sent.message.id) fail("resent client_msg_id", again);

  const history = await ask(listener, "chat:history", { room_id: roomId, after_seq: message.seq - 1 });
  if (history?.ok !== true || history.messages?.[0]?.id !== message.id) fail("chat:history", history);

  const invalid = await ask(sender, "chat:send", { room_id: roomId, body: 42 });
  if (invalid?.ok !== false || invalid.error?.code !== "invalid_input") fail("chat:send with a bad body", invalid);
  checks.history = history.messages.length;

  // A long message both ways: the ws package compresses what it sends from 1 KB on (engine.io-client's
  // default), and the server sends its broadcast compressed to connections that negotiated deflate.
  const long = Array.from({ length: 120 }, (_, i) => `line ${i} of a long message`).join("\n");
  const heardLong = next(listener, "chat:message", (m) => m?.room_id === roomId && m?.body === long);
  const sentLong = await ask(sender, "chat:send", { room_id: roomId, body: long, client_msg_id: `${clientMsgId}-long` });
  if (sentLong?.ok !== true || sentLong.message?.body !== long) fail("a long chat:send", sentLong);
  const longHeard = await heardLong;
  if (longHeard.id !== sentLong.message.id) fail("the long chat:message", longHeard);
  checks.long = long.length;
  checks.extensions = [sender, listener].map((s) => {
    const deflate = s.io.engine.transport.ws?._extensions?.["permessage-deflate"]; // what ws agreed to
    return deflate ? Object.keys(deflate.params).sort() : null;
  });
  return checks;
}

// Watch parties as a browser would follow one: the state on joining a watch room, a change broadcast to
// every connection, and clock sync by the documented rule (README, "Keeping a player in step").
async function watch() {
  if (!roomId) fail("watch needs STUDYHALL_ROOM_ID (a watch room the token's user hosts)", null);
  const checks = {};
  const viewer = await connected(["polling", "websocket"]);
  await upgraded(viewer);
  const host = await connected(["websocket"]);
  const first = next(viewer, "watch:state", (s) => s?.room_id === roomId);
  const joined = await ask(viewer, "room:join", { room_id: roomId });
  if (joined?.ok !== true) fail("room:join", joined);
  const initial = await first; // sent to the joiner before the ack
  if (typeof initial.version !== "number" || typeof initial.server_time !== "number") fail("watch:state", initial);
  if ((await ask(host, "room:join", { room_id: roomId }))?.ok !== true) fail("host room:join", null);

  const media = { url: "https://example.com/js.mp4", kind: "video", duration: 120 };
  const loaded = await ask(host, "watch:load", { room_id: roomId, media, version: initial.version });
  if (loaded?.ok !== true) fail("watch:load", loaded);
  const played = next(viewer, "watch:state", (s) => s?.room_id === roomId && s.cause === "play");
  const play = await ask(host, "watch:play", { room_id: roomId, version: loaded.state.version });
  if (play?.ok !== true) fail("watch:play", play);
  const state = await played;
  if (state.version !== play.state.version || !state.playing || state.media?.url !== media.url) fail("play", state);
  const stale = await ask(host, "watch:pause", { room_id: roomId, version: loaded.state.version });
  if (stale?.ok !== false || stale.error?.code !== "conflict") fail("a stale pause", stale);

  const ups = [];
  const downs = [];
  for (let i = 0; i < 5; i++) {
    const t1 = Date.now() / 1000;
    const ack = await ask(viewer, "watch:heartbeat", {
      room_id: roomId, position: 0, playing: true, client_time: t1, version: state.version,
    });
    const t4 = Date.now() / 1000;
    if (ack?.ok !== true || ack.client_time !== t1) fail("watch:heartbeat", ack);
    ups.push(ack.received_at - t1);
    downs.push(t4 - ack.server_time);
  }
  checks.offset = (Math.min(...ups) - Math.min(...downs)) / 2; // server minus this machine: about 0 here
  checks.version = state.version;
  return checks;
}

const modes = { handshake, chat, watch };
const mode = modes[process.argv[2]];
let status = 0;
try {
  if (!url || !token || !mode) fail("usage: STUDYHALL_URL=... STUDYHALL_TOKEN=... node socketio_check.mjs handshake|chat|watch", process.argv.slice(2));
  console.log(JSON.stringify({ ok: true, checks: await mode() }));
} catch (err) {
  console.log(JSON.stringify({ ok: false, error: String(err?.stack ?? err) }));
  status = 1;
} finally {
  closeAll();
}
process.exitCode = status; // Node exits once the closes have gone out
