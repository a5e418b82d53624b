// The peer for bench/fanout.py: a minimal Node socket.io server doing the same room broadcast as
// studyhall's chat. Clients connect with auth {token} (not checked), `room:join {room_id}` puts them in the
// room, and `chat:send {room_id, body, client_msg_id}` broadcasts a message shaped like studyhall's
// `chat:message` to the room and acks it. Socket.IO defaults otherwise (per-message deflate declined),
// unless PEER_DEFLATE=1. Prints "listening <port>" when ready.
import { createServer } from "node:http";
import { randomUUID } from "node:crypto";
import { Server } from "socket.io";

const port = Number(process.argv[2] || 0);
const httpServer = createServer();
const io = new Server(httpServer, {
  perMessageDeflate: process.env.PEER_DEFLATE === "1" ? { threshold: 0 } : false,
  maxHttpBufferSize: 256 * 1024,
});
const seqs = new Map();

io.on("connection", (socket) => {
  const user = { id: randomUUID(), display_name: "bench user" };
  socket.on("room:join", (data, ack) => {
    socket.join(`room:${data.room_id}`);
    if (typeof ack === "function") ack({ ok: true, members: [], messages: [] });
  });
  socket.on("chat:send", (data, ack) => {
    const seq = (seqs.get(data.room_id) || 0) + 1;
    seqs.set(data.room_id, seq);
    const message = {
      id: randomUUID(),
      room_id: data.room_id,
      seq,
      author: user,
      body: data.body,
      created_at: new Date().toISOString(),
      edited_at: null,
      deleted: false,
      reactions: {},
      rev: 1,
    };
    io.to(`room:${data.room_id}`).emit("chat:message", message);
    if (typeof ack === "function") ack({ ok: true, ...message });
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`listening ${httpServer.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
