import { describe, expect, it } from "vitest";

import { MessageLog, type ChatMessage } from "../src/lib/chatlog";

export function msg(seq: number, extra: Partial<ChatMessage> = {}): ChatMessage {
  return {
    id: `m${seq}`,
    room_id: "r1",
    seq,
    author: { id: "u1", display_name: "Ada" },
    body: `message ${seq}`,
    created_at: "2026-12-02T15:00:00+00:00",
    edited_at: null,
    deleted: false,
    reactions: {},
    rev: 0,
    ...extra,
  };
}

const seqs = (log: MessageLog): number[] => log.messages().map((m) => m.seq);

describe("MessageLog: seq order and duplicates", () => {
  it("keeps messages in seq order whatever order they arrive in", () => {
    const log = new MessageLog();
    log.add([msg(3), msg(1)]);
    log.add([msg(2)]);
    log.add([msg(5), msg(4)]);
    expect(seqs(log)).toEqual([1, 2, 3, 4, 5]);
  });

  it("holds a message that arrives twice (live and in a history page) once", () => {
    const log = new MessageLog();
    expect(log.add([msg(1), msg(2)])).toBe(2);
    expect(log.add([msg(2), msg(3)])).toBe(1);
    expect(log.add([msg(1)])).toBe(0);
    expect(seqs(log)).toEqual([1, 2, 3]);
  });

  it("keeps the newest revision: an older copy never undoes an edit, a delete or a reaction", () => {
    const log = new MessageLog();
    log.add([msg(1)]);
    expect(log.update(msg(1, { body: "edited", edited_at: "2026-12-02T15:01:00+00:00", rev: 2 }))).toBe(true);
    expect(log.update(msg(1, { body: "first edit", rev: 1 }))).toBe(false);
    log.add([msg(1)]); // the same message again from a history page read before the edit
    expect(log.get("m1")?.body).toBe("edited");
    expect(log.react("m1", { "👍": 2 }, 3)).toBe(true);
    expect(log.react("m1", { "👍": 1 }, 2)).toBe(false);
    expect(log.get("m1")?.reactions).toEqual({ "👍": 2 });
    log.update(msg(1, { body: "", deleted: true, rev: 4 }));
    expect(log.get("m1")?.deleted).toBe(true);
    expect(seqs(log)).toEqual([1]); // a tombstone keeps its place
  });

  it("ignores updates of messages it does not hold, and garbage", () => {
    const log = new MessageLog();
    expect(log.update(msg(7, { rev: 3 }))).toBe(false);
    expect(log.react("nope", { "👍": 1 }, 9)).toBe(false);
    log.add([null as unknown as ChatMessage, { seq: "x" } as unknown as ChatMessage, msg(0)]);
    expect(log.size).toBe(0);
  });
});

describe("MessageLog: the contiguous after_seq", () => {
  it("is the highest seq with nothing missing before it, not the highest seen", () => {
    const log = new MessageLog();
    log.setFloor(950);
    log.add([951, 952, 953].map((s) => msg(s)));
    expect(log.contiguousSeq()).toBe(953);
    log.add([msg(956)]); // a live message after a drop: 954 and 955 never arrived
    expect(log.newestSeq()).toBe(956);
    expect(log.contiguousSeq()).toBe(953);
    expect(log.isContiguous()).toBe(false);
    log.add([msg(954), msg(955)]);
    expect(log.contiguousSeq()).toBe(956);
    expect(log.isContiguous()).toBe(true);
  });

  it("starts from the first join's history: older pages loaded by scrolling do not move it", () => {
    const log = new MessageLog();
    log.setFloor(50);
    log.add([51, 52].map((s) => msg(s)));
    log.add([1, 2, 3].map((s) => msg(s))); // an older page (scroll up) with a gap to 51
    expect(log.contiguousSeq()).toBe(52);
  });

  it("asks from 0 after joining an empty room, even when a rejoin brought only the last messages", () => {
    const log = new MessageLog();
    log.setFloor(0);
    expect(log.contiguousSeq()).toBe(0);
    log.add([31, 32, 33].map((s) => msg(s))); // the rejoin's last messages; 1..30 were missed
    expect(log.contiguousSeq()).toBe(0);
  });

  it("without a floor, runs from the oldest message held", () => {
    const log = new MessageLog();
    expect(log.contiguousSeq()).toBe(0);
    log.add([10, 11, 13].map((s) => msg(s)));
    expect(log.contiguousSeq()).toBe(11);
  });
});
