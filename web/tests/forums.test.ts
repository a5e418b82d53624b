import { describe, expect, it } from "vitest";

import { nextVote, threadOrder, type Post } from "../src/lib/forums";

function post(id: string, parent: string | null, at: string): Post {
  return {
    id,
    topic_id: "t",
    parent_id: parent,
    depth: 0,
    author: { id: "a", display_name: "A" },
    body: id,
    created_at: at,
    edited_at: null,
    deleted: false,
    score: 0,
    my_vote: 0,
    accepted: false,
  };
}

describe("forums", () => {
  it("orders replies depth-first, each answer under its post, oldest first", () => {
    const op = "op";
    const posts = [
      post("a", op, "2026-01-01T00:00:01Z"),
      post("b", op, "2026-01-01T00:00:02Z"),
      post("a1", "a", "2026-01-01T00:00:03Z"),
      post("b1", "b", "2026-01-01T00:00:04Z"),
      post("a2", "a", "2026-01-01T00:00:05Z"),
      post("a1x", "a1", "2026-01-01T00:00:06Z"),
    ];
    expect(threadOrder(posts).map((p) => p.id)).toEqual(["a", "a1", "a1x", "a2", "b", "b1"]);
    expect(threadOrder([...posts].reverse()).map((p) => p.id)).toEqual(["a", "a1", "a1x", "a2", "b", "b1"]);
    expect(threadOrder([])).toEqual([]);
  });

  it("toggles a vote off when its button is pressed again", () => {
    expect(nextVote(0, 1)).toBe(1);
    expect(nextVote(1, 1)).toBe(0);
    expect(nextVote(1, -1)).toBe(-1);
    expect(nextVote(-1, -1)).toBe(0);
  });
});
