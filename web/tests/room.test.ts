import { get, writable } from "svelte/store";
import { describe, expect, it } from "vitest";

import type { ChatMessage } from "../src/lib/chatlog";
import { ApiError } from "../src/lib/errors";
import type { Ack, ConnectionState } from "../src/lib/live";
import { Rejoiner } from "../src/lib/rejoin";
import { RoomSession, type LiveLike } from "../src/lib/room";
import { msg } from "./chatlog.test";

type Answer = (data: Record<string, unknown>) => unknown;

/** The server side of a room, as far as the session can tell: acks by event, events pushed to it. */
class FakeLive implements LiveLike {
  readonly state = writable<ConnectionState>("connected");
  readonly emitted: [string, Record<string, unknown>][] = [];
  readonly answers = new Map<string, Answer>();
  private handlers = new Map<string, Set<(data: never) => void>>();
  private hooks = new Set<(reconnect: boolean) => void>();

  async emit<T extends Ack = Ack>(event: string, data: unknown): Promise<T> {
    this.emitted.push([event, data as Record<string, unknown>]);
    if (get(this.state) !== "connected") throw new ApiError(0, "unavailable", "Not connected");
    const answer = this.answers.get(event);
    const result = answer ? await answer(data as Record<string, unknown>) : {};
    if (result instanceof ApiError) throw result;
    return { ok: true, ...(result as object) } as T;
  }
  on<T>(event: string, handler: (data: T) => void): () => void {
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(handler as (data: never) => void);
    return () => set.delete(handler as (data: never) => void);
  }
  onConnect(hook: (reconnect: boolean) => void): () => void {
    this.hooks.add(hook);
    return () => this.hooks.delete(hook);
  }
  fire(event: string, data: unknown): void {
    for (const handler of this.handlers.get(event) ?? []) (handler as (d: unknown) => void)(data);
  }
  drop(): void {
    this.state.set("reconnecting");
  }
  reconnect(): void {
    this.state.set("connected");
    for (const hook of this.hooks) hook(true);
  }
  sent(event: string): Record<string, unknown>[] {
    return this.emitted.filter(([e]) => e === event).map(([, d]) => d);
  }
}

/** A room on the "server": its messages, and answers to join/history/send that read them. */
function serverRoom(live: FakeLive, count: number) {
  const all: ChatMessage[] = [];
  for (let seq = 1; seq <= count; seq++) all.push(msg(seq));
  const byClientId = new Map<string, ChatMessage>();
  let presenceRev = 1;
  live.answers.set("room:join", () => ({
    room: { id: "r1", name: "Room", kind: "study", visibility: "public", member_count: 2, my_role: "member", archived_at: null },
    members: [{ id: "me", display_name: "Me" }],
    member_count: 1,
    presence_rev: presenceRev,
    messages: all.slice(-50),
  }));
  live.answers.set("chat:history", (data) => {
    const limit = Number(data.limit ?? 50);
    if (data.after_seq !== undefined) {
      const after = all.filter((m) => m.seq > Number(data.after_seq));
      return { messages: after.slice(0, limit), has_more: after.length > limit };
    }
    const before = all.filter((m) => m.seq < Number(data.before_seq));
    return { messages: before.slice(-limit), has_more: before.length > limit };
  });
  live.answers.set("chat:send", (data) => {
    const id = String(data.client_msg_id);
    let message = byClientId.get(id);
    if (!message) {
      message = msg(all.length + 1, { body: String(data.body), author: { id: "me", display_name: "Me" } });
      all.push(message);
      byClientId.set(id, message);
    }
    return { message };
  });
  return {
    all,
    post(body: string): ChatMessage {
      const message = msg(all.length + 1, { body });
      all.push(message);
      return message;
    },
    setPresenceRev(rev: number) {
      presenceRev = rev;
    },
  };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
const seqs = (room: RoomSession) => get(room.messages).map((m) => m.seq);
let ids = 0;
const newId = () => `c${++ids}`;

describe("RoomSession: joining and history", () => {
  it("shows the last 50 messages on joining and loads older pages by seq", async () => {
    const live = new FakeLive();
    serverRoom(live, 120);
    const room = new RoomSession(live, "r1", { id: "me", display_name: "Me" }, { newId });
    room.start();
    await settle();
    expect(get(room.status)).toBe("live");
    expect(seqs(room)).toEqual(Array.from({ length: 50 }, (_, i) => 71 + i));
    expect(get(room.hasOlder)).toBe(true);
    await room.loadOlder();
    await room.loadOlder();
    expect(seqs(room)[0]).toBe(1);
    expect(seqs(room)).toHaveLength(120);
    expect(get(room.hasOlder)).toBe(false);
    expect(live.sent("chat:history").map((d) => d.before_seq)).toEqual([71, 21]);
  });

  it("shows a refused join as the server's message", async () => {
    const live = new FakeLive();
    live.answers.set("room:join", () => new ApiError(0, "forbidden", "you are banned from this room"));
    const room = new RoomSession(live, "r1", { id: "me", display_name: "Me" });
    room.start();
    await settle();
    expect(get(room.status)).toBe("failed");
    expect(get(room.error)).toBe("you are banned from this room");
  });
});

describe("RoomSession: reconnect catch-up", () => {
  it("re-joins and fetches what it missed from the highest contiguous seq, in order", async () => {
    const live = new FakeLive();
    const server = serverRoom(live, 60);
    const room = new RoomSession(live, "r1", { id: "me", display_name: "Me" }, { newId });
    room.start();
    await settle();
    expect(room.resumeSeq).toBe(60);

    live.drop();
    expect(get(room.status)).toBe("offline");
    for (let i = 0; i < 80; i++) server.post(`missed ${i}`); // 61..140
    // One message of the drop arrived live anyway (a different path): it must not hide the gap.
    live.fire("chat:message", server.all[99]);
    expect(room.resumeSeq).toBe(60);

    live.reconnect();
    expect(get(room.status)).toBe("catching-up");
    await settle();
    expect(get(room.status)).toBe("live");
    // The join answer brought 91..140, leaving 61..90 missing: asked from 60, the contiguous seq.
    expect(live.sent("chat:history").map((d) => d.after_seq)).toEqual([60]);
    expect(seqs(room)).toEqual(Array.from({ length: 130 }, (_, i) => 11 + i)); // 11..60 from the first join
    expect(room.resumeSeq).toBe(140);
  });

  it("pages through a long absence until it holds everything", async () => {
    const live = new FakeLive();
    const server = serverRoom(live, 10);
    const room = new RoomSession(live, "r1", { id: "me", display_name: "Me" }, { newId });
    room.start();
    await settle();
    live.drop();
    for (let i = 0; i < 500; i++) server.post(`missed ${i}`);
    live.reconnect();
    await settle();
    await settle();
    expect(live.sent("chat:history").map((d) => d.after_seq)).toEqual([10, 210, 410]);
    expect(seqs(room)).toEqual(Array.from({ length: 510 }, (_, i) => i + 1));
  });

  it("a room that was empty when joined is caught up from seq 0", async () => {
    const live = new FakeLive();
    const server = serverRoom(live, 0);
    const room = new RoomSession(live, "r1", { id: "me", display_name: "Me" }, { newId });
    room.start();
    await settle();
    live.drop();
    for (let i = 0; i < 70; i++) server.post(`missed ${i}`);
    live.reconnect();
    await settle();
    expect(live.sent("chat:history").map((d) => d.after_seq)).toEqual([0]);
    expect(seqs(room)).toHaveLength(70);
  });

  it("starts the people list over from the new join answer", async () => {
    const live = new FakeLive();
    const server = serverRoom(live, 0);
    const room = new RoomSession(live, "r1", { id: "me", display_name: "Me" }, { newId });
    room.start();
    await settle();
    live.fire("room:presence", { room_id: "r1", user: { id: "bo", display_name: "Bo" }, state: "joined", rev: 2 });
    expect(get(room.people).map((p) => p.display_name)).toEqual(["Bo", "Me"]);
    live.drop();
    server.setPresenceRev(9); // Bo left while we were away
    live.reconnect();
    // Bo's old "joined" (rev 2) delivered late, during the re-join: held, then dropped as older than 9.
    live.fire("room:presence", { room_id: "r1", user: { id: "bo", display_name: "Bo" }, state: "joined", rev: 2 });
    await settle();
    expect(get(room.people).map((p) => p.display_name)).toEqual(["Me"]);
  });
});

/** `room:join_many` over the fake server's rooms (`rooms`: room id → its messages), as the server answers. */
function answerJoinMany(live: FakeLive, rooms: Map<string, ChatMessage[]>, limit = 200): void {
  live.answers.set("room:join_many", (data) => ({
    rooms: (data.rooms as { room_id: string; after_seq: number | null }[]).map(({ room_id, after_seq }) => {
      const all = rooms.get(room_id);
      if (all === undefined) return { room_id, ok: false, error: { code: "not_found", message: "room not found" } };
      const missed = all.filter((m) => m.seq > (after_seq ?? 0));
      return {
        room_id,
        ok: true,
        room: { id: room_id, name: room_id, kind: "study", visibility: "public", member_count: 1, my_role: "member", archived_at: null },
        members: [{ id: "me", display_name: "Me" }],
        member_count: 1,
        presence_rev: 5,
        messages: missed.slice(0, limit),
        has_more: missed.length > limit,
      };
    }),
  }));
}

describe("RoomSession: reconnect through room:join_many", () => {
  it("rejoins every open room in one room:join_many, each from its contiguous seq, and fetches nothing twice", async () => {
    const live = new FakeLive();
    const server = serverRoom(live, 60);
    const other: ChatMessage[] = [msg(1, { room_id: "r2" }), msg(2, { room_id: "r2" })];
    answerJoinMany(live, new Map([["r1", server.all], ["r2", other]]));
    const rejoiner = new Rejoiner(live);
    const me = { id: "me", display_name: "Me" };
    const one = new RoomSession(live, "r1", me, { newId, rejoiner });
    const two = new RoomSession(live, "r2", me, { newId, rejoiner });
    live.answers.set("room:join", (data) => ({
      room: { id: data.room_id, name: "x", kind: "study", visibility: "public", member_count: 1, my_role: "member", archived_at: null },
      members: [],
      member_count: 1,
      presence_rev: 1,
      messages: data.room_id === "r1" ? server.all.slice(-50) : other,
    }));
    one.start();
    two.start();
    await settle();
    expect(live.sent("room:join")).toHaveLength(2); // the first joins are plain room:join
    expect(seqs(two)).toEqual([1, 2]);

    live.drop();
    for (let i = 0; i < 3; i++) server.post(`missed ${i}`); // r1: 61..63
    other.push(msg(3, { room_id: "r2" })); // r2: 3
    live.fire("chat:message", server.all[62]); // 63 arrived live anyway: it must not hide 61..62
    live.reconnect();
    await settle();

    expect(live.sent("room:join")).toHaveLength(2);
    expect(live.sent("room:join_many")).toEqual([
      {
        rooms: [
          { room_id: "r1", after_seq: 60 },
          { room_id: "r2", after_seq: 2 },
        ],
      },
    ]);
    expect(live.sent("chat:history")).toEqual([]);
    expect(get(one.status)).toBe("live");
    expect(get(two.status)).toBe("live");
    expect(seqs(one)).toEqual(Array.from({ length: 53 }, (_, i) => 11 + i)); // 11..63, each once
    expect(seqs(two)).toEqual([1, 2, 3]);
  });

  it("pages with chat:history when the answer says more were missed than it carries", async () => {
    const live = new FakeLive();
    const server = serverRoom(live, 10);
    answerJoinMany(live, new Map([["r1", server.all]]), 100);
    const room = new RoomSession(live, "r1", { id: "me", display_name: "Me" }, { newId, rejoiner: new Rejoiner(live) });
    room.start();
    await settle();
    live.drop();
    for (let i = 0; i < 450; i++) server.post(`missed ${i}`); // 11..460
    live.reconnect();
    await settle();
    await settle();
    expect(live.sent("room:join_many")).toEqual([{ rooms: [{ room_id: "r1", after_seq: 10 }] }]);
    // The answer carried 11..110 and has_more: pages of 200 from 110 on, no gap showing.
    expect(live.sent("chat:history").map((d) => d.after_seq)).toEqual([110, 310]);
    expect(seqs(room)).toEqual(Array.from({ length: 460 }, (_, i) => i + 1));
    expect(get(room.status)).toBe("live");
  });

  it("joins alone with room:join when the server refuses the whole batch (a lower limit, or its rate)", async () => {
    const live = new FakeLive();
    const server = serverRoom(live, 60);
    live.answers.set("room:join_many", () => new ApiError(0, "invalid_input", "room:join_many: at most 1 rooms per call"));
    const room = new RoomSession(live, "r1", { id: "me", display_name: "Me" }, { newId, rejoiner: new Rejoiner(live) });
    room.start();
    await settle();
    live.drop();
    for (let i = 0; i < 3; i++) server.post(`missed ${i}`);
    live.reconnect();
    await settle();
    await settle();
    expect(live.sent("room:join_many")).toHaveLength(1);
    expect(live.sent("room:join")).toHaveLength(2);
    expect(get(room.status)).toBe("live");
    expect(seqs(room)).toEqual(Array.from({ length: 53 }, (_, i) => 11 + i));
  });

  it("a room refused in the batch fails alone, with the server's reason", async () => {
    const live = new FakeLive();
    const server = serverRoom(live, 5);
    const rooms = new Map([["r1", server.all]]);
    answerJoinMany(live, rooms);
    const rejoiner = new Rejoiner(live);
    const room = new RoomSession(live, "r1", { id: "me", display_name: "Me" }, { newId, rejoiner });
    room.start();
    await settle();
    live.drop();
    rooms.delete("r1"); // kicked while away: the server answers not_found for it
    live.reconnect();
    await settle();
    expect(get(room.status)).toBe("failed");
    expect(get(room.error)).toBe("room not found");
  });
});

describe("RoomSession: nothing typed is lost", () => {
  it("queues messages written while offline and sends them in order once caught up", async () => {
    const live = new FakeLive();
    const server = serverRoom(live, 5);
    const room = new RoomSession(live, "r1", { id: "me", display_name: "Me" }, { newId });
    room.start();
    await settle();
    live.drop();
    server.post("while away");
    room.send("first");
    room.send("second");
    await settle();
    expect(get(room.outbox).map((o) => [o.body, o.state])).toEqual([
      ["first", "queued"],
      ["second", "queued"],
    ]);
    live.reconnect();
    await settle();
    await settle();
    expect(get(room.outbox)).toEqual([]);
    expect(get(room.messages).map((m) => m.body).slice(-3)).toEqual(["while away", "first", "second"]);
  });

  it("resends a message whose answer was lost with the same client_msg_id: posted once", async () => {
    const live = new FakeLive();
    const server = serverRoom(live, 0);
    const room = new RoomSession(live, "r1", { id: "me", display_name: "Me" }, { newId });
    room.start();
    await settle();
    const send = live.answers.get("chat:send") as Answer;
    live.answers.set("chat:send", (data) => {
      send(data); // stored on the server, but the ack never arrives
      return new ApiError(0, "timeout", "The server did not answer in time; try again.");
    });
    room.send("hello");
    await settle();
    expect(get(room.outbox)[0]?.state).toBe("queued");
    live.answers.set("chat:send", send);
    live.drop();
    live.reconnect();
    await settle();
    await settle();
    const sends = live.sent("chat:send");
    expect(sends).toHaveLength(2);
    expect(sends[0]?.client_msg_id).toBe(sends[1]?.client_msg_id);
    expect(server.all.map((m) => m.body)).toEqual(["hello"]);
    expect(get(room.outbox)).toEqual([]);
    expect(seqs(room)).toEqual([1]);
  });

  it("keeps a refused message with the server's reason until retried or discarded", async () => {
    const live = new FakeLive();
    serverRoom(live, 0);
    const room = new RoomSession(live, "r1", { id: "me", display_name: "Me" }, { newId });
    room.start();
    await settle();
    const send = live.answers.get("chat:send") as Answer;
    live.answers.set("chat:send", () => new ApiError(0, "forbidden", "you are muted for 60 more seconds"));
    const id = room.send("let me speak") as string;
    await settle();
    expect(get(room.outbox)).toEqual([
      { client_msg_id: id, body: "let me speak", state: "failed", error: "you are muted for 60 more seconds" },
    ]);
    live.answers.set("chat:send", send);
    room.retry(id);
    await settle();
    expect(get(room.outbox)).toEqual([]);
    expect(get(room.messages).map((m) => m.body)).toEqual(["let me speak"]);
  });
});

describe("RoomSession: live events", () => {
  it("applies edits, deletes and reactions by revision and shows moderation aimed at this user", async () => {
    const live = new FakeLive();
    serverRoom(live, 3);
    const room = new RoomSession(live, "r1", { id: "me", display_name: "Me" }, { newId });
    room.start();
    await settle();
    // chat:updated is {message} (the room is the message's), as the server sends it.
    live.fire("chat:updated", { message: msg(2, { body: "edited", rev: 2 }) });
    live.fire("chat:updated", { message: msg(2, { body: "stale", rev: 1 }) });
    live.fire("chat:updated", { message: msg(3, { body: "elsewhere", rev: 5, room_id: "another room" }) });
    live.fire("chat:reactions", { room_id: "r1", message_id: "m3", reactions: { "🎉": 2 }, rev: 1 });
    live.fire("chat:message", msg(4, { room_id: "another room" }));
    expect(get(room.messages).map((m) => m.body)).toEqual(["message 1", "edited", "message 3"]);
    expect(get(room.messages)[2]?.reactions).toEqual({ "🎉": 2 });

    live.fire("chat:moderation", {
      room_id: "r1",
      action: "mute",
      user_id: "me",
      by: { id: "mod", display_name: "Mona" },
      seconds: 300,
      muted_until: "2026-12-02T16:00:00+00:00",
    });
    expect(get(room.notice)).toMatch(/^Mona muted you until /);
    live.fire("room:kicked", { room_id: "r1", reason: "ban" });
    expect(get(room.status)).toBe("removed");
    expect(get(room.error)).toBe("You were banned from this room.");
  });

  it("shows who is typing, not this user, until they stop or send", async () => {
    const live = new FakeLive();
    serverRoom(live, 0);
    const room = new RoomSession(live, "r1", { id: "me", display_name: "Me" }, { newId });
    room.start();
    await settle();
    live.fire("chat:typing", { room_id: "r1", user: { id: "u1", display_name: "Ada" }, typing: true });
    live.fire("chat:typing", { room_id: "r1", user: { id: "me", display_name: "Me" }, typing: true });
    expect(get(room.typing).map((u) => u.display_name)).toEqual(["Ada"]);
    live.fire("chat:message", msg(1)); // from Ada (u1)
    expect(get(room.typing)).toEqual([]);
    room.stop();
  });
});
