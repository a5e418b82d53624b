import { describe, expect, it } from "vitest";

import { lastLine, unreadLabel, type Conversation } from "../src/lib/dms";

const base: Conversation = {
  id: "r1",
  title: "Bob",
  members: [
    { id: "a", display_name: "Alice" },
    { id: "b", display_name: "Bob" },
  ],
  last_seq: 0,
  last_read_seq: 0,
  unread: 0,
  last_message: null,
  created: false,
};

describe("direct messages", () => {
  it("labels unread counts, saturating at the server's cap", () => {
    expect(unreadLabel(0)).toBe("");
    expect(unreadLabel(3)).toBe("3 unread");
    expect(unreadLabel(1000)).toBe("999+ unread");
  });

  it("shows the last message with its author, 'You' for one's own, and deleted ones without a body", () => {
    expect(lastLine(base, "a")).toBe("No messages yet");
    const msg = { seq: 2, author: { id: "b", display_name: "Bob" }, excerpt: "hi", deleted: false, created_at: "" };
    expect(lastLine({ ...base, last_message: msg }, "a")).toBe("Bob: hi");
    expect(lastLine({ ...base, last_message: msg }, "b")).toBe("You: hi");
    expect(lastLine({ ...base, last_message: { ...msg, deleted: true } }, "a")).toBe("Bob: (deleted)");
  });
});
