import { describe, expect, it } from "vitest";

import { ApiError } from "../src/lib/errors";
import type { Ack } from "../src/lib/live";
import { Rejoiner, type RoomJoinResult } from "../src/lib/rejoin";

/** Records each emit and answers it with `answer`. */
class FakeEmitter {
  readonly sent: [string, { rooms: { room_id: string; after_seq: number | null }[] }][] = [];
  constructor(private readonly answer: (rooms: { room_id: string; after_seq: number | null }[]) => unknown) {}
  async emit<T extends Ack = Ack>(event: string, data: unknown): Promise<T> {
    const payload = data as { rooms: { room_id: string; after_seq: number | null }[] };
    this.sent.push([event, payload]);
    const answer = this.answer(payload.rooms);
    if (answer instanceof ApiError) throw answer;
    return { ok: true, ...(answer as object) } as T;
  }
}

const okAll = (rooms: { room_id: string; after_seq: number | null }[]) => ({
  rooms: rooms.map((r) => ({ room_id: r.room_id, ok: true, messages: [], after: r.after_seq })),
});

describe("Rejoiner", () => {
  it("sends the rooms asked for in one turn as one room:join_many and hands each its own result", async () => {
    const live = new FakeEmitter(okAll);
    const rejoiner = new Rejoiner(live);
    const [a, b, c] = await Promise.all([rejoiner.join("a", 3), rejoiner.join("b", 0), rejoiner.join("c", null)]);
    expect(live.sent).toEqual([
      [
        "room:join_many",
        {
          rooms: [
            { room_id: "a", after_seq: 3 },
            { room_id: "b", after_seq: 0 },
            { room_id: "c", after_seq: null },
          ],
        },
      ],
    ]);
    expect([a, b, c].map((r: RoomJoinResult) => [r.room_id, r.after])).toEqual([
      ["a", 3],
      ["b", 0],
      ["c", null],
    ]);
    // A later turn is a new event.
    await rejoiner.join("a", 7);
    expect(live.sent).toHaveLength(2);
  });

  it("splits more rooms than the server takes into several events", async () => {
    const live = new FakeEmitter(okAll);
    const rejoiner = new Rejoiner(live, 2);
    await Promise.all(["a", "b", "c", "d", "e"].map((id) => rejoiner.join(id, 1)));
    expect(live.sent.map(([, d]) => d.rooms.map((r) => r.room_id))).toEqual([["a", "b"], ["c", "d"], ["e"]]);
  });

  it("asks for a room asked twice once, from the lower after_seq", async () => {
    const live = new FakeEmitter(okAll);
    const rejoiner = new Rejoiner(live);
    const [x, y] = await Promise.all([rejoiner.join("a", 9), rejoiner.join("a", 4)]);
    expect(live.sent[0]?.[1]).toEqual({ rooms: [{ room_id: "a", after_seq: 4 }] });
    expect(x).toBe(y);
  });

  it("rejects only a refused room, with the server's code and message", async () => {
    const live = new FakeEmitter((rooms) => ({
      rooms: rooms.map((r) =>
        r.room_id === "gone"
          ? { room_id: r.room_id, ok: false, error: { code: "not_found", message: "room not found" } }
          : { room_id: r.room_id, ok: true },
      ),
    }));
    const rejoiner = new Rejoiner(live);
    const good = rejoiner.join("good", 1);
    const gone = rejoiner.join("gone", 1);
    await expect(good).resolves.toMatchObject({ room_id: "good", ok: true });
    await expect(gone).rejects.toMatchObject({ code: "not_found", message: "room not found" });
  });

  it("rejects every room when the whole event fails (the next reconnect tries again)", async () => {
    const live = new FakeEmitter(() => new ApiError(0, "timeout", "The server did not answer in time; try again."));
    const rejoiner = new Rejoiner(live);
    const results = await Promise.allSettled([rejoiner.join("a", 1), rejoiner.join("b", 2)]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    expect(live.sent).toHaveLength(1);
  });

  it("rejects a room the answer left out instead of waiting for ever", async () => {
    const live = new FakeEmitter(() => ({ rooms: [] }));
    await expect(new Rejoiner(live).join("a", 1)).rejects.toMatchObject({ code: "internal" });
  });
});
